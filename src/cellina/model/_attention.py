"""Attention summaries of the graph variant: who attends to whom, by cell group."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp


def _onehot(codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    n = codes.size
    kept = codes >= 0
    return sp.csr_matrix(
        (np.ones(int(kept.sum())), (np.flatnonzero(kept), codes[kept])), shape=(n, n_groups), dtype=np.float64
    )


def attention_by_group(attention: Any, groups: Any, normalize: bool = True) -> pd.DataFrame:
    """Mean attention each receiver group pays to each sender group.

    For every edge ``j -> i`` (cell ``i`` attends to its neighbour ``j`` with weight ``a_ij``,
    the weights of a row summing to one), the value of (group of ``i``, group of ``j``) is the
    mean over those edges of ``a_ij`` or, with ``normalize=True``, of ``a_ij * deg(i)``: the
    attention relative to what uniform attention (``1 / deg(i)``) would give, so 1 means "as
    much as any neighbour", above 1 "more". Pairs without any edge are NaN.

    Parameters
    ----------
    attention
        Cells x cells attention (rows: receivers), e.g. one layer of
        :meth:`CellinaGCN.get_attention_weights`.
    groups
        One group per cell (a categorical ``obs`` column); missing values are left out.
    normalize
        Relative to uniform attention (default) or the raw mean attention per edge.

    Returns
    -------
    pandas.DataFrame
        Receiver groups (rows, index name ``receiver``) x sender groups (columns, ``sender``).
    """
    att = sp.csr_matrix(attention, dtype=np.float64)
    cats = pd.Categorical(groups)
    if len(cats) != att.shape[0] or att.shape[0] != att.shape[1]:
        raise ValueError(
            f"attention has shape {att.shape} but there are {len(cats)} group labels; pass one label per cell."
        )
    onehot = _onehot(np.asarray(cats.codes, dtype=np.int64), len(cats.categories))
    degree = np.diff(att.indptr).astype(np.float64)
    pattern = att.copy()
    pattern.data = np.ones_like(pattern.data)
    weights = att.copy()
    if normalize:
        weights.data = weights.data * np.repeat(degree, np.diff(att.indptr))
    totals = (onehot.T @ weights @ onehot).toarray()
    counts = (onehot.T @ pattern @ onehot).toarray()
    with np.errstate(invalid="ignore", divide="ignore"):
        values = np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)
    names = [str(c) for c in cats.categories]
    return pd.DataFrame(values, index=pd.Index(names, name="receiver"), columns=pd.Index(names, name="sender"))
