"""Per-cell colours for obs columns, genes and results, plus what a legend or colorbar needs.

Qt-free and vectorised: a categorical column becomes a palette lookup by category code,
a numeric one a colormap lookup table indexed by quantised value, so recolouring 500k
cells costs a few milliseconds beside napari's own face-colour update.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from matplotlib import colormaps

from cellina.keys import LAYERS
from cellina.plugin._points import category_colours

MISSING_RGBA = np.array([0.5, 0.5, 0.5, 1.0], dtype=np.float32)
# More distinct values than this in a non-numeric column is an identifier, not a category.
MAX_CATEGORIES = 200


@dataclass
class ColourInfo:
    """What the legend (categories) or colorbar (value range) shows for a colouring."""

    name: str
    kind: str  # "categorical" or "continuous"
    categories: list[str] = field(default_factory=list)
    colours: np.ndarray | None = None
    vmin: float = 0.0
    vmax: float = 1.0
    cmap: str = "viridis"


def values_for(adata: ad.AnnData, key: str, layer: str | None = LAYERS.LOGNORM) -> pd.Series | np.ndarray:
    """An obs column, or a gene's expression (from ``layer`` when present, else ``X``)."""
    if key in adata.obs:
        return adata.obs[key]
    if key in adata.var_names:
        matrix = adata.layers[layer] if layer is not None and layer in adata.layers else adata.X
        j = int(adata.var_names.get_loc(key))
        column = matrix[:, j]
        column = column.toarray() if sp.issparse(column) else np.asarray(column)
        return np.asarray(column, dtype=np.float32).ravel()
    raise KeyError(f"{key!r} is neither an obs column nor a gene of this tissue")


def categorical_colours(values: pd.Series | np.ndarray, name: str, palette=None) -> tuple[np.ndarray, ColourInfo]:
    """RGBA per cell from a palette indexed by category code (missing values grey)."""
    series = pd.Series(values)
    if not isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype("category")
    categories = [str(c) for c in series.cat.categories]
    colours = category_colours(categories, palette)
    codes = series.cat.codes.to_numpy()
    table = np.vstack([colours, MISSING_RGBA[None]])
    rgba = table[np.where(codes >= 0, codes, len(colours))]
    return rgba, ColourInfo(name=name, kind="categorical", categories=categories, colours=colours)


def continuous_colours(
    values: np.ndarray, name: str, cmap: str = "viridis", clim: tuple[float, float] | None = None
) -> tuple[np.ndarray, ColourInfo]:
    """RGBA per cell from a 256-entry colormap table; NaN grey; range from ``clim`` or the data."""
    x = np.asarray(values, dtype=np.float32)
    finite = np.isfinite(x)
    if clim is None:
        if finite.any():
            lo, hi = np.percentile(x[finite], [1, 99]) if finite.sum() > 100 else (x[finite].min(), x[finite].max())
        else:
            lo, hi = 0.0, 1.0
    else:
        lo, hi = clim
    lo, hi = float(lo), float(hi)
    if hi <= lo:
        hi = lo + 1.0
    lut = colormaps[cmap](np.linspace(0, 1, 256)).astype(np.float32)
    lut = np.vstack([lut, MISSING_RGBA[None]])
    idx = np.clip(((x - lo) / (hi - lo) * 255.0), 0, 255)
    idx = np.where(finite, idx, 256).astype(np.int32)
    return lut[idx], ColourInfo(name=name, kind="continuous", vmin=lo, vmax=hi, cmap=cmap)


def colours_for(
    adata: ad.AnnData,
    key: str,
    layer: str | None = LAYERS.LOGNORM,
    cmap: str = "viridis",
    values: pd.Series | np.ndarray | None = None,
) -> tuple[np.ndarray, ColourInfo]:
    """Colour every cell by an obs column or a gene; categories get a legend, numbers a colorbar.

    ``values`` are :func:`values_for`'s result when the caller already has them.
    """
    values = values_for(adata, key, layer) if values is None else values
    if isinstance(values, pd.Series):
        if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == bool or values.dtype == object:
            if not isinstance(values.dtype, pd.CategoricalDtype) and values.nunique() > MAX_CATEGORIES:
                raise ValueError(f"obs column {key!r} has {values.nunique()} distinct values; too many to colour by")
            return categorical_colours(values, key, adata.uns.get(f"{key}_colors"))
        return continuous_colours(values.to_numpy(dtype=np.float32, na_value=np.nan), key, cmap)
    return continuous_colours(values, key, cmap)


def attention_style(weights: np.ndarray, base_width: float, cmap: str = "coolwarm") -> tuple[np.ndarray, np.ndarray]:
    """Widths and colours of the lines from a cell's neighbours to it, from its attention ``weights``
    (one per neighbour, summing to 1): thicker for more weight (up to ``base_width``), coloured by
    the attention relative to uniform (weight x number of neighbours) on a diverging map centred
    at 1, as in the receiver x sender heatmap."""
    from matplotlib import colormaps

    weights = np.asarray(weights, dtype=np.float64)
    relative = weights * max(weights.size, 1)
    top = float(weights.max()) if weights.size else 1.0
    widths = base_width * (0.15 + 0.85 * weights / (top if top > 0 else 1.0))
    colours = colormaps[cmap](relative_norm(relative)(relative))
    return widths, np.asarray(colours, dtype=np.float32)


def relative_norm(values: np.ndarray):
    """A colour scale for attention relative to uniform: centred at 1, from 0 to at least 2."""
    from matplotlib.colors import TwoSlopeNorm

    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    top = max(2.0, float(finite.max()) if finite.size else 2.0)
    return TwoSlopeNorm(vmin=0.0, vcenter=1.0, vmax=top)
