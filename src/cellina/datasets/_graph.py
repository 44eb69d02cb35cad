"""The true tissue graph on which the niche effects are defined."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def true_graph(
    coords: np.ndarray, slide: np.ndarray, bandwidth: float, max_neighbours: int, cutoff: float
) -> sp.csr_matrix:
    """Gaussian-kernel k-nearest-neighbour graph built by ``cellina.spatial.spatial_neighbors``.

    Using the library's own graph builder means a model given ``spatial_neighbors`` with the
    truth's parameters sees exactly the neighbourhoods that generated the data.

    Parameters
    ----------
    coords
        (n, 2) float coordinates in micrometres.
    slide
        (n,) integer slide of each cell; no edge crosses slides.
    bandwidth
        Kernel length scale, in micrometres.
    max_neighbours
        k of the k-nearest-neighbour query.
    cutoff
        Weights at or below this value are dropped.

    Returns
    -------
    scipy.sparse.csr_matrix
        (n, n) weights, row i holding i's neighbours, no self loops.
    """
    from cellina.spatial import spatial_neighbors

    holder = ad.AnnData(
        obs=pd.DataFrame({"slide": pd.Categorical(slide)}, index=pd.RangeIndex(coords.shape[0]).astype(str)),
        obsm={"spatial": coords},
    )
    return spatial_neighbors(
        holder,
        bandwidth=bandwidth,
        cutoff=cutoff,
        max_neighbours=max_neighbours,
        kernel="gaussian",
        library_key="slide",
        inplace=False,
    )
