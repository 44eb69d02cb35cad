"""Rebuild niche features for rewired neighbourhoods (numpy / scipy only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.spatial import aggregate_neighbours, expression_representation

from ._donors import sample_anchors, sample_donors


def spatial_features_record(adata: Any, obsm_key: str) -> Mapping[str, Any]:
    """Provenance record of ``obsm[obsm_key]`` written by ``compute_spatial_features``.

    Parameters
    ----------
    adata
        AnnData holding ``uns["cellina"]["spatial_features"]``.
    obsm_key
        Key of the niche features.

    Returns
    -------
    Mapping
        The record (``transform``, ``target_sum``, ``genes``, ...).

    Raises
    ------
    ValueError
        If the record is missing.
    """
    try:
        return adata.uns["cellina"]["spatial_features"][obsm_key]
    except (KeyError, TypeError):
        raise ValueError(
            f"adata.uns['cellina']['spatial_features'][{obsm_key!r}] is missing: it records how "
            f"obsm[{obsm_key!r}] was built, which counterfactuals need to rebuild it. Compute "
            "the niche features with cellina.spatial.compute_spatial_features."
        ) from None


def _rows(counts: Any, rows: np.ndarray) -> Any:
    return counts[rows] if not sp.issparse(counts) else sp.csr_matrix(counts)[rows]


def pooled_niche_features(
    counts: Any, donors: np.ndarray, record: Mapping[str, Any]
) -> np.ndarray:
    """Niche features of focal cells whose neighbours are replaced by ``donors``.

    Every donor gets weight ``1/k``: rewired donors have no distance to the focal cell,
    so no kernel applies. The donors' expression goes through exactly the representation
    recorded for the trained niche features.

    Parameters
    ----------
    counts
        Raw counts, all cells x all genes of the AnnData the record was made on.
    donors
        ``(n_focal, k)`` donor positions.
    record
        Spatial-features provenance record.

    Returns
    -------
    numpy.ndarray
        Dense float32 ``(n_focal, len(record["genes"]))``.
    """
    donors = np.asarray(donors, dtype=np.int64)
    n, k = donors.shape
    uniq, inv = np.unique(donors, return_inverse=True)
    W = sp.csr_matrix(
        (np.ones(n * k, dtype=np.float32), inv.ravel(), np.arange(0, n * k + 1, k)),
        shape=(n, uniq.size),
    )
    W.sum_duplicates()
    Xrep = expression_representation(_rows(counts, uniq), record)
    return aggregate_neighbours(W, Xrep)


def anchor_niche_features(
    counts: Any,
    graph: Any,
    anchors: np.ndarray,
    focal: np.ndarray,
    record: Mapping[str, Any],
) -> np.ndarray:
    """Niche features of focal cells that inherit the neighbourhood of an anchor cell.

    Row ``i`` is ``D^-1 W X`` over the anchor's neighbours in ``graph`` (its kernel
    weights), leaving out focal cell ``i`` should it be one of them.

    Parameters
    ----------
    counts
        Raw counts, all cells x all genes of the AnnData the record was made on.
    graph
        ``n_obs x n_obs`` connectivities of the unmasked graph.
    anchors, focal
        ``(n_focal,)`` positions.
    record
        Spatial-features provenance record.

    Returns
    -------
    numpy.ndarray
        Dense float32 ``(n_focal, len(record["genes"]))``.
    """
    Wa = sp.csr_matrix(graph)[np.asarray(anchors, dtype=np.int64)].tocoo()
    keep = Wa.col != np.asarray(focal, dtype=np.int64)[Wa.row]
    row, col, val = Wa.row[keep], Wa.col[keep], Wa.data[keep]
    uniq, inv = np.unique(col, return_inverse=True)
    W = sp.csr_matrix((val.astype(np.float32), (row, inv)), shape=(len(anchors), uniq.size))
    if uniq.size == 0:
        return np.zeros((len(anchors), len(record["genes"])), dtype=np.float32)
    Xrep = expression_representation(_rows(counts, uniq), record)
    return aggregate_neighbours(W, Xrep)


def rewired_niche_features(
    adata: Any,
    counts: Any,
    focal: np.ndarray,
    pool: np.ndarray,
    obsm_key: str,
    rng: np.random.Generator,
    precomputed: bool = False,
    n_neighbours: int = 50,
    connectivity_key: str = "spatial_connectivities_orig",
) -> tuple[np.ndarray, np.ndarray]:
    """One draw of rewired niche features for ``focal`` cells.

    Parameters
    ----------
    adata
        AnnData with the provenance record (and, in anchor mode, the graph).
    counts
        Raw counts (the model's registered layer), all cells x all genes.
    focal
        Focal cell positions.
    pool
        Donor pool (pooled mode) or anchor pool (anchor mode).
    obsm_key
        Key of the trained niche features (selects the record).
    rng
        Source of randomness.
    precomputed
        Anchor mode instead of pooled rewiring.
    n_neighbours
        Donors per focal cell (pooled mode).
    connectivity_key
        ``obsp`` key of the unmasked graph (anchor mode).

    Returns
    -------
    tuple of numpy.ndarray
        ``phi`` ``(n_focal, n_features)`` and the draw: donors ``(n_focal, k)`` or anchors
        ``(n_focal,)``.
    """
    record = spatial_features_record(adata, obsm_key)
    if precomputed:
        if connectivity_key not in adata.obsp:
            raise ValueError(
                f"Anchor mode (precomputed=True) needs the unmasked graph in "
                f"adata.obsp[{connectivity_key!r}], which is missing; build it with "
                "spatial_neighbors(..., inplace=False) or pass connectivity_key=..."
            )
        anchors = sample_anchors(focal, pool, rng)
        phi = anchor_niche_features(counts, adata.obsp[connectivity_key], anchors, focal, record)
        return phi, anchors
    donors = sample_donors(focal, pool, n_neighbours, rng)
    return pooled_niche_features(counts, donors, record), donors
