"""The neighbourhood-composition block of the niche features: the share of each cell type around a cell.

A cell's expression is a noisy readout of its type, so the types around a cell, averaged from its
neighbours' expression, come out noisy too, and a model regressing on noisy features learns
responses that are too small. With a ``composition_key`` (an ``obs`` column of categories, usually
the cell types), :func:`~cellina.spatial.compute_spatial_features` appends one column per category
to the niche features: the kernel-weighted share of the neighbours in that category. Everything
that rebuilds niche features (counterfactual donors and anchors, node perturbations) appends the
same block from the record written with the features, so rebuilt rows match stored ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._validation import CellinaKeyError, CellinaTypeError, _show

#: record fields of the composition block
KEY_FIELD = "composition_key"
CATEGORIES_FIELD = "composition_categories"


def composition_codes(adata: Any, key: str, categories: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Each cell's category of ``adata.obs[key]`` as an integer code, and the categories.

    With ``categories`` (those recorded with the features) the codes follow them and a cell in
    a category outside them is an error; otherwise the categories are the column's own, sorted.

    Raises
    ------
    CellinaKeyError
        ``key`` is not a column of ``adata.obs``.
    ValueError
        Missing values, or values outside ``categories``.
    """
    if not isinstance(key, str) or not key:
        raise CellinaTypeError(f"`composition_key` must be a non-empty string, got {key!r}.")
    if key not in adata.obs:
        raise CellinaKeyError(
            f"composition_key={key!r} is not a column of adata.obs (have {_show(list(adata.obs.columns))})."
        )
    column = adata.obs[key]
    if column.isna().any():
        raise ValueError(
            f"adata.obs[{key!r}] has {int(column.isna().sum())} missing value(s); every cell needs a category."
        )
    values = column.astype(str).to_numpy()
    if categories is None:
        categories = sorted(set(values))
    categories = [str(c) for c in categories]
    codes = pd.Categorical(values, categories=categories).codes.astype(np.int64)
    if (codes < 0).any():
        unknown = sorted(set(values[codes < 0]))
        raise ValueError(
            f"adata.obs[{key!r}] has value(s) the niche features were not built with: {_show(unknown)} "
            f"(known: {_show(categories)}). Recompute the niche features on this AnnData."
        )
    return codes, categories


def has_composition(record: Mapping[str, Any] | None) -> bool:
    """Whether niche features with this provenance record end in a composition block."""
    return record is not None and record.get(KEY_FIELD) is not None


def composition_width(record: Mapping[str, Any] | None) -> int:
    """Columns of the composition block at the end of niche features with this record (0: none)."""
    return len(record[CATEGORIES_FIELD]) if has_composition(record) else 0


def n_niche_features(record: Mapping[str, Any]) -> int:
    """Columns of the niche features a record describes: its genes, then its categories."""
    return len(record["genes"]) + composition_width(record)


def record_codes(adata: Any, record: Mapping[str, Any]) -> np.ndarray | None:
    """Every cell's code in the record's composition block (None when the record has none)."""
    if not has_composition(record):
        return None
    return composition_codes(adata, record[KEY_FIELD], record[CATEGORIES_FIELD])[0]


def one_hot(codes: np.ndarray, n_categories: int) -> sp.csr_matrix:
    """float32 CSR with a single 1 per row, in the column of the row's code."""
    codes = np.asarray(codes, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(codes.size, dtype=np.float32), codes, np.arange(codes.size + 1)), shape=(codes.size, n_categories)
    )


def with_composition(
    expression: sp.csr_matrix, record: Mapping[str, Any], codes: np.ndarray | None, rows: np.ndarray | None = None
) -> sp.csr_matrix:
    """The cells' niche representation: ``expression`` with the record's category columns appended.

    ``codes`` are every cell's codes (:func:`record_codes`) and ``rows`` the cells ``expression``
    holds (None: all of them, in order). Without a composition block ``expression`` is returned.
    """
    if not has_composition(record):
        return expression
    if codes is None:
        raise ValueError(
            f"the niche features end in the composition of adata.obs[{record[KEY_FIELD]!r}]; "
            "pass every cell's category code (cellina.spatial.record_codes) to rebuild them."
        )
    picked = codes if rows is None else np.asarray(codes)[np.asarray(rows, dtype=np.int64)]
    block = one_hot(picked, len(record[CATEGORIES_FIELD]))
    return sp.hstack([expression, block], format="csr", dtype=np.float32)
