"""Pure steps: progress out, typed results back, inputs never written; every failure an outcome."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cellina.plugin._state import (
    FOCAL,
    Outcome,
    PreprocessParams,
    Progress,
    SessionError,
    TissueKeys,
    TrainingCancelled,
)
from cellina.plugin._steps import cluster_labels, in_thread, outcome_of, preprocess_steps, run_sync

PARAMS = PreprocessParams(n_top_genes=None, bandwidth_um=15, max_neighbours=8, min_counts_gene=0)


# ---------------------------------------------------------------------- running steps
def _failing(error: BaseException):
    yield Progress(0, 1, "working")
    raise error


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad value"),
        KeyError("gene"),
        RuntimeError("CUDA error"),
        MemoryError("out of memory"),
        SessionError("no focal cells"),
    ],
)
def test_every_exception_becomes_a_failed_outcome(error):
    outcome = run_sync(outcome_of(_failing(error)))
    assert isinstance(outcome, Outcome) and outcome.status == "failed" and outcome.error is error


def test_a_torch_out_of_memory_error_becomes_a_failed_outcome():
    import torch

    error = torch.OutOfMemoryError("CUDA out of memory")
    assert isinstance(error, RuntimeError)  # the kind napari's worker swallows
    outcome = run_sync(outcome_of(_failing(error)))
    assert outcome.status == "failed" and outcome.error is error


def test_a_cancellation_becomes_a_cancelled_outcome():
    outcome = run_sync(outcome_of(_failing(TrainingCancelled("cancelled before the first epoch"))))
    assert outcome.status == "cancelled" and "first epoch" in str(outcome.error)


def test_a_finished_step_is_done_with_its_value():
    def steps():
        yield Progress(0, 1, "working")
        return 42

    reports = []
    outcome = run_sync(outcome_of(steps()), reports.append)
    assert outcome == Outcome("done", 42) and [r.message for r in reports] == ["working"]


def test_in_thread_yields_the_call_s_reports_and_returns_its_value():
    def work(report):
        for i in range(3):
            report(Progress(i, 3, f"part {i}"))
        return threading.current_thread().name

    reports = []
    value = run_sync(in_thread(work, name="inner"), reports.append)
    assert value == "inner" and [r.step for r in reports] == [0, 1, 2]


def test_in_thread_raises_the_call_s_error_in_the_generator():
    def work(report):
        report(Progress(0, 1, "start"))
        raise RuntimeError("inside the call")

    with pytest.raises(RuntimeError, match="inside the call"):
        run_sync(in_thread(work))


def test_closing_in_thread_cancels_the_call_and_waits_for_it():
    cancel, stopped = threading.Event(), threading.Event()

    def work(report):
        while not cancel.is_set():
            report(Progress(0, 1, "tick"))
            cancel.wait(0.01)
        stopped.set()

    steps = in_thread(work, cancel)
    next(steps)
    steps.close()
    assert cancel.is_set() and stopped.is_set()


# ---------------------------------------------------------------------- preprocess
def test_preprocess_steps_yield_progress(tissue):
    reports: list[Progress] = []
    run_sync(preprocess_steps(tissue, TissueKeys(), PARAMS), reports.append)
    steps = [r.step for r in reports]
    assert steps[0] == 0 and steps[-1] == 100 and steps == sorted(steps) and len(steps) >= 5


def test_preprocess_steps_do_not_touch_the_input(tissue):
    before = tissue.copy()
    result = run_sync(preprocess_steps(tissue, TissueKeys(), PARAMS))
    assert result.adata is not tissue and result.adata.n_obs == 120
    assert tissue.obsp.keys() == before.obsp.keys() and "spatial_x" not in tissue.obsm
    np.testing.assert_array_equal(tissue.X.toarray(), before.X.toarray())


def test_preprocessed_keys_read_micrometres_and_remember_the_source(tissue):
    keys = TissueKeys(x_column="x_px", y_column="y_px", pixel_size=0.5)
    result = run_sync(preprocess_steps(tissue, keys, PARAMS))
    assert (result.keys.spatial_key, result.keys.x_column, result.keys.counts_layer) == ("spatial", None, "counts")
    # obsm["spatial"] holds micrometres: the pixel columns times the pixel size
    assert result.keys.pixel_size == 1.0 and result.params is PARAMS
    np.testing.assert_allclose(result.adata.obsm["spatial"], tissue.obsm["spatial"])
    source = result.adata.uns["cellina"]["preprocess"]["coordinates"]
    assert (source["x_column"], source["y_column"], source["pixel_size"]) == ("x_px", "y_px", 0.5)


def test_preprocessing_reports_the_graph(tissue):
    result = run_sync(preprocess_steps(tissue, TissueKeys(), PARAMS))
    # a 10 um grid with a 15 um bandwidth: 8 neighbours within the cut-off, at 10 and 14.1 um
    assert "median 8 neighbours per cell at a median 14.1 um" in result.message


def test_pixels_taken_for_micrometres_are_refused_with_the_reason(tissue):
    # 0.5 um pixels read as 5 um: cells 100 um apart, none within a 15 um bandwidth
    keys = TissueKeys(x_column="x_px", y_column="y_px", pixel_size=5.0)
    with pytest.raises(SessionError, match=r"^100% of the cells have no neighbour.*nearest cell is 100.*pixel size"):
        run_sync(preprocess_steps(tissue, keys, PARAMS))


def test_niche_features_are_the_weighted_neighbour_mean_of_lognormalised_expression(tissue):
    out = run_sync(preprocess_steps(tissue, TissueKeys(), PARAMS)).adata
    W = out.obsp["spatial_connectivities"]
    lognorm = out.layers["cellina_lognorm"].toarray()
    counts = out.layers["counts"].toarray()
    np.testing.assert_allclose(lognorm, np.log1p(counts / counts.sum(1, keepdims=True) * 1e4), rtol=1e-5)
    deg = np.asarray(W.sum(axis=1)).ravel()
    np.testing.assert_allclose(out.obsm["spatial_x"], (W @ lognorm) / deg[:, None], rtol=1e-4, atol=1e-5)
    assert W.max() > 0 and (W.getnnz(axis=1) <= 8).all()


def test_a_bandwidth_of_zero_is_refused(tissue):
    with pytest.raises(SessionError, match="bandwidth"):
        run_sync(preprocess_steps(tissue, TissueKeys(), PreprocessParams(bandwidth_um=0)))


def test_values_that_are_not_counts_are_refused(tissue):
    tissue.layers["logged"] = tissue.layers["counts"] * 0.5
    with pytest.raises(SessionError, match=r"layers\['logged'\] does not hold raw counts"):
        run_sync(preprocess_steps(tissue, TissueKeys(counts_layer="logged"), PARAMS))


# ---------------------------------------------------------------------- latents
def _two_blobs():
    rng = np.random.default_rng(0)
    return np.r_[rng.normal(0, 0.1, (50, 3)), rng.normal(5, 0.1, (50, 3))]


def test_kmeans_finds_two_blobs():
    labels = cluster_labels(_two_blobs(), "kmeans", n_clusters=2)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]


def test_leiden_separates_two_blobs():
    labels = cluster_labels(_two_blobs(), "leiden")
    assert len(set(labels[:50]) & set(labels[50:])) == 0


def test_an_unknown_clustering_method_is_named():
    with pytest.raises(SessionError, match="unknown clustering method 'dbscan'"):
        cluster_labels(_two_blobs(), "dbscan")


# ---------------------------------------------------------------------- node
def test_a_node_run_groups_senders_in_the_worker_not_in_the_job_factory(trained_two_slide, monkeypatch):
    from cellina.counterfactual import GeneShifts

    session = trained_two_slide
    threads = []
    original = GeneShifts.sender_groups
    monkeypatch.setattr(
        GeneShifts,
        "sender_groups",
        lambda self, *a: (threads.append(threading.current_thread().name), original(self, *a))[1],
    )
    monkeypatch.setattr(session, "selections", {})
    monkeypatch.setattr(session, "gene_shifts", session.gene_shifts)
    session.set_selection(FOCAL, np.arange(20))
    session.add_gene_shift(
        str(session.adata.var_names[1]), -10.0, senders=[str(session.adata.obs["cell_type"].iloc[0])]
    )
    job = session.node_job()
    assert threads == []  # the main thread only checks and gathers references
    result = {}
    worker = threading.Thread(target=lambda: result.update(run=run_sync(job.steps)), name="node-worker")
    worker.start()
    worker.join()
    assert threads == ["node-worker"] and result["run"].expression.shape == (20, session.adata.n_vars)


def test_a_node_run_never_writes_to_the_tissue(trained_two_slide, monkeypatch):
    session = trained_two_slide
    monkeypatch.setattr(session, "selections", {})
    monkeypatch.setattr(session, "gene_shifts", session.gene_shifts)
    session.set_selection(FOCAL, np.arange(20))
    session.add_gene_shift(str(session.adata.var_names[1]), 2.0)
    obsm = set(session.adata.obsm.keys())
    run = run_sync(session.node_job().steps)
    assert set(session.adata.obsm.keys()) == obsm
    assert run.spatial_x.shape == session.adata.obsm["spatial_x"].shape
