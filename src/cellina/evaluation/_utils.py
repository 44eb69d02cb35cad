"""Small array helpers shared by the evaluation modules (numpy/scipy only)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp


def as_matrix(x: Any, name: str) -> np.ndarray | sp.csr_matrix:
    """Return ``x`` as a 2-D float64 ndarray or a CSR matrix, without densifying sparse input.

    Parameters
    ----------
    x
        Dense array, ``np.matrix``, scipy sparse matrix/array, pandas DataFrame or a torch
        tensor (anything with ``.numpy()`` after ``.detach().cpu()``).
    name
        Name of the argument, used in error messages.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        Two-dimensional matrix, cells x genes.
    """
    if x is None:
        raise ValueError(f"`{name}` is None; expected a cells x genes matrix.")
    if sp.issparse(x):
        out = sp.csr_matrix(x, dtype=np.float64)
    else:
        if hasattr(x, "detach") and hasattr(x, "cpu"):
            x = x.detach().cpu().numpy()
        if hasattr(x, "to_numpy"):
            x = x.to_numpy()
        try:
            out = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"`{name}` is not numeric: {err}") from err
    if out.ndim == 1:
        out = out.reshape(1, -1)
    if out.ndim != 2:
        raise ValueError(f"`{name}` must be two-dimensional (cells x genes), got shape {out.shape}.")
    if out.shape[0] == 0:
        raise ValueError(f"`{name}` has no cells (shape {out.shape}).")
    return out


def as_vector(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float64 array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    if hasattr(x, "to_numpy"):
        x = x.to_numpy()
    try:
        out = np.asarray(x, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise ValueError(f"`{name}` is not numeric: {err}") from err
    return out


def row_sums(x: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """Per-row sums as a flat array (sparse-aware)."""
    return np.asarray(x.sum(axis=1)).ravel()


def scale_rows(x: np.ndarray | sp.csr_matrix, factors: np.ndarray) -> np.ndarray | sp.csr_matrix:
    """Multiply each row by a factor, keeping sparse input sparse."""
    if sp.issparse(x):
        return sp.csr_matrix(sp.diags(factors) @ x)
    return x * factors[:, None]


def column_mean(x: np.ndarray | sp.csr_matrix, ignore_nan: bool = True) -> np.ndarray:
    """Per-gene mean over cells; NaN-aware for dense input (sparse input stores no NaN in practice)."""
    if sp.issparse(x):
        return np.asarray(x.mean(axis=0)).ravel()
    if ignore_nan:
        with warnings.catch_warnings():
            # An all-NaN gene yields NaN, which is the honest answer; no warning needed.
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(x, axis=0)
    return x.mean(axis=0)


def log1p_normalize(x: np.ndarray | sp.csr_matrix, target_sum: float = 1e4) -> np.ndarray | sp.csr_matrix:
    """log1p of counts scaled to ``target_sum`` per cell; zero-count cells stay zero."""
    totals = row_sums(x)
    factors = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    scaled = scale_rows(x, factors)
    if sp.issparse(scaled):
        scaled = scaled.copy()
        scaled.data = np.log1p(scaled.data)
        return scaled
    return np.log1p(scaled)
