"""The tissue dock on a file in pixels under an instrument's own names: guesses shown as guesses,
pixel coordinates detected and refused until a pixel size is chosen, which keeps every digit."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin.widgets import CellinaDock, TissueWidget
from cellina.plugin.widgets._bridge import get_bridge

from .._helpers import COSMX_PIXEL_UM, cosmx_style


@pytest.fixture
def cosmx_dock(make_napari_viewer, monkeypatch):
    """A tissue dock that adopted a CosMx-style layer (pixels, ``ist``/``typ``/``sid``) by its guesses."""
    from cellina.plugin._points import points_layer_data

    monkeypatch.setattr(CellinaDock, "synchronous", True)
    adata, xy_um = cosmx_style(n_cells=320)
    viewer = make_napari_viewer()
    tissue = TissueWidget(viewer)
    data, kwargs, _ = points_layer_data(
        adata, color_by="ist", spatial_key=None, x_column="CenterX_global_px", y_column="CenterY_global_px"
    )
    layer = viewer.add_points(data, **kwargs)
    return viewer, tissue, layer, xy_um


def _choose(combo, text: str) -> None:
    """Pick an item as a user does: the box changes and says it was activated."""
    index = next(i for i in range(combo.count()) if combo.itemText(i).startswith(text))
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def test_the_instrument_names_are_guessed_and_shown_as_guesses(cosmx_dock):
    _, tissue, _, _ = cosmx_dock
    keys = tissue.session.keys
    assert (keys.cell_type_key, keys.domain_key, keys.batch_key) == ("ist", "typ", "sid")
    assert (keys.spatial_key, keys.x_column, keys.y_column) == (None, "CenterX_global_px", "CenterY_global_px")
    note = tissue.guesses.text()
    assert "guessed" in note and "'ist'" in note and "'sid'" in note
    assert tissue.cell_type.font().italic() and tissue.batch.currentText() == "sid"


def test_the_cells_open_coloured_by_the_cell_type(cosmx_dock):
    viewer, tissue, layer, _ = cosmx_dock
    assert get_bridge(viewer).color_by == "ist" and tissue.legend.info.name == "ist"
    types = tissue.session.adata.obs["ist"].to_numpy()
    assert len(np.unique(layer.face_color, axis=0)) == len(set(types))


def test_an_uncoloured_layer_is_coloured_by_the_guessed_cell_type(make_napari_viewer):
    adata, _ = cosmx_style(n_cells=320)
    viewer = make_napari_viewer()
    tissue = TissueWidget(viewer)
    layer = viewer.add_points(np.zeros((adata.n_obs, 2)), metadata={"adata": adata})
    assert tissue.session.adata is adata and layer.metadata["color_by"] == "ist"
    types = adata.obs["ist"].to_numpy()
    per_type = {t: np.unique(layer.face_color[types == t], axis=0) for t in set(types)}
    assert all(len(c) == 1 for c in per_type.values()) and len({tuple(c[0]) for c in per_type.values()}) > 5
    assert "cellina_all" not in adata.obs


def test_pixels_are_detected_and_preprocessing_waits_for_a_pixel_size(cosmx_dock, errors):
    _, tissue, _, _ = cosmx_dock
    assert "pixels" in tissue.units.text() and "CosMx" in tissue.units.text()
    tissue.preprocess()
    assert "pixel size" in errors[-1] and "0.12028" in errors[-1]
    assert not tissue.session.busy and "spatial_x" not in tissue.session.adata.obsm


def test_cells_in_pixels_are_drawn_as_large_as_their_spacing_until_the_pixel_size_is_chosen(cosmx_dock):
    _, tissue, layer, _ = cosmx_dock
    spacing_px = tissue.session.cell_spacing()
    assert spacing_px > 50 and np.allclose(layer.size, 0.8 * spacing_px)
    _choose(tissue.instrument, "CosMx")
    assert np.allclose(layer.size, tissue.bridge.point_size_um)


def test_choosing_the_instrument_gives_its_full_pixel_size_and_micrometres(cosmx_dock):
    _, tissue, layer, xy_um = cosmx_dock
    _choose(tissue.instrument, "CosMx")
    assert tissue.pixel_size.text() == "0.12028" and tissue.session.keys.pixel_size == COSMX_PIXEL_UM
    # the cells move to micrometres at once and the warning goes
    np.testing.assert_allclose(layer.data, xy_um[:, ::-1], rtol=1e-9)
    assert "pixels" not in tissue.units.text()
    # the guesses the user did not touch stay marked as guesses
    assert "cell_type_key" in tissue.session.keys.guessed


def test_a_typed_pixel_size_keeps_every_digit(cosmx_dock):
    _, tissue, _, _ = cosmx_dock
    tissue.pixel_size.setText("0.120283")
    tissue.pixel_size.editingFinished.emit()
    assert tissue.session.keys.pixel_size == 0.120283


def test_a_key_chosen_by_hand_is_no_longer_a_guess(cosmx_dock):
    _, tissue, _, _ = cosmx_dock
    _choose(tissue.cell_type, "typ")
    keys = tissue.session.keys
    assert keys.cell_type_key == "typ" and "cell_type_key" not in keys.guessed and "domain_key" in keys.guessed
    assert not tissue.cell_type.font().italic()


def test_preprocessing_reports_the_graph_in_micrometres(cosmx_dock):
    _, tissue, _, xy_um = cosmx_dock
    _choose(tissue.instrument, "CosMx")
    tissue.use_hvg.setChecked(False)
    tissue.preprocess()
    assert tissue.last_error is None, tissue.last_error
    assert "neighbours per cell at a median" in tissue.status.text() and " um" in tissue.status.text()
    np.testing.assert_allclose(tissue.session.adata.obsm["spatial"], xy_um, rtol=1e-9)
    assert tissue.x_column.currentText() == "CenterX_global_px" and not tissue.x_column.isEnabled()


def test_a_pixel_size_of_one_typed_on_purpose_reaches_the_library_refusal(cosmx_dock, errors):
    _, tissue, _, _ = cosmx_dock
    tissue.pixel_size.setText("1")
    tissue.pixel_size.editingFinished.emit()
    tissue.preprocess()
    assert "have no neighbour within the bandwidth" in errors[-1] and "pixel size" in errors[-1]
    assert errors[-1].count("preprocessing failed") == 1
    assert not tissue.session.busy and tissue.preprocess_button.isEnabled()


def test_the_niche_features_can_hold_the_neighbours_cell_types(cosmx_dock):
    _, tissue, _, _ = cosmx_dock
    _choose(tissue.instrument, "CosMx")
    tissue.use_hvg.setChecked(False)
    assert tissue.params().composition == "off"
    _choose(tissue.composition, "expression + cell types")
    assert tissue.params().composition == "added"
    tissue.preprocess()
    assert tissue.last_error is None, tissue.last_error
    adata = tissue.session.adata
    record = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    assert record["composition_key"] == tissue.session.keys.cell_type_key
    assert adata.obsm["spatial_x"].shape[1] == adata.n_vars + len(record["composition_categories"])
