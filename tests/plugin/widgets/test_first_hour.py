"""A biologist's first hour with an instrument file the project did not make.

A CosMx-style ``.h5ad`` (counts in ``X``; coordinates only in the obs columns
``CenterX_global_px``/``CenterY_global_px``, pixels of 0.12028 um; domain ``typ`` with
232_REF/232_TVA/232_CRC, fine cell type ``ist``, two slides in ``sid``) is opened in a shown
viewer with every dock from the plugin manifest, and driven by clicks on the docks' buttons and
choices in their boxes, with steps running in real thread workers: keys guessed, pixel size
chosen, preprocess, train a few epochs with the slide as batch, lasso, edge and node runs,
results, export. Then the same file through the command line. Lassos are added to the lasso
layers as finished polygons (what napari's lasso tool hands over when the mouse is released).

Needs a display with OpenGL: pytest-xvfb starts Xvfb (in CI too).
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication, QDockWidget

from cellina.plugin._state import CLUSTER_COLUMNS, DONORS, FOCAL
from cellina.plugin.widgets import add_cellina_docks
from cellina.plugin.widgets._bridge import RESULT_LAYER, RING_LAYERS, get_bridge

from .._helpers import COSMX_PIXEL_UM, cosmx_style

pytestmark = pytest.mark.render

FOCAL_QUERY = "typ == '232_REF' and ist == 'myeloid_1'"
#: the model each face built on the file, by face, to compare them
MODELS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def cosmx_file(tmp_path_factory):
    """The instrument-style file on disk, and its cells' (x, y) in micrometres."""
    adata, xy_um = cosmx_style(n_cells=640, seed=4)
    path = tmp_path_factory.mktemp("first_hour") / "cosmx_232.h5ad"
    adata.write_h5ad(path)
    return path, xy_um


# ---------------------------------------------------------------------- acting as a user
def _settle(seconds: float = 0.0) -> None:
    end = time.perf_counter() + seconds
    while True:
        QApplication.processEvents()
        if time.perf_counter() >= end:
            return
        time.sleep(0.01)


def _wait(condition, timeout: float = 45.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        assert time.perf_counter() < end, "the step did not finish in time"
        _settle(0.02)


def _open(viewer, dock: str):
    """Bring a dock's tab to the front, as a click on its tab does; returns its widget."""
    widget = viewer.window.dock_widgets[f"{dock} (napari-cellina)"]
    frame = widget
    while frame is not None and not isinstance(frame, QDockWidget):
        frame = frame.parent()
    frame.raise_()
    _settle(0.05)
    return widget


def _click(button) -> None:
    assert button.isEnabled(), f"{button.text()!r} is greyed out"
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)
    _settle()


def _choose(combo, text: str) -> None:
    """Pick the item starting with ``text``, as a user does: the box changes and reports it was activated."""
    index = next((i for i in range(combo.count()) if combo.itemText(i).startswith(text)), -1)
    assert index >= 0, f"{text!r} is not offered ({[combo.itemText(i) for i in range(combo.count())]})"
    combo.setCurrentIndex(index)
    combo.activated.emit(index)
    _settle()


def _tick(widget, *texts: str) -> None:
    for text in texts:
        widget.findItems(text, Qt.MatchFlag.MatchExactly)[0].setSelected(True)


def _run(button, session) -> None:
    _click(button)
    _wait(lambda: not session.busy)


# ---------------------------------------------------------------------- the story, step by step
def _open_the_file(viewer, docks, path, steps):
    tissue = _open(viewer, "1. Tissue")
    viewer.open(str(path), plugin="napari-cellina")
    _settle(0.1)
    session = tissue.session
    session.events.step.connect(lambda name, outcome: steps.append((name, outcome)))
    keys = session.keys
    assert (keys.cell_type_key, keys.domain_key, keys.batch_key) == ("ist", "typ", "sid")
    assert (keys.x_column, keys.y_column, keys.counts_layer) == ("CenterX_global_px", "CenterY_global_px", None)
    assert "guessed from the names" in tissue.guesses.text() and "'ist'" in tissue.guesses.text()
    assert get_bridge(viewer).color_by == "ist" and tissue.legend.info.name == "ist"
    assert "pixels" in tissue.units.text() and "0.12028" in tissue.units.text()
    return tissue, session


