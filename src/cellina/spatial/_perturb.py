"""Node perturbation: shift the expression of neighbouring (sender) cells, rebuild phi.

Only the perturbed gene columns change their values, and renormalisation is a
per-cell function of each stored value, so the perturbed niche features are built as

``phi_cf = D^-1 W (A + B)``

where ``A`` holds the untouched genes (the source's sparsity pattern, with each value
mapped through a per-row function, e.g. a diagonal rescale) and ``B`` the perturbed
genes, built a few columns at a time. No cells x genes matrix is ever dense, and ``A``
shares its index arrays with the caller's matrix.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.keys import OBSM, OBSP

from ._composition import CATEGORIES_FIELD, has_composition, one_hot, record_codes
from ._features import _expm1_row_sums, _sparse_product_into, aggregate_neighbours
from ._perturb_niche import (
    _check_representation,
    _features_record,
    _neighbor_gene_positions,
    _niche_map,
    _niche_transform,
    _output_positions,
)
from ._perturb_plan import (
    _canonical_csr,
    _common_checks,
    _matrix_as_anndata,
    _Plan,
    _plan,
)
from ._validation import CellinaTypeError, check_bool, check_connectivities

__all__ = ["_node_perturbation", "make_neighbor_perturbation", "make_perturbed_expression"]

# Entries per dense block of perturbed columns (cells x a few genes): 8 MiB in float64,
# and a handful of such temporaries are alive at once.
_BLOCK_ENTRIES = 1 << 20
# Sender cells per slab of perturbed values in make_neighbor_perturbation.
_SENDER_SLAB = 16384


def _shift(old: np.ndarray, shift: np.ndarray, add_shift: bool, base: float) -> np.ndarray:
    """Perturbed values of a dense block; entries with a zero shift are returned unchanged."""
    if add_shift:
        new = np.maximum(old + shift, 0.0)
    else:
        new = np.maximum((old + 1.0) * np.power(float(base), shift) - 1.0, 0.0)
    return np.where(shift != 0.0, new, old)


def _map_values(values: np.ndarray, scale: np.ndarray, kind: str) -> np.ndarray:
    """Per-row value map; ``scale`` broadcasts against ``values``.

    ``"scale"``: s*x; ``"log1p_scale"``: log1p(s*x); ``"log_rescale"``: log1p(s*expm1(x)),
    the identity where s == 1 so untouched log values stay bit-identical.
    """
    values = values.astype(np.float64, copy=False)
    if kind == "scale":
        return values * scale
    if kind == "log1p_scale":
        return np.log1p(values * scale)
    out = np.log1p(np.expm1(values) * scale)
    return np.where(np.broadcast_to(scale, values.shape) == 1.0, values, out)


def _u_blocks(plan: _Plan, add_shift: bool, base: float, start: int = 0, stop: int | None = None):
    """Yield ``(a, b, old, new)``: dense values of the perturbed columns for cells a..b."""
    stop = plan.source.shape[0] if stop is None else stop
    sub = plan.source[start:stop][:, plan.columns].tocsr()
    step = max(1, _BLOCK_ENTRIES // max(1, plan.columns.size))
    for a in range(start, stop, step):
        b = min(a + step, stop)
        old = sub[a - start : b - start].toarray().astype(np.float64, copy=False)
        shift = plan.table[plan.row_group[a:b]]
        yield a, b, old, _shift(old, shift, add_shift, base)


def _stack_columns(
    plan: _Plan,
    add_shift: bool,
    base: float,
    scale: np.ndarray,
    kind: str,
    keep: np.ndarray,
    targets: np.ndarray,
    n_cols: int,
    start: int = 0,
    stop: int | None = None,
) -> sp.csr_matrix:
    """Mapped perturbed values of the columns ``U[keep]`` placed at ``targets``, as CSR.

    Rows are the cells ``start..stop``; built a block of cells at a time, so only the
    non-zeros are ever held in full.
    """
    stop = plan.source.shape[0] if stop is None else stop
    blocks = []
    for a, b, _, new in _u_blocks(plan, add_shift, base, start, stop):
        mapped = _map_values(new[:, keep], scale[a:b, None], kind).astype(np.float32)
        blocks.append(sp.csr_matrix(mapped))
    stacked = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, int(keep.sum())))
    del blocks
    return sp.csr_matrix(
        (stacked.data, targets[stacked.indices].astype(stacked.indices.dtype), stacked.indptr),
        shape=(stop - start, n_cols),
    )


def _row_totals(
    plan: _Plan, add_shift: bool, base: float, log_space: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's total before and after the shift, in the space the shift acted on.

    Counts: the library size. Log-normalised values: the sum of ``expm1`` over all genes,
    i.e. the normalised library size (``target_sum`` after normalize_total + log1p).
    ``log_space=False`` forces plain row sums whatever the shift mode (the published
    ``_node_perturbation``'s notion of a total).
    """
    log_space = add_shift if log_space is None else log_space
    src = plan.source
    if log_space:
        old_total = _expm1_row_sums(src)
    else:
        old_total = np.asarray(src.sum(axis=1), dtype=np.float64).ravel()
    new_total = old_total.copy()
    for a, b, old, new in _u_blocks(plan, add_shift, base):
        if log_space:
            new_total[a:b] += (np.expm1(new) - np.expm1(old)).sum(axis=1)
        else:
            new_total[a:b] += (new - old).sum(axis=1)
    np.maximum(new_total, 0.0, out=new_total)
    return old_total, new_total


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.ones_like(num), where=(num > 0) & (den > 0))


