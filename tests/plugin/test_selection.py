"""Cells inside lasso polygons: both engines, unions, repaired strokes, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._selection import points_in_polygons

from ._helpers import square


@pytest.mark.parametrize("engine", ["shapely", "matplotlib"])
def test_points_in_polygons_union_and_boundaries(engine):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, size=(5000, 2))
    mask = points_in_polygons(points, [square(0, 0, 50), square(60, 60, 20)], engine=engine)
    expected = ((points < 50).all(axis=1)) | (((points > 60) & (points < 80)).all(axis=1))
    np.testing.assert_array_equal(mask, expected)


def test_engines_agree_on_a_star():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1.2, 1.2, size=(20000, 2))
    angles = np.linspace(0, 2 * np.pi, 11)[:-1]
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
    star = np.c_[radii * np.cos(angles), radii * np.sin(angles)]
    a = points_in_polygons(points, [star], engine="shapely")
    b = points_in_polygons(points, [star], engine="matplotlib")
    # the two engines may differ only on points within floating error of an edge
    assert (a != b).sum() <= 2 and 0.1 < a.mean() < 0.5


def test_a_self_crossing_stroke_keeps_both_lobes():
    bowtie = np.array([[0, 0], [1, 1], [1, 0], [0, 1]], dtype=float)
    inside = points_in_polygons(np.array([[0.1, 0.5], [0.9, 0.5], [0.5, 0.1]]), [bowtie])
    np.testing.assert_array_equal(inside, [True, True, False])


def test_points_in_polygons_rejects_bad_input():
    pts = np.zeros((3, 2))
    with pytest.raises(ValueError, match="polygon 0 has 2 vertices"):
        points_in_polygons(pts, [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="polygon 1 has NaN"):
        points_in_polygons(pts, [square(0, 0, 1), np.array([[0, 0], [np.nan, 1], [1, 1]])])
    with pytest.raises(ValueError, match="unknown point-in-polygon engine 'gpu'"):
        points_in_polygons(pts, [], engine="gpu")
    with pytest.raises(ValueError, match=r"points must be an \(n_points, 2\)"):
        points_in_polygons(np.zeros(3), [])


def test_no_polygon_selects_nobody():
    assert not points_in_polygons(np.zeros((3, 2)), []).any()
