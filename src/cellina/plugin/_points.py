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

# Columns shown on hover when present, in this order.
DEFAULT_HOVER_COLUMNS = ("cell_type", "coarse_type", "domain", "slide")


def category_colours(categories: Sequence[str], stored: Sequence[str] | None = None) -> np.ndarray:
    """RGBA colours for ``categories``: the AnnData's own palette if it has one of the right length."""
    n = len(categories)
    if stored is not None and len(stored) == n:
        return to_rgba_array(list(stored)).astype(np.float32)
    palette = colormaps["tab20"].colors if n > 10 else colormaps["tab10"].colors
    return to_rgba_array([palette[i % len(palette)] for i in range(n)]).astype(np.float32)


def cell_coordinates(adata: ad.AnnData, spatial_key: str = "spatial") -> np.ndarray:
    """Cell centres in napari's (row, column) order, i.e. AnnData's (x, y) swapped to (y, x)."""
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"coordinates key {spatial_key!r} not found in adata.obsm "
            f"(available: {sorted(adata.obsm.keys())})"
        )
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"adata.obsm[{spatial_key!r}] must have shape (n_cells, 2), got {coords.shape}")
    return coords[:, [1, 0]]


def points_layer_data(
    adata: ad.AnnData,
    *,
    color_by: str = "cell_type",
    spatial_key: str = "spatial",
    point_size: float = 10.0,
    name: str = "cells",
    hover_columns: Sequence[str] = DEFAULT_HOVER_COLUMNS,
) -> tuple[np.ndarray, dict, str]:
    """Layer-data tuple for a Points layer showing one point per cell.

    The layer carries the AnnData in ``metadata["adata"]`` and the cell id plus the
    hover columns in ``features``, so napari's status bar shows them under the cursor.
    Point size is in the coordinates' unit (micrometres for our data).
    """
    if color_by not in adata.obs:
        raise KeyError(f"colour column {color_by!r} not found in adata.obs")
    data = cell_coordinates(adata, spatial_key)
    columns = [c for c in dict.fromkeys([color_by, *hover_columns]) if c in adata.obs]
    features = pd.DataFrame({"cell_id": adata.obs_names.to_numpy()})
    for column in columns:
        features[column] = adata.obs[column].to_numpy()

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
        "metadata": {"adata": adata, "color_by": color_by, "spatial_key": spatial_key},
    }
    return data, kwargs, "points"
