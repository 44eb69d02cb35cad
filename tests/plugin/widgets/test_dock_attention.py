"""CellinaGCN through the docks in a shown viewer: choose the variant, train in a worker, pick a cell
with a mouse click on the canvas and see the attention overlay; then the heatmap.

Needs a display with OpenGL: pytest-xvfb starts Xvfb (in CI too).
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QWidget

import cellina.plugin._sample_data as sample_data
from cellina.plugin._state import CLUSTER_COLUMNS
from cellina.plugin.widgets import add_cellina_docks
from cellina.plugin.widgets._bridge import ATTENTION_LAYER

from .test_first_hour import _choose, _click, _open, _run, _settle, _wait

pytestmark = pytest.mark.render


def _canvas_point(viewer, row_col: np.ndarray) -> QPoint:
    """Where a point of the 2D scene (row, column) is on the canvas widget, in logical pixels."""
    camera = viewer.camera
    canvas = viewer.window._qt_viewer.canvas.native
    centre = np.asarray(camera.center)[-2:]
    x = (row_col[1] - centre[1]) * camera.zoom + canvas.width() / 2
    y = (row_col[0] - centre[0]) * camera.zoom + canvas.height() / 2
    return QPoint(round(x), round(y))


def _overlapping(box: QWidget) -> list[tuple[str, str]]:
    """The box's visible widgets (direct children) whose rectangles overlap, by class name."""
    kids = [w for w in box.findChildren(QWidget) if w.parent() is box and w.isVisible()]
    return [
        (type(a).__name__, type(b).__name__)
        for i, a in enumerate(kids)
        for b in kids[i + 1 :]
        if a.geometry().intersects(b.geometry())
    ]


def test_pick_a_cell_of_a_cellina_gcn_model_and_see_whom_it_attends_to(make_napari_viewer, monkeypatch):
    monkeypatch.setattr(sample_data, "SAMPLE_N_CELLS", 500)
    monkeypatch.setattr(sample_data, "SAMPLE_N_GENES", 100)
    monkeypatch.setattr(sample_data, "SAMPLE_N_SLIDES", 2)
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    add_cellina_docks(viewer)
    tissue = _open(viewer, "1. Tissue")
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    session = tissue.session
    tissue.batch.setCurrentText("slide")
    tissue.n_top_genes.setValue(60)
    tissue.max_neighbours.setValue(12)
    _run(tissue.preprocess_button, session)
    assert tissue.last_error is None, tissue.last_error

    results = _open(viewer, "5. Results")
    box = results.attention
    assert not box.pick_button.isEnabled() and "no model yet" in box.toolTip()
    model = _open(viewer, "2. Model")
    assert model.graph_box.isHidden()
    _choose(model.variant, "CellinaGCN")
    assert not model.graph_box.isHidden()
    model.num_neighbors.setText("5, 3")
    model.max_epochs.setValue(1)
    model.batch_size.setValue(128)
    model.n_clusters.setValue(3)
    model.early_stopping.setChecked(False)
    _click(model.train_button)
    _wait(lambda: CLUSTER_COLUMNS["s"] in session.adata.obs and not session.busy, timeout=120)
    assert model.last_error is None, model.last_error
    assert type(session.model).__name__ == "CellinaGCN" and session.model.fanouts_ == (5, 3)

    results = _open(viewer, "5. Results")
    assert box.pick_button.isEnabled() and box.toolTip() == ""
    _click(box.pick_button)  # the first request computes the attention in a worker
    _wait(lambda: session.attention_ready and not session.busy)
    assert box.layer.count() == 2 and box.layer.currentIndex() == 1
    viewer.reset_view()
    _settle(0.2)
    points = session.display_coordinates()
    receiver = int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))  # a cell near the middle
    canvas = viewer.window._qt_viewer.canvas.native
    QTest.mouseClick(
        canvas, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, _canvas_point(viewer, points[receiver])
    )
    _settle(0.2)
    assert ATTENTION_LAYER in viewer.layers, results.last_error
    shapes = viewer.layers[ATTENTION_LAYER]
    picked = session.cell_index(shapes.metadata["receiver"])
    # the click lands on the cell drawn there (cells are a few micrometres apart)
    assert np.linalg.norm(points[picked] - points[receiver]) < 5.0
    assert box.cell.text() == session.adata.obs_names[picked]
    edges = session.attention_edges(picked)
    np.testing.assert_array_equal(shapes.features["sender"], session.adata.obs_names[edges.senders])
    np.testing.assert_allclose(shapes.features["attention"].sum(), 1.0, rtol=1e-5)
    assert f"attends to {edges.senders.size} neighbours (layer 2 of 2)" in box.receiver_label.text()

    _choose(box.layer, "layer 1")
    assert viewer.layers[ATTENTION_LAYER].metadata["layer"] == 0
    _click(box.heatmap_button)
    assert box.heatmap.isVisible() and "1 = uniform" in box.caption.text() and "seeds" in box.caption.text()
    expected = session.model.attention_by_group(session.keys.cell_type_key, layer=0, adata=session.adata)
    np.testing.assert_allclose(box.heatmap.table.to_numpy(), expected.to_numpy(), rtol=1e-6)
    _settle(0.2)
    # the heatmap covers neither its caption nor the wrapped line about the picked cell
    assert _overlapping(box) == []
    _click(box.pick_button)  # picking off: a click no longer moves the overlay
    assert not box.bridge.picking