def _choose_the_pixel_size_and_preprocess(tissue, session, xy_um, errors):
    _click(tissue.preprocess_button)
    assert "pixel size" in errors[-1] and not session.busy
    _choose(tissue.instrument, "CosMx")
    assert tissue.pixel_size.text() == "0.12028" and session.keys.pixel_size == COSMX_PIXEL_UM
    assert tissue.units.text() == ""
    np.testing.assert_allclose(session.display_coordinates(), xy_um[:, ::-1], rtol=1e-9)
    tissue.n_top_genes.setValue(60)
    tissue.max_neighbours.setValue(15)
    _run(tissue.preprocess_button, session)
    assert tissue.last_error is None, tissue.last_error
    assert "neighbours per cell at a median" in tissue.status.text()
    assert session.adata.uns["spatial_neighbors"]["params"]["library_key"] == "sid"
    assert (tissue.x_column.currentText(), tissue.x_column.isEnabled()) == ("CenterX_global_px", False)


def _train(viewer, session, steps):
    model = _open(viewer, "2. Model")
    assert model.preset.currentText() == "recommended"
    model.max_epochs.setValue(2)
    model.batch_size.setValue(128)
    model.n_clusters.setValue(4)
    model.early_stopping.setChecked(False)
    _click(model.train_button)
    _wait(lambda: CLUSTER_COLUMNS["s"] in session.adata.obs and not session.busy)
    assert model.last_error is None, model.last_error
    trained = next(outcome for name, outcome in steps if name == "training")
    assert trained.status == "done" and "preset 'recommended'" in trained.message
    assert session.model.summary_stats.n_batch == 2
    _click(model.show_s)
    assert model.legend.info.name == CLUSTER_COLUMNS["s"] and len(model.legend.labels()) == 4


def _lasso(viewer, session):
    edge = _open(viewer, "3. Edge perturbation")
    points = session.display_coordinates()
    lo, hi = points.min(axis=0) - 5, points.max(axis=0) + 5
    mid = (lo + hi) / 2
    _click(edge.draw_focal)
    viewer.layers["focal lasso"].add(np.array([lo, [lo[0], hi[1]], hi, [hi[0], lo[1]]]), shape_type="polygon")
    _click(edge.draw_donors)
    right_half = np.array([[lo[0], mid[1]], [lo[0], hi[1]], hi, [hi[0], mid[1]]])
    viewer.layers["donor lasso"].add(right_half, shape_type="polygon")
    _settle()
    for target, domain, kind in ((FOCAL, "232_REF", "myeloid_1"), (DONORS, "232_CRC", None)):
        _choose(edge.refine_target, target)
        edge.refine_types.clearSelection()
        edge.refine_domains.clearSelection()
        _tick(edge.refine_domains, domain)
        if kind:
            _tick(edge.refine_types, kind)
        _click(edge.refine_button)
    obs = session.adata.obs
    expected = ((obs["typ"] == "232_REF") & (obs["ist"] == "myeloid_1")).to_numpy()
    np.testing.assert_array_equal(session.selections[FOCAL].mask, expected)
    assert len(viewer.layers[RING_LAYERS[FOCAL]].data) == expected.sum()
    assert len(viewer.layers[RING_LAYERS[DONORS]].data) == session.selection_counts()[DONORS] > 0
    return edge


def _edge_and_node(viewer, edge, session):
    edge.n_neighbours.setValue(8)
    _run(edge.run_button, session)
    assert edge.last_error is None, edge.last_error
    assert session.runs["edge 1"].params["preset"] == "recommended"
    node = _open(viewer, "4. Node perturbation")
    assert (node.control_domain.currentText(), node.target_domain.currentText()) == ("232_REF", "232_CRC")
    node.n_genes.setValue(5)
    _click(node.fill_button)
    assert node.status.text().endswith("control 232_REF -> target 232_CRC") and len(session.gene_shifts) > 0
    _run(node.run_button, session)
    assert node.last_error is None, node.last_error


def _results(viewer, session):
    results = _open(viewer, "5. Results")
    _choose(results.run_choice, "node 1")
    _click(results.show_button)
    assert "log2 fold change, counterfactual vs factual" in results.legend.info.name
    assert results.top_table.horizontalHeaderItem(1).text() == "log2FC, counterfactual vs factual (focal mean)"
    _choose(results.target_type, "myeloid_1")
    assert results.target_domain.currentText() == "232_CRC"
    _click(results.plot_button)
    assert results.plot.isVisible() and "focal (observed)" in results.plot.axes.get_ylabel()
    order = [layer.name for layer in viewer.layers]
    assert order.index(get_bridge(viewer).cells_layer.name) < order.index(RESULT_LAYER) < order.index("focal cells")


