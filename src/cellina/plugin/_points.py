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

# Where common pipelines keep cell centres: scverse/squidpy obsm keys first, then the
# obs column pairs written by Xenium, CosMx, MERSCOPE and friends (compared case-insensitively).
SPATIAL_OBSM_KEYS = ("spatial", "X_spatial", "spatial_um", "X_centroid", "centroids")
XY_COLUMN_PAIRS = (
    ("x", "y"),
    ("x_centroid", "y_centroid"),
    ("centerx_global_px", "centery_global_px"),
    ("center_x", "center_y"),
    ("centroid_x", "centroid_y"),
    ("x_location", "y_location"),
    ("global_x", "global_y"),
    ("x_um", "y_um"),
    ("x_coord", "y_coord"),
    ("imagecol", "imagerow"),
)


class CoordinatesNotFoundError(ValueError):
    """No cell coordinates in obsm or in a pair of numeric obs columns."""


def _is_numeric(series: pd.Series) -> bool:
    return series.dtype.kind in "fiu"


def _xy_partners(name: str) -> list[str]:
    """Names that pair with a lower-case ``name`` by swapping one of its x for a y."""
    return [name[:i] + "y" + name[i + 1 :] for i, ch in enumerate(name) if ch == "x"]


def find_coordinates(adata: ad.AnnData) -> tuple[str | None, str | None, str | None]:
    """Where ``adata`` keeps its cell centres: ``(obsm_key, None, None)`` or ``(None, x_column, y_column)``.

    Looks for an obsm key of :data:`SPATIAL_OBSM_KEYS` with at least two columns, then a
    pair of numeric obs columns of :data:`XY_COLUMN_PAIRS` (case-insensitive), then any
    pair of numeric obs columns whose names differ only by one x and y (``px_x``/``px_y``,
    ``CenterX_local_px``/``CenterY_local_px``). The reader and the docks share this rule.

    Raises
    ------
    CoordinatesNotFoundError
        Nothing matched; the message says what was looked for.
    """
    for key in SPATIAL_OBSM_KEYS:
        if key in adata.obsm and np.ndim(adata.obsm[key]) == 2 and np.shape(adata.obsm[key])[1] >= 2:
            return key, None, None
    numeric = {str(c).lower(): str(c) for c in adata.obs.columns if _is_numeric(adata.obs[c])}
    for x, y in XY_COLUMN_PAIRS:
        if x in numeric and y in numeric:
            return None, numeric[x], numeric[y]
    for lower, column in numeric.items():
        for partner in _xy_partners(lower):
            if partner in numeric:
                return None, column, numeric[partner]
    pairs = ", ".join(f"{x}/{y}" for x, y in XY_COLUMN_PAIRS[:4])
    raise CoordinatesNotFoundError(
        f"no cell coordinates: none of obsm {list(SPATIAL_OBSM_KEYS)} "
        f"(obsm has {sorted(adata.obsm.keys())}), and no pair of numeric obs columns such as "
        f"{pairs}, ... (obs has {list(map(str, adata.obs.columns))[:12]})"
    )


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

    From ``obsm[spatial_key]``, or from the obs columns ``x_column``/``y_column`` when
    ``spatial_key`` is None.
    """
    if spatial_key is None:
        for column in (x_column, y_column):
            if column is None or column not in adata.obs:
                raise KeyError(f"coordinate column {column!r} not found in adata.obs")
        return adata.obs[[y_column, x_column]].to_numpy(dtype=np.float64)
    if spatial_key not in adata.obsm:
        raise KeyError(
            f"coordinates key {spatial_key!r} not found in adata.obsm (available: {sorted(adata.obsm.keys())})"
        )
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise ValueError(f"adata.obsm[{spatial_key!r}] must have shape (n_cells, 2), got {coords.shape}")
    return coords[:, [1, 0]]


def points_layer_data(
    adata: ad.AnnData,
    *,
    color_by: str = "cell_type",
    spatial_key: str | None = "spatial",
    x_column: str | None = None,
    y_column: str | None = None,
    point_size: float = 10.0,
    name: str = "cells",
    hover_columns: Sequence[str] = DEFAULT_HOVER_COLUMNS,
) -> tuple[np.ndarray, dict, str]:
    """Layer-data tuple for a Points layer showing one point per cell.

    The layer carries the AnnData in ``metadata["adata"]`` and the cell id plus the
    hover columns in ``features``, so napari's status bar shows them under the cursor.
    Point size is in the coordinates' unit (micrometres for our data). Coordinates come
    from ``obsm[spatial_key]`` or, when ``spatial_key`` is None, from two obs columns.
    """
    if color_by not in adata.obs:
        raise KeyError(f"colour column {color_by!r} not found in adata.obs")
    data = cell_coordinates(adata, spatial_key, x_column, y_column)
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
        "metadata": {
            "adata": adata,
            "color_by": color_by,
            "spatial_key": spatial_key,
            "x_column": x_column,
            "y_column": y_column,
        },
    }
    return data, kwargs, "points"
