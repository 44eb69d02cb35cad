"""Validate a node-perturbation request and resolve it into a plan.

A plan says which genes are shifted (the sorted columns ``U``), by how much in each sender
group (one row of a shift table per group), and which cells are the perturbed senders. It
does no arithmetic on expression values: :mod:`cellina.spatial._perturb` applies it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._validation import (
    CellinaKeyError,
    CellinaTypeError,
    _show,
    check_bool,
    check_nonempty,
    check_obs_key,
    get_matrix,
)

# (group label or None, positions of its known genes in var_names, their shifts)
_ParsedGroup = tuple[Any, np.ndarray, np.ndarray]


@dataclass
class _Plan:
    """Validated perturbation, ready to apply."""

    source: sp.csr_matrix  # cells x all genes, canonical CSR (may be the caller's object)
    source_name: str
    columns: np.ndarray  # sorted positions (source genes) of all perturbed genes, U
    table: np.ndarray  # (n_groups + 1, |U|) shift per group; last row all zeros
    row_group: np.ndarray  # per cell: its group's row of `table` (last row: not perturbed)
    perturbed_cells: np.ndarray  # positions of perturbed sender cells
    record: dict[str, Any]  # provenance of the shifts (h5ad-friendly)
    unknown: dict[str, list[str]]


def _canonical_csr(matrix: Any, name: str) -> sp.csr_matrix:
    """CSR view of ``matrix`` whose index arrays may be shared, never reordered in place."""
    if sp.issparse(matrix):
        out = matrix.tocsr()
    else:
        arr = np.asarray(matrix)
        if arr.ndim != 2 or arr.dtype.kind not in "biuf":
            raise CellinaTypeError(f"{name} must be a numeric cells x genes matrix.")
        out = sp.csr_matrix(arr)
    if not out.has_canonical_format:
        # scipy would sort or merge a shared matrix in place; work on a copy instead.
        out = out.copy()
        out.sum_duplicates()
    if not np.isfinite(out.data).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    if out.data.size and out.data.min() < 0:
        raise ValueError(
            f"{name} has negative values; perturbations act on counts or log-normalised "
            "expression, which are non-negative."
        )
    return out


def _gene_shifts(spec: Any, where: str) -> pd.Series:
    if isinstance(spec, pd.Series):
        series = spec
    elif isinstance(spec, Mapping):
        series = pd.Series(dict(spec), dtype=object)
    else:
        raise CellinaTypeError(f"{where} must be a dict {{gene: value}} or a pandas Series, got {type(spec).__name__}.")
    index = pd.Index([str(g) for g in series.index])
    if index.has_duplicates:
        raise ValueError(f"{where} names gene(s) more than once: {_show(index[index.duplicated()].unique())}.")
    values = []
    for gene, value in zip(index, series.to_numpy()):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise CellinaTypeError(f"{where}: the shift of gene {gene!r} must be a number, got {value!r}.")
        if not math.isfinite(float(value)):
            raise ValueError(f"{where}: the shift of gene {gene!r} is not finite ({value!r}).")
        values.append(float(value))
    return pd.Series(values, index=index, dtype=np.float64)


def _rng(random_state: Any) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)):
        return np.random.default_rng(random_state)
    raise CellinaTypeError(f"`random_state` must be an int, None or a numpy Generator, got {random_state!r}.")


def _common_checks(adata: Any, renormalize: Any, add_shift: Any, key: Any, keyname: str) -> tuple[bool, bool]:
    check_nonempty(adata)
    renormalize = check_bool("renormalize", renormalize)
    add_shift = check_bool("add_shift", add_shift)
    if not isinstance(key, str) or not key:
        raise CellinaTypeError(f"`{keyname}` must be a non-empty string, got {key!r}.")
    return renormalize, add_shift


def _check_fraction_and_base(perturb_fraction: Any, base: Any) -> None:
    if isinstance(perturb_fraction, (bool, np.bool_)) or not isinstance(perturb_fraction, numbers.Real):
        raise CellinaTypeError(f"`perturb_fraction` must be a number in (0, 1], got {perturb_fraction!r}.")
    if not (0.0 < float(perturb_fraction) <= 1.0):
        raise ValueError(f"`perturb_fraction` must be in (0, 1], got {perturb_fraction!r}.")
    if isinstance(base, (bool, np.bool_)) or not isinstance(base, numbers.Real):
        raise CellinaTypeError(f"`base` must be a number > 0, got {base!r}.")
    if not (math.isfinite(float(base)) and float(base) > 0 and float(base) != 1.0):
        raise ValueError(f"`base` must be a finite number > 0 and != 1, got {base!r}.")


def _ungrouped_specs(perturbations: Any, n: int) -> tuple[list[tuple[Any, pd.Series]], dict[Any, np.ndarray]]:
    """One gene-shift spec whose senders are all cells."""
    if isinstance(perturbations, pd.DataFrame):
        raise CellinaTypeError("A DataFrame of shifts needs `groupby` (its rows are groups).")
    if isinstance(perturbations, Mapping) and any(isinstance(v, (Mapping, pd.Series)) for v in perturbations.values()):
        raise ValueError(
            "`perturbations` maps groups to gene shifts; pass `groupby=` naming the adata.obs column of those groups."
        )
    return [(None, _gene_shifts(perturbations, "`perturbations`"))], {None: np.arange(n)}


def _grouped_specs(
    adata: Any, perturbations: Any, groupby: str
) -> tuple[list[tuple[Any, pd.Series]], dict[Any, np.ndarray]]:
    """One gene-shift spec per group, in the caller's order, with the cells of each group."""
    # cells without a label are simply nobody's sender
    labels = check_obs_key(adata, groupby, "groupby", allow_missing=True)
    if isinstance(perturbations, pd.DataFrame):
        items = [(g, row.dropna()) for g, row in perturbations.iterrows()]
    elif isinstance(perturbations, Mapping):
        items = list(perturbations.items())
    else:
        raise CellinaTypeError(
            "With `groupby`, `perturbations` must map each group to {gene: value} or a "
            f"Series, got {type(perturbations).__name__}."
        )
    if isinstance(labels.dtype, pd.CategoricalDtype):
        present = pd.Index(labels.cat.categories)
    else:
        present = pd.Index(pd.unique(labels.dropna().to_numpy()))
    unknown_groups = [g for g, _ in items if g not in present]
    if unknown_groups:
        raise ValueError(
            f"Unknown group(s) in `perturbations`, not found in adata.obs[{groupby!r}]: "
            f"{_show(unknown_groups)} (groups present: {_show(present)})."
        )
    specs = [(g, _gene_shifts(s, f"`perturbations[{g!r}]`")) for g, s in items]
    codes = labels.to_numpy()
    members = {g: np.flatnonzero(codes == g) for g, _ in items}
    return specs, members


