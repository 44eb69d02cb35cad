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
    # the guessed cell type and domain first, then the other annotations
    assert list(features.columns[:4]) == ["cell_id", "cell_type", "domain", "coarse_type"]
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
    with pytest.raises(ValueError, match="xy_um"):
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


def _obs_only_h5ad(path, x_name: str, y_name: str, n: int = 120):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 500, size=(n, 2))
    obs = pd.DataFrame(
        {
            x_name: xy[:, 0],
            y_name: xy[:, 1],
            "cell_type": pd.Categorical(rng.choice(["A", "B"], n)),
            "domain": pd.Categorical(rng.choice(["h", "t"], n)),
        },
        index=[f"c{i}" for i in range(n)],
    )
    counts = sp.csr_matrix(rng.poisson(2.0, (n, 20)).astype(np.float32))
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(20)]))
    adata.layers["counts"] = adata.X.copy()
    adata.write_h5ad(path)
    return xy


@pytest.mark.parametrize(
    "names", [("x_centroid", "y_centroid"), ("CenterX_global_px", "CenterY_global_px"), ("X", "Y"), ("px_x", "px_y")]
)
def test_obs_column_coordinates_open_by_the_reader_and_the_dock(make_napari_viewer, tmp_path, names):
    from cellina.plugin.widgets import TissueWidget
    from cellina.plugin.widgets._tissue import OBS_COLUMNS

    path = tmp_path / "obs_only.h5ad"
    xy = _obs_only_h5ad(path, *names)
    viewer = make_napari_viewer()
    tissue = TissueWidget(viewer)
    (layer,) = viewer.open(str(path), plugin="napari-cellina")
    np.testing.assert_allclose(layer.data, xy[:, ::-1])
    assert layer.metadata["x_column"] == names[0] and layer.metadata["spatial_key"] is None
    # the dock adopted the layer with the same coordinates: its "two obs columns" choice is set
    session = tissue.session
    assert session.adata is layer.metadata["adata"]
    assert (session.keys.spatial_key, session.keys.x_column, session.keys.y_column) == (None, *names)
    assert tissue.spatial.currentText() == OBS_COLUMNS and tissue.x_column.currentText() == names[0]
    np.testing.assert_allclose(session.display_coordinates(), xy[:, ::-1])


def test_reader_without_coordinates_names_the_file_and_what_it_looked_for(tmp_path):
    from cellina.io_keys import CoordinatesNotFoundError
    from cellina.plugin._reader import read_h5ad_cells

    path = tmp_path / "no_xy.h5ad"
    _obs_only_h5ad(path, "depth", "width")
    with pytest.raises(CoordinatesNotFoundError, match=r"no_xy\.h5ad.*no cell coordinates.*X_spatial.*x_centroid"):
        read_h5ad_cells(str(path))
