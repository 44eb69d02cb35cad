"""End to end through the docks: sample -> preprocess -> train -> lasso -> edge and node runs -> export."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from qtpy.QtCore import Qt

import cellina.plugin._sample_data as sample_data
from cellina.plugin._session import DONORS, FOCAL
from cellina.plugin.widgets import (
    CellinaDock,
    EdgeWidget,
    ExportWidget,
    ModelWidget,
    NodeWidget,
    ResultsWidget,
    TissueWidget,
)
from cellina.plugin.widgets._bridge import CELLS, RESULT_LAYER, S_LAYER, Z_LAYER


@pytest.fixture
def small_sample(monkeypatch):
    # the shipped sample is 6,000 cells; the same code path on 700 cells keeps CI fast
    monkeypatch.setattr(sample_data, "SAMPLE_N_CELLS", 700)
    monkeypatch.setattr(sample_data, "SAMPLE_N_GENES", 100)


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    import cellina.plugin.widgets._common as common

    monkeypatch.setattr(common, "show_error", shown.append)
    return shown


@pytest.fixture
def docks(make_napari_viewer, small_sample, monkeypatch):
    monkeypatch.setattr(CellinaDock, "synchronous", True)
    viewer = make_napari_viewer()
    widgets = {
        "tissue": TissueWidget(viewer),
        "model": ModelWidget(viewer),
        "edge": EdgeWidget(viewer),
        "node": NodeWidget(viewer),
        "results": ResultsWidget(viewer),
        "export": ExportWidget(viewer),
    }
    for name, widget in widgets.items():
        viewer.window.add_dock_widget(widget, name=name)
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    return viewer, widgets


def _quadrant(points: np.ndarray, which: str) -> np.ndarray:
    lo, hi = points.min(axis=0), points.max(axis=0)
    mid = (lo + hi) / 2
    if which == "low":
        a, b = lo - 1, mid
    else:
        a, b = mid, hi + 1
    return np.array([[a[0], a[1]], [a[0], b[1]], [b[0], b[1]], [b[0], a[1]]])


def _preprocess_and_train(viewer, widgets):
    tissue, model = widgets["tissue"], widgets["model"]
    tissue.n_top_genes.setValue(80)
    tissue.max_neighbours.setValue(15)
    tissue.preprocess()
    assert tissue.last_error is None, tissue.last_error
    model.max_epochs.setValue(2)
    model.batch_size.setValue(128)
    model.n_clusters.setValue(4)
    model.train()
    assert model.last_error is None, model.last_error


def test_whole_workflow_by_the_docks(docks, tmp_path, errors):
    viewer, w = docks
    session = w["tissue"].session
    # the tissue dock adopts the sample layer as soon as it appears
    assert session.adata is not None and session.adata.n_obs == 700
    cells = viewer.layers["synthetic tumour section"]
    assert w["tissue"].bridge.cells_layer is cells

    _preprocess_and_train(viewer, w)
    adata = session.adata
    assert adata.n_vars == 80 and "spatial_x" in adata.obsm and "cellina_lognorm" in adata.layers
    # the cells layer is updated in place, not duplicated
    assert w["tissue"].bridge.cells_layer is cells and len(cells.data) == adata.n_obs
    assert CELLS not in viewer.layers
    assert session.model is not None and len(w["model"].loss_curve.series) > 0
    for name, column in ((Z_LAYER, "cellina_z_cluster"), (S_LAYER, "cellina_s_cluster")):
        assert name in viewer.layers
        assert adata.obs[column].nunique() == 4
        assert len(viewer.layers[name].data) == adata.n_obs

    # recolour by domain: legend shows the domains
    w["tissue"].recolour("domain")
    assert set(w["tissue"].legend.labels()) >= set(adata.obs["domain"].astype(str).unique())
    w["tissue"].recolour(adata.var_names[0])
    assert w["tissue"].legend.info.kind == "continuous"

    # lasso focal and donors by adding polygons to the Shapes layers the buttons create
    w["edge"].draw_focal.click()
    focal_layer = viewer.layers["focal lasso"]
    assert focal_layer.mode == "add_polygon_lasso"
    points = session.display_coordinates()
    focal_layer.add(_quadrant(points, "low"), shape_type="polygon")
    w["edge"].draw_donors.click()
    viewer.layers["donor lasso"].add(_quadrant(points, "high"), shape_type="polygon")
    y, x = points[:, 0], points[:, 1]
    mid = (points.min(axis=0) + points.max(axis=0)) / 2
    expected_focal = int(((y <= mid[0]) & (x <= mid[1])).sum())
    counts = session.selection_counts()
    assert counts[FOCAL] == expected_focal and counts[DONORS] > 0
    assert f"focal: {expected_focal} cells" in w["edge"].counts.text()

    # refine the focal cells to one domain
    w["edge"].refine_target.setCurrentText(FOCAL)
    domain = adata.obs["domain"].astype(str)[session.selections[FOCAL].base].value_counts().index[0]
    w["edge"].refine_domains.findItems(domain, Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    w["edge"].refine()
    in_domain = int((session.selections[FOCAL].base & (adata.obs["domain"].astype(str) == domain).to_numpy()).sum())
    assert session.selection_counts()[FOCAL] == in_domain > 0

    # edge run with two draws: mean and spread
    w["edge"].n_neighbours.setValue(8)
    w["edge"].n_draws.setValue(2)
    w["edge"].run()
    assert w["edge"].last_error is None, w["edge"].last_error
    run = session.runs["edge 1"]
    assert run.expression.shape == (in_domain, adata.n_vars) and run.std is not None
    assert run.donors.shape == (2, in_domain, 8)
    # donors come from the donor lasso, and no focal cell is its own donor
    assert np.isin(run.donors, session.selection_indices(DONORS)).all()
    assert not (run.donors == run.indices[None, :, None]).any()
    result_layer = viewer.layers[RESULT_LAYER]
    assert len(result_layer.data) == in_domain
    assert w["results"].top_table.rowCount() == 20

    # node run: knock out one gene in the neighbours
    gene = w["results"].top_table.item(0, 0).text()
    w["node"].gene.setCurrentText(gene)
    w["node"].knockout.click()
    w["node"].add_shift()
    assert session.gene_shifts["value"].tolist() == [-10.0]
    w["node"].run()
    assert w["node"].last_error is None, w["node"].last_error
    node_run = session.runs["node 1"]
    assert node_run.kind == "node" and node_run.expression.shape == run.expression.shape
    # the layer is reused across runs, not added per run
    assert viewer.layers[RESULT_LAYER] is result_layer
    assert sum(layer.name.startswith(RESULT_LAYER) for layer in viewer.layers) == 1

    # switch back to the edge run, show std, plot observed vs predicted
    w["results"].run_choice.setCurrentText("edge 1")
    w["results"].run_choice.activated.emit(0)
    assert session.current_run == "edge 1"
    w["results"].mode.setCurrentText("std across draws")
    w["results"].show_result()
    assert w["results"].legend.info.name.endswith("std across draws")
    w["results"].target_type.setCurrentText("myeloid_1")
    w["results"].target_domain.setCurrentText("tumour")
    data = w["results"].plot_comparison()
    assert data is not None and np.isfinite(data["pearson"]) and len(data["deg"]) == 50

    # export and reopen
    path = tmp_path / "perturbed.h5ad"
    written = w["export"].export(str(path))
    assert written is not None and path.exists()
    back = ad.read_h5ad(path)
    assert back.n_obs == adata.n_obs
    assert back.obs["cellina_focal"].sum() == in_domain
    assert "cellina_z" in back.obsm and "cellina_s" in back.obsm
    cf = back.layers["cellina_counterfactual"]
    np.testing.assert_allclose(cf[run.indices].toarray(), run.expression, rtol=1e-6)
    assert cf[np.setdiff1d(np.arange(back.n_obs), run.indices)].nnz == 0
    prov = back.uns["cellina"]["provenance"]
    assert prov["current_run"] == "edge 1"
    assert set(prov["runs"]) == {"edge 1", "node 1"}
    np.testing.assert_array_equal(prov["runs"]["edge 1"]["donor_indices"], run.donors)
    assert list(prov["runs"]["node 1"]["gene_shifts"]["gene"]) == [gene]
    assert prov["model"]["class"] == "Cellina" and len(prov["model"]["weights_sha256"]) == 64
    assert "scvi-tools" in prov["versions"]

    # File > Save through our writer writes the same export
    from napari.plugins.io import save_layers

    saved = save_layers(str(tmp_path / "saved.h5ad"), [cells], plugin="napari-cellina")
    assert saved and ad.read_h5ad(saved[0]).uns["cellina"]["provenance"]["current_run"] == "edge 1"
    assert errors == []


def test_errors_become_notifications_and_keep_state(docks, tmp_path, errors):
    viewer, w = docks
    session = w["tissue"].session
    n_before = session.adata.n_obs

    # keys missing: a counts layer that does not exist
    w["tissue"].counts.addItem("no_such_layer")
    w["tissue"].counts.setCurrentText("no_such_layer")
    w["tissue"].preprocess()
    assert "no_such_layer" in errors[-1] and session.adata.n_obs == n_before
    w["tissue"].counts.setCurrentText("counts")

    # no model yet
    w["edge"].run()
    assert "no model" in errors[-1]

    _preprocess_and_train(viewer, w)
    model = session.model

    # no focal cells
    w["edge"].run()
    assert "no focal cells" in errors[-1]

    # a focal lasso that catches nobody, then an empty donor lasso
    points = session.display_coordinates()
    far = points.max(axis=0) + 1000
    w["edge"].draw_focal.click()
    viewer.layers["focal lasso"].add(np.array([far, far + [0, 10], far + 10]), shape_type="polygon")
    w["edge"].run()
    assert "no focal cells" in errors[-1]
    viewer.layers["focal lasso"].data = []
    viewer.layers["focal lasso"].add(_quadrant(points, "low"), shape_type="polygon")
    w["edge"].draw_donors.click()
    viewer.layers["donor lasso"].add(np.array([far, far + [0, 10], far + 10]), shape_type="polygon")
    w["edge"].run()
    assert "donor pool" in errors[-1] and "empty" in errors[-1]
    assert session.runs == {}

    # unknown gene
    w["node"].gene.setCurrentText("NOT_A_GENE")
    w["node"].add_shift()
    assert "NOT_A_GENE" in errors[-1] and session.gene_shifts.empty
    w["node"].run()
    assert "gene-shift table is empty" in errors[-1]

    # model/data mismatch: a model saved on other genes
    other = session.adata[:, 5:].copy()
    from cellina.plugin._session import CellinaSession

    other_session = CellinaSession(other, session.keys)
    other_session.preprocess_params = session.preprocess_params
    other_session.train(max_epochs=1, batch_size=256)
    folder = tmp_path / "other_model"
    other_session.save_model(str(folder))
    w["model"].load_model(str(folder))
    assert "does not match" in errors[-1] and str(folder) in errors[-1]
    assert session.model is model

    # a folder that is not a model
    w["model"].load_model(str(tmp_path))
    assert "not a Cellina model folder" in errors[-1]
    assert session.model is model


def test_training_in_a_worker_with_progress_and_cancel(make_napari_viewer, small_sample, qtbot, errors):
    viewer = make_napari_viewer()
    tissue, model = TissueWidget(viewer), ModelWidget(viewer)
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    tissue.n_top_genes.setValue(80)
    worker = tissue.preprocess()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert "spatial_x" in tissue.session.adata.obsm

    # cancel after the first epoch's report: training stops early and keeps a usable model
    model.max_epochs.setValue(200)
    model.batch_size.setValue(64)
    model.early_stopping.setChecked(False)
    reports = []
    worker = model.train()
    assert model.cancel_button.isEnabled()
    worker.yielded.connect(lambda r: (reports.append(r), r.losses and model.cancel()))
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    # the model's latents are computed by a follow-up worker
    if model.worker is not None:
        with qtbot.waitSignal(model.worker.finished, timeout=60_000):
            pass
    epochs = [r.step for r in reports if r.losses]
    assert 1 <= len(epochs) < 200
    assert tissue.session.model is not None
    # the dock's default niche decoder reaches the model
    from cellina.model import FactorisedNicheDecoder

    assert model.params().niche_decoder == "type_gated"
    assert model.params().spatial_decoding == "mean"
    assert tissue.session.model.module.spatial_decoding == "mean"
    assert model.params().type_aware_discriminator
    assert tissue.session.model.module.type_aware_discriminator
    assert isinstance(tissue.session.model.module.decoder, FactorisedNicheDecoder)
    assert tissue.session.model.module.decoder.type_niche_loadings is not None
    assert "cancelled" in tissue.session.model_source
    assert any(k.endswith("loss") for k in reports[-1].losses)
    assert not tissue.session.busy and errors == []


def test_cancel_before_first_epoch_is_a_clear_message(make_napari_viewer, small_sample, qtbot, errors, monkeypatch):
    monkeypatch.setattr(CellinaDock, "synchronous", True)
    viewer = make_napari_viewer()
    tissue, model = TissueWidget(viewer), ModelWidget(viewer)
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    tissue.preprocess()
    model.niche_decoder.setCurrentIndex(model.niche_decoder.findData("concat"))
    assert model.params().niche_decoder == "concat"
    model.spatial_decoding.setCurrentIndex(model.spatial_decoding.findData("sample"))
    assert model.params().spatial_decoding == "sample"
    model.discriminator_input.setCurrentIndex(model.discriminator_input.findData(False))
    assert model.params().type_aware_discriminator is False
    model.max_epochs.setValue(3)
    model._cancel.set()
    # the dock makes a fresh event per run; cancel it from the first progress report
    original = model.on_progress
    monkeypatch.setattr(model, "on_progress", lambda r: (model.cancel(), original(r)))
    model.train()
    assert "cancelled before the first epoch" in errors[-1]
    assert tissue.session.model is None and not tissue.session.busy


def _await(qtbot, dock, worker, timeout=120_000):
    assert worker is not None, dock.last_error
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass
    # training hands over to a follow-up worker for the latents
    while dock.worker is not None:
        with qtbot.waitSignal(dock.worker.finished, timeout=timeout):
            pass
    assert dock.last_error is None, dock.last_error


def test_edge_node_and_export_run_in_thread_workers(make_napari_viewer, small_sample, qtbot, errors, tmp_path):
    viewer = make_napari_viewer()
    w = {"tissue": TissueWidget(viewer), "model": ModelWidget(viewer), "edge": EdgeWidget(viewer),
         "node": NodeWidget(viewer), "results": ResultsWidget(viewer), "export": ExportWidget(viewer)}
    assert not any(dock.synchronous for dock in w.values())
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    session = w["tissue"].session
    w["tissue"].n_top_genes.setValue(80)
    w["tissue"].max_neighbours.setValue(15)
    _await(qtbot, w["tissue"], w["tissue"].preprocess())
    w["model"].max_epochs.setValue(2)
    w["model"].batch_size.setValue(128)
    w["model"].n_clusters.setValue(4)
    _await(qtbot, w["model"], w["model"].train())
    assert session.model is not None and "cellina_s_cluster" in session.adata.obs

    # each finished polygon is turned into a selection once, not once per napari data event
    calls = []
    original = session.select_polygons
    session.select_polygons = lambda *a, **k: (calls.append(a[0]), original(*a, **k))[1]
    points = session.display_coordinates()
    w["edge"].draw_focal.click()
    viewer.layers["focal lasso"].add(_quadrant(points, "low"), shape_type="polygon")
    assert calls == [FOCAL]
    w["edge"].draw_donors.click()
    viewer.layers["donor lasso"].add(_quadrant(points, "high"), shape_type="polygon")
    assert calls == [FOCAL, DONORS]
    session.select_polygons = original

    # colouring by a gene puts its values into the hover features
    cells = w["tissue"].bridge.cells_layer
    gene = str(session.adata.var_names[3])
    w["tissue"].recolour(gene)
    from cellina.plugin._colours import values_for

    np.testing.assert_allclose(cells.features[gene].to_numpy(), values_for(session.adata, gene))
    i = int(np.argmax(cells.features[gene].to_numpy()))
    status = cells.get_status(cells.data[i], world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    assert f"{gene}: " in text
    w["tissue"].recolour("domain")
    assert gene not in cells.features.columns

    w["edge"].n_neighbours.setValue(8)
    w["edge"].n_draws.setValue(2)
    worker = w["edge"].run()
    assert session.busy and w["node"].run() is None  # one step at a time
    _await(qtbot, w["edge"], worker)
    run = session.runs["edge 1"]
    assert run.expression.shape == (session.selection_counts()[FOCAL], session.adata.n_vars)
    assert run.std is not None and viewer.layers[RESULT_LAYER].data.shape[0] == run.indices.size

    session.add_gene_shift(gene, -10.0, senders=[str(session.adata.obs["cell_type"].iloc[0])])
    _await(qtbot, w["node"], w["node"].run())
    node = session.runs["node 1"]
    assert node.kind == "node" and node.expression.shape == run.expression.shape
    assert not np.allclose(node.expression, node.factual)

    path = tmp_path / "perturbed.h5ad"
    _await(qtbot, w["export"], w["export"].export(str(path)))
    back = ad.read_h5ad(path)
    assert back.uns["cellina"]["provenance"]["current_run"] == "node 1"
    assert w["export"].last_written is not None and not session.busy
