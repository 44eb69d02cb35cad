"""The leave-one-out protocol runner (``cellina.evaluation.leave_one_out``)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from cellina.evaluation import LeaveOneOutConfig, LeaveOneOutResult, leave_one_out, pearson_top_k

#: the reference run's options: small DEG sets, few donors, no probes
REFERENCE = dict(
    methods=("mean_shift", "oracle"),
    perturbations=("edge", "node"),
    bandwidth=20.0,
    max_neighbours=30,
    n_deg=20,
    n_deg_node=15,
    n_neighbours=10,
    n_pert_genes=10,
    energy_max_cells=100,
    probes=False,
)


@pytest.fixture(scope="module")
def tissue():
    from cellina.datasets import synthetic_tissue

    return synthetic_tissue(n_cells=1200, n_genes=100, n_slides=2, seed=3)


def _snapshot(adata):
    return (adata.X.copy(), adata.obs.copy(), set(adata.obsm), set(adata.obsp), set(adata.uns), set(adata.layers))


def _assert_unchanged(adata, snap):
    X, obs, obsm, obsp, uns, layers = snap
    assert (adata.X != X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, obs)
    assert (set(adata.obsm), set(adata.obsp), set(adata.uns), set(adata.layers)) == (obsm, obsp, uns, layers)


@pytest.fixture(scope="module")
def reference(tissue):
    """(snapshot before, result) of a run of the references (mean shift, exact oracle)."""
    snap = _snapshot(tissue)
    return snap, leave_one_out(tissue, "Myeloid", **REFERENCE)


@pytest.fixture(scope="module")
def scores(reference):
    return reference[1].scores.set_index(["perturbation", "method"])


def test_the_callers_anndata_is_not_modified(tissue, reference):
    _assert_unchanged(tissue, reference[0])


def test_result_type_and_holdout_column(reference):
    res = reference[1]
    assert isinstance(res, LeaveOneOutResult)
    assert res.to_frame()["holdout"].eq("Myeloid").all()


def test_target_and_control_cells_are_the_held_out_type(tissue, reference):
    idx = reference[1].indices
    labels = tissue.obs["coarse_type"].astype(str).to_numpy()
    domains = tissue.obs["domain"].astype(str).to_numpy()
    assert np.all(labels[idx["target"]] == "Myeloid") and np.all(domains[idx["target"]] == "tumour")
    assert np.all(labels[idx["control"]] == "Myeloid") and np.all(domains[idx["control"]] == "healthy")


def test_test_cells_are_in_neither_training_nor_validation(tissue, reference):
    idx = reference[1].indices
    assert not np.intersect1d(idx["test"], np.union1d(idx["train"], idx["validation"])).size
    assert idx["train"].size + idx["validation"].size + idx["test"].size == tissue.n_obs


def test_donors_come_from_the_pool_without_the_held_out_type(tissue, reference):
    idx = reference[1].indices
    assert not np.any(tissue.obs["coarse_type"].to_numpy()[idx["neighbours"]] == "Myeloid")
    assert idx["donors"].shape == (idx["control"].size, 10)
    assert np.isin(idx["donors"], idx["neighbours"]).all()


def test_one_score_row_per_perturbation_and_method(scores):
    assert set(scores.index) == {(p, m) for p in ("edge", "node") for m in ("mean_shift", "oracle")}
    assert scores.loc[("node", "oracle"), "k"] == 15 and scores.loc[("edge", "oracle"), "k"] == 20


@pytest.mark.parametrize("perturbation", ["edge", "node"])
def test_the_exact_counterfactual_scores_perfectly(scores, perturbation):
    assert scores.loc[(perturbation, "oracle"), "truth_pearson"] == pytest.approx(1.0)
    assert scores.loc[(perturbation, "oracle"), "truth_skill"] == pytest.approx(1.0)


def test_node_shifts_move_less_than_rewiring(scores):
    # neighbours' shifted expression moves the ligand signal only: a real but smaller change
    node = scores.loc[("node", "oracle"), "responsive_change_true"]
    assert 0 < node < scores.loc[("edge", "oracle"), "responsive_change_true"]


def test_every_score_of_the_mean_shift_is_finite(reference):
    row = reference[1].scores.iloc[0]
    assert (row["perturbation"], row["method"], row["k"]) == ("edge", "mean_shift", 20)
    for col in [
        "pearson",
        "spearman",
        "signed_precision",
        "energy_distance",
        "truth_pearson",
        "truth_skill",
        "null_change",
        "null_change_true",
        "responsive_change_true",
    ]:
        assert np.isfinite(row[col]), col
    # the exact edge change is a real niche effect on the responsive genes of Myeloid cells
    assert row["responsive_change_true"] > 0.2


def test_lfc_frames_match_the_scores(tissue, reference):
    res = reference[1]
    frame = res.lfc[("edge", "mean_shift")]
    assert list(frame.index) == list(tissue.var_names) and int(frame["is_deg"].sum()) == 20
    expected = pearson_top_k(frame["true_lfc"], frame["pred_lfc"], k=20)
    np.testing.assert_allclose(res.scores.iloc[0]["pearson"], expected)


def test_a_config_gives_the_same_run_as_keywords(tissue, reference):
    again = leave_one_out(tissue, "Myeloid", LeaveOneOutConfig(**REFERENCE))
    pd.testing.assert_frame_equal(again.scores, reference[1].scores)


def test_unknown_options_are_named(tissue):
    with pytest.raises(TypeError, match="n_degs"):
        leave_one_out(tissue, "Myeloid", n_degs=3)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"holdout": "Microglia"}, "'Microglia'"),
        ({"target_domain": "stroma"}, "'stroma'"),
        ({"methods": ("ridge",)}, "'ridge'"),
        ({"labels_key": "niche"}, "'niche'"),
        ({"layer": "raw"}, "'raw'"),
        ({"validation_size": 1.0}, "validation_size"),
    ],
)
def test_bad_input_is_named(tissue, options, named):
    options = {"methods": ("mean_shift",), **options}
    holdout = options.pop("holdout", "Myeloid")
    snap = _snapshot(tissue)
    with pytest.raises(ValueError, match=named):
        leave_one_out(tissue, holdout, **options)
    _assert_unchanged(tissue, snap)


def test_truth_true_needs_a_synthetic_tissue(tissue):
    plain = tissue.copy()
    del plain.uns["cellina_truth"]
    with pytest.raises(ValueError, match="truth"):
        leave_one_out(plain, "Myeloid", methods=("mean_shift",), truth=True)
    with pytest.raises(ValueError, match="oracle"):
        leave_one_out(plain, "Myeloid", methods=("oracle",))


# ------------------------------------------------------------------------------ a tiny Cellina run


@pytest.fixture(scope="module")
def cellina_run(tissue):
    """(snapshot before, result) of Cellina trained a few epochs on two slides, the slide as batch."""
    snap = _snapshot(tissue)
    res = leave_one_out(
        tissue,
        "Myeloid",
        methods=("cellina", "mean_shift"),
        perturbations=("edge", "node"),
        batch_key="slide",
        library_key="slide",
        bandwidth=20.0,
        max_neighbours=30,
        n_deg=20,
        n_neighbours=10,
        n_pert_genes=10,
        energy_max_cells=100,
        model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
        train_kwargs={"max_epochs": 2, "batch_size": 256},
    )
    return snap, res


def test_cellina_run_leaves_the_anndata_alone(tissue, cellina_run):
    _assert_unchanged(tissue, cellina_run[0])


def test_cellina_run_scores_are_finite(cellina_run):
    scores = cellina_run[1].scores.set_index(["perturbation", "method"])
    assert set(scores.index) == {
        ("edge", "cellina"),
        ("node", "cellina"),
        ("edge", "mean_shift"),
        ("node", "mean_shift"),
    }
    cols = ["pearson", "signed_precision", "energy_distance", "truth_pearson", "truth_skill", "null_change"]
    assert np.isfinite(scores[cols].to_numpy()).all()


def test_cellina_run_probes_the_latents(cellina_run):
    probes = cellina_run[1].disentanglement["cellina"]
    accuracies = {"domain_from_z", "domain_from_s", "celltype_from_z", "domain_chance", "domain_from_z_pooled"}
    assert set(probes) == accuracies | {"niche_from_z", "niche_from_s"}
    assert all(0.0 <= probes[k] <= 1.0 for k in accuracies)
    # partial R^2 of the niche beyond the type: at most 1, slightly negative when a latent knows nothing
    assert all(-0.2 <= probes[k] <= 1.0 for k in ("niche_from_z", "niche_from_s"))
    # s is built from the niche features: it must know more of the niche than z does
    assert probes["niche_from_s"] > probes["niche_from_z"]


def test_baselines_are_scored_against_the_donors_the_model_drew(cellina_run):
    lfc = cellina_run[1].lfc
    pd.testing.assert_series_equal(lfc[("edge", "cellina")]["true_change"], lfc[("edge", "mean_shift")]["true_change"])


def test_models_and_predictions_are_kept_only_when_asked(cellina_run):
    assert cellina_run[1].models == {} and cellina_run[1].predictions == {}


def test_metrics_import_needs_neither_torch_nor_qt():
    code = (
        "import sys, cellina.evaluation; "
        "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'scvi', 'napari', 'PyQt6', 'PyQt5', 'qtpy'}; "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_ablation_of_a_type_gated_preset_trains(tissue):
    res = leave_one_out(
        tissue,
        "Myeloid",
        methods=("cellina_no_aux",),
        preset="recommended",
        perturbations=("edge",),
        batch_key="slide",
        library_key="slide",
        bandwidth=20.0,
        max_neighbours=30,
        n_deg=20,
        n_neighbours=10,
        energy=False,
        probes=False,
        return_models=True,
        model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
        train_kwargs={"max_epochs": 1, "batch_size": 256},
    )
    model = res.models["cellina_no_aux"]
    assert model.preset == "recommended" and model.module.niche_decoder == "factorised"


def test_the_protocol_trains_the_graph_variant(tissue):
    from cellina.evaluation._config import MODEL_VARIANTS
    from cellina.model import MODEL_VARIANTS as MODEL_CLASSES
    from cellina.model import CellinaGCN

    assert MODEL_VARIANTS == tuple(MODEL_CLASSES)
    res = leave_one_out(
        tissue,
        "Myeloid",
        methods=("cellina", "mean_shift"),
        model="gcn",
        perturbations=("edge", "node"),
        batch_key="slide",
        library_key="slide",
        bandwidth=20.0,
        max_neighbours=30,
        n_deg=20,
        n_neighbours=10,
        n_pert_genes=10,
        energy=False,
        return_models=True,
        model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1, "num_neighbors": 8},
        train_kwargs={"max_epochs": 1, "batch_size": 256},
    )
    model = res.models["cellina_gcn"]
    assert isinstance(model, CellinaGCN) and model.fanouts_ == (8,)
    assert np.array_equal(np.sort(model.heldout_indices_), np.sort(res.indices["test"]))
    scores = res.scores.set_index(["perturbation", "method"])
    assert {("edge", "cellina_gcn"), ("node", "cellina_gcn")} <= set(scores.index)
    assert np.isfinite(scores.loc[("edge", "cellina_gcn"), ["pearson", "truth_pearson"]].to_numpy(float)).all()
    assert set(res.disentanglement) == {"cellina_gcn"}
    with pytest.raises(ValueError, match="model='gat' is not a variant"):
        LeaveOneOutConfig(model="gat")