def _locate_genes(
    var_names: pd.Index, specs: list[tuple[Any, pd.Series]], groupby: str | None
) -> tuple[list[_ParsedGroup], dict[str, list[str]]]:
    """Positions of each spec's genes; unknown genes are dropped with a warning."""
    unknown: dict[str, list[str]] = {}
    parsed = []
    for g, shifts in specs:
        pos = var_names.get_indexer(shifts.index)
        missing = [str(x) for x, p in zip(shifts.index, pos) if p < 0]
        if missing:
            unknown["" if g is None else str(g)] = missing
        ok = pos >= 0
        parsed.append((g, pos[ok].astype(np.int64), shifts.to_numpy()[ok]))
    if not any(p.size for _, p, _ in parsed):
        raise CellinaKeyError(
            "None of the perturbed genes is in adata.var_names: "
            f"{_show(sorted({x for v in unknown.values() for x in v}))}."
        )
    if unknown:
        described = "; ".join(
            f"{('group ' + repr(g) + ': ') if groupby is not None else ''}{_show(v, 10)}" for g, v in unknown.items()
        )
        # stacklevel: the caller of the public function, past _plan
        warnings.warn(
            f"Perturbed gene(s) not in adata.var_names are ignored: {described}.",
            UserWarning,
            stacklevel=4,
        )
    return parsed, unknown


