"""Niche features phi = D^-1 W X and the expression representation they are built from."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.keys import OBSM, OBSP

from ._composition import CATEGORIES_FIELD, KEY_FIELD, composition_codes, with_composition
from ._validation import (
    CellinaKeyError,
    CellinaTypeError,
    _show,
    check_connectivities,
    check_nonempty,
    get_matrix,
)

__all__ = [
    "TRANSFORMS",
    "aggregate_neighbours",
    "compute_spatial_features",
    "detect_representation",
    "expression_representation",
    "looks_like_raw_counts",
    "representation_matrix",
    "warn_raw_counts",
]

TRANSFORMS = ("log1p_normalize_total", "log1p", "identity")

# Relative spread of expm1 row totals tolerated before we stop calling the source
# log1p(normalize_total(...)); float32 storage alone gives ~1e-6.
_TOTAL_RTOL = 1e-3
# Rows per block when a pass over a large matrix would otherwise copy it whole.
_BLOCK_ENTRIES = 1 << 22


def _as_csr(matrix: Any, name: str) -> sp.csr_matrix:
    if sp.issparse(matrix):
        return matrix.tocsr()
    arr = np.asarray(matrix)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise CellinaTypeError(f"{name} must be a 2-D numeric matrix, got {arr.dtype} {arr.shape}.")
    return sp.csr_matrix(arr)


def _row_blocks(n_rows: int, n_cols: int) -> list[tuple[int, int]]:
    step = max(1, _BLOCK_ENTRIES // max(1, n_cols))
    return [(a, min(a + step, n_rows)) for a in range(0, n_rows, step)]


def _values(matrix: Any) -> np.ndarray:
    return matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()


def _is_integral(values: np.ndarray) -> bool:
    return bool(np.all(values == np.round(values)))


def _expm1_row_sums(matrix: Any) -> np.ndarray:
    n_rows, n_cols = matrix.shape
    out = np.zeros(n_rows, dtype=np.float64)
    is_sparse = sp.issparse(matrix)
    csr = matrix.tocsr() if is_sparse else None
    for a, b in _row_blocks(n_rows, n_cols):
        if is_sparse:
            block = csr[a:b]
            # float64 first: expm1 of a float32 value above ~88 (raw counts) overflows
            block = block.astype(np.float64).expm1()
            out[a:b] = np.asarray(block.sum(axis=1), dtype=np.float64).ravel()
        else:
            out[a:b] = np.expm1(np.asarray(matrix[a:b], dtype=np.float64)).sum(axis=1)
    return out


def looks_like_raw_counts(matrix: Any) -> bool:
    """True when every stored value is a non-negative integer (the mark of raw counts)."""
    values = _values(matrix)
    return bool(values.size == 0 or values.min() >= 0) and _is_integral(values)


def warn_raw_counts(name: str, consequence: str = "", stacklevel: int = 3) -> None:
    """Warn that niche features are about to average raw counts.

    The message is lower case on purpose: ported code matches it with the published
    package's ``pytest.warns(match="raw counts")``.
    """
    warnings.warn(
        f"{name} looks like raw counts (non-negative integers). Niche features should "
        "average log-normalised expression: run sc.pp.normalize_total(adata, "
        "target_sum=1e4) and sc.pp.log1p(adata) first (or pass layer= naming a "
        f"log-normalised layer). {consequence}".rstrip(),
        UserWarning,
        stacklevel=stacklevel,
    )


def detect_representation(matrix: Any, name: str = "adata.X") -> tuple[str, float | None]:
    """Guess how an expression matrix was produced from counts.

    Parameters
    ----------
    matrix
        Cells x genes matrix (sparse or dense).
    name
        How to name the matrix in warnings and errors (e.g. ``"adata.layers['lognorm']"``).

    Returns
    -------
    transform, target_sum
        ``("identity", None)`` for integer-valued non-negative data (raw counts: warns),
        ``("log1p_normalize_total", total)`` when ``expm1`` of every non-empty row sums to
        the same total, ``("log1p", None)`` otherwise. Data with negative values (e.g.
        scaled) gives ``("identity", None)`` with a warning that it cannot be rebuilt
        from counts.
    """
    values = _values(matrix)
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if values.size and values.min() < 0:
        warnings.warn(
            f"{name} has negative values (scaled data?). Niche features are built from it "
            "as it is, but counterfactuals rebuild them from counts and cannot reproduce this "
            "representation. Use log1p(normalize_total(counts)) instead.",
            UserWarning,
            stacklevel=3,
        )
        return "identity", None
    if _is_integral(values):
        warn_raw_counts(name, "Recording transform 'identity'.", stacklevel=4)
        return "identity", None
    totals = _expm1_row_sums(matrix)
    totals = totals[totals > 0]
    if totals.size:
        median = float(np.median(totals))
        spread = float(np.max(np.abs(totals - median))) / median
        if spread <= _TOTAL_RTOL:
            return "log1p_normalize_total", float(f"{median:.6g}")
    expm1_values = np.expm1(values.astype(np.float64))
    if not np.allclose(expm1_values, np.round(expm1_values), rtol=_TOTAL_RTOL, atol=1e-4):
        warnings.warn(
            f"{name} is neither raw counts nor log1p of counts with a constant total per cell "
            "(normalize_total). Recording transform 'log1p': counterfactual niche features "
            "rebuilt from counts will only approximate the ones computed here.",
            UserWarning,
            stacklevel=3,
        )
    return "log1p", None


def _record_genes(record: Mapping[str, Any]) -> list[str]:
    try:
        genes = record["genes"]
        transform = record["transform"]
    except (KeyError, TypeError) as err:
        raise ValueError(
            "The spatial-features record must hold 'genes' and 'transform' "
            f"(as written by compute_spatial_features); missing {err}."
        ) from None
    if transform not in TRANSFORMS:
        raise ValueError(f"Unknown transform {transform!r} in the record; expected {TRANSFORMS}.")
    return [str(g) for g in genes]


def expression_representation(
    source: Any,
    record: Mapping[str, Any],
    layer: str | None = None,
) -> sp.csr_matrix:
    """Turn counts into the representation niche features were built from.

    Parameters
    ----------
    source
        Raw counts: an AnnData (counts read from ``layer``, genes matched by name) or a
        cells x genes matrix whose columns are all genes of the AnnData the record was
        made on, in the same order (normalisation totals run over all of them).
    record
        ``adata.uns["cellina"]["spatial_features"][obsm_key]`` as written by
        :func:`compute_spatial_features`.
    layer
        With an AnnData ``source``, the layer holding counts (None: ``adata.X``).

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 cells x ``record["genes"]``: ``log1p(target_sum * x / sum(x))`` for
        ``"log1p_normalize_total"`` (cells with zero total stay zero), ``log1p(x)`` for
        ``"log1p"``, ``x`` for ``"identity"``.
    """
    genes = _record_genes(record)
    transform = record["transform"]
    from anndata import AnnData

    if isinstance(source, AnnData):
        counts = get_matrix(source, layer)
        where = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
        positions = source.var_names.get_indexer(genes)
        if (positions < 0).any():
            missing = [g for g, p in zip(genes, positions) if p < 0]
            raise CellinaKeyError(
                f"Gene(s) of the spatial-features record are missing from the AnnData: {_show(missing)}."
            )
        n_vars = source.n_vars
    else:
        counts = source
        where = "the counts matrix"
        n_vars = counts.shape[1] if hasattr(counts, "shape") and len(counts.shape) == 2 else -1
        positions = np.asarray(record.get("gene_indices", np.arange(len(genes))), dtype=np.int64)
    expected = int(record.get("n_vars", len(genes)))
    if transform == "log1p_normalize_total" and n_vars != expected:
        raise ValueError(
            f"{where} has {n_vars} genes but the niche features were normalised over "
            f"{expected}; pass counts for all {expected} genes so cell totals match."
        )
    if not isinstance(source, AnnData) and n_vars != expected:
        raise ValueError(
            f"{where} has {n_vars} columns; expected {expected} (all genes the niche "
            "features were computed on, in the same order)."
        )
    X = _as_csr(counts, where).astype(np.float32)
    if X.data.size and (X.data.min() < 0):
        raise ValueError(f"{where} has negative values; raw counts are expected.")
    if transform != "identity" and not _is_integral(X.data):
        # Non-integer counts are legitimate (e.g. perturbed counts); equal expm1 totals
        # per cell are the fingerprint of data that is already log1p(normalize_total).
        totals = _expm1_row_sums(X)
        totals = totals[totals > 0]
        if totals.size > 1:
            median = float(np.median(totals))
            if float(np.max(np.abs(totals - median))) / median <= _TOTAL_RTOL:
                warnings.warn(
                    f"{where} looks already log-normalised (expm1 of every cell sums to "
                    f"{median:.6g}); raw counts are expected, and would be transformed "
                    f"with {transform!r} a second time.",
                    UserWarning,
                    stacklevel=2,
                )
    if transform == "log1p_normalize_total":
        target_sum = float(record["target_sum"])
        totals = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
        X = X if X is not counts else X.copy()
        X.data = np.log1p(X.data * np.repeat(scale, np.diff(X.indptr))).astype(np.float32)
    elif transform == "log1p":
        X = X if X is not counts else X.copy()
        X.data = np.log1p(X.data).astype(np.float32)
    return _select_columns(X, positions)


def _select_columns(X: sp.csr_matrix, positions: np.ndarray) -> sp.csr_matrix:
    if positions.size == X.shape[1] and np.array_equal(positions, np.arange(X.shape[1])):
        out = X
    else:
        out = X[:, positions]
    out = out.tocsr().astype(np.float32, copy=False)
    if not out.has_sorted_indices:
        out = out.copy() if out is X else out
        out.sort_indices()
    return out


def representation_matrix(adata: Any, layer: str | None = None, stacklevel: int = 2) -> sp.csr_matrix:
    """``adata.X`` or ``adata.layers[layer]`` as the float32 CSR matrix niche features average.

    The conversion is the one :func:`compute_spatial_features` makes, so features
    aggregated from it match stored ones bit for bit. Warns when the matrix looks like raw
    counts: averaging them instead of log-normalised values is a silent mismatch
    (``stacklevel`` counts from the caller of this function, as in ``warnings.warn``).
    """
    source = get_matrix(adata, layer)
    name = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    if looks_like_raw_counts(source):
        warn_raw_counts(name, stacklevel=stacklevel + 1)
    return _select_columns(_as_csr(source, name), np.arange(source.shape[1], dtype=np.int64))


_SPMM_KERNEL: Any = None
# numba's fallback "workqueue" threading layer aborts the process when two threads run
# parallel code at once (e.g. a GUI worker and the main thread); calls are serialised.
_SPMM_LOCK = threading.Lock()


def _spmm_kernel() -> Any:
    """Compiled sparse x sparse -> dense row kernel, or None without numba.

    scipy has no sparse x sparse product with a dense result: its sparse product
    counts, sorts and stores a nearly dense result first, several times slower than
    accumulating straight into the output rows.
    """
    global _SPMM_KERNEL
    if _SPMM_KERNEL is None:
        try:
            import numba
        except ImportError:  # pragma: no cover - numba comes with squidpy
            _SPMM_KERNEL = False
            return None

        @numba.njit(parallel=True, cache=True, nogil=True)
        def kernel(w_indptr, w_indices, w_data, x_indptr, x_indices, x_data, out):
            for i in numba.prange(out.shape[0]):
                for p in range(w_indptr[i], w_indptr[i + 1]):
                    j = w_indices[p]
                    w = w_data[p]
                    for q in range(x_indptr[j], x_indptr[j + 1]):
                        out[i, x_indices[q]] += w * x_data[q]

        _SPMM_KERNEL = kernel
    return _SPMM_KERNEL or None


def _sparse_product_into(W: sp.csr_matrix, Xs: sp.csr_matrix, out: np.ndarray, use_numba: bool = True) -> None:
    """Add ``W @ Xs`` (both CSR, float32) into the dense ``out``."""
    kernel = _spmm_kernel() if use_numba else None
    if kernel is not None:
        with _SPMM_LOCK:
            kernel(W.indptr, W.indices, W.data, Xs.indptr, Xs.indices, Xs.data, out)
        return
    for a, b in _row_blocks(W.shape[0], Xs.shape[1]):
        block = W[a:b] @ Xs
        block.sum_duplicates()
        out[a:b] += block.toarray()


def aggregate_neighbours(W: Any, Xrep: Any) -> np.ndarray:
    """Degree-normalised neighbour mean ``phi = D^-1 W Xrep``.

    Parameters
    ----------
    W
        n_receivers x n_senders non-negative weights (sparse); row ``i`` weights the
        senders that make up cell ``i``'s niche.
    Xrep
        n_senders x genes expression representation, sparse (kept sparse) or dense.

    Returns
    -------
    numpy.ndarray
        Dense float32 n_receivers x genes; rows of receivers without neighbours (zero
        degree) are zeros.
    """
    W = W.tocsr() if sp.issparse(W) else sp.csr_matrix(np.asarray(W))
    if W.shape[1] != Xrep.shape[0]:
        raise ValueError(f"W has {W.shape[1]} columns but Xrep has {Xrep.shape[0]} rows; they must match.")
    W = W.astype(np.float32, copy=False)
    degree = np.asarray(W.sum(axis=1), dtype=np.float64).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    n_genes = Xrep.shape[1]
    out = np.zeros((W.shape[0], n_genes), dtype=np.float32)
    if sp.issparse(Xrep):
        _sparse_product_into(W, Xrep.tocsr().astype(np.float32, copy=False), out)
    else:
        Xd = np.asarray(Xrep, dtype=np.float32)
        for a, b in _row_blocks(W.shape[0], n_genes):
            out[a:b] = W[a:b] @ Xd
    out *= inv.astype(np.float32)[:, None]
    return out


def _gene_positions(adata: Any, genes: Sequence[str] | str | None, allow_empty: bool = False) -> np.ndarray:
    """Positions of ``genes`` in ``adata.var_names`` (all genes for None), checked."""
    if genes is None:
        return np.arange(adata.n_vars, dtype=np.int64)
    if isinstance(genes, str):
        genes = [genes]
    genes = [str(g) for g in genes]
    if not genes and not allow_empty:
        raise ValueError("`genes` is empty; pass None to use all genes (or a composition_key for composition alone).")
    positions = adata.var_names.get_indexer(genes)
    if (positions < 0).any():
        unknown = [g for g, p in zip(genes, positions) if p < 0]
        raise CellinaKeyError(f"Unknown gene(s) in `genes` (not in adata.var_names): {_show(unknown)}.")
    if len(set(genes)) != len(genes):
        raise ValueError("`genes` has duplicated names.")
    return positions.astype(np.int64)


def compute_spatial_features(
    adata: Any,
    connectivity_key: str = OBSP.CONNECTIVITIES,
    obsm_key: str = OBSM.NICHE_FEATURES,
    layer: str | None = None,
    genes: Sequence[str] | None = None,
    neighbor_genes: Sequence[str] | None = None,
    composition_key: str | None = None,
) -> None:
    """Compute niche features: the weighted mean of each cell's neighbours' expression.

    ``phi = D^-1 W X`` with ``W = adata.obsp[connectivity_key]`` and ``D`` its row sums,
    computed as a sparse product (``X`` is never densified). Cells without neighbours get
    zeros. With ``composition_key``, one column per category of ``adata.obs[composition_key]``
    follows the genes: the weighted share of the cell's neighbours in that category.

    Parameters
    ----------
    adata
        AnnData with a graph from :func:`spatial_neighbors` and log-normalised
        expression in ``X`` or ``layers[layer]``.
    connectivity_key
        Key of the connectivities in ``adata.obsp``.
    obsm_key
        Output key: ``adata.obsm[obsm_key]`` receives dense float32 n_obs x n_genes phi.
    layer
        Layer with the log-normalised expression (None: ``adata.X``).
    genes
        Restrict phi to these var names (in this order); None uses all genes.
    neighbor_genes
        The published Cellina's name for ``genes``; give one or the other.
    composition_key
        An ``adata.obs`` column of categories (usually the cell types) whose neighbourhood
        shares are appended to the features. Types read from labels are exact where the same
        types averaged from neighbours' expression are noisy, and regression on noisy niche
        features shrinks the learnt responses (``docs/benchmarks.md``, "Why niche responses
        shrink"). With it, ``genes=[]`` keeps the composition alone (then no gene shift of a
        node perturbation can move the niche). Counterfactual donors need their category, so
        the column must be complete.

    Notes
    -----
    How the source was made from counts is detected and recorded in
    ``adata.uns["cellina"]["spatial_features"][obsm_key]`` (``connectivity_key``,
    ``layer``, ``transform``, ``target_sum``, ``genes``, plus ``n_vars`` and
    ``gene_indices``, and ``composition_key`` and ``composition_categories`` with a
    composition block), so counterfactuals rebuild phi from counts with
    :func:`expression_representation`. A source that looks like raw counts triggers a
    loud :class:`UserWarning` and is recorded as ``"identity"``.

    Raises
    ------
    ValueError
        Missing connectivities or layer, unknown genes, NaN or infinite expression, a
        missing or incomplete ``composition_key`` column. The AnnData is not modified.
    """
    check_nonempty(adata)
    if neighbor_genes is not None:
        if genes is not None:
            raise ValueError("Pass the gene subset as `genes` or as `neighbor_genes` (the published name), not both.")
        genes = neighbor_genes
    if not isinstance(obsm_key, str) or not obsm_key:
        raise CellinaTypeError(f"`obsm_key` must be a non-empty string, got {obsm_key!r}.")
    W = check_connectivities(adata, connectivity_key)
    source = get_matrix(adata, layer)
    if source.shape[0] != adata.n_obs:
        raise ValueError(f"The expression matrix has {source.shape[0]} rows, not n_obs.")
    codes, categories = (None, None) if composition_key is None else composition_codes(adata, composition_key)
    positions = _gene_positions(adata, genes, allow_empty=composition_key is not None)
    name = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    transform, target_sum = detect_representation(source, name=name)
    record = {
        "connectivity_key": connectivity_key,
        "layer": layer,
        "transform": transform,
        "target_sum": target_sum,
        "genes": [str(g) for g in adata.var_names[positions]],
        "n_vars": int(adata.n_vars),
        "gene_indices": positions,
    }
    if composition_key is not None:
        record.update({KEY_FIELD: composition_key, CATEGORIES_FIELD: categories})
    Xrep = with_composition(_select_columns(_as_csr(source, name), positions), record, codes)
    phi = aggregate_neighbours(W, Xrep)
    adata.obsm[obsm_key] = phi
    cellina_uns = adata.uns.setdefault("cellina", {})
    cellina_uns.setdefault("spatial_features", {})[obsm_key] = record
