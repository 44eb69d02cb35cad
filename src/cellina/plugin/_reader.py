"""napari reader for .h5ad files: one Points layer of cells."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cellina.plugin._points import CoordinatesNotFoundError, find_coordinates, points_layer_data

_COLOUR_CANDIDATES = ("cell_type", "coarse_type", "domain", "leiden")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """Return a reader when napari offers us one .h5ad file, else None (napari tries others)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).endswith(".h5ad"):
        return None
    return read_h5ad_cells


def read_h5ad_cells(path: str | list[str]) -> list[tuple]:
    """Read an .h5ad file and show its cells, coloured by the first annotation found.

    Coordinates come from obsm (``spatial``, ``X_spatial``, ...) or a pair of numeric obs
    columns (``x``/``y``, ``x_centroid``/``y_centroid``, ...), found by
    :func:`cellina.plugin._points.find_coordinates`.

    Raises
    ------
    CoordinatesNotFoundError
        The file holds no coordinates we recognise; the message names the file.
    """
    from cellina._io import read_h5ad

    if isinstance(path, list):
        path = path[0]
    adata = read_h5ad(path)
    try:
        spatial_key, x_column, y_column = find_coordinates(adata)
    except CoordinatesNotFoundError as err:
        raise CoordinatesNotFoundError(f"{str(path)!r}: {err}") from None
    color_by = next((c for c in _COLOUR_CANDIDATES if c in adata.obs), None)
    if color_by is None:
        adata.obs["cellina_all"] = "cell"
        color_by = "cellina_all"
    return [
        points_layer_data(
            adata,
            color_by=color_by,
            name=Path(path).stem,
            spatial_key=spatial_key,
            x_column=x_column,
            y_column=y_column,
        )
    ]
