"""Reading a tissue through its keys: check them, guess them, read coordinates and masks.

Plain functions of an AnnData and :class:`~cellina.plugin._state.TissueKeys`; no Qt, no
napari, no session.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from cellina.keys import OBSP
from cellina.plugin._points import CoordinatesNotFoundError, find_coordinates
from cellina.plugin._state import SessionError, TissueKeys


def validate_keys(adata: ad.AnnData, keys: TissueKeys) -> None:
    """Check that every key of ``keys`` exists in ``adata``; raise naming the first missing one."""
    if keys.spatial_key is not None:
        if keys.spatial_key not in adata.obsm:
            raise SessionError(
                f"coordinates key {keys.spatial_key!r} not found in obsm (available: {sorted(adata.obsm.keys())})"
            )
    else:
        for column in (keys.x_column, keys.y_column):
            if column is None or column not in adata.obs:
                raise SessionError(f"coordinate column {column!r} not found in obs")
    if not (np.isfinite(keys.pixel_size) and keys.pixel_size > 0):
        raise SessionError(f"pixel size must be a positive number of micrometres, got {keys.pixel_size}")
    for what, column in (("cell-type", keys.cell_type_key), ("domain", keys.domain_key), ("batch", keys.batch_key)):
        if column is not None and column not in adata.obs:
            raise SessionError(f"{what} column {column!r} not found in obs")
    if keys.counts_layer is not None and keys.counts_layer not in adata.layers:
        raise SessionError(f"counts layer {keys.counts_layer!r} not found (layers: {list(adata.layers.keys())})")


def guess_keys(adata: ad.AnnData, pixel_size: float = 1.0) -> TissueKeys:
    """Sensible keys for an AnnData: common scverse/squidpy names, coordinates by :func:`find_coordinates`.

    Raises
    ------
    SessionError
        No coordinates were found; the message says what was looked for.
    """

    def first(candidates, where):
        return next((c for c in candidates if c in where), None)

    try:
        spatial_key, x_column, y_column = find_coordinates(adata)
    except CoordinatesNotFoundError as err:
        raise SessionError(str(err)) from None
    return TissueKeys(
        spatial_key=spatial_key,
        x_column=x_column,
        y_column=y_column,
        pixel_size=pixel_size,
        cell_type_key=first(("cell_type", "coarse_type", "celltype", "cell_types", "leiden"), adata.obs),
        domain_key=first(("domain", "domains", "region", "typ"), adata.obs),
        batch_key=None,
        counts_layer="counts" if "counts" in adata.layers else None,
    )


def coordinates(adata: ad.AnnData, keys: TissueKeys) -> np.ndarray:
    """(x, y) coordinates in the data's own unit, from obsm or two obs columns."""
    if keys.spatial_key is not None:
        if keys.spatial_key not in adata.obsm:
            raise SessionError(f"coordinates key {keys.spatial_key!r} not found in obsm")
        xy = np.asarray(adata.obsm[keys.spatial_key])[:, :2]
    else:
        for column in (keys.x_column, keys.y_column):
            if column not in adata.obs:
                raise SessionError(f"coordinate column {column!r} not found in obs")
        xy = adata.obs[[keys.x_column, keys.y_column]].to_numpy()
    try:
        xy = xy.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise SessionError(f"coordinates are not numeric: {err}") from None
    if not np.all(np.isfinite(xy)):
        raise SessionError("coordinates hold NaN or infinite values")
    return xy


def matches(series: pd.Series, value: Any) -> np.ndarray:
    """Cells whose value, read as text, equals ``value``: compared on category codes when possible.

    Turning 500k categorical values into strings costs a noticeable pause on the main
    thread; comparing the few category names and then the integer codes does not.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        names = np.asarray(series.cat.categories.astype(str))
        return np.isin(series.cat.codes.to_numpy(), np.flatnonzero(names == str(value)))
    return series.astype(str).to_numpy() == str(value)


def graph_key(adata: ad.AnnData) -> str:
    """The unmasked spatial graph: ``spatial_connectivities_orig`` when present, else the plain one."""
    return OBSP.UNMASKED if OBSP.UNMASKED in adata.obsp else OBSP.CONNECTIVITIES


def as_mask(values: Any, n: int, what: str) -> np.ndarray:
    """Boolean mask of length ``n`` from a mask or integer positions."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise SessionError(f"{what}: mask has shape {arr.shape}, expected ({n},)")
        return arr.copy()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SessionError(f"{what}: expected a boolean mask or integer positions, got {arr.dtype}")
    arr = arr.astype(np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise SessionError(f"{what}: positions out of range 0..{n - 1}")
    mask = np.zeros(n, dtype=bool)
    mask[arr] = True
    return mask


def counts_layer_of(adata: ad.AnnData, keys: TissueKeys) -> str | None:
    """The layer with raw counts: ``counts`` after preprocessing, else the keys' choice (None: X)."""
    return "counts" if "counts" in adata.layers else keys.counts_layer
