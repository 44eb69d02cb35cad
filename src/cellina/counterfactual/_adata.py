"""A counterfactual AnnData of focal cells with rebuilt niche features (published API).

:func:`make_counterfactual_adata` is the published Cellina's function of the same name,
with its arguments and defaults. Unlike the model's own counterfactual path (which
rebuilds niches from counts through the features' provenance record), it aggregates the
expression matrix it is given as it is, exactly as the published package does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.keys import OBSM, OBSP
from cellina.spatial import CellinaKeyError, aggregate_neighbours, check_positions, representation_matrix
from cellina.spatial._composition import CATEGORIES_FIELD, has_composition, record_codes, with_composition
from cellina.spatial._validation import check_connectivities, check_nonempty

from ._donors import _unique_pool, sample_donors
from ._edge import masked_rows, usable_anchors


def _donor_rows(
    focal: np.ndarray, pool: np.ndarray, n_neighbors: int | None, rng: np.random.Generator, n_obs: int
) -> sp.csr_matrix:
    """``(n_focal, n_obs)`` weights 1 on each focal cell's donors, never the cell itself.

    ``n_neighbors`` distinct donors are drawn per focal cell; ``None`` takes the whole pool
    (no draw).
    """
    if n_neighbors is None:
        pool = _unique_pool(pool)
        rows = np.repeat(np.arange(focal.size), pool.size)
        cols = np.tile(pool, focal.size)
        keep = cols != focal[rows]
        rows, cols = rows[keep], cols[keep]
        if focal.size and np.bincount(rows, minlength=focal.size).min() == 0:
            raise ValueError(
                "neighbour_indices holds only the focal cell itself for some focal cells; "
                "a focal cell can never be its own donor."
            )
    else:
        donors = sample_donors(focal, pool, n_neighbors, rng)
        rows = np.repeat(np.arange(focal.size), donors.shape[1])
        cols = donors.ravel()
    ones = np.ones(rows.size, dtype=np.float32)
    return sp.csr_matrix((ones, (rows, cols)), shape=(focal.size, n_obs))


def _rewired_graph(graph: sp.csr_matrix, focal: np.ndarray, donor_rows: sp.csr_matrix) -> sp.csr_matrix:
    """``graph`` with the focal cells' rows replaced by their donor rows."""
    coo = graph.tocoo()
    is_focal = np.zeros(graph.shape[0], dtype=bool)
    is_focal[focal] = True
    keep = ~is_focal[coo.row]
    donors = donor_rows.tocoo()
    rows = np.concatenate([coo.row[keep], focal[donors.row]])
    cols = np.concatenate([coo.col[keep], donors.col])
    data = np.concatenate([coo.data[keep].astype(np.float32), donors.data])
    out = sp.csr_matrix((data, (rows, cols)), shape=graph.shape)
    out.sum_duplicates()
    return out


def _anchor_features(
    Xrep: sp.csr_matrix,
    graph: sp.csr_matrix,
    anchors: np.ndarray,
    n_focal: int,
    exclude: np.ndarray | None,
    random_state: Any,
    where: str,
) -> sp.csr_matrix:
    """One anchor per focal cell; each anchor's niche recomputed without ``exclude``."""
    kept = usable_anchors(graph, anchors, exclude, where, stacklevel=4)
    anchors = anchors[kept]
    # The draw is over the kept anchors in the order given, as published, so a seed
    # reproduces the published package's draw.
    idx = np.random.default_rng(random_state).integers(0, anchors.size, size=n_focal)
    phi = aggregate_neighbours(masked_rows(graph, anchors, exclude), Xrep)
    return sp.csr_matrix(phi[idx], dtype=np.float32)


def _composition_record(adata: Any, spatial_column: str) -> dict | None:
    """The provenance record of ``obsm[spatial_column]`` when its features end in a composition block."""
    record = adata.uns.get("cellina", {}).get("spatial_features", {}).get(spatial_column)
    return dict(record) if has_composition(record) else None


def _check_anchor_width(adata: Any, spatial_column: str, composition: dict | None) -> None:
    """Anchor mode rebuilds features over every gene; a narrower stored matrix cannot match."""
    if spatial_column not in adata.obsm:
        raise CellinaKeyError(
            f"spatial_column={spatial_column!r} is not in adata.obsm (available: {sorted(adata.obsm.keys())})."
        )
    width = adata.obsm[spatial_column].shape[1]
    if composition is not None:
        width -= len(composition[CATEGORIES_FIELD])
    if width != adata.n_vars:
        raise ValueError(
            f"adata.obsm[{spatial_column!r}] has {width} columns, but anchor mode rebuilds "
            f"each anchor's niche over all {adata.n_vars} genes. Features computed on a gene "
            "subset (neighbor_genes=...) or a reduced representation cannot be reproduced; "
            "recompute them over all genes, or use anchor_donors=False."
        )