def _export(viewer, session, path):
    export = _open(viewer, "6. Export")
    assert "node 1" in export.run_label.text() and "recommended preset" in export.run_label.text()
    assert export.export_button.text() == "Export run 'node 1'..."
    assert "obs columns CenterX_global_px/CenterY_global_px at 0.12028 um per unit" in export.keys_label.text()
    export.export(str(path))  # the file dialog hands over this path
    _wait(lambda: not session.busy)
    assert export.last_error is None, export.last_error
    back = ad.read_h5ad(path)
    bookkeeping = [c for c in back.obs.columns if c.startswith("_scvi") or c == "cellina_all"]
    assert bookkeeping == []
    prov = back.uns["cellina"]["provenance"]
    keys = prov["keys"]
    assert (keys["x_column"], keys["y_column"], keys["pixel_size"]) == (
        "CenterX_global_px",
        "CenterY_global_px",
        COSMX_PIXEL_UM,
    )
    assert prov["model"]["preset"] == "recommended" and prov["current_run"] == "node 1"
    return prov


def test_first_hour_through_the_docks(make_napari_viewer, cosmx_file, errors, tmp_path):
    path, xy_um = cosmx_file
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    docks = add_cellina_docks(viewer)
    assert len(docks) == 6
    steps: list = []
    tissue, session = _open_the_file(viewer, docks, path, steps)
    _choose_the_pixel_size_and_preprocess(tissue, session, xy_um, errors)
    _train(viewer, session, steps)
    edge = _lasso(viewer, session)
    _edge_and_node(viewer, edge, session)
    _results(viewer, session)
    prov = _export(viewer, session, tmp_path / "perturbed.h5ad")
    assert [name for name, outcome in steps if outcome.status != "done"] == []
    MODELS["docks"] = prov["model"]


# ---------------------------------------------------------------------- the command line
def _cli(*argv: str) -> None:
    from cellina.cli import main

    assert main(list(argv)) == 0, argv


def test_first_hour_on_the_command_line(cosmx_file, tmp_path, capsys):
    path, xy_um = cosmx_file
    model_dir = tmp_path / "model"
    coordinates = ["--x-column", "CenterX_global_px", "--y-column", "CenterY_global_px", "--pixel-size", "0.12028"]
    sizes = ["--bandwidth", "20", "--max-neighbours", "15", "--max-epochs", "2", "--batch-size", "128"]
    _cli("train", str(path), str(model_dir), *coordinates, *sizes, "--accelerator", "cpu")
    said = capsys.readouterr()
    assert "--labels-key 'ist'" in said.err and "--batch-key 'sid'" in said.err and "recommended preset" in said.out
    prepared = ad.read_h5ad(model_dir / "adata.h5ad")
    np.testing.assert_allclose(prepared.obsm["spatial"], xy_um, rtol=1e-9)
    _cli(
        "counterfactual", "edge", str(model_dir), str(tmp_path / "edge.h5ad"), "--focal", FOCAL_QUERY,
        "--donors-neighbours-of", "typ == '232_CRC' and ist == 'myeloid_1'", "--exclude", "ist == 'myeloid_1'",
        "--n-neighbours", "8", "-q",
    )  # fmt: skip
    genes = list(prepared.var_names[:3])
    pd.DataFrame({"gene": genes, "value": [1.0, -1.0, 2.0]}).to_csv(tmp_path / "shifts.csv", index=False)
    _cli("counterfactual", "node", str(model_dir), str(tmp_path / "node.h5ad"), "--focal", FOCAL_QUERY,
         "--shifts", str(tmp_path / "shifts.csv"), "-q")  # fmt: skip
    for name in ("edge", "node"):
        back = ad.read_h5ad(tmp_path / f"{name}.h5ad")
        prov = back.uns["cellina"]["provenance"]
        assert prov["keys"]["x_column"] == "CenterX_global_px" and prov["keys"]["pixel_size"] == COSMX_PIXEL_UM
        assert prov["model"]["preset"] == "recommended"
        assert not [c for c in back.obs.columns if c.startswith("_scvi")]
        assert back.obs["cellina_counterfactual_cells"].sum() == back.obs.eval(FOCAL_QUERY).sum()
    if "docks" in MODELS:  # after the docks' run on the same file: one model whatever the face
        options = dict(prov["model"]["init_params"])
        assert {"n_latent", "n_hidden", "niche_decoder", "spatial_decoding"} <= set(options)
        assert options == dict(MODELS["docks"]["init_params"])