def _assign_shifts(
    parsed: list[_ParsedGroup],
    members: dict[Any, np.ndarray],
    n: int,
    columns: np.ndarray,
    var_names: pd.Index,
    factor: float,
    perturb_fraction: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Shift table, each of the ``n`` cells' row of it, the perturbed senders and the provenance."""
    table = np.zeros((len(parsed) + 1, columns.size), dtype=np.float64)
    row_group = np.full(n, len(parsed), dtype=np.int64)
    chosen = []
    rec_group, rec_gene, rec_value = [], [], []
    for k, (g, pos, vals) in enumerate(parsed):
        table[k, np.searchsorted(columns, pos)] = vals * factor
        cells = members[g]
        if perturb_fraction < 1.0 and cells.size:
            size = int(round(float(perturb_fraction) * cells.size))
            cells = np.sort(rng.choice(cells, size=size, replace=False))
        row_group[cells] = k
        chosen.append(cells)
        rec_group += ["" if g is None else str(g)] * pos.size
        rec_gene += [str(x) for x in var_names[pos]]
        rec_value += [float(v) for v in vals]
    perturbed_cells = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    record = {
        "group": np.asarray(rec_group, dtype=object),
        "gene": np.asarray(rec_gene, dtype=object),
        "value": np.asarray(rec_value, dtype=np.float64),
    }
    return table, row_group, perturbed_cells, record


def _plan(
    adata: Any,
    perturbations: Any,
    groupby: str | None,
    layer: str | None,
    base: float,
    add_shift: bool,
    perturb_fraction: float,
    random_state: Any,
) -> _Plan:
    """Check the request and resolve it into shifted columns, a shift table and senders."""
    n = adata.n_obs
    source_name = f"adata.layers[{layer!r}]" if layer is not None else "adata.X"
    raw = get_matrix(adata, layer)
    _check_fraction_and_base(perturb_fraction, base)
    rng = _rng(random_state)
    if groupby is None:
        specs, members = _ungrouped_specs(perturbations, n)
    else:
        specs, members = _grouped_specs(adata, perturbations, groupby)
    parsed, unknown = _locate_genes(adata.var_names, specs, groupby)
    source = _canonical_csr(raw, source_name)
    columns = np.unique(np.concatenate([p for _, p, _ in parsed]))
    # log1p values are natural logs: a shift given in log-`base` units is rescaled.
    factor = math.log(float(base)) if add_shift else 1.0
    table, row_group, perturbed_cells, record = _assign_shifts(
        parsed, members, n, columns, adata.var_names, factor, perturb_fraction, rng
    )
    return _Plan(source, source_name, columns, table, row_group, perturbed_cells, record, unknown)


def _matrix_as_anndata(X: Any, var_idx: Mapping[str, int], groupby: str | None, labels: Any) -> Any:
    """Wrap a bare matrix so the AnnData-level perturbation plan can run on it.

    Columns that ``var_idx`` does not name get placeholder names no perturbation can hit.
    """
    from anndata import AnnData

    n_obs, n_vars = X.shape
    names = np.array([f"<unnamed column {j}>" for j in range(n_vars)], dtype=object)
    for gene, column in var_idx.items():
        if isinstance(column, (bool, np.bool_)) or not isinstance(column, numbers.Integral):
            raise CellinaTypeError(f"var_idx[{gene!r}] must be a column position, got {column!r}.")
        if not 0 <= int(column) < n_vars:
            raise ValueError(f"var_idx[{gene!r}] = {column} is outside [0, {n_vars}).")
        names[int(column)] = str(gene)
    obs = pd.DataFrame(index=[str(i) for i in range(n_obs)])
    if groupby is not None:
        if labels is None or len(labels) != n_obs:
            raise ValueError(f"With groupby={groupby!r}, `labels` must hold one group per row of X.")
        obs[groupby] = np.asarray(labels)
    return AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(names.astype(str))))
