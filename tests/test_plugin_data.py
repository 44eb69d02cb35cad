"""napari sample data and reader: cells as one Points layer that knows its AnnData."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._points import points_layer_data
from cellina.plugin._reader import get_reader
from cellina.plugin._sample_data import synthetic_tumour_section


@pytest.fixture(scope="module")
def sample_layer_tuple():
    (layer_tuple,) = synthetic_tumour_section()
    return layer_tuple


def test_sample_is_points_coloured_by_cell_type(sample_layer_tuple):
    data, kwargs, kind = sample_layer_tuple
    adata = kwargs["metadata"]["adata"]
    assert kind == "points"
    assert data.shape == (adata.n_obs, 2)
    # napari draws (row, col) = (y, x)
    np.testing.assert_array_equal(data[:, 0], adata.obsm["spatial"][:, 1])
    np.testing.assert_array_equal(data[:, 1], adata.obsm["spatial"][:, 0])
    features = kwargs["features"]
    assert list(features.columns[:4]) == ["cell_id", "cell_type", "coarse_type", "domain"]
    assert features["cell_id"].tolist() == adata.obs_names.tolist()
    colours = kwargs["face_color"]
    assert colours.shape == (adata.n_obs, 4)
    # one colour per cell type, different types different colours
    types = adata.obs["cell_type"].to_numpy()
    per_type = {t: np.unique(colours[types == t], axis=0) for t in np.unique(types)}
    assert all(len(c) == 1 for c in per_type.values())
    assert len({tuple(c[0]) for c in per_type.values()}) == len(per_type)


def test_points_layer_data_errors_name_the_key(sample_layer_tuple):
    adata = sample_layer_tuple[1]["metadata"]["adata"]
    with pytest.raises(KeyError, match="no_such_column"):
        points_layer_data(adata, color_by="no_such_column")
    with pytest.raises(KeyError, match="xy_um"):
        points_layer_data(adata, spatial_key="xy_um")


def test_reader_accepts_only_h5ad(tmp_path, sample_layer_tuple):
    assert get_reader(str(tmp_path / "image.tif")) is None
    assert get_reader([str(tmp_path / "a.h5ad"), str(tmp_path / "b.h5ad")]) is None
    adata = sample_layer_tuple[1]["metadata"]["adata"]
    path = tmp_path / "section.h5ad"
    adata.write_h5ad(path)
    reader = get_reader(str(path))
    (layer_tuple,) = reader(str(path))
    data, kwargs, kind = layer_tuple
    assert kind == "points" and kwargs["name"] == "section"
    assert data.shape == (adata.n_obs, 2)
    assert kwargs["metadata"]["color_by"] == "cell_type"


def test_viewer_opens_sample_with_hover_features(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    (layer,) = layers
    assert layer.name == "synthetic tumour section"
    assert layer.metadata["adata"].n_obs == len(layer.data)
    assert {"cell_id", "cell_type", "domain"} <= set(layer.features.columns)
    status = layer.get_status(layer.data[0], world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    hovered = layer.get_value(layer.data[0], world=True)  # the topmost point under the cursor
    row = layer.features.iloc[hovered]
    assert f"cell_id: {row['cell_id']}" in text
    assert f"cell_type: {row['cell_type']}" in text and f"domain: {row['domain']}" in text


@pytest.mark.render
def test_sample_renders_coloured_cells(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    image = viewer.screenshot(canvas_only=True, flash=False)
    rgb = image[..., :3].reshape(-1, 3)
    distinct = np.unique(rgb[rgb.sum(axis=1) > 0], axis=0)
    assert len(distinct) > 5, "the canvas shows no coloured cells"