def _checked_cells(
    adata: Any, indices: Any, neighbour_indices: Any, exclude_indices: Any, anchor_donors: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Focal, anchor-or-donor and excluded positions, checked against the AnnData."""
    focal = check_positions(indices, adata.n_obs, "indices")
    others = check_positions(neighbour_indices, adata.n_obs, "neighbour_indices")
    if exclude_indices is None:
        return focal, others, None
    if not anchor_donors:
        # silently ignoring it would leave the user believing the cells were excluded
        raise ValueError(
            "exclude_indices is only used when anchor_donors=True; in pooled mode leave "
            "the excluded cells out of neighbour_indices instead."
        )
    return focal, others, check_positions(exclude_indices, adata.n_obs, "exclude_indices")


def make_counterfactual_adata(
    adata: Any,
    indices: Any,
    neighbour_indices: Any,
    spatial_column: str,
    anchor_donors: bool = True,
    n_neighbors: int | None = 50,
    random_state: Any = 0,
    layer: str | None = None,
    connectivity_key: str = OBSP.CONNECTIVITIES,
    exclude_indices: Any = None,
    cf_conn_key: str = "spatial_connectivities_cf",
    cf_obsm_key: str = OBSM.PERTURBED_NICHE,
) -> Any:
    """An AnnData of the focal cells whose niche features come from elsewhere in the tissue.

    Parameters
    ----------
    adata
        Source AnnData with a graph in ``obsp[connectivity_key]``.
    indices
        Positions of the focal cells (the rows of the result, in this order).
    neighbour_indices
        Anchor mode: the anchor cells. Pooled mode: the donor pool.
    spatial_column
        ``obsm`` key of the niche features; replaced in the result.
    anchor_donors
        True: each focal cell draws one anchor, as
        ``np.random.default_rng(random_state).integers(0, n_anchors, n_focal)`` over the
        anchors that keep a neighbour (the others are dropped with a
        :class:`UserWarning`), and takes its niche, recomputed from
        ``obsp[connectivity_key]`` without ``exclude_indices``. As published, the focal
        cell is not removed from its anchor's niche: exclude it if it may neighbour one.
        The source is not modified. False: each focal cell's neighbours become donors
        from the pool (weight 1 each); the rewired graph (other rows unchanged) is
        written to the source's ``obsp[cf_conn_key]``.
    n_neighbors
        Pooled mode: donors drawn per focal cell without replacement, never the cell
        itself (50, as published; clipped with a warning to the pool); None takes the whole
        pool.
    random_state
        Seed (or numpy Generator) of the draw.
    layer
        Expression averaged as it is (None: ``adata.X``, with a warning when it looks like
        raw counts); the representation ``obsm[spatial_column]`` was built from.
    connectivity_key
        ``obsp`` key of the graph (in the held-out protocol: the unmasked one).
    exclude_indices
        Anchor mode only: 1-D integer positions of cells that are nobody's neighbour
        (e.g. the held-out cells), so their expression never reaches the result.
    cf_conn_key, cf_obsm_key
        Key of the rewired graph (pooled mode); second ``obsm`` key of the result.

    Features computed with a ``composition_key`` get their category shares rebuilt from the
    same anchors or donors (``adata.obs`` must still hold the column).

    Returns
    -------
    anndata.AnnData
        Copy of ``adata[indices]`` whose ``obsm[spatial_column]`` and
        ``obsm[cf_obsm_key]`` hold the counterfactual features (float32 CSR).

    Raises
    ------
    ValueError
        Bad positions, no usable anchor, ``exclude_indices`` in pooled mode, stored
        features narrower than the genes (anchor mode); KeyError for a missing graph.
    """
    check_nonempty(adata)
    focal, others, exclude = _checked_cells(adata, indices, neighbour_indices, exclude_indices, anchor_donors)
    graph = check_connectivities(adata, connectivity_key)
    composition = _composition_record(adata, spatial_column)
    if anchor_donors:
        _check_anchor_width(adata, spatial_column, composition)
    Xrep = representation_matrix(adata, layer, stacklevel=3)
    if composition is not None:
        Xrep = with_composition(Xrep, composition, record_codes(adata, composition))
    if anchor_donors:
        where = f"adata.obsp[{connectivity_key!r}]"
        phi = _anchor_features(Xrep, graph, others, focal.size, exclude, random_state, where)
    else:
        rows = _donor_rows(focal, others, n_neighbors, np.random.default_rng(random_state), adata.n_obs)
        phi = sp.csr_matrix(aggregate_neighbours(rows, Xrep), dtype=np.float32)
        adata.obsp[cf_conn_key] = _rewired_graph(graph, focal, rows)
    out = adata[focal].copy()
    out.obsm[spatial_column], out.obsm[cf_obsm_key] = phi, phi.copy()
    return out