def _mapped_csr(src: sp.csr_matrix, scale: np.ndarray, kind: str, drop_cols: np.ndarray) -> sp.csr_matrix:
    """``src`` with every value mapped by its row's ``scale``, and ``drop_cols`` zeroed.

    The result shares ``indices``/``indptr`` with ``src``; only a new data array is made.
    """
    data = np.empty(src.data.size, dtype=np.float32)
    lengths = np.diff(src.indptr)
    step = max(1, _BLOCK_ENTRIES // max(1, int(lengths.mean()) if lengths.size else 1))
    for a in range(0, src.shape[0], step):
        b = min(a + step, src.shape[0])
        lo, hi = src.indptr[a], src.indptr[b]
        s = np.repeat(scale[a:b], lengths[a:b])
        data[lo:hi] = _map_values(src.data[lo:hi], s, kind)
    if drop_cols.size:
        flag = np.zeros(src.shape[1], dtype=bool)
        flag[drop_cols] = True
        data[flag[src.indices]] = 0.0
    return sp.csr_matrix((data, src.indices, src.indptr), shape=src.shape, copy=False)


def _perturbed_matrix(plan: _Plan, add_shift: bool, base: float, scale: np.ndarray, kind: str) -> sp.csr_matrix:
    """The whole perturbed source matrix, every row mapped by its ``scale`` (float32 CSR)."""
    src = plan.source
    A = _mapped_csr(src, scale, kind, plan.columns)
    B = _stack_columns(
        plan,
        add_shift,
        base,
        scale,
        kind,
        np.ones(plan.columns.size, dtype=bool),
        plan.columns,
        src.shape[1],
    )
    out = (A + B).tocsr().astype(np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def _perturbed_niche(
    plan: _Plan,
    W: sp.csr_matrix,
    positions: np.ndarray,
    add_shift: bool,
    base: float,
    scale: np.ndarray,
    kind: str,
) -> np.ndarray:
    """``D^-1 W (A + B)`` over the output genes, never holding B for all cells at once."""
    src = plan.source
    all_genes = positions.size == src.shape[1] and np.array_equal(positions, np.arange(src.shape[1]))
    sel = src if all_genes else src[:, positions].tocsr()
    if not sel.has_canonical_format:
        sel.sum_duplicates()
    # positions of perturbed genes among the output genes
    out_of = pd.Index(positions).get_indexer(plan.columns)
    in_out = out_of >= 0
    A = _mapped_csr(sel, scale, kind, out_of[in_out])

    W32 = W.astype(np.float32, copy=False)
    degree = np.asarray(W32.sum(axis=1), dtype=np.float64).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    phi = np.zeros((W.shape[0], sel.shape[1]), dtype=np.float32)
    _sparse_product_into(W32, A, phi)
    del A
    # The perturbed columns are added one slab of sender cells at a time, through the
    # matching columns of W, so they never exist for all cells at once.
    n = W.shape[0]
    for a in range(0, n, _SENDER_SLAB):
        b = min(a + _SENDER_SLAB, n)
        B = _stack_columns(plan, add_shift, base, scale, kind, in_out, out_of[in_out], sel.shape[1], a, b)
        _sparse_product_into(W32[:, a:b].tocsr(), B, phi)
    phi *= inv.astype(np.float32)[:, None]
    return phi


def make_neighbor_perturbation(
    adata: Any,
    perturbations: Any,
    groupby: str | None = None,
    connectivity_key: str = OBSP.CONNECTIVITIES,
    layer: str | None = None,
    obsm_key_out: str = OBSM.PERTURBED_NICHE,
    base: float = np.e,
    renormalize: bool = True,
    add_shift: bool = False,
    perturb_fraction: float = 1.0,
    random_state: Any = 0,
    *,
    features_key: str = OBSM.NICHE_FEATURES,
    layer_key: str | None = None,
    neighbor_genes: Any = None,
) -> None:
    """Shift the expression of sender cells and rebuild the niche features.

    Every cell keeps its neighbours; the perturbed senders' expression of the given genes
    is shifted, and ``phi_cf = D^-1 W X_cf`` is written to ``adata.obsm[obsm_key_out]``,
    so a model can decode the expression each cell would have among perturbed neighbours.

    Parameters
    ----------
    adata
        AnnData with a graph in ``obsp[connectivity_key]``.
    perturbations
        ``{gene: value}`` or a Series (all cells are senders), or with ``groupby``
        ``{group: {gene: value} | Series}`` (or a groups x genes DataFrame, NaN = no
        shift): each group's shifts apply only to the senders of that group. Values are
        log-fold changes in ``base``.
    groupby
        Column of ``adata.obs`` holding the groups (e.g. cell types).
    connectivity_key
        Graph in ``adata.obsp`` used for the aggregation.
    layer
        Matrix that is shifted (None: ``adata.X``): log-normalised values with
        ``add_shift=True``, raw counts with ``add_shift=False``.
    obsm_key_out
        Output key in ``adata.obsm`` (dense float32 cells x the niche-feature genes, then
        the record's composition block, unchanged by a gene shift, when it has one).
    base
        Base of the log-fold changes.
    renormalize
        Rescale each perturbed cell back to its original total, so shifting some genes is
        compensated by all others. For counts the total is the library size (a per-cell
        factor). For log-normalised values it is the normalised library size
        ``sum(expm1(x))`` (``target_sum`` after normalize_total + log1p), restored by
        ``x -> log1p(r * expm1(x))``.
    add_shift
        True: additive shift on log-normalised values, ``x + value * ln(base)`` clipped
        at 0 (the published tutorial's mode). False: multiplicative shift on counts,
        ``(x + 1) * base**value - 1`` clipped at 0.
    perturb_fraction
        Fraction of each group's senders that is perturbed, drawn with ``random_state``.
    random_state
        Seed (or numpy Generator) for ``perturb_fraction``.
    features_key
        Niche features whose record (``uns["cellina"]["spatial_features"][features_key]``,
        written by :func:`compute_spatial_features`) fixes the genes of the output and,
        for counts, the transform into the niche representation. Without a record all
        genes are used and counts are transformed with log1p(normalize_total(1e4)).
    layer_key
        If given, the perturbed sender matrix itself (in the space of ``layer``, after
        ``renormalize``, as :func:`make_perturbed_expression` writes it) is also stored in
        ``adata.layers[layer_key]``, as the published Cellina does. None writes no layer.
    neighbor_genes
        Genes of the output features (the published name); default: the genes of the
        niche-feature record, else all genes. Genes not in ``adata.var_names`` are an error.

    Notes
    -----
    The shift parameters and the perturbed cells are recorded in
    ``adata.uns["cellina"]["neighbor_perturbation"][obsm_key_out]``. Genes not in
    ``adata.var_names`` are ignored with a warning naming them; if none is known, an
    error is raised. The caller's matrices are not modified.

    Raises
    ------
    ValueError
        Unknown groups, no known gene, non-finite shifts, missing keys, bad parameters.
    """
    renormalize, add_shift = _common_checks(adata, renormalize, add_shift, obsm_key_out, "obsm_key_out")
    if layer_key is not None and (not isinstance(layer_key, str) or not layer_key):
        raise CellinaTypeError(f"`layer_key` must be a non-empty string or None, got {layer_key!r}.")
    W = check_connectivities(adata, connectivity_key)
    record = _features_record(adata, features_key)
    plan = _plan(adata, perturbations, groupby, layer, base, add_shift, perturb_fraction, random_state)
    _check_representation(plan, add_shift, record)
    positions = _output_positions(adata, record, features_key)
    if neighbor_genes is not None:
        positions = _neighbor_gene_positions(adata, neighbor_genes)
    if positions.size == 0:
        raise ValueError(
            f"the niche features {features_key!r} hold no genes (the neighbours' composition alone), "
            "so no gene shift can change them; recompute them with genes to perturb senders' expression."
        )
    transform, target_sum = _niche_transform(add_shift, record, features_key)

    old_total, new_total = _row_totals(plan, add_shift, base)
    r = _ratio(old_total, new_total) if renormalize else np.ones_like(old_total)
    kind, scale = _niche_map(transform, target_sum, add_shift, r, new_total)
    phi = _perturbed_niche(plan, W, positions, add_shift, base, scale, kind)
    if neighbor_genes is None and has_composition(record):
        # a gene shift moves no cell to another category: the composition block stays as it is
        shares = aggregate_neighbours(W, one_hot(record_codes(adata, record), len(record[CATEGORIES_FIELD])))
        phi = np.hstack([phi, shares]).astype(np.float32, copy=False)

    adata.obsm[obsm_key_out] = phi
    if layer_key is not None:
        adata.layers[layer_key] = _perturbed_matrix(plan, add_shift, base, r, "log_rescale" if add_shift else "scale")
    record = _shift_record(plan, groupby, layer, base, renormalize, add_shift, perturb_fraction, random_state)
    record.update(
        connectivity_key=connectivity_key,
        layer_key=layer_key,
        features_key=features_key,
        transform=transform,
        target_sum=target_sum,
        genes=[str(g) for g in adata.var_names[positions]],
    )
    adata.uns.setdefault("cellina", {}).setdefault("neighbor_perturbation", {})[obsm_key_out] = record


def _shift_record(plan, groupby, layer, base, renormalize, add_shift, perturb_fraction, random_state) -> dict:
    """Provenance of a sender shift, shared by the niche-feature and the expression outputs."""
    return {
        "perturbations": plan.record,
        "groupby": groupby,
        "layer": layer,
        "base": float(base),
        "renormalize": renormalize,
        "add_shift": add_shift,
        "perturb_fraction": float(perturb_fraction),
        "random_state": random_state if isinstance(random_state, numbers.Integral) else None,
        "perturbed_cells": plan.perturbed_cells,
    }


def make_perturbed_expression(
    adata: Any,
    perturbations: Any,
    groupby: str | None = None,
    layer: str | None = None,
    layer_key: str = "counts_cf",
    base: float = np.e,
    renormalize: bool = True,
    add_shift: bool = False,
    perturb_fraction: float = 1.0,
    random_state: Any = 0,
) -> None:
    """Write the perturbed expression matrix of the sender cells to a layer.

    The same shift as :func:`make_neighbor_perturbation` (same arguments, same meaning),
    but instead of aggregated niche features the whole perturbed matrix, in the space
    of the source (counts or log-normalised values), is stored as a sparse float32 CSR
    matrix in ``adata.layers[layer_key]``, for graph encoders that aggregate neighbours
    themselves. Provenance goes to
    ``adata.uns["cellina"]["perturbed_expression"][layer_key]``.

    Parameters
    ----------
    adata, perturbations, groupby, layer, base, renormalize, add_shift, perturb_fraction, random_state
        See :func:`make_neighbor_perturbation`.
    layer_key
        Output layer.
    """
    renormalize, add_shift = _common_checks(adata, renormalize, add_shift, layer_key, "layer_key")
    plan = _plan(adata, perturbations, groupby, layer, base, add_shift, perturb_fraction, random_state)
    _check_representation(plan, add_shift, None)
    old_total, new_total = _row_totals(plan, add_shift, base)
    r = _ratio(old_total, new_total) if renormalize else np.ones_like(old_total)
    kind = "log_rescale" if add_shift else "scale"
    adata.layers[layer_key] = _perturbed_matrix(plan, add_shift, base, r, kind)
    record = _shift_record(plan, groupby, layer, base, renormalize, add_shift, perturb_fraction, random_state)
    adata.uns.setdefault("cellina", {}).setdefault("perturbed_expression", {})[layer_key] = record


def _node_perturbation(
    X: Any,
    var_idx: Mapping[str, int],
    perturbations: Any,
    groupby: str | None = None,
    labels: Any = None,
    base: float = np.e,
    add_shift: bool = False,
    renormalize: bool = False,
    perturb_fraction: float = 1.0,
    random_state: Any = 0,
) -> sp.csr_matrix:
    """Shift the expression of a bare cells x genes matrix (the published Cellina's helper).

    The same shift as :func:`make_perturbed_expression`, on a matrix instead of an
    AnnData: ``add_shift=True`` adds the value (in log-``base`` units) to the entry,
    ``add_shift=False`` maps ``x -> (x + 1) * base**value - 1``; both clip at 0.

    Parameters
    ----------
    X
        Cells x genes matrix (dense or sparse); never modified.
    var_idx
        ``{gene name: column position}`` naming the columns of ``X``.
    perturbations, groupby, base, add_shift, perturb_fraction, random_state
        As in :func:`make_neighbor_perturbation`; ``perturb_fraction`` may also be 0
        (nothing is perturbed).
    labels
        With ``groupby``, the group of every row of ``X``.
    renormalize
        Rescale every perturbed row back to its plain row sum, in both shift modes (as
        published; :func:`make_neighbor_perturbation` restores log-normalised rows in
        ``expm1`` space instead).

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 perturbed matrix.
    """
    if isinstance(perturb_fraction, (bool, np.bool_)) or not isinstance(perturb_fraction, numbers.Real):
        raise CellinaTypeError(f"`perturb_fraction` must be a number in [0, 1], got {perturb_fraction!r}.")
    if not 0.0 <= float(perturb_fraction) <= 1.0:
        raise ValueError(f"`perturb_fraction` must be in [0, 1], got {perturb_fraction!r}.")
    renormalize = check_bool("renormalize", renormalize)
    add_shift = check_bool("add_shift", add_shift)
    source = _canonical_csr(X, "X")
    if float(perturb_fraction) == 0.0:
        return source.astype(np.float32, copy=True)
    proxy = _matrix_as_anndata(source, var_idx, groupby, labels)
    plan = _plan(proxy, perturbations, groupby, None, base, add_shift, perturb_fraction, random_state)
    old_total, new_total = _row_totals(plan, add_shift, base, log_space=False)
    r = _ratio(old_total, new_total) if renormalize else np.ones_like(old_total)
    return _perturbed_matrix(plan, add_shift, base, r, "scale")
