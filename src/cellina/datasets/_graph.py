"""The true tissue graph on which the niche effects of ``synthetic_tissue`` are defined."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree


def true_graph(
    coords: np.ndarray, slide: np.ndarray, bandwidth: float, max_neighbours: int, cutoff: float
) -> sp.csr_matrix:
    """Gaussian-kernel k-nearest-neighbour graph, built here rather than by ``cellina.spatial``.

    A truth must not share the code it judges, so this builder is independent of the model's
    graph code; it follows the same definition (the k nearest other cells of the same slide,
    weight exp(-d^2 / (2 bandwidth^2)) in float32, weights <= cutoff dropped, no self loops),
    and a test checks that both builders agree on the tissue.

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
        (n, n) float32 weights with sorted indices, row i holding i's neighbours.
    """
    n = coords.shape[0]
    # beyond this distance every weight is <= cutoff, so the search may stop there
    reach = bandwidth * np.sqrt(-2.0 * np.log(cutoff)) if cutoff > 0 else np.inf
    rows, cols, weights = [], [], []
    for code in np.unique(slide):
        members = np.flatnonzero(slide == code)
        k = min(max_neighbours + 1, members.size)
        if k < 2:
            continue
        dist, hit = cKDTree(coords[members]).query(coords[members], k=k, distance_upper_bound=reach * (1 + 1e-9))
        # drop the cell itself by position, not by distance 0, so stacked cells still connect
        not_self = (hit != np.arange(members.size)[:, None]) & np.isfinite(dist)
        if k == max_neighbours + 1:
            # a row without itself among its hits (more than k stacked cells) keeps its k nearest
            surplus = not_self.sum(axis=1) > max_neighbours
            not_self[surplus, -1] = False
        scaled = (dist * (1.0 / bandwidth)).astype(np.float32)
        w = np.exp(-0.5 * (scaled * scaled))
        keep = not_self & (w > cutoff)
        rows.append(np.repeat(members, keep.sum(axis=1)))
        cols.append(members[hit[keep]])
        weights.append(w[keep])
    if not rows:
        return sp.csr_matrix((n, n), dtype=np.float32)
    graph = sp.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
    )
    graph.sort_indices()
    return graph
