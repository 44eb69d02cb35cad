"""Cells inside lasso polygons, vectorised (no Python loop over points).

Polygons and points share one coordinate frame (napari's (row, column) data
coordinates of the cells layer); which axis is called "x" does not matter for
containment as long as both use the same order.

Two engines: shapely 2 (``contains_xy`` on a prepared geometry, the default) and
matplotlib's ``Path.contains_points``. ``benchmarks/viewer_scale.py`` times both on
500k cells; shapely was the faster one there and also repairs self-intersecting
lasso strokes with ``make_valid``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

Engine = Literal["shapely", "matplotlib"]


def _as_polygon_array(polygon: np.ndarray | Sequence, position: int) -> np.ndarray:
    vertices = np.asarray(polygon, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] < 2:
        raise ValueError(f"polygon {position} must be an (n_vertices, 2) array, got shape {vertices.shape}")
    vertices = vertices[:, -2:]
    if len(vertices) < 3:
        raise ValueError(f"polygon {position} has {len(vertices)} vertices; a lasso needs at least 3")
    if not np.all(np.isfinite(vertices)):
        raise ValueError(f"polygon {position} has NaN or infinite vertices")
    return vertices


def _shapely_mask(points: np.ndarray, vertices: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    import shapely

    geometry = shapely.Polygon(vertices)
    if not geometry.is_valid:
        # A free-hand lasso often crosses itself; make_valid keeps every enclosed lobe.
        geometry = shapely.make_valid(geometry)
    shapely.prepare(geometry)
    sub = points[candidates]
    return shapely.contains_xy(geometry, sub[:, 0], sub[:, 1])


def _matplotlib_mask(points: np.ndarray, vertices: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path

    return Path(vertices).contains_points(points[candidates])


def points_in_polygons(
    points: np.ndarray,
    polygons: Iterable[np.ndarray],
    engine: Engine = "shapely",
) -> np.ndarray:
    """Boolean mask of the points that lie inside any of the polygons.

    Parameters
    ----------
    points
        ``(n_points, 2)`` coordinates (extra leading columns, e.g. a z axis, are ignored:
        the last two are used).
    polygons
        Polygons as ``(n_vertices, 2)`` vertex arrays in the same frame as ``points``;
        several polygons combine by union.
    engine
        ``"shapely"`` (default) or ``"matplotlib"``.

    Returns
    -------
    numpy.ndarray
        ``(n_points,)`` bool.

    Raises
    ------
    ValueError
        Malformed points or polygons, or an unknown engine.
    """
    if engine not in ("shapely", "matplotlib"):
        raise ValueError(f"unknown point-in-polygon engine {engine!r}; use 'shapely' or 'matplotlib'")
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(f"points must be an (n_points, 2) array, got shape {pts.shape}")
    pts = pts[:, -2:]
    first, second = pts[:, 0], pts[:, 1]
    mask = np.zeros(len(pts), dtype=bool)
    test = _shapely_mask if engine == "shapely" else _matplotlib_mask
    for position, polygon in enumerate(polygons):
        vertices = _as_polygon_array(polygon, position)
        low, high = vertices.min(axis=0), vertices.max(axis=0)
        # The bounding-box test is a cheap vectorised filter: the exact test then only
        # sees the cells near the lasso, not the whole tissue.
        inside_box = (first >= low[0]) & (first <= high[0])
        inside_box &= second >= low[1]
        inside_box &= second <= high[1]
        inside_box &= ~mask
        candidates = np.flatnonzero(inside_box)
        if candidates.size:
            mask[candidates] = test(pts, vertices, candidates)
    return mask
