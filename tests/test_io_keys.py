"""Guessing where a file keeps its cell types, domains, slides, counts and coordinates."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina.io_keys import guess_keys, looks_like_pixels, read_coordinates


def _adata(obs: dict, layers: tuple[str, ...] = (), obsm: dict | None = None) -> ad.AnnData:
    n = len(next(iter(obs.values())))
    adata = ad.AnnData(X=np.ones((n, 3), dtype=np.float32), obs=pd.DataFrame(obs, index=[f"c{i}" for i in range(n)]))
    for name in layers:
        adata.layers[name] = adata.X.copy()
    for key, value in (obsm or {}).items():
        adata.obsm[key] = value
    return adata


def test_cosmx_names_are_guessed():
    adata = _adata(
        {
            "CenterX_global_px": [1.0, 2.0],
            "CenterY_global_px": [3.0, 4.0],
            "ist": ["a", "b"],
            "typ": ["x", "y"],
            "sid": ["s1", "s2"],
        }
    )
    guess = guess_keys(adata)
    assert (guess.cell_type, guess.domain, guess.batch) == ("ist", "typ", "sid")
    assert (guess.spatial_key, guess.x_column, guess.y_column) == (None, "CenterX_global_px", "CenterY_global_px")
    assert guess.in_pixels


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("cell_type", "cell_type"),
        ("CellType", "cell_type"),
        ("leiden", "cell_type"),
        ("region", "domain"),
        ("niche", "domain"),
        ("library_id", "batch"),
    ],
)
def test_scverse_names_are_guessed(column, field):
    assert getattr(guess_keys(_adata({column: ["a", "b"]})), field) == column


def test_the_more_specific_cell_type_name_wins():
    assert guess_keys(_adata({"leiden": ["0", "1"], "cell_type": ["a", "b"]})).cell_type == "cell_type"


def test_a_single_slide_is_not_a_batch():
    assert guess_keys(_adata({"slide": ["s1", "s1"]})).batch is None


def test_counts_layer_and_obsm_coordinates_are_guessed():
    guess = guess_keys(_adata({"a": [1, 2]}, layers=("raw_counts",), obsm={"spatial": np.zeros((2, 2))}))
    assert (guess.counts_layer, guess.spatial_key, guess.in_pixels) == ("raw_counts", "spatial", False)


def test_xenium_centroids_are_micrometres():
    guess = guess_keys(_adata({"x_centroid": [1.0, 2.0], "y_centroid": [1.0, 2.0]}))
    assert (guess.x_column, guess.in_pixels) == ("x_centroid", False)


def test_any_x_y_pair_of_numeric_columns_is_found():
    guess = guess_keys(_adata({"pos_x_px": [1.0, 2.0], "pos_y_px": [1.0, 2.0]}))
    assert (guess.x_column, guess.y_column) == ("pos_x_px", "pos_y_px")


def test_nothing_known_guesses_nothing():
    guess = guess_keys(_adata({"foo": ["a", "b"]}))
    assert (guess.cell_type, guess.domain, guess.batch, guess.x_column, guess.spatial_key) == (None,) * 5


@pytest.mark.parametrize(
    ("names", "pixels"),
    [(("CenterX_global_px",), True), (("imagecol",), True), (("x_centroid",), False), (("spatial", None), False)],
)
def test_pixel_names_are_recognised(names, pixels):
    assert looks_like_pixels(*names) is pixels


def test_coordinates_are_read_from_obs_columns():
    adata = _adata({"x_centroid": [1.0, 2.0], "y_centroid": [3.0, 4.0]})
    np.testing.assert_array_equal(read_coordinates(adata, None, "x_centroid", "y_centroid"), [[1, 3], [2, 4]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_key": "spatial"}, "obsm"),
        ({"x_column": "x", "y_column": "nope"}, "'nope'"),
        ({"x_column": "x", "y_column": "y"}, "NaN"),
    ],
)
def test_unreadable_coordinates_are_named(kwargs, message):
    adata = _adata({"x": [1.0, np.nan], "y": [1.0, 2.0]})
    with pytest.raises(ValueError, match=message):
        read_coordinates(adata, **kwargs)


def test_the_median_nearest_distance_of_a_grid():
    from cellina.io_keys import median_nearest_distance

    grid = np.c_[np.repeat(np.arange(30), 30), np.tile(np.arange(30), 30)] * 12.0
    assert median_nearest_distance(grid) == pytest.approx(12.0)
    # sampled queries on a large tissue give the same answer
    assert median_nearest_distance(grid, max_queries=100) == pytest.approx(12.0)


@pytest.mark.parametrize(
    ("spacing", "pixel_size", "names", "expected"),
    [
        (83.0, 1.0, ("CenterX_global_px", "CenterY_global_px"), "in pixels? CosMx writes its pixel coordinates"),
        (83.0, 0.12028, ("CenterX_global_px", "CenterY_global_px"), None),
        (10.0, 1.0, ("x_centroid", "y_centroid"), None),
        (10.0, 1.0, ("pos_x_px", "pos_y_px"), "say pixels, but the pixel size is 1 um"),
        (0.01, 1.0, ("x", "y"), "millimetres"),
        (400.0, 0.2125, ("x", "y"), "85 um apart"),
    ],
)
def test_coordinates_that_are_not_micrometres_are_explained(spacing, pixel_size, names, expected):
    from cellina.io_keys import units_problem

    problem = units_problem(spacing, pixel_size, names)
    assert problem is None if expected is None else expected in problem


def test_a_file_that_states_its_pixel_size_is_read():
    from cellina.io_keys import file_pixel_size

    adata = _adata({"a": [1, 2]})
    assert file_pixel_size(adata) is None
    adata.uns["spatial"] = {"lib": {"scalefactors": {"microns_per_pixel": 0.2738}}}
    assert file_pixel_size(adata) == 0.2738
