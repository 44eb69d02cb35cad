"""Steps in napari thread workers: progress, cancel, one step at a time, results applied on the main thread."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from cellina.plugin._state import DONORS, FOCAL, PreprocessParams, TrainParams

from .._helpers import quadrant
from ._viewers import sample_viewer


def _await(qtbot, dock, worker, timeout=120_000):
    assert worker is not None, dock.last_error
    with qtbot.waitSignal(worker.finished, timeout=timeout):
        pass
    # training and loading hand over to a follow-up worker for the latents
    while dock.worker is not None:
        with qtbot.waitSignal(dock.worker.finished, timeout=timeout):
            pass
    assert dock.last_error is None, dock.last_error


# ---------------------------------------------------------------------- training
def test_cancel_during_training_in_a_worker_keeps_a_model(qtbot, errors):
    with sample_viewer(synchronous=False) as (_, w):
        tissue, model = w["tissue"], w["model"]
        tissue.n_top_genes.setValue(80)
        _await(qtbot, tissue, tissue.preprocess())
        assert "spatial_x" in tissue.session.adata.obsm
        # cancel after the first epoch's report: training stops early and keeps a usable model
        model.max_epochs.setValue(200)
        model.batch_size.setValue(64)
        model.early_stopping.setChecked(False)
        reports = []
        worker = model.train()
        assert model.cancel_button.isEnabled()
        worker.yielded.connect(lambda r: (reports.append(r), r.losses and model.cancel()))
        _await(qtbot, model, worker)
        epochs = [r.step for r in reports if r.losses]
        assert 1 <= len(epochs) < 200
        assert tissue.session.model is not None and "cancelled" in tissue.session.model_source
        assert any(k.endswith("loss") for k in reports[-1].losses)
        assert not tissue.session.busy and not model.cancel_button.isEnabled() and errors == []


def test_cancel_before_the_first_epoch_is_a_clear_message(errors, monkeypatch):
    with sample_viewer(synchronous=True) as (_, w):
        tissue, model = w["tissue"], w["model"]
        tissue.preprocess()
        model.niche_decoder.setCurrentIndex(model.niche_decoder.findData("concat"))
        assert model.params().niche_decoder == "concat"
        model.spatial_decoding.setCurrentIndex(model.spatial_decoding.findData("sample"))
        assert model.params().spatial_decoding == "sample"
        model.discriminator_input.setCurrentIndex(model.discriminator_input.findData(False))
        assert model.params().type_aware_discriminator is False
        model.max_epochs.setValue(3)
        tissue.session.cancel()  # nothing runs: a cancel now must not reach the next run
        # cancel from the first progress report
        original = model.on_progress
        monkeypatch.setattr(model, "on_progress", lambda r: (model.cancel(), original(r)))
        model.train()
        assert "cancelled before the first epoch" in errors[-1]
        assert tissue.session.model is None and not tissue.session.busy
        assert model.train_button.isEnabled()


# ---------------------------------------------------------------------- runs in workers
@pytest.fixture(scope="module")
def trained_async():
    """Asynchronous docks on a trained two-slide sample, focal and donor lassos drawn."""
    with sample_viewer(synchronous=False) as (viewer, w):
        session = w["tissue"].session
        session.run(session.preprocess_job(PreprocessParams(n_top_genes=80, max_neighbours=15), w["tissue"].keys()))
        session.run(session.train_job(TrainParams(max_epochs=2, batch_size=128), n_clusters=4))
        calls = []
        original = session.select_polygons
        session.select_polygons = lambda *a, **k: (calls.append(a[0]), original(*a, **k))[1]
        points = session.display_coordinates()
        w["edge"].draw_focal.click()
        viewer.layers["focal lasso"].add(quadrant(points, "low"), shape_type="polygon")
        w["edge"].draw_donors.click()
        viewer.layers["donor lasso"].add(quadrant(points, "high"), shape_type="polygon")
        session.select_polygons = original
        yield viewer, w, calls


def test_each_finished_polygon_becomes_a_selection_once(trained_async):
    _, _, calls = trained_async
    assert calls == [FOCAL, DONORS]


def test_colouring_by_a_column_drops_the_gene_hover_column(trained_async):
    _, w, _ = trained_async
    gene = str(w["tissue"].session.adata.var_names[3])
    w["tissue"].recolour(gene)
    assert gene in w["tissue"].bridge.cells_layer.features.columns
    w["tissue"].recolour("domain")
    assert gene not in w["tissue"].bridge.cells_layer.features.columns


def test_an_edge_run_in_a_worker_one_step_at_a_time(trained_async, qtbot):
    viewer, w, _ = trained_async
    session = w["tissue"].session
    w["edge"].n_neighbours.setValue(8)
    w["edge"].n_draws.setValue(2)
    assert not any(dock.synchronous for dock in w.values())
    worker = w["edge"].run()
    assert session.busy and not w["node"].run_button.isEnabled()
    assert w["node"].run() is None  # one step at a time
    _await(qtbot, w["edge"], worker)
    run = session.runs[session.current_run]
    assert run.kind == "edge" and run.std is not None
    assert run.expression.shape == (session.selection_counts()[FOCAL], session.adata.n_vars)
    assert viewer.layers["counterfactual"].data.shape[0] == run.indices.size
    assert w["node"].run_button.isEnabled()


def test_a_node_run_in_a_worker(trained_async, qtbot):
    _, w, _ = trained_async
    session = w["tissue"].session
    gene = str(session.adata.var_names[3])
    session.add_gene_shift(gene, -10.0, senders=[str(session.adata.obs["cell_type"].iloc[0])])
    _await(qtbot, w["node"], w["node"].run())
    node = session.runs[session.current_run]
    assert node.kind == "node" and node.expression.shape == (node.indices.size, session.adata.n_vars)
    assert not np.allclose(node.expression, node.factual)


def test_an_export_in_a_worker(trained_async, qtbot, tmp_path):
    _, w, _ = trained_async
    session = w["tissue"].session
    path = tmp_path / "perturbed.h5ad"
    _await(qtbot, w["export"], w["export"].export(str(path)))
    back = ad.read_h5ad(path)
    assert back.uns["cellina"]["provenance"]["current_run"] == (session.current_run or "")
    assert w["export"].last_written is not None and not session.busy
