"""Argument parsing shared by every truth in cellina.datasets: cell positions, donor sets, gene-shift tables.

Each parser names the argument it rejects, so a caller learns which input was wrong.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.datasets._errors import DatasetTypeError, PositionError, TruthKeyError


def check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise DatasetTypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def check_positive(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DatasetTypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return value


def check_real(value: object, name: str, low: float, high: float, *, open_low: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with ``open_low``), else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DatasetTypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    below = value <= low if open_low else value < low
    if not math.isfinite(value) or below or value > high:
        bracket = "(" if open_low else "["
        raise ValueError(f"{name} must lie in {bracket}{low}, {high}], got {value!r}")
    return value


def as_str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in np.asarray(value, dtype=object).ravel()]


def positions(value: Any, n: int, name: str) -> np.ndarray:
    """Positional indices 0..n-1 from an integer array-like or a boolean mask of length n."""
    if isinstance(value, (pd.Series, pd.Index)):
        value = value.to_numpy()
    arr = np.asarray(value)
    if arr.dtype == bool:
        if arr.ndim != 1 or arr.shape[0] != n:
            raise ValueError(f"{name} is a boolean mask of shape {arr.shape}; expected ({n},)")
        return np.flatnonzero(arr)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise DatasetTypeError(f"{name} must hold integer positions (0..{n - 1}), got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise PositionError(f"{name} has positions outside 0..{n - 1}: {bad[:5].tolist()}")
    return arr


def _weights(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}; expected {shape} to match the donors")
    if not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    return arr


def donor_rows(
    donors: Any, weights: Any, n_focal: int, n: int
) -> tuple[sp.csr_matrix | None, np.ndarray | None, np.ndarray | None]:
    """(per-focal rows, None, None) or (None, shared pool, shared weights)."""
    if sp.issparse(donors):
        if weights is not None:
            raise ValueError("weights must be None when donors is a sparse matrix (its values are the weights)")
        rows = sp.csr_matrix(donors, dtype=np.float64)
        if rows.shape != (n_focal, n):
            raise ValueError(f"sparse donors has shape {rows.shape}; expected (n_focal, n_obs) = {(n_focal, n)}")
        if not np.all(np.isfinite(rows.data)) or (rows.data < 0).any():
            raise ValueError("sparse donors must hold finite, non-negative weights")
        rows.sum_duplicates()
        return rows, None, None
    if isinstance(donors, (pd.Series, pd.Index)):
        donors = donors.to_numpy()
    if isinstance(donors, np.ndarray) and donors.dtype != object:
        per_focal = donors.ndim == 2
        if donors.ndim not in (1, 2):
            raise ValueError(
                f"donors must be 1-D (a shared pool) or 2-D (one row per focal cell), got shape {donors.shape}"
            )
    elif isinstance(donors, (Sequence, np.ndarray)) and not isinstance(donors, str):
        items = list(donors)
        per_focal = len(items) > 0 and not all(isinstance(d, (numbers.Integral, np.bool_, bool)) for d in items)
        if not per_focal:
            donors = np.asarray(items, dtype=np.int64) if items else np.zeros(0, dtype=np.int64)
    else:
        raise DatasetTypeError(
            f"donors must be an index array or a sequence of index arrays, got {type(donors).__name__}"
        )

    if not per_focal:
        pool = positions(donors, n, "donors")
        if pool.size == 0:
            raise ValueError("donors is an empty pool: give at least one donor cell")
        w = np.ones(pool.size) if weights is None else _weights(weights, pool.shape, "weights")
        return None, pool, w

    if isinstance(donors, np.ndarray) and donors.ndim == 2 and donors.dtype != object:
        # rectangular donors (e.g. a model's draws): validate and assemble in one pass
        if donors.shape[0] != n_focal:
            raise ValueError(f"donors has {donors.shape[0]} donor sets but there are {n_focal} focal cells")
        columns = positions(donors.ravel(), n, "donors")
        values = np.ones(columns.size) if weights is None else _weights(weights, donors.shape, "weights").ravel()
        indptr = np.arange(n_focal + 1, dtype=np.int64) * donors.shape[1]
        rows = sp.csr_matrix((values, columns, indptr), shape=(n_focal, n))
        rows.sum_duplicates()
        return rows, None, None

    groups = list(donors)
    if len(groups) != n_focal:
        raise ValueError(f"donors has {len(groups)} donor sets but there are {n_focal} focal cells")
    if weights is not None:
        weight_groups = list(weights)
        if len(weight_groups) != n_focal:
            raise ValueError(f"weights has {len(weight_groups)} rows but there are {n_focal} focal cells")
    cols, data, lengths = [], [], []
    for i, group in enumerate(groups):
        idx = positions(group, n, f"donors[{i}]")
        if weights is None:
            w = np.ones(idx.size)
        else:
            w = _weights(weight_groups[i], idx.shape, f"weights[{i}]")
        cols.append(idx)
        data.append(w)
        lengths.append(idx.size)
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(data) if data else np.zeros(0)
    columns = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    rows = sp.csr_matrix((values, columns, indptr), shape=(n_focal, n))
    rows.sum_duplicates()
    return rows, None, None


def gene_shifts(values: Any, names: Mapping[str, int], where: str) -> dict[int, float]:
    if isinstance(values, pd.Series):
        values = values.to_dict()
    if not isinstance(values, Mapping):
        raise DatasetTypeError(f"{where} must map gene -> log-fold change, got {type(values).__name__}")
    unknown = [str(g) for g in values if str(g) not in names]
    if unknown:
        raise TruthKeyError(f"{where} has genes not in adata.var_names: {unknown[:10]}")
    shifts: dict[int, float] = {}
    for gene, value in values.items():
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise DatasetTypeError(f"{where}[{gene!r}] must be a number, got {value!r}") from None
        if not np.isfinite(value):
            raise ValueError(f"{where}[{gene!r}] must be finite, got {value!r}")
        shifts[names[str(gene)]] = value
    return shifts


def shift_table(
    adata: Any, perturbations: Any, groupby: str | None
) -> tuple[dict[str | None, dict[int, float]], np.ndarray | None]:
    """Parse a node-perturbation table into ``({group: {gene position: lfc}}, group of every cell)``.

    Without ``groupby`` the single group ``None`` holds the shifts of every sender and the second
    item is None; with it, groups are values of ``adata.obs[groupby]`` (an empty category counts).
    """
    names = {str(g): i for i, g in enumerate(adata.var_names)}
    if not isinstance(perturbations, (Mapping, pd.Series)):
        raise DatasetTypeError(f"perturbations must be a mapping, got {type(perturbations).__name__}")
    if groupby is None:
        return {None: gene_shifts(perturbations, names, "perturbations")}, None
    if groupby not in adata.obs:
        raise TruthKeyError(f"groupby={groupby!r} is not a column of adata.obs")
    column = adata.obs[groupby]
    group_of = column.astype(str).to_numpy()
    known = set(group_of)
    if isinstance(column.dtype, pd.CategoricalDtype):  # an empty category is still a valid group
        known |= set(map(str, column.cat.categories))
    unknown = [str(g) for g in perturbations.keys() if str(g) not in known]
    if unknown:
        raise TruthKeyError(f"perturbations has groups not in adata.obs[{groupby!r}]: {unknown[:10]}")
    per_group = {
        str(group): gene_shifts(values, names, f"perturbations[{group!r}]") for group, values in perturbations.items()
    }
    return per_group, group_of


def shift_rows(
    per_group: Mapping[str | None, Mapping[int, float]], group_of: np.ndarray | None, senders: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A parsed shift table as ``(cols, table, row)``: sender i's natural-log shift of genes ``cols`` is ``table[row[i]]``.

    One table row per group, and a last row of zeros for senders in no listed group, so the shift
    of many senders costs one small table and an index rather than a senders x genes array.
    """
    cols = np.array(sorted({g for shifts in per_group.values() for g in shifts}), dtype=np.int64)
    column = {int(g): j for j, g in enumerate(cols)}
    groups = list(per_group)
    table = np.zeros((len(groups) + 1, cols.size))
    for r, group in enumerate(groups):
        for gene, value in per_group[group].items():
            table[r, column[gene]] = value
    if group_of is None:
        return cols, table, np.zeros(senders.size, dtype=np.int64)
    row = pd.Index(groups).get_indexer(group_of[senders]).astype(np.int64)
    row[row < 0] = len(groups)
    return cols, table, row
