"""Turn an AnnData of cells into a napari Points layer description.

Kept free of Qt and napari imports: it returns a plain layer-data tuple that napari
(or a test) turns into a layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_rgba_array

from cellina.io_keys import guess_keys, read_coordinates

#: columns shown on hover when present (besides the guessed cell type, domain and slide)
DEFAULT_HOVER_COLUMNS = ("cell_type", "coarse_type", "domain", "slide")
#: colour of every cell when a file has no cell-type or domain column to colour by
PLAIN_RGBA = (0.55, 0.7, 0.85, 1.0)


def default_hover_columns(adata: ad.AnnData) -> list[str]:
    """Guessed cell type, domain and slide, then :data:`DEFAULT_HOVER_COLUMNS`, as present in obs."""
    guess = guess_keys(adata)
    wanted = [guess.cell_type, guess.domain, guess.batch, *DEFAULT_HOVER_COLUMNS]
    return [c for c in dict.fromkeys(w for w in wanted if w) if c in adata.obs]


def category_colours(categories: Sequence[str], stored: Sequence[str] | None = None) -> np.ndarray:
    """RGBA colours for ``categories``: the AnnData's own palette if it has one of the right length."""
    n = len(categories)
    if stored is not None and len(stored) == n:
        return to_rgba_array(list(stored)).astype(np.float32)
    palette = colormaps["tab20"].colors if n > 10 else colormaps["tab10"].colors
    return to_rgba_array([palette[i % len(palette)] for i in range(n)]).astype(np.float32)


def cell_coordinates(
    adata: ad.AnnData,
    spatial_key: str | None = "spatial",
    x_column: str | None = None,
    y_column: str | None = None,
) -> np.ndarray:
    """Cell centres in napari's (row, column) order, i.e. AnnData's (x, y) swapped to (y, x).

    Read by :func:`cellina.io_keys.read_coordinates`, from ``obsm[spatial_key]`` or from
    the obs columns ``x_column``/``y_column`` when ``spatial_key`` is None.
    """
    return read_coordinates(adata, spatial_key, x_column, y_column)[:, ::-1].copy()


def points_layer_data(
    adata: ad.AnnData,
    *,
    color_by: str | None = "cell_type",
    spatial_key: str | None = "spatial",
    x_column: str | None = None,
    y_column: str | None = None,
    point_size: float = 10.0,
    name: str = "cells",
    hover_columns: Sequence[str] | None = None,
) -> tuple[np.ndarray, dict, str]:
    """Layer-data tuple for a Points layer showing one point per cell.

    The layer carries the AnnData in ``metadata["adata"]`` and the cell id plus the
    hover columns (default: :func:`default_hover_columns`) in ``features``, so napari's status bar
    shows them under the cursor. Cells are coloured by the obs column ``color_by`` (one
    plain colour when None). Point size is in the coordinates' unit. Coordinates come from
    ``obsm[spatial_key]`` or, when ``spatial_key`` is None, from two obs columns.
    """
    if color_by is not None and color_by not in adata.obs:
        raise KeyError(f"colour column {color_by!r} not found in adata.obs")
    data = cell_coordinates(adata, spatial_key, x_column, y_column)
    shown = default_hover_columns(adata) if hover_columns is None else hover_columns
    columns = [c for c in dict.fromkeys([color_by, *shown]) if c is not None and c in adata.obs]
    features = pd.DataFrame({"cell_id": adata.obs_names.to_numpy()})
    for column in columns:
        features[column] = adata.obs[column].to_numpy()

    if color_by is None:
        face_color = np.tile(np.asarray(PLAIN_RGBA, dtype=np.float32), (adata.n_obs, 1))
    else:
        values = adata.obs[color_by]
        if not isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype("category")
        palette = category_colours(list(values.cat.categories), adata.uns.get(f"{color_by}_colors"))
        codes = values.cat.codes.to_numpy()
        face_color = np.where(codes[:, None] >= 0, palette[np.clip(codes, 0, None)], 0.5).astype(np.float32)

    kwargs = {
        "name": name,
        "features": features,
        "face_color": face_color,
        "border_width": 0,
        "size": point_size,
        "metadata": {
            "adata": adata,
            "color_by": color_by,
            "spatial_key": spatial_key,
            "x_column": x_column,
            "y_column": y_column,
        },
    }
    return data, kwargs, "points"
