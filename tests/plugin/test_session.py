"""The session: the notebook path end to end on two slides, export, and how a job ends."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from cellina.plugin._session import CellinaSession
from cellina.plugin._state import FOCAL, Job, Outcome, Progress, SessionError, StepCancelled, TissueKeys

from ._helpers import assert_same_state, session_state, whole


# ---------------------------------------------------------------------- export
def test_an_export_without_runs_carries_the_selections(tissue):
    session = CellinaSession(tissue)
    session.set_selection(FOCAL, np.arange(5))
    out = session.build_export()
    assert out.obs["cellina_focal"].sum() == 5 and "cellina_counterfactual" not in out.layers
    assert out.uns["cellina"]["provenance"]["runs"] == {}
    assert "cellina_focal" not in tissue.obs  # the session's own AnnData is untouched


def test_an_export_to_a_missing_folder_fails_by_name(tissue, tmp_path):
    session = CellinaSession(tissue)
    with pytest.raises(SessionError, match="could not write"):
        session.export(str(tmp_path / "missing_folder" / "x.h5ad"))
    assert not session.busy and session.last_export is None


def test_an_export_writes_a_readable_file_with_the_keys(tissue, tmp_path):
    session = CellinaSession(tissue)
    session.set_selection(FOCAL, np.arange(5))
    path = tmp_path / "x.h5ad"
    session.export(str(path))
    back = ad.read_h5ad(path)
    assert back.obs["cellina_focal"].sum() == 5 and session.last_export == str(path)
    assert back.uns["cellina"]["provenance"]["keys"]["cell_type_key"] == "cell_type"


# ---------------------------------------------------------------------- the notebook path
@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    """The user guide's notebook path on two slides with the slide as batch: no viewer, the docks' steps."""
    from cellina.datasets import synthetic_tissue

    adata = synthetic_tissue(n_cells=700, n_genes=100, n_slides=2, seed=1, store_means=False)
    session = CellinaSession(adata, TissueKeys(cell_type_key="cell_type", domain_key="domain", batch_key="slide"))
    steps = []
    session.events.step.connect(lambda name, outcome: steps.append((name, outcome.status)))
    session.preprocess(n_top_genes=80, bandwidth_um=20, max_neighbours=15)
    session.train(max_epochs=2, batch_size=128, holdout_cell_type="myeloid_1", holdout_domain="tumour")
    mask = session.select_polygons(
        "focal", [whole(session.display_coordinates())], cell_types=["myeloid_1"], domains=["healthy"]
    )
    pool = dict(
        pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour", n_neighbours=10, n_draws=3, seed=4
    )
    edge, again = session.run_edge(**pool), session.run_edge(**pool)
    session.fill_from_contrast("healthy", "tumour", n_genes=5, holdout="myeloid_1")
    node = session.run_node()
    path = tmp_path_factory.mktemp("scripted") / "scripted.h5ad"
    session.export(str(path))
    return {
        "session": session,
        "mask": mask,
        "edge": edge,
        "again": again,
        "node": node,
        "pool": session.donor_pool("observed", observed_cell_type="myeloid_1", observed_domain="tumour"),
        "back": ad.read_h5ad(path),
        "steps": steps,
    }


def _expected_focal(adata) -> np.ndarray:
    return ((adata.obs["cell_type"] == "myeloid_1") & (adata.obs["domain"] == "healthy")).to_numpy()


def test_each_step_ends_once_and_done(scripted):
    names = [name for name, _ in scripted["steps"]]
    assert names == [
        "preprocessing",
        "training",
        "latents and clusters",
        "edge perturbation",
        "edge perturbation",
        "node perturbation",
        "export",
    ]
    assert all(status == "done" for _, status in scripted["steps"]) and not scripted["session"].busy


def test_held_out_cells_keep_their_neighbours_only_in_the_unmasked_graph(scripted):
    adata = scripted["session"].adata
    held = np.flatnonzero(((adata.obs["cell_type"] == "myeloid_1") & (adata.obs["domain"] == "tumour")).to_numpy())
    W = adata.obsp["spatial_connectivities"]
    assert W[held].nnz == 0 and W[:, held].nnz == 0
    assert adata.obsp["spatial_connectivities_orig"][held].nnz > 0


def test_latents_and_clusters_follow_training(scripted):
    adata = scripted["session"].adata
    assert adata.obsm["cellina_z"].shape == (adata.n_obs, 10)
    assert adata.obs["cellina_s_cluster"].nunique() > 1


def test_a_lasso_refined_to_a_type_and_domain(scripted):
    np.testing.assert_array_equal(scripted["mask"], _expected_focal(scripted["session"].adata))


def test_an_edge_run_is_deterministic_for_its_seed(scripted):
    np.testing.assert_array_equal(scripted["edge"].expression, scripted["again"].expression)


def test_an_edge_run_records_and_applies_the_niche_noise_correction(scripted):
    session, edge = scripted["session"], scripted["edge"]
    assert edge.params["disattenuate"] is False
    pool = dict(pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour", n_neighbours=10, seed=4)
    corrected = session.run_edge(**pool, n_draws=3, disattenuate=True)
    assert corrected.params["disattenuate"] is True
    np.testing.assert_array_equal(corrected.factual, edge.factual)
    assert not np.allclose(corrected.expression, edge.expression)
    with pytest.raises(SessionError, match="disattenuate='yes'"):
        session.run_edge(**pool, disattenuate="yes")


def test_an_edge_run_can_borrow_the_other_types_answer(scripted):
    session, edge = scripted["session"], scripted["edge"]
    pool = dict(pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour", n_neighbours=10, seed=4)
    with pytest.raises(SessionError, match="divide by its reliability"):
        session.run_edge(**pool, borrow=True)
    saved = session.selections[FOCAL]
    try:  # every healthy cell is focal: no other type is left to borrow from
        session.set_selection(FOCAL, session.adata.obs["domain"].to_numpy() == "healthy")
        with pytest.raises(SessionError, match="nothing to borrow from"):
            session.run_edge(**pool, disattenuate=True, borrow=True)
    finally:
        session.selections[FOCAL] = saved
    assert edge.params["borrow_weight"] == 0.0 and edge.borrowed is None and edge.borrowed_record() == {}
    run = session.run_edge(**pool, n_draws=2, disattenuate=True, borrow=True)
    assert run.params["borrow_weight"] == 0.3 and list(run.borrowed.columns) == [
        "own_lfc",
        "others_lfc",
        "borrowed_lfc",
    ]
    assert "myeloid_1" not in run.borrowed.attrs["reference_cells"]
    table = session.top_changed_genes(run.name, n=10)
    # the run's own column is the borrowed table's own change; the genes are those the mixture moves most
    own = run.borrowed.loc[table["gene"], "own_lfc"].to_numpy()
    np.testing.assert_allclose(table["log2fc"], own, atol=1e-4)
    np.testing.assert_allclose(table["borrowed_log2fc"], 0.7 * own + 0.3 * table["others_log2fc"], atol=1e-6)
    assert np.abs(table["borrowed_log2fc"]).min() >= np.sort(np.abs(run.borrowed["borrowed_lfc"]))[-10] - 1e-12
    assert "Borrowed: 30% of the other types' change" in session.trust_summary(run.name)[0]
    record = session.build_export().uns["cellina"]["provenance"]["runs"][run.name]["parameters"]
    np.testing.assert_allclose(record["borrowed_lfc"], run.borrowed["borrowed_lfc"].to_numpy())
    assert dict(record["borrowed_reference_cells"]) == run.borrowed.attrs["reference_cells"]


def test_an_edge_run_can_give_each_gene_a_range(scripted):
    from cellina.plugin._state import DONORS

    session, edge = scripted["session"], scripted["edge"]
    assert (
        edge.change_range is None and edge.range_record() == {} and "Range" not in session.trust_summary(edge.name)[0]
    )
    # the observed pool holds the neighbours of tumour myeloid_1 cells: too few of any other type to check against
    pool = dict(pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour", n_neighbours=10, seed=4)
    unchecked = session.run_edge(**pool, change_range=True)
    assert unchecked.change_range is None and unchecked.range_note.startswith("No range: no other cell type has 30")
    assert unchecked.range_note in session.trust_summary(unchecked.name)[0]
    saved = session.selections.get(DONORS)
    try:  # every tumour and margin cell a donor: endothelial cells (39 healthy, 31 donors) are checked
        session.set_selection(DONORS, session.adata.obs["domain"].isin(["tumour", "margin"]).to_numpy())
        run = session.run_edge(pool="lasso", n_neighbours=10, n_draws=2, seed=4, change_range=True)
    finally:
        if saved is None:
            session.selections.pop(DONORS)
        else:
            session.selections[DONORS] = saved
    assert list(run.change_range.columns) == ["lfc", "lfc_corrected", "draw_spread", "checked_error", "low", "high"]
    checked = run.change_range.attrs["checked_types"]
    assert list(checked) == ["endothelial"]
    table = session.top_changed_genes(run.name, n=10)
    # the run's change is the range's plain change, and lies inside the range
    np.testing.assert_allclose(table["log2fc"], run.change_range.loc[table["gene"], "lfc"], atol=1e-4)
    assert (table["low"] <= table["log2fc"]).all() and (table["log2fc"] <= table["high"]).all()
    trust = session.trust_summary(run.name)[0]
    # the range draws as often as it was judged (5), more than the run's 2
    assert run.change_range.attrs["n_draws"] == 5 and "two spreads of 5 donor draws" in trust
    assert f"error on {len(checked)} other type(s)" in trust
    record = session.build_export().uns["cellina"]["provenance"]["runs"]
    np.testing.assert_allclose(record[run.name]["parameters"]["range_high"], run.change_range["high"].to_numpy())
    assert set(record[run.name]["parameters"]["range_checked_types"]) == set(checked)
    assert record[run.name]["parameters"]["range_n_draws"] == 5
    assert record[unchecked.name]["parameters"]["range_note"] == unchecked.range_note


def test_only_the_refusals_of_an_unchecked_selection_become_a_note(scripted, monkeypatch):
    from cellina.counterfactual import NothingToCheck

    session = scripted["session"]
    pool = dict(pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour", n_neighbours=10, seed=4)

    def refuse(error):
        def call(*_args, **_kwargs):
            raise error

        monkeypatch.setattr(session.model, "counterfactual_change_range", call)

    refuse(NothingToCheck("no cell types", without_types=True))
    assert "without cell types" in session.run_edge(**pool, change_range=True).range_note
    refuse(ValueError("something else broke"))  # any other error stops the run
    with pytest.raises(ValueError, match="something else broke"):
        session.run_edge(**pool, change_range=True)


def test_runs_record_what_the_model_saw_of_the_focal_types(scripted):
    session, edge = scripted["session"], scripted["edge"]
    assert edge.support is not None and int(edge.support.n_focal.sum()) == edge.indices.size
    assert (edge.support.n_training > 0).all() and edge.support.message() in session.trust_summary(edge.name)[0]


def test_an_edge_run_with_draws_keeps_their_spread(scripted):
    edge = scripted["edge"]
    assert edge.std.shape == edge.expression.shape and (edge.std >= 0).all()


def test_edge_donors_come_from_the_pool_are_distinct_and_never_the_cell_itself(scripted):
    edge = scripted["edge"]
    assert np.isin(edge.donors, scripted["pool"]).all()
    first = edge.donors[0]
    assert all(len(set(row)) == len(row) for row in first)
    assert not (first == edge.indices[:, None]).any()


def test_a_node_run_decodes_the_focal_cells(scripted):
    node, adata = scripted["node"], scripted["session"].adata
    assert node.expression.shape == (_expected_focal(adata).sum(), adata.n_vars)
    assert np.all(np.isfinite(node.log_fold_change()))


def test_a_node_run_moves_the_focal_cells_niche_features(scripted):
    adata, expected = scripted["session"].adata, _expected_focal(scripted["session"].adata)
    assert "cellina_spatial_x_cf" in adata.obsm
    assert not np.allclose(adata.obsm["cellina_spatial_x_cf"][expected], adata.obsm["spatial_x"][expected])


def test_the_export_holds_every_run_and_the_focal_cells(scripted):
    back = scripted["back"]
    assert set(back.uns["cellina"]["provenance"]["runs"]) == {"edge 1", "edge 2", "node 1"}
    assert back.uns["cellina"]["provenance"]["current_run"] == "node 1"
    assert back.obs["cellina_focal"].sum() == _expected_focal(scripted["session"].adata).sum()


def test_the_export_says_which_preset_made_the_model(scripted):
    provenance = scripted["back"].uns["cellina"]["provenance"]
    assert provenance["model"]["init_params"]["preset"] == "recommended"
    assert provenance["runs"]["edge 1"]["parameters"]["preset"] == "recommended"
    assert provenance["runs"]["node 1"]["parameters"]["preset"] == "recommended"


# ---------------------------------------------------------------------- how a job ends
def _job(value=1, apply=lambda value: "applied", error: BaseException | None = None) -> Job:
    def steps():
        yield Progress(0, 1, "working")
        if error is not None:
            raise error
        return value

    return Job("test step", steps(), apply)


def test_a_second_step_is_refused_while_one_runs(tissue):
    session = CellinaSession(tissue)
    session.start(_job())
    with pytest.raises(SessionError, match="still running"):
        session.start(_job())


def test_a_job_ends_exactly_once(tissue):
    session = CellinaSession(tissue)
    ends = []
    session.events.step.connect(lambda name, outcome: ends.append(outcome.status))
    job = _job()
    session.start(job)
    first = session.finish(job, Outcome("done", 1))
    second = session.finish(job, Outcome("failed", error=RuntimeError("late")))
    assert first is second and ends == ["done"] and not session.busy


@pytest.mark.parametrize("error", [ValueError("v"), RuntimeError("r"), KeyError("k"), MemoryError("m")])
def test_a_failed_step_clears_busy_and_raises_in_a_script(tissue, error):
    session = CellinaSession(tissue)
    with pytest.raises(type(error)):
        session.run(_job(error=error))
    assert not session.busy and session.running is None


def test_a_cancelled_step_is_announced_as_cancelled(tissue):
    session = CellinaSession(tissue)
    ends = []
    session.events.step.connect(lambda name, outcome: ends.append(outcome.status))
    outcome = session.execute(_job(error=StepCancelled("stopped")))
    assert outcome.status == "cancelled" and ends == ["cancelled"]


def test_cancel_reaches_the_running_job_only(tissue):
    session = CellinaSession(tissue)
    session.cancel()  # nothing runs: nothing to cancel
    job = _job()
    session.start(job)
    session.cancel()
    assert job.cancel.is_set()


def _failing_apply(session, tissue):
    """An apply that changes every kind of state, then fails."""

    def apply(value):
        tissue.obsm["cellina_z"] = np.ones((tissue.n_obs, 2))
        tissue.obs["cell_type"] = "everything"
        tissue.obsp.pop("spatial_connectivities")
        tissue.uns["cellina"] = {"changed": True}
        session.set_selection(FOCAL, np.arange(3))
        session.add_gene_shift("g1", 1.0)
        session.set_model(object(), source="broken")
        raise KeyError("in apply")

    return apply


def test_an_error_while_applying_puts_the_session_back(tissue):
    import scipy.sparse as sp

    tissue.obsp["spatial_connectivities"] = sp.eye(tissue.n_obs, format="csr")
    tissue.uns["cellina"] = {"original": True}
    session = CellinaSession(tissue)
    session.set_selection(FOCAL, np.arange(50))
    before = session_state(session)
    outcome = session.execute(_job(apply=_failing_apply(session, tissue)))
    assert outcome.status == "failed" and isinstance(outcome.error, KeyError)
    assert_same_state(session, before)
    assert tissue.uns["cellina"] == {"original": True}


def test_after_a_failed_apply_views_hear_the_restored_state(tissue):
    import scipy.sparse as sp

    tissue.obsp["spatial_connectivities"] = sp.eye(tissue.n_obs, format="csr")
    session = CellinaSession(tissue)
    heard = []
    session.events.model.connect(heard.append)
    session.events.selection.connect(lambda name: heard.append(session.selections.get(name)))
    session.execute(_job(apply=_failing_apply(session, tissue)))
    # the failed apply announced a selection, then a model; both are announced again as they are now
    assert len(heard) == 4 and heard[0] is not None and heard[1] is not None
    assert heard[2:] == [None, None]


def test_an_error_in_a_view_fails_the_step_and_puts_the_session_back(tissue):
    session = CellinaSession(tissue)
    before = session_state(session)

    def broken_view(model):
        if model is not None:
            raise RuntimeError("the view broke")

    session.events.model.connect(broken_view)
    outcome = session.execute(_job(apply=lambda value: session.set_model(object(), source="x")))
    assert outcome.status == "failed" and isinstance(outcome.error, RuntimeError)
    assert str(outcome.error) == "the view broke"
    assert_same_state(session, before)
