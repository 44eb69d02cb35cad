"""Reading a tissue through its keys: check them, guess them, read coordinates and masks.

Plain functions of an AnnData and :class:`~cellina.plugin._state.TissueKeys`; no Qt, no
napari, no session.
"""

from __future__ import annotations

import re
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from cellina import io_keys
from cellina.keys import LAYERS, OBSP, UNS
from cellina.plugin._state import COUNTS_IN_X, SessionError, TissueKeys

#: words in a domain's name that mark it as the healthy or reference side of a contrast
REFERENCE_WORDS = ("ref", "reference", "healthy", "normal", "control", "ctrl", "benign", "adjacent", "nat", "wt")
#: words in a domain's name that mark it as diseased: the natural target of a contrast
DISEASE_WORDS = ("tumour", "tumor", "cancer", "crc", "carcinoma", "malignant", "lesion", "disease", "diseased")
#: the coordinate fields of TissueKeys, as provenance records them
COORDINATE_FIELDS = ("spatial_key", "x_column", "y_column", "pixel_size")


def _missing(adata: ad.AnnData, what: str, column: str, guess: str | None) -> SessionError:
    hint = f"; {guess!r} looks like one" if guess and guess != column else ""
    return SessionError(f"{what} column {column!r} not found in obs{hint}")


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
    named = (("cell-type", keys.cell_type_key, "cell_type"), ("domain", keys.domain_key, "domain"))
    for what, column, field in (*named, ("batch", keys.batch_key, "batch")):
        if column is not None and column not in adata.obs:
            raise _missing(adata, what, column, getattr(io_keys.guess_keys(adata), field))
    layer = keys.counts_layer
    if layer not in (None, COUNTS_IN_X) and layer not in adata.layers:
        raise SessionError(f"counts layer {layer!r} not found (layers: {list(adata.layers.keys())})")


def guess_keys(adata: ad.AnnData, pixel_size: float = 1.0) -> TissueKeys:
    """Keys guessed from the names scverse tools and instruments use (:func:`cellina.io_keys.guess_keys`).

    The fields that were guessed are listed in ``guessed``.

    Raises
    ------
    SessionError
        No coordinates were found; the message says what was looked for.
    """
    try:
        guess = io_keys.require_coordinates(adata)
    except io_keys.CoordinatesNotFoundError as err:
        raise SessionError(str(err)) from None
    found = {
        "spatial_key": guess.spatial_key,
        "x_column": guess.x_column,
        "y_column": guess.y_column,
        "cell_type_key": guess.cell_type,
        "domain_key": guess.domain,
        "batch_key": guess.batch,
        "counts_layer": guess.counts_layer,
    }
    guessed = tuple(name for name, value in found.items() if value is not None)
    return TissueKeys(pixel_size=pixel_size, guessed=guessed, **found)


def coordinates(adata: ad.AnnData, keys: TissueKeys) -> np.ndarray:
    """(x, y) coordinates in the data's own unit, from obsm or two obs columns."""
    try:
        return io_keys.read_coordinates(adata, keys.spatial_key, keys.x_column, keys.y_column)
    except ValueError as err:
        raise SessionError(str(err)) from None


def source_coordinates(adata: ad.AnnData, keys: TissueKeys) -> dict[str, Any]:
    """Where the coordinates came from in the user's file: obsm key or obs columns, and pixel size.

    After preprocessing, ``obsm["spatial"]`` holds micrometres made from the file's own
    coordinates; the preprocessing record keeps their names and pixel size.
    """
    record = adata.uns.get(UNS.ROOT, {}).get("preprocess", {}).get("coordinates")
    if record:
        return {
            name: (record.get(name) or None) if name != "pixel_size" else float(record[name])
            for name in COORDINATE_FIELDS
        }
    return {name: getattr(keys, name) for name in COORDINATE_FIELDS}


def _words(level: Any) -> list[str]:
    return [w for w in re.split(r"[^a-z]+", str(level).lower()) if w]


def is_reference(level: Any) -> bool:
    """Whether a domain's name says healthy or reference (``232_REF``, ``healthy``, ``Control``)."""
    return any(w in REFERENCE_WORDS for w in _words(level))


def reference_first(levels: list[str]) -> list[str]:
    """Domains with a healthy/reference name first, then the rest, each part in its own order.

    A contrast then defaults to control = a reference, target = another domain.
    """
    return [v for v in levels if is_reference(v)] + [v for v in levels if not is_reference(v)]


def target_first(levels: list[str]) -> list[str]:
    """Domains ordered as targets of a contrast: diseased names (``tumour``, ``232_CRC``), other
    non-references, then references."""

    def rank(level: str) -> int:
        if is_reference(level):
            return 2
        return 0 if any(w in DISEASE_WORDS for w in _words(level)) else 1

    return sorted(levels, key=rank)


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
    """The layer with raw counts (None: ``X``): the keys' layer; left unset, ``counts`` when present."""
    if keys.counts_layer == COUNTS_IN_X:
        return None
    if keys.counts_layer is not None:
        return keys.counts_layer
    return LAYERS.COUNTS if LAYERS.COUNTS in adata.layers else None
