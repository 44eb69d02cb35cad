"""Tests for cellina.evaluation: log-fold changes, metrics, baselines, pseudobulk and the protocol runner."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.evaluation import (
    energy_distance,
    get_lfc,
    global_pseudobulk_lfc,
    lfc_scores,
    mean_shift_baseline,
    mean_shift_delta,
    normalize_counts,
    pearson_top_k,
    perturbation_table,
    pseudobulk,
    pseudobulk_lfc,
    safe_log2_fold_change,
    signed_precision_at_k,
    skill,
    spearman_top_k,
    top_k_degs,
    truth_scores,
)

# ----------------------------------------------------------------------------- get_lfc


def _hand_lfc(control, target, cf, normalize=True):
    def norm(m):
        m = np.asarray(m, dtype=float)
        return m / (m.sum(axis=1, keepdims=True) + 1e-8) * 1e4 if normalize else m

    mc, mt, mf = (norm(m).mean(axis=0) for m in (control, target, cf))
    return np.log2((mt + 1e-6) / (mc + 1e-6)), np.log2((mf + 1e-6) / (mc + 1e-6))


def test_get_lfc_matches_hand_computation():
    control = np.array([[1.0, 3.0, 0.0, 6.0], [2.0, 2.0, 0.0, 4.0]])
    target = np.array([[4.0, 1.0, 0.0, 5.0], [6.0, 1.0, 1.0, 2.0], [2.0, 2.0, 0.0, 6.0]])
    cf = np.array([[3.0, 2.0, 0.0, 5.0]])
    true_lfc, pred_lfc, top = get_lfc(control, target, cf, n_deg=2)
    # Worked by hand for gene 0: control shares 0.1 and 0.25 -> mean 1750 CP10K;
    # target shares 0.4, 0.6, 0.2 -> 4000 CP10K.
    assert true_lfc[0] == pytest.approx(np.log2((4000 + 1e-6) / (1750 + 1e-6)), rel=1e-9)
    exp_true, exp_pred = _hand_lfc(control, target, cf)
    np.testing.assert_allclose(true_lfc, exp_true, rtol=1e-12)
    np.testing.assert_allclose(pred_lfc, exp_pred, rtol=1e-12)
    # Gene 2 is absent from control: its change dwarfs the others, gene 0 is next.
    assert list(top) == [2, 0]


def test_get_lfc_sparse_equals_dense_and_unnormalised():
    rng = np.random.default_rng(0)
    c, t, f = (rng.poisson(2.0, size=(n, 30)).astype(float) for n in (20, 15, 10))
    dense = get_lfc(c, t, f, n_deg=5)
    sparse = get_lfc(sp.csr_matrix(c), sp.csr_matrix(t), sp.csr_matrix(f), n_deg=5)
    for a, b in zip(dense, sparse):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    raw_true, raw_pred, _ = get_lfc(c, t, f, normalize_counts=False)
    exp_true, exp_pred = _hand_lfc(c, t, f, normalize=False)
    np.testing.assert_allclose(raw_true, exp_true)
    np.testing.assert_allclose(raw_pred, exp_pred)


def test_get_lfc_rejects_gene_mismatch_and_bad_k():
    with pytest.raises(ValueError, match="counterfactual"):
        get_lfc(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="n_deg"):
        get_lfc(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), n_deg=0)


def test_normalize_and_safe_log2():
    x = np.array([[1.0, 3.0], [0.0, 0.0]])
    out = normalize_counts(x)
    np.testing.assert_allclose(out[0], [2500.0, 7500.0], rtol=1e-8)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    np.testing.assert_allclose(safe_log2_fold_change([4.0, 0.0], [1.0, 0.0]), [2.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        safe_log2_fold_change([1.0, 2.0], [1.0])


# ----------------------------------------------------------------------------- metrics


def test_top_k_and_correlations_edge_cases():
    t = np.array([0.1, -3.0, 2.0, 0.0, np.nan])
    assert list(top_k_degs(t, 2)) == [1, 2]
    # k larger than the number of genes: every gene, NaN last.
    assert list(top_k_degs(t, 10)) == [1, 2, 0, 3, 4]
    p = np.array([0.2, -2.5, 1.5, 0.1, 0.0])
    assert pearson_top_k(t, p, k=10) == pytest.approx(np.corrcoef(t[:4], p[:4])[0, 1])
    assert spearman_top_k(t, p, k=3) == pytest.approx(1.0)
    # A constant prediction has no correlation.
    assert np.isnan(pearson_top_k(t, np.zeros(5), k=3))
    assert np.isnan(spearman_top_k(np.ones(5), p, k=None))
    with pytest.raises(ValueError, match="length"):
        pearson_top_k(t, p[:3])
    with pytest.raises(ValueError, match="k"):
        top_k_degs(t, 0)


def test_signed_precision_at_k():
    t = np.array([3.0, -2.0, 1.0, 0.1, 0.05])
    assert signed_precision_at_k(t, t, k=2) == 1.0
    # Right genes, wrong directions.
    assert signed_precision_at_k(t, -t, k=2) == 0.0
    # Predicted top-2 = {0, 3}: only gene 0 is a true top-2 gene with the right sign.
    assert signed_precision_at_k(t, np.array([2.0, 0.0, 0.0, 5.0, 0.0]), k=2) == 0.5
    # Gene 1 in the predicted top list but with the wrong sign does not count.
    assert signed_precision_at_k(t, np.array([2.0, 1.0, 0.0, 0.0, 0.0]), k=2) == 0.5
    # k beyond the number of genes is clipped: every gene, perfect.
    assert signed_precision_at_k(t, t, k=50) == 1.0


def test_skill_perfect_zero_doubled():
    true = np.array([1.0, -2.0, 0.5, 0.0])
    assert skill(true, true) == pytest.approx(1.0)
    assert skill(np.zeros(4), true) == pytest.approx(0.0)
    assert skill(2 * true, true) == pytest.approx(0.0)
    assert skill(0.5 * true, true) == pytest.approx(0.75)
    assert skill(-true, true) == pytest.approx(-3.0)
    assert np.isnan(skill(true, np.zeros(4)))


def test_lfc_scores_and_truth_scores():
    rng = np.random.default_rng(1)
    t = rng.normal(size=100)
    s = lfc_scores(t, t, k=20)
    assert s == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0),
                 "signed_precision": 1.0, "skill": pytest.approx(1.0), "k": 20}
    resp = np.zeros(100, dtype=bool)
    resp[:10] = True
    true_change = np.where(resp, t, 0.0)
    pred = true_change * 0.5 + np.where(resp, 0.0, 0.1)
    out = truth_scores(pred, true_change, resp, ~resp)
    assert out["truth_pearson"] == pytest.approx(1.0)
    assert out["truth_skill"] == pytest.approx(0.75)
    assert out["truth_slope"] == pytest.approx(0.5)
    assert out["null_change"] == pytest.approx(0.1)
    assert out["null_change_true"] == 0.0
    with pytest.raises(ValueError, match="responsive"):
        truth_scores(pred, true_change, np.zeros(100, dtype=bool))
    with pytest.raises(ValueError, match="responsive"):
        truth_scores(pred, true_change, [0, 200])


def test_energy_distance_identical_zero_shifted_positive():
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(80, 40)).astype(float)
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(sp.csr_matrix(x), x, space="log") == pytest.approx(0.0, abs=1e-9)
    y = x.copy()
    y[:, :10] *= 4  # a strong shift of a gene block
    d_shift = energy_distance(x, y)
    assert d_shift > 0.5
    # Independent draws from the same law are much closer than the shifted set.
    x2 = rng.poisson(3.0, size=(80, 40)).astype(float)
    assert energy_distance(x, x2) < 0.25 * d_shift
    # Deterministic subsampling: the same seed gives the same number.
    big = rng.poisson(3.0, size=(300, 40)).astype(float)
    assert energy_distance(big, y, max_cells=50, seed=3) == energy_distance(big, y, max_cells=50, seed=3)
    # Latent-space use without normalisation: two point masses 3 apart.
    a, b = np.zeros((5, 2)), np.full((5, 2), [3.0, 0.0])
    assert energy_distance(a, b, space="log", normalize=False) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="space"):
        energy_distance(x, y, space="umap")
    with pytest.raises(ValueError, match="features"):
        energy_distance(x, y[:, :5])


# ----------------------------------------------------------------------------- baseline


def test_mean_shift_baseline_constructed_example():
    # Two reference types, each 10x higher for gene 0 in the target domain relative to gene 1.
    src = np.array([[10.0, 10.0], [20.0, 20.0], [5.0, 15.0]])
    tgt = np.array([[50.0, 5.0], [100.0, 10.0], [30.0, 10.0]])
    groups_src = np.array(["a", "a", "b"])
    groups_tgt = np.array(["a", "a", "b"])

    def logn(m):
        return np.log1p(m / m.sum(axis=1, keepdims=True) * 1e4)

    d_a = logn(tgt[:2]).mean(0) - logn(src[:2]).mean(0)
    d_b = logn(tgt[2:]).mean(0) - logn(src[2:]).mean(0)
    delta = mean_shift_delta(src, tgt, groups_src, groups_tgt)
    np.testing.assert_allclose(delta, (d_a + d_b) / 2)
    pooled = mean_shift_delta(src, tgt)
    np.testing.assert_allclose(pooled, logn(tgt).mean(0) - logn(src).mean(0))

    control = np.array([[3.0, 7.0], [1.0, 1.0]])
    pred = mean_shift_baseline(control, src, tgt, groups_src, groups_tgt)
    np.testing.assert_allclose(pred, np.expm1(logn(control) + delta))
    # A zero shift returns the control cells on the normalised scale.
    same = mean_shift_baseline(sp.csr_matrix(control), delta=np.zeros(2))
    np.testing.assert_allclose(same, control / control.sum(1, keepdims=True) * 1e4)
    # The baseline moves the control towards the target in get_lfc terms.
    true_lfc, pred_lfc, _ = get_lfc(control, tgt, pred)
    assert np.sign(pred_lfc[0]) == np.sign(true_lfc[0]) == 1


def test_mean_shift_baseline_errors():
    with pytest.raises(ValueError, match="source_groups"):
        mean_shift_delta(np.ones((2, 2)), np.ones((2, 2)), source_groups=["a", "b"])
    with pytest.raises(ValueError, match="no group"):
        mean_shift_delta(np.ones((2, 2)), np.ones((2, 2)), ["a", "a"], ["b", "b"])
    with pytest.raises(ValueError, match="delta"):
        mean_shift_baseline(np.ones((2, 3)), delta=np.zeros(2))
    with pytest.raises(ValueError, match="source_reference"):
        mean_shift_baseline(np.ones((2, 3)))


# ----------------------------------------------------------------------------- pseudobulk


@pytest.fixture
def small_adata():
    rng = np.random.default_rng(0)
    n, g = 60, 12
    counts = rng.poisson(4.0, size=(n, g)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "ct": rng.choice(["A", "B", "C"], size=n),
            "dom": np.repeat(["healthy", "tumour", "margin"], n // 3),
        },
        index=[f"c{i}" for i in range(n)],
    )
    obs.loc[obs.index[:20], "ct"] = np.where(np.arange(20) < 10, "A", "B")  # no C in healthy
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    adata.layers["counts"] = sp.csr_matrix(counts)
    return adata


def _dense_pseudobulk_log(counts, mask):
    s = counts[mask].sum(axis=0)
    return np.log1p(s / s.sum() * 1e4)


def test_pseudobulk_lfc_matches_dense_reference(small_adata):
    before = small_adata.copy()
    lfc = pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "tumour")
    counts = small_adata.layers["counts"].toarray().astype(np.float64)
    ct = small_adata.obs["ct"].to_numpy()
    dom = small_adata.obs["dom"].to_numpy()
    assert list(lfc.index) == ["A", "B"]  # C is absent from the healthy domain
    assert list(lfc.columns) == list(small_adata.var_names)
    for t in ["A", "B"]:
        ref = _dense_pseudobulk_log(counts, (ct == t) & (dom == "tumour")) - _dense_pseudobulk_log(
            counts, (ct == t) & (dom == "healthy")
        )
        np.testing.assert_allclose(lfc.loc[t].to_numpy(), ref, rtol=1e-6)
    glob = global_pseudobulk_lfc(small_adata, "dom", "healthy", "tumour", labels_key="ct", exclude="A")
    ref = _dense_pseudobulk_log(counts, (ct != "A") & (dom == "tumour")) - _dense_pseudobulk_log(
        counts, (ct != "A") & (dom == "healthy")
    )
    np.testing.assert_allclose(glob.to_numpy(), ref, rtol=1e-6)
    obs, summed = pseudobulk(small_adata, "dom", "ct")
    assert int(obs["n_cells"].sum()) == small_adata.n_obs
    np.testing.assert_allclose(summed.sum(), counts.sum())
    # Nothing written to the caller's object.
    assert small_adata.obs.equals(before.obs) and list(small_adata.uns) == list(before.uns)


def test_pseudobulk_errors_name_the_culprit(small_adata):
    with pytest.raises(ValueError, match="'nope'"):
        pseudobulk_lfc(small_adata, "nope", "dom", "healthy", "tumour")
    with pytest.raises(ValueError, match="'mars'"):
        pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "mars")
    with pytest.raises(ValueError, match="'raw'"):
        pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "tumour", layer="raw")
    with pytest.raises(ValueError, match="Z"):
        global_pseudobulk_lfc(small_adata, "dom", "healthy", "tumour", labels_key="ct", exclude="Z")


def test_perturbation_table_replaces_holdout_with_global(small_adata):
    lfc = pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "tumour")
    glob = global_pseudobulk_lfc(small_adata, "dom", "healthy", "tumour", labels_key="ct", exclude="A")
    table = perturbation_table(lfc, n_genes=3, holdout="A", global_lfc=glob)
    assert set(table) == {"A", "B"}
    assert all(len(s) == 3 for s in table.values())
    top_glob = glob[glob.abs().nlargest(3).index]
    pd.testing.assert_series_equal(table["A"], top_glob, check_names=False)
    assert table["B"].abs().min() >= lfc.loc["B"].abs().nlargest(3).min()


# ----------------------------------------------------------------------------- protocol runner


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


def test_leave_one_out_mean_shift_structure_and_truth(tissue):
    from cellina.evaluation import LeaveOneOutResult, leave_one_out

    snap = _snapshot(tissue)
    res = leave_one_out(tissue, "Myeloid", methods=("mean_shift", "oracle"), perturbations=("edge", "node"),
                        bandwidth=20.0, max_neighbours=30, n_deg=20, n_deg_node=15, n_neighbours=10,
                        n_pert_genes=10, energy_max_cells=100, probes=False)
    _assert_unchanged(tissue, snap)
    assert isinstance(res, LeaveOneOutResult)
    labels = tissue.obs["coarse_type"].astype(str).to_numpy()
    domains = tissue.obs["domain"].astype(str).to_numpy()
    idx = res.indices
    assert np.all(labels[idx["target"]] == "Myeloid") and np.all(domains[idx["target"]] == "tumour")
    assert np.all(labels[idx["control"]] == "Myeloid") and np.all(domains[idx["control"]] == "healthy")
    # The test cells are in neither training nor validation; the donor pool holds no held-out type.
    assert not np.intersect1d(idx["test"], np.union1d(idx["train"], idx["validation"])).size
    assert idx["train"].size + idx["validation"].size + idx["test"].size == tissue.n_obs
    assert not np.any(labels[idx["neighbours"]] == "Myeloid")
    assert idx["donors"].shape == (idx["control"].size, 10)
    assert np.isin(idx["donors"], idx["neighbours"]).all()
    scores = res.scores.set_index(["perturbation", "method"])
    assert set(scores.index) == {(p, m) for p in ("edge", "node") for m in ("mean_shift", "oracle")}
    assert scores.loc[("node", "oracle"), "k"] == 15 and scores.loc[("edge", "oracle"), "k"] == 20
    # The exact counterfactual scored against itself: the truth plumbing is consistent.
    for pert in ("edge", "node"):
        assert scores.loc[(pert, "oracle"), "truth_pearson"] == pytest.approx(1.0)
        assert scores.loc[(pert, "oracle"), "truth_skill"] == pytest.approx(1.0)
    # Neighbours' shifted expression moves the ligand signal only: a real but smaller change.
    assert 0 < scores.loc[("node", "oracle"), "responsive_change_true"] < scores.loc[("edge", "oracle"),
                                                                                      "responsive_change_true"]
    row = res.scores.iloc[0]
    assert (row["perturbation"], row["method"], row["k"]) == ("edge", "mean_shift", 20)
    for col in ["pearson", "spearman", "signed_precision", "energy_distance", "truth_pearson", "truth_skill",
                "null_change", "null_change_true", "responsive_change_true"]:
        assert np.isfinite(row[col]), col
    # The exact edge change is a real niche effect on the responsive genes of Myeloid cells.
    assert row["responsive_change_true"] > 0.2
    frame = res.lfc[("edge", "mean_shift")]
    assert list(frame.index) == list(tissue.var_names) and int(frame["is_deg"].sum()) == 20
    np.testing.assert_allclose(row["pearson"], pearson_top_k(frame["true_lfc"], frame["pred_lfc"], k=20))
    assert res.to_frame()["holdout"].eq("Myeloid").all()


def test_leave_one_out_rejects_bad_input(tissue):
    from cellina.evaluation import leave_one_out

    snap = _snapshot(tissue)
    with pytest.raises(ValueError, match="'Microglia'"):
        leave_one_out(tissue, "Microglia", methods=("mean_shift",))
    with pytest.raises(ValueError, match="'stroma'"):
        leave_one_out(tissue, "Myeloid", target_domain="stroma", methods=("mean_shift",))
    with pytest.raises(ValueError, match="'ridge'"):
        leave_one_out(tissue, "Myeloid", methods=("ridge",))
    with pytest.raises(ValueError, match="'niche'"):
        leave_one_out(tissue, "Myeloid", labels_key="niche", methods=("mean_shift",))
    with pytest.raises(ValueError, match="'raw'"):
        leave_one_out(tissue, "Myeloid", layer="raw", methods=("mean_shift",))
    plain = tissue.copy()
    del plain.uns["cellina_truth"]
    with pytest.raises(ValueError, match="truth"):
        leave_one_out(plain, "Myeloid", methods=("mean_shift",), truth=True)
    with pytest.raises(ValueError, match="oracle"):
        leave_one_out(plain, "Myeloid", methods=("oracle",))
    _assert_unchanged(tissue, snap)


def test_leave_one_out_tiny_cellina_run(tissue):
    from cellina.evaluation import leave_one_out

    snap = _snapshot(tissue)
    res = leave_one_out(
        tissue, "Myeloid", methods=("cellina", "mean_shift"), perturbations=("edge", "node"),
        batch_key="slide", library_key="slide",
        bandwidth=20.0, max_neighbours=30, n_deg=20, n_neighbours=10, n_pert_genes=10, energy_max_cells=100,
        model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
        train_kwargs={"max_epochs": 2, "batch_size": 256},
    )
    _assert_unchanged(tissue, snap)
    scores = res.scores.set_index(["perturbation", "method"])
    assert set(scores.index) == {("edge", "cellina"), ("node", "cellina"), ("edge", "mean_shift"),
                                 ("node", "mean_shift")}
    cols = ["pearson", "signed_precision", "energy_distance", "truth_pearson", "truth_skill", "null_change"]
    assert np.isfinite(scores[cols].to_numpy()).all()
    assert set(res.disentanglement["cellina"]) == {"domain_from_z", "domain_from_s", "celltype_from_z",
                                                   "domain_chance", "domain_from_z_pooled"}
    for v in res.disentanglement["cellina"].values():
        assert 0.0 <= v <= 1.0
    # The baselines are scored against the exact edge truth of the donors the model drew.
    edge_truth = res.lfc[("edge", "cellina")]["true_change"]
    pd.testing.assert_series_equal(edge_truth, res.lfc[("edge", "mean_shift")]["true_change"])


def test_within_group_probe_ignores_what_the_groups_explain():
    """A latent that only knows the group predicts the label across groups but not within them."""
    from cellina.evaluation import latent_probe_scores, within_group_probe_scores

    rng = np.random.default_rng(0)
    groups = np.repeat(["malignant", "myeloid"], 300)
    # malignant cells live in the tumour only; myeloid cells in both domains at random
    labels = np.where(groups == "malignant", "tumour", rng.choice(["healthy", "tumour"], 600))
    latent = np.c_[(groups == "malignant") * 5.0, rng.normal(size=600)] + rng.normal(scale=0.1, size=(600, 2))
    assert latent_probe_scores(latent, labels)["balanced_accuracy"] > 0.57  # chance is 0.5
    within = within_group_probe_scores(latent, labels, groups)
    assert within["n_groups"] == 1  # the malignant group has one label only
    assert abs(within["balanced_accuracy"] - 0.5) < 0.1 and within["chance"] == 0.5
    leaky = latent.copy()
    leaky[:, 1] += (labels == "tumour") * 4.0
    assert within_group_probe_scores(leaky, labels, groups)["balanced_accuracy"] > 0.9
    with pytest.raises(ValueError, match="no group has two label classes"):
        within_group_probe_scores(latent, np.array(["x"] * 600), groups)
    with pytest.raises(ValueError, match="got 600, 600 and 599"):
        within_group_probe_scores(latent, labels, groups[:-1])


def test_latent_probe_scores_separable_and_random():
    from cellina.evaluation import latent_probe_scores

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c"], 100)
    informative = rng.normal(size=(300, 4)) + np.repeat(np.eye(3, 4) * 6, 100, axis=0)
    out = latent_probe_scores(informative, labels)
    assert out["chance"] == pytest.approx(1 / 3)
    assert out["balanced_accuracy"] > 0.95
    noise = latent_probe_scores(rng.normal(size=(300, 4)), labels)
    assert abs(noise["balanced_accuracy"] - 1 / 3) < 0.15
    with pytest.raises(ValueError, match="labels"):
        latent_probe_scores(informative, labels[:10])
    with pytest.raises(ValueError, match="two classes"):
        latent_probe_scores(informative, np.repeat("a", 300))


def test_metrics_import_needs_neither_torch_nor_qt():
    import subprocess
    import sys

    code = (
        "import sys, cellina.evaluation; "
        "heavy = {m.split('.')[0] for m in sys.modules} & {'torch', 'scvi', 'napari', 'PyQt6', 'PyQt5', 'qtpy'}; "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
