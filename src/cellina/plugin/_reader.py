"""napari reader for .h5ad files: one Points layer of cells."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cellina.io_keys import CoordinatesNotFoundError, require_coordinates
from cellina.plugin._points import points_layer_data


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
    """Read an .h5ad file and show its cells, coloured by the guessed cell type (else domain).

    Keys and coordinates are guessed by :func:`cellina.io_keys.guess_keys` (the rule the
    docks and the command line share): obsm (``spatial``, ``X_spatial``, ...) or a pair of
    numeric obs columns (``x``/``y``, ``x_centroid``/``y_centroid``,
    ``CenterX_global_px``/``CenterY_global_px``, ...). Nothing is added to the AnnData.

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
        guess = require_coordinates(adata)
    except CoordinatesNotFoundError as err:
        raise CoordinatesNotFoundError(f"{str(path)!r}: {err}") from None
    return [
        points_layer_data(
            adata,
            color_by=guess.cell_type or guess.domain,
            name=Path(path).stem,
            spatial_key=guess.spatial_key,
            x_column=guess.x_column,
            y_column=guess.y_column,
        )
    ]
