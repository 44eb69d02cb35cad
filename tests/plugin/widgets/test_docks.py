"""Docks, legend/colorbar, bridge and writer, without training a model."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from qtpy.QtWidgets import QLabel

from cellina.plugin._colours import ColourInfo, categorical_colours
from cellina.plugin._writer import write_points
from cellina.plugin.widgets import DOCKS, CellinaDock, EdgeWidget, ModelWidget, TissueWidget, add_cellina_docks
from cellina.plugin.widgets._bridge import get_bridge
from cellina.plugin.widgets._common import WrappedLabel
from cellina.plugin.widgets._legend import LegendWidget

from .._helpers import grid_tissue


@pytest.fixture
def pixel_tissue():
    """A grid tissue whose coordinates are in 0.5 um pixels, stored as two obs columns."""
    return grid_tissue(20, 10, 8.0, 30, 4.0, ("A", "B"), ("ct", "region", "px_x", "px_y"), "G", "cell")


def test_manifest_docks_open_and_share_one_session(make_napari_viewer):
    viewer = make_napari_viewer()
    docks = add_cellina_docks(viewer)
    assert list(docks) == [name for name, _ in DOCKS]
    for (name, cls), widget in zip(DOCKS, docks.values()):
        assert isinstance(widget, cls), name
    sessions = {id(widget.session) for widget in docks.values()}
    assert len(sessions) == 1
    assert get_bridge(viewer).session is docks["1. Tissue"].session
    # the tissue dock adopts the sample as soon as it is opened (what `cellina view` does)
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    assert docks["1. Tissue"].session.adata is viewer.layers[0].metadata["adata"]
    n_types = viewer.layers[0].metadata["adata"].obs["cell_type"].nunique()
    assert docks["3. Edge perturbation"].refine_types.count() == n_types
    # a second viewer gets its own session
    other = make_napari_viewer()
    assert get_bridge(other).session is not docks["1. Tissue"].session


def test_legend_shows_categories_and_colorbar(qtbot):
    legend = LegendWidget()
    qtbot.addWidget(legend)
    _, info = categorical_colours(pd.Series(["b", "a", "c", "a"]), "kind")
    legend.show_info(info)
    assert legend.labels() == ["a", "b", "c"] and "kind" in legend.title.text()
    many = ColourInfo(
        name="cluster",
        kind="categorical",
        categories=[str(i) for i in range(30)],
        colours=np.ones((30, 4), dtype=np.float32),
    )
    legend.show_info(many)
    assert "... 6 more" in legend.labels() and len(legend.labels()) == 25
    legend.show_info(ColourInfo(name="G1", kind="continuous", vmin=-1.5, vmax=2.25, cmap="RdBu_r"))
    assert legend.labels() == ["-1.5", "2.25"]
    legend.show_info(None)
    assert legend.labels() == [] and legend.title.text() == ""


def test_a_wrapped_label_reserves_the_height_of_its_lines_at_its_width(qtbot):
    # a scroll area (napari's dock) lays out by minimum and hinted heights, not by height-for-width
    text = "a sentence long enough to wrap onto several lines at two hundred pixels " * 3
    plain = QLabel(text)  # the reference: QLabel's own height for a width
    plain.setWordWrap(True)
    label = WrappedLabel("short")
    qtbot.addWidget(label)
    qtbot.addWidget(plain)
    label.resize(200, 20)
    label.show()
    qtbot.waitExposed(label)
    one_line = label.minimumHeight()
    assert one_line > 0 and label.sizeHint().height() == one_line
    label.setText(text)
    assert label.minimumHeight() == plain.heightForWidth(200) >= 3 * one_line
    assert label.sizeHint().height() == label.minimumHeight()
    label.resize(400, label.height())  # wider: fewer lines, less height reserved
    qtbot.waitUntil(lambda: label.width() == 400)
    assert label.minimumHeight() == plain.heightForWidth(400) < plain.heightForWidth(200)


def test_a_layer_without_coordinates_is_refused_by_name(make_napari_viewer, pixel_tissue, errors):
    adata, _ = pixel_tissue
    viewer = make_napari_viewer()
    tissue = TissueWidget(viewer)
    bare = ad.AnnData(X=adata.X, obs=adata.obs[["ct", "region"]].copy(), var=adata.var.copy())
    viewer.add_points(np.zeros((adata.n_obs, 2)), name="bare", metadata={"adata": bare})
    assert "no cell coordinates" in errors[-1] and "x_centroid/y_centroid" in errors[-1]
    assert tissue.session.adata is None


def test_pixel_columns_are_found_by_the_shared_rule(make_napari_viewer, pixel_tissue):
    adata, _ = pixel_tissue
    viewer = make_napari_viewer()
    tissue = TissueWidget(viewer)
    viewer.add_points(np.zeros((adata.n_obs, 2)), name="section", metadata={"adata": adata})
    tissue.source.setCurrentText("section")
    tissue.use_layer()
    assert tissue.session.adata is adata and tissue.session.keys.x_column == "px_x"
    assert tissue.spatial.currentText() == "(two obs columns)"


@pytest.fixture
def pixel_dock(make_napari_viewer, pixel_tissue, monkeypatch):
    """A tissue dock on the pixel tissue: two obs columns, 0.5 um pixels, counts in X."""
    from cellina.plugin._session import TissueKeys

    monkeypatch.setattr(CellinaDock, "synchronous", True)
    adata, xy_um = pixel_tissue
    viewer = make_napari_viewer()
    tissue = TissueWidget(viewer)
    layer = viewer.add_points(np.zeros((adata.n_obs, 2)), name="section", metadata={"adata": adata})
    keys = TissueKeys(
        spatial_key=None,
        x_column="px_x",
        y_column="px_y",
        pixel_size=0.5,
        cell_type_key="ct",
        domain_key="region",
        counts_layer=None,
    )
    get_bridge(viewer).adopt_layer(layer, keys)
    return viewer, tissue, layer, xy_um


def test_the_dock_shows_the_keys_and_the_layer_the_micrometres(pixel_dock):
    _, tissue, layer, xy_um = pixel_dock
    assert tissue.spatial.currentText() == "(two obs columns)" and tissue.x_column.isEnabled()
    assert tissue.cell_type.currentText() == "ct" and tissue.counts.currentText() == "X"
    np.testing.assert_allclose(layer.data, xy_um[:, ::-1])


def _preprocess(tissue) -> None:
    tissue.use_hvg.setChecked(False)
    tissue.bandwidth.setValue(8.0)
    tissue.max_neighbours.setValue(6)
    tissue.min_counts_gene.setValue(0)
    tissue.preprocess()
    assert tissue.last_error is None, tissue.last_error


def test_pixel_coordinates_become_micrometres_and_the_dock_shows_their_source(pixel_dock):
    _, tissue, _, xy_um = pixel_dock
    _preprocess(tissue)
    session = tissue.session
    assert session.adata.uns["spatial_neighbors"]["params"]["bandwidth"] == pytest.approx(8.0)
    np.testing.assert_allclose(session.adata.obsm["spatial"], xy_um)
    assert session.keys.spatial_key == "spatial" and session.keys.pixel_size == 1.0
    # the greyed x/y boxes name the columns the micrometres were made from, never another column
    assert (tissue.x_column.currentText(), tissue.y_column.currentText()) == ("px_x", "px_y")
    assert not tissue.x_column.isEnabled() and "px_x/px_y x 0.5 um per pixel" in tissue.units.text()


def test_preprocessing_updates_the_same_layer_in_place(pixel_dock):
    viewer, tissue, layer, xy_um = pixel_dock
    n_obs = len(layer.data)
    _preprocess(tissue)
    assert viewer.layers["section"] is layer and len(layer.data) == n_obs
    np.testing.assert_allclose(layer.data, xy_um[:, ::-1])
    assert {"cell_id", "ct", "region"} <= set(layer.features.columns)


def test_recolouring_by_a_gene_shows_a_colorbar(pixel_dock):
    _, tissue, _, _ = pixel_dock
    tissue.recolour("G3")
    assert tissue.legend.info.kind == "continuous"


def test_recolouring_by_a_column_gives_each_value_its_colour(pixel_dock):
    _, tissue, layer, _ = pixel_dock
    tissue.recolour("region")
    healthy = (tissue.session.adata.obs["region"] == "healthy").to_numpy()
    assert len(np.unique(layer.face_color[healthy], axis=0)) == 1
    assert not np.allclose(layer.face_color[healthy][0], layer.face_color[~healthy][0])


def test_an_unknown_colour_key_is_named_and_changes_nothing(pixel_dock, errors):
    _, tissue, layer, _ = pixel_dock
    tissue.recolour("region")
    before = layer.face_color.copy()
    tissue.recolour("no_such_thing")
    assert "'no_such_thing' is neither an obs column nor a gene" in errors[-1]
    np.testing.assert_array_equal(layer.face_color, before)


def test_the_colour_box_follows_the_cells_layer(pixel_dock):
    viewer, tissue, _, _ = pixel_dock
    get_bridge(viewer).recolour("region")
    assert tissue.color_by.currentText() == "region" and tissue.legend.info.name == "region"


def test_point_size_is_in_micrometres(pixel_dock):
    _, tissue, layer, _ = pixel_dock
    tissue.point_size.setValue(4.0)
    assert np.allclose(layer.size, 4.0)


def test_docks_refuse_work_without_tissue_or_while_busy(make_napari_viewer, errors, monkeypatch):
    monkeypatch.setattr(CellinaDock, "synchronous", True)
    viewer = make_napari_viewer()
    tissue, model, edge = TissueWidget(viewer), ModelWidget(viewer), EdgeWidget(viewer)
    tissue.preprocess()
    assert "no tissue loaded" in errors[-1]
    model.train()
    assert "no tissue loaded" in errors[-1] and not model.cancel_button.isEnabled()
    tissue.use_layer()
    assert "no tissue layer" in errors[-1]
    edge.draw_focal.click()
    assert "focal lasso" in viewer.layers
    tissue.session.busy = True
    edge.run()
    assert "still running" in errors[-1]
    assert not edge.run_button.isEnabled()
    tissue.session.busy = False
    assert edge.run_button.isEnabled()


def test_writer_saves_plain_layers_and_refuses_others(make_napari_viewer, pixel_tissue, tmp_path):
    adata, _ = pixel_tissue
    path = tmp_path / "cells.h5ad"
    assert write_points(str(path), None, {"name": "cells", "metadata": {"adata": adata}}) == [str(path)]
    assert ad.read_h5ad(path).n_obs == adata.n_obs
    with pytest.raises(ValueError, match="carries no AnnData"):
        write_points(str(tmp_path / "x.h5ad"), None, {"name": "shapes", "metadata": {}})
    with pytest.raises(ValueError, match="'.*x.csv' has another extension"):
        write_points(str(tmp_path / "x.csv"), None, {"name": "cells", "metadata": {"adata": adata}})


def test_lasso_shapes_become_selections_live(make_napari_viewer, pixel_tissue):
    adata, xy_um = pixel_tissue
    adata.obsm["spatial"] = xy_um
    viewer = make_napari_viewer()
    edge = EdgeWidget(viewer)
    bridge = get_bridge(viewer)
    from cellina.plugin._session import TissueKeys

    bridge.adopt_layer(
        viewer.add_points(xy_um[:, ::-1], metadata={"adata": adata}),
        TissueKeys(cell_type_key="ct", domain_key="region", counts_layer=None),
    )
    donors = bridge.lasso_layer("donors")
    assert donors.mode == "add_polygon_lasso" and viewer.layers.selection.active is donors
    # an ellipse is stored by its bounding box; the selection follows the ellipse itself
    centre, radii = np.array([36.0, 76.0]), np.array([20.0, 30.0])  # (row, col) = (y, x)
    box = np.array(
        [
            centre - radii,
            [centre[0] - radii[0], centre[1] + radii[1]],
            centre + radii,
            [centre[0] + radii[0], centre[1] - radii[1]],
        ]
    )
    donors.add(box, shape_type="ellipse")
    yx = xy_um[:, ::-1]
    inside = (((yx - centre) / radii) ** 2).sum(axis=1) < 0.97
    outside = (((yx - centre) / radii) ** 2).sum(axis=1) > 1.03
    mask = bridge.session.selections["donors"].mask
    assert mask[inside].all() and not mask[outside].any()
    n_ellipse = int(mask.sum())
    # a second polygon adds to the selection; removing shapes updates it too
    donors.add(np.array([[-1, -1], [-1, 9], [9, 9], [9, -1]]), shape_type="polygon")
    n_both = bridge.session.selection_counts()["donors"]
    corner = int((yx <= 9).all(axis=1).sum())  # the grid cells at 0 and 8 um on both axes
    assert corner == 4 and n_both == n_ellipse + corner
    assert f"donors: {n_both} cells" in edge.counts.text()
    donors.selected_data = {1}
    donors.remove_selected()
    assert bridge.session.selection_counts()["donors"] == n_ellipse
    edge.clear_lassos()
    assert "donors" not in bridge.session.selections and len(donors.data) == 0


def test_gene_colouring_shows_its_values_on_hover(make_napari_viewer, pixel_tissue):
    adata, xy_um = pixel_tissue
    adata.obsm["spatial"] = xy_um
    viewer = make_napari_viewer()
    bridge = get_bridge(viewer)
    from cellina.plugin._session import TissueKeys

    layer = viewer.add_points(xy_um[:, ::-1], metadata={"adata": adata})
    bridge.adopt_layer(layer, TissueKeys(cell_type_key="ct", domain_key="region", counts_layer=None))
    bridge.recolour("G3")
    expected = adata.X[:, 3].toarray().ravel()
    np.testing.assert_allclose(layer.features["G3"].to_numpy(), expected)
    i = int(np.argmax(expected))
    status = layer.get_status(layer.data[i], world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert f"G3: {expected[i]:.3g}" in text or f"G3: {expected[i]}" in text
    # only the gene coloured last stays a hover column
    bridge.recolour("G5")
    assert "G5" in layer.features.columns and "G3" not in layer.features.columns


def test_the_edge_dock_asks_for_the_spread_it_shows(make_napari_viewer):
    edge = EdgeWidget(make_napari_viewer())
    assert edge.job_params()["uncertainty"] == "donors"
    edge.spread.setCurrentText("donors and model posterior")
    assert edge.job_params()["uncertainty"] == "posterior"
    assert edge.job_params()["disattenuate"] is None
    edge.niche_noise.setCurrentText("divide by its reliability")
    assert edge.job_params()["disattenuate"] is True
    edge.niche_noise.setCurrentText("leave as learnt")
    assert edge.job_params()["disattenuate"] is False
    assert edge.job_params()["borrow"] is False
    edge.borrow.setChecked(True)  # borrowing brings the correction it was confirmed with
    assert edge.job_params()["borrow"] is True and edge.job_params()["disattenuate"] is True
    assert not edge.niche_noise.isEnabled()
    edge.borrow.setChecked(False)
    assert edge.niche_noise.isEnabled()
    assert edge.job_params()["change_range"] is False  # opt-in: it failed its rule for a default
    assert edge.job_params()["n_draws"] == 1
    edge.change_range.setChecked(True)  # the range was judged with 5 draws: ticking it raises fewer to 5
    assert edge.job_params()["change_range"] is True and edge.job_params()["n_draws"] == 5
    edge.change_range.setChecked(False)
    edge.n_draws.setValue(8)
    edge.change_range.setChecked(True)  # more draws stay
    assert edge.job_params()["n_draws"] == 8
