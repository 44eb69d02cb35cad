"""Input checks shared by the spatial functions.

Every check runs before anything is written to the caller's AnnData, so a failing call
leaves it exactly as it was.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "CellinaKeyError",
    "CellinaTypeError",
    "check_bool",
    "check_connectivities",
    "check_int",
    "check_nonempty",
    "check_obs_key",
    "check_positions",
    "check_positive_finite",
    "check_test_indices",
    "get_coordinates",
    "get_matrix",
]


class CellinaKeyError(KeyError, ValueError):
    """A key named by the caller is missing from the AnnData.

    It is both a :class:`KeyError` (what a missing key usually raises) and a
    :class:`ValueError` (what every bad input to Cellina raises).
    """

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class CellinaTypeError(TypeError, ValueError):
    """An argument has the wrong type (e.g. non-numeric coordinates).

    Also a :class:`ValueError`, so ``except ValueError`` catches every bad input.
    """


def _show(values: Any, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:limit])
    if len(values) > limit:
        shown += f", ... ({len(values)} in total)"
    return shown


def check_nonempty(adata: Any) -> None:
    """Raise if ``adata`` is not an AnnData or holds no cells."""
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        raise CellinaTypeError(f"`adata` must be an AnnData, got {type(adata).__name__}.")
    if adata.n_obs == 0:
        raise ValueError("The AnnData is empty (n_obs == 0): there are no cells to connect.")


def check_bool(name: str, value: Any) -> bool:
    """Return ``value`` as a bool, refusing anything that is not a bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise CellinaTypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_positive_finite(name: str, value: Any) -> float:
    """Return ``value`` as a float, refusing non-numbers, NaN, infinities and values <= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise CellinaTypeError(f"`{name}` must be a real number, got {value!r}.")
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}.")
    return value


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum``; floats with a fractional part are refused."""
    if isinstance(value, (bool, np.bool_)):
        raise CellinaTypeError(f"`{name}` must be an integer, got {value!r}.")
    if isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        out = int(value)
    else:
        raise CellinaTypeError(f"`{name}` must be an integer, got {value!r}.")
    if out < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {out}.")
    return out


def check_obs_key(adata: Any, key: str, argname: str, allow_missing: bool = False) -> pd.Series:
    """Return ``adata.obs[key]``, refusing missing keys (and missing values unless allowed)."""
    if not isinstance(key, str):
        raise CellinaTypeError(f"`{argname}` must be a column name of adata.obs, got {key!r}.")
    if key not in adata.obs.columns:
        raise CellinaKeyError(
            f"{argname}={key!r} is not a column of adata.obs (available: {_show(adata.obs.columns) or 'none'})."
        )
    col = adata.obs[key]
    if allow_missing:
        return col
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{key!r}] (`{argname}`) has {n_missing} missing value(s), e.g. for cell "
            f"{adata.obs_names[np.flatnonzero(col.isna().to_numpy())[0]]!r}."
        )
    return col


def get_coordinates(adata: Any, spatial_key: str) -> np.ndarray:
    """Return validated coordinates ``adata.obsm[spatial_key]`` as a float64 (n, d) array.

    Two or three coordinate columns are accepted; they must be numeric and finite.
    """
    if not isinstance(spatial_key, str):
        raise CellinaTypeError(f"`spatial_key` must be a string, got {spatial_key!r}.")
    if spatial_key not in adata.obsm:
        raise CellinaKeyError(
            f"spatial_key={spatial_key!r} is not in adata.obsm (available: {_show(adata.obsm.keys()) or 'none'})."
        )
    raw = adata.obsm[spatial_key]
    if isinstance(raw, pd.DataFrame):
        bad = [c for c in raw.columns if not pd.api.types.is_numeric_dtype(raw[c])]
        if bad or any(pd.api.types.is_bool_dtype(raw[c]) for c in raw.columns):
            raise CellinaTypeError(
                f"adata.obsm[{spatial_key!r}] must hold numeric coordinates; "
                f"non-numeric column(s): {_show(bad or list(raw.columns))}."
            )
        raw = raw.to_numpy()
    if sp.issparse(raw):
        raise CellinaTypeError(f"adata.obsm[{spatial_key!r}] must be a dense array, not a sparse matrix.")
    arr = np.asarray(raw)
    if arr.dtype.kind not in "iuf":
        raise CellinaTypeError(f"adata.obsm[{spatial_key!r}] must hold numeric coordinates, got dtype {arr.dtype}.")
    if arr.ndim != 2 or arr.shape[1] not in (2, 3):
        raise ValueError(f"adata.obsm[{spatial_key!r}] must have shape (n_obs, 2) or (n_obs, 3), got {arr.shape}.")
    arr = np.asarray(arr, dtype=np.float64)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite)
        raise ValueError(
            f"adata.obsm[{spatial_key!r}] has NaN or infinite coordinates in {bad_rows.size} "
            f"cell(s), e.g. {_show(adata.obs_names[bad_rows], 3)}."
        )
    return arr


