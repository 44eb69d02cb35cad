"""Rebuild niche features for rewired neighbourhoods (numpy / scipy only)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.keys import OBSP
from cellina.spatial import aggregate_neighbours, check_positions, expression_representation
from cellina.spatial._composition import n_niche_features, record_codes, with_composition

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
    counts: Any, donors: np.ndarray, record: Mapping[str, Any], codes: np.ndarray | None = None
) -> np.ndarray:
    """Niche features of focal cells whose neighbours are replaced by ``donors``.

    Every donor gets weight ``1/k``: rewired donors have no distance to the focal cell,
    so no kernel applies. The donors' expression goes through exactly the representation
    recorded for the trained niche features (and their categories into its composition
    block, if it has one).

    Parameters
    ----------
    counts
        Raw counts, all cells x all genes of the AnnData the record was made on.
    donors
        ``(n_focal, k)`` donor positions.
    record
        Spatial-features provenance record.
    codes
        Every cell's category code when the record has a composition block
        (:func:`cellina.spatial.record_codes`).

    Returns
    -------
    numpy.ndarray
        Dense float32 ``(n_focal, n_features)``.
    """
    donors = np.asarray(donors, dtype=np.int64)
    n, k = donors.shape
    uniq, inv = np.unique(donors, return_inverse=True)
    W = sp.csr_matrix(
        (np.ones(n * k, dtype=np.float32), inv.ravel(), np.arange(0, n * k + 1, k)),
        shape=(n, uniq.size),
    )
    W.sum_duplicates()
    Xrep = with_composition(expression_representation(_rows(counts, uniq), record), record, codes, uniq)
    return aggregate_neighbours(W, Xrep)


def masked_rows(
    graph: Any,
    rows: np.ndarray,
    exclude: np.ndarray | None = None,
    drop: np.ndarray | None = None,
) -> sp.csr_matrix:
    """``graph[rows]`` without the columns in ``exclude`` and, row by row, without ``drop[i]``.

    Edges keep their order within a row, so aggregating the result adds the same numbers
    in the same order as aggregating a graph whose excluded columns were zeroed: the
    features come out bit for bit the same.

    Parameters
    ----------
    graph
        ``n_obs x n_obs`` connectivities.
    rows
        Positions of the cells whose neighbourhoods are wanted (repeats allowed).
    exclude
        Positions of cells that must be nobody's neighbour here.
    drop
        One position per row, removed from that row only (the focal cell itself).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``(len(rows), n_obs)``.
    """
    sub = sp.csr_matrix(graph)[np.asarray(rows, dtype=np.int64)]
    row_of = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))
    keep = np.ones(sub.nnz, dtype=bool)
    if exclude is not None and len(exclude):
        excluded = np.zeros(sub.shape[1], dtype=bool)
        excluded[np.asarray(exclude, dtype=np.int64)] = True
        keep &= ~excluded[sub.indices]
    if drop is not None:
        keep &= sub.indices != np.asarray(drop, dtype=np.int64)[row_of]
    if keep.all():
        return sub
    lengths = np.bincount(row_of[keep], minlength=sub.shape[0])
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(sub.indptr.dtype)
    return sp.csr_matrix((sub.data[keep], sub.indices[keep], indptr), shape=sub.shape)


def usable_anchors(
    graph: Any, anchors: np.ndarray, exclude: np.ndarray | None, where: str, stacklevel: int = 3
) -> np.ndarray:
    """Which anchors still have a neighbour once ``exclude`` is removed from the graph.

    An anchor whose every neighbour is excluded (in the held-out protocol: all of the
    held-out type, hence "homotypic") would hand its focal cells an empty niche, i.e.
    zeros the model never saw in training. Such anchors are reported and left out.

    Parameters
    ----------
    graph
        ``n_obs x n_obs`` connectivities the anchors' niches are rebuilt from.
    anchors
        Anchor positions.
    exclude
        Positions that are nobody's neighbour (None: none).
    where
        How to name the graph in messages, e.g. ``"adata.obsp['spatial_connectivities']"``.
    stacklevel
        Passed to ``warnings.warn``: which caller the warning points at.

    Returns
    -------
    numpy.ndarray
        Boolean mask over ``anchors``.

    Raises
    ------
    ValueError
        If no anchor is given, or none has a neighbour left.
    """
    anchors = np.asarray(anchors, dtype=np.int64)
    if anchors.size == 0:
        raise ValueError("Anchor mode needs at least one anchor; neighbour_indices is empty.")
    degree = np.asarray(masked_rows(graph, anchors, exclude).sum(axis=1), dtype=np.float64).ravel()
    kept = degree > 0
    if not kept.any():
        raise ValueError(
            f"All anchors are homotypic: none of the {anchors.size} anchors has a neighbour "
            f"left in {where} once the excluded cells are removed, so no niche can be rebuilt. "
            "Choose anchors elsewhere in the tissue or exclude fewer cells."
        )
    if not kept.all():
        warnings.warn(
            f"{int((~kept).sum())} of {anchors.size} anchors are homotypic: they have no "
            f"neighbour left in {where} once the excluded cells are removed, and are never drawn.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return kept


def anchor_niche_features(
    counts: Any,
    graph: Any,
    anchors: np.ndarray,
    focal: np.ndarray,
    record: Mapping[str, Any],
    exclude: np.ndarray | None = None,
    codes: np.ndarray | None = None,
) -> np.ndarray:
    """Niche features of focal cells that inherit the neighbourhood of an anchor cell.

    Row ``i`` is ``D^-1 W X`` over the anchor's neighbours in ``graph`` (its kernel
    weights), leaving out focal cell ``i`` should it be one of them and every cell in
    ``exclude``, so that held-out cells never enter a prediction made for them.

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
    exclude
        Positions of cells removed from every anchor's neighbourhood (None: none).
    codes
        Every cell's category code when the record has a composition block.

    Returns
    -------
    numpy.ndarray
        Dense float32 ``(n_focal, n_features)``. A row whose neighbourhood is
        left empty is zeros, with a :class:`UserWarning` saying how many.
    """
    W = masked_rows(graph, anchors, exclude, drop=focal)
    empty = int((np.diff(W.indptr) == 0).sum())
    if empty:
        warnings.warn(
            f"{empty} focal cell(s) got an empty niche: their anchor's only neighbours left "
            "were the focal cell itself or excluded cells. Their niche features are zeros.",
            UserWarning,
            stacklevel=2,
        )
    uniq, inv = np.unique(W.indices, return_inverse=True)
    if uniq.size == 0:
        return np.zeros((len(anchors), n_niche_features(record)), dtype=np.float32)
    Wc = sp.csr_matrix((W.data.astype(np.float32), inv, W.indptr), shape=(len(anchors), uniq.size))
    Xrep = with_composition(expression_representation(_rows(counts, uniq), record), record, codes, uniq)
    return aggregate_neighbours(Wc, Xrep)


def default_anchor_graph(adata: Any, record: Mapping[str, Any]) -> str:
    """The graph anchors' neighbourhoods come from when none is named: the unmasked graph kept
    beside a held-out training graph, else the graph the niche features were computed on."""
    if OBSP.UNMASKED in adata.obsp:
        return OBSP.UNMASKED
    return str(record.get("connectivity_key") or OBSP.CONNECTIVITIES)


def draw_anchors(
    adata: Any,
    focal: np.ndarray,
    pool: np.ndarray,
    rng: np.random.Generator,
    connectivity_key: str,
    exclude: np.ndarray | None,
    stacklevel: int = 5,
) -> tuple[Any, np.ndarray]:
    """The anchor graph ``adata.obsp[connectivity_key]`` and one anchor per focal cell.

    Anchors left without a neighbour once ``exclude`` is removed are dropped from the pool
    (with a warning) before the draw; with every anchor usable the draw is exactly as from
    ``pool``.
    """
    if connectivity_key not in adata.obsp:
        raise ValueError(
            f"Anchor mode (precomputed=True) needs the unmasked graph in "
            f"adata.obsp[{connectivity_key!r}], which is missing; build it with "
            "spatial_neighbors(..., inplace=False) or pass connectivity_key=..."
        )
    graph = adata.obsp[connectivity_key]
    kept = usable_anchors(graph, pool, exclude, f"adata.obsp[{connectivity_key!r}]", stacklevel=stacklevel)
    return graph, sample_anchors(focal, pool if kept.all() else np.asarray(pool)[kept], rng)


def draw_pooled_donors(
    focal: np.ndarray, pool: np.ndarray, n_neighbours: int, rng: np.random.Generator, exclude: np.ndarray | None
) -> np.ndarray:
    """``(n_focal, k)`` donors from ``pool`` minus ``exclude``, never a focal cell itself."""
    if exclude is not None and exclude.size:
        pool = np.setdiff1d(np.asarray(pool, dtype=np.int64), exclude)
        if pool.size == 0:
            raise ValueError("Every cell of the donor pool (neighbour_indices) is excluded; no donors are left.")
    return sample_donors(focal, pool, n_neighbours, rng)


def _anchor_draw(
    adata: Any,
    counts: Any,
    focal: np.ndarray,
    pool: np.ndarray,
    record: Mapping[str, Any],
    rng: np.random.Generator,
    connectivity_key: str,
    exclude: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    graph, anchors = draw_anchors(adata, focal, pool, rng, connectivity_key, exclude)
    phi = anchor_niche_features(counts, graph, anchors, focal, record, exclude, record_codes(adata, record))
    return phi, anchors


def rewired_neighbourhoods(
    adata: Any,
    focal: np.ndarray,
    pool: np.ndarray,
    rng: np.random.Generator,
    precomputed: bool,
    n_neighbours: int,
    connectivity_key: str,
    exclude: np.ndarray | None = None,
) -> tuple[sp.csr_matrix, np.ndarray]:
    """One draw of new neighbourhoods for ``focal`` cells, for models that read the graph.

    The same draws as :func:`rewired_niche_features` for the same ``rng``: pooled donors, or
    the neighbours of an anchor in ``adata.obsp[connectivity_key]`` minus ``exclude`` and the
    focal cell itself.

    Returns
    -------
    tuple
        ``(n_focal, n_obs)`` CSR whose row ``i`` marks focal cell ``i``'s new neighbours, and
        the draw: donors ``(n_focal, k)`` or anchors ``(n_focal,)``.
    """
    if exclude is not None:
        exclude = check_positions(exclude, adata.n_obs, "exclude")
    n = adata.n_obs
    if precomputed:
        graph, anchors = draw_anchors(adata, focal, pool, rng, connectivity_key, exclude)
        rows = masked_rows(graph, anchors, exclude, drop=focal)
        empty = int((np.diff(rows.indptr) == 0).sum())
        if empty:
            warnings.warn(
                f"{empty} focal cell(s) got an empty neighbourhood: their anchor's only neighbours left "
                "were the focal cell itself or excluded cells.",
                UserWarning,
                stacklevel=3,
            )
        return rows, anchors
    donors = draw_pooled_donors(focal, pool, n_neighbours, rng, exclude)
    n_focal, k = donors.shape
    rows = sp.csr_matrix(
        (np.ones(n_focal * k, dtype=np.float32), donors.ravel(), np.arange(0, n_focal * k + 1, k)), shape=(n_focal, n)
    )
    return rows, donors


def rewired_niche_features(
    adata: Any,
    counts: Any,
    focal: np.ndarray,
    pool: np.ndarray,
    obsm_key: str,
    rng: np.random.Generator,
    precomputed: bool = False,
    n_neighbours: int = 50,
    connectivity_key: str | None = OBSP.UNMASKED,
    exclude: np.ndarray | None = None,
    record: Mapping[str, Any] | None = None,
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
        ``obsp`` key of the unmasked graph (anchor mode); ``None``:
        ``spatial_connectivities_orig`` when present, else the graph the niche features were
        computed on.
    exclude
        Positions of cells that must not shape any rebuilt niche (e.g. the held-out
        cells): in anchor mode they are removed from every anchor's neighbourhood, and
        anchors left without neighbours are dropped from the pool before the draw with a
        :class:`UserWarning`; in pooled mode they are removed from the donor pool. None
        changes nothing.
    record
        How ``counts`` become the niche representation (default: the provenance record of
        ``obsm[obsm_key]``).

    Returns
    -------
    tuple of numpy.ndarray
        ``phi`` ``(n_focal, n_features)`` and the draw: donors ``(n_focal, k)`` or anchors
        ``(n_focal,)``.

    Raises
    ------
    ValueError
        Missing graph or record, positions outside the AnnData, no usable anchor, or a
        donor pool emptied by ``exclude``.
    """
    if record is None:
        record = spatial_features_record(adata, obsm_key)
    if connectivity_key is None:
        connectivity_key = default_anchor_graph(adata, record)
    if exclude is not None:
        exclude = check_positions(exclude, adata.n_obs, "exclude")
    if precomputed:
        return _anchor_draw(adata, counts, focal, pool, record, rng, connectivity_key, exclude)
    donors = draw_pooled_donors(focal, pool, n_neighbours, rng, exclude)
    return pooled_niche_features(counts, donors, record, record_codes(adata, record)), donors