def check_test_indices(test_indices: Any, n_obs: int) -> np.ndarray:
    """Return held-out cells as sorted unique int64 positions.

    Integer positions in ``[0, n_obs)`` or a boolean mask of length ``n_obs`` are accepted.
    Negative positions are refused rather than wrapped, since a wrapped index would hold
    out the wrong cell without notice.
    """
    arr = np.asarray(test_indices)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(f"`test_indices` must be one-dimensional, got shape {arr.shape}.")
    if arr.dtype.kind == "b":
        if arr.size != n_obs:
            raise ValueError(f"`test_indices` is a boolean mask of length {arr.size}, expected n_obs={n_obs}.")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        raise CellinaTypeError(
            f"`test_indices` must hold integer positions or be a boolean mask, got dtype "
            f"{arr.dtype} (e.g. {_show(arr[:3])})."
        )
    return np.unique(check_positions(arr, n_obs, "test_indices"))


def check_positions(values: Any, n_obs: int, name: str) -> np.ndarray:
    """Return cell positions as a 1-D int64 array, order and repeats kept.

    Boolean masks are refused: a mask silently read as the positions 0 and 1 would pick
    the wrong cells. Negative positions are refused rather than wrapped, for the same
    reason.
    """
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise CellinaTypeError(
            f"`{name}` must be a 1-D integer array of cell positions, got "
            f"{'a boolean mask' if arr.dtype.kind == 'b' else f'dtype {arr.dtype}'} "
            f"of shape {arr.shape}."
        )
    out_of_range = (arr < 0) | (arr >= n_obs)
    if out_of_range.any():
        raise ValueError(
            f"`{name}` has {int(out_of_range.sum())} position(s) outside [0, {n_obs}): {_show(arr[out_of_range])}."
        )
    return arr.astype(np.int64)


def get_matrix(adata: Any, layer: str | None) -> Any:
    """Return ``adata.X`` (``layer=None``) or ``adata.layers[layer]``."""
    if layer is None:
        if adata.X is None:
            raise ValueError("adata.X is None; pass `layer=` naming the expression layer to use.")
        return adata.X
    if not isinstance(layer, str):
        raise CellinaTypeError(f"`layer` must be a string or None, got {layer!r}.")
    if layer not in adata.layers:
        raise CellinaKeyError(
            f"layer={layer!r} is not in adata.layers (available: {_show(adata.layers.keys()) or 'none'})."
        )
    return adata.layers[layer]


def check_connectivities(adata: Any, connectivity_key: str) -> sp.csr_matrix:
    """Return ``adata.obsp[connectivity_key]`` as a CSR matrix with finite, non-negative weights."""
    if not isinstance(connectivity_key, str):
        raise CellinaTypeError(f"`connectivity_key` must be a string, got {connectivity_key!r}.")
    if connectivity_key not in adata.obsp:
        raise CellinaKeyError(
            f"connectivity_key={connectivity_key!r} is not in adata.obsp "
            f"(available: {_show(adata.obsp.keys()) or 'none'}); "
            "build the graph first with cellina.spatial_neighbors."
        )
    W = adata.obsp[connectivity_key]
    W = sp.csr_matrix(W) if not sp.issparse(W) else W.tocsr()
    data = W.data
    if not np.isfinite(data).all() or (data < 0).any():
        raise ValueError(f"adata.obsp[{connectivity_key!r}] must hold finite, non-negative weights.")
    return W
