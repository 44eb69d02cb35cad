"""Edge counterfactuals: donor sampling, rebuilt niche features and the model's queries."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

from cellina.counterfactual import (
    anchor_niche_features,
    pooled_niche_features,
    sample_anchors,
    sample_donors,
    spatial_features_record,
)
from cellina.datasets import synthetic_tissue
from cellina.evaluation import responsive_genes, within_group_probe_scores
from cellina.model import Cellina
from cellina.spatial import compute_spatial_features, spatial_neighbors

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def tissue():
    adata = synthetic_tissue(n_cells=600, n_genes=100, n_slides=2, seed=1, store_means=False)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.obsp["spatial_connectivities_orig"] = spatial_neighbors(
        adata, bandwidth=20.0, max_neighbours=20, inplace=False, library_key="slide"
    )
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=20, library_key="slide")
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    return adata


@pytest.fixture(scope="module")
def model(tissue):
    adata = tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    m = Cellina(adata, n_hidden=16, n_latent=4, n_layers=1)
    torch.manual_seed(0)
    m.train(max_epochs=2, batch_size=128, **QUIET)
    return m


def _cells(adata, domain):
    return np.flatnonzero(adata.obs["domain"].to_numpy() == domain)


def _lognorm(counts):
    c = np.asarray(counts.todense() if sp.issparse(counts) else counts, dtype=np.float64)
    return np.log1p(c / c.sum(1, keepdims=True) * 1e4)


# ---------------------------------------------------------------------- donor sampling
def test_donors_are_distinct_from_the_pool_and_never_the_focal_cell():
    rng = np.random.default_rng(0)
    pool = np.arange(0, 60, 2)  # 30 candidates, focal cells partly inside the pool
    focal = np.arange(0, 40)
    donors = sample_donors(focal, pool, 10, rng)
    assert donors.shape == (40, 10)
    assert np.isin(donors, pool).all()
    assert not (donors == focal[:, None]).any()
    assert all(len(np.unique(row)) == 10 for row in donors)


def test_donor_draws_are_seeded_and_uniform():
    pool = np.arange(50)
    focal = np.full(4000, 7)
    a = sample_donors(focal, pool, 5, np.random.default_rng(3))
    b = sample_donors(focal, pool, 5, np.random.default_rng(3))
    c = sample_donors(focal, pool, 5, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    counts = np.bincount(a.ravel(), minlength=50)
    assert counts[7] == 0
    others = np.delete(counts, 7)
    expected = 4000 * 5 / 49
    # 49 cells expected ~408 draws each; a binomial sd is ~19, so 5 sd is ample
    assert np.abs(others - expected).max() < 5 * np.sqrt(expected)


def test_small_pool_is_clipped_with_a_warning_and_self_only_pool_fails():
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="drawing 3 donors"):
        donors = sample_donors(np.array([0, 9]), np.array([0, 1, 2, 3]), 50, rng)
    assert donors.shape == (2, 3) and 0 not in donors[0]
    with pytest.raises(ValueError, match="own donor"):
        sample_donors(np.array([5]), np.array([5]), 3, rng)
    with pytest.raises(ValueError, match="empty"):
        sample_donors(np.array([5]), np.array([], dtype=int), 3, rng)
    anchors = sample_anchors(np.array([1, 2, 3]), np.array([1, 2, 3]), rng)
    assert not (anchors == np.array([1, 2, 3])).any()


# ---------------------------------------------------------------------- niche features
def test_pooled_features_are_the_mean_log_normalised_donor_expression(tissue):
    record = spatial_features_record(tissue, "spatial_x")
    donors = np.array([[3, 10, 11], [0, 0 + 5, 42]])
    phi = pooled_niche_features(tissue.layers["counts"], donors, record)
    rep = _lognorm(tissue.layers["counts"])
    np.testing.assert_allclose(phi, rep[donors].mean(axis=1), rtol=1e-5, atol=1e-5)


def test_anchor_features_reproduce_compute_spatial_features_exactly(tissue):
    record = spatial_features_record(tissue, "spatial_x")
    W = tissue.obsp["spatial_connectivities"]
    anchors = np.array([4, 50, 123])
    far = np.array([599, 598, 597])
    # focal cells that are not neighbours of their anchors get the anchor's own phi
    assert all(W[a, f] == 0 for a, f in zip(anchors, far))
    phi = anchor_niche_features(tissue.layers["counts"], W, anchors, far, record)
    np.testing.assert_allclose(phi, tissue.obsm["spatial_x"][anchors], rtol=1e-5, atol=1e-6)
    # a focal cell inside its anchor's niche is left out of it
    a = 4
    nb = W[a].indices[0]
    phi_self = anchor_niche_features(tissue.layers["counts"], W, np.array([a]), np.array([nb]), record)
    row = W[a].toarray().ravel()
    row[nb] = 0
    manual = row @ _lognorm(tissue.layers["counts"]) / row.sum()
    np.testing.assert_allclose(phi_self[0], manual, rtol=1e-4, atol=1e-5)


def test_missing_record_is_a_clear_error(tissue):
    ad2 = tissue.copy()
    del ad2.uns["cellina"]
    with pytest.raises(ValueError, match=r"uns\['cellina'\]\['spatial_features'\]\['spatial_x'\]"):
        spatial_features_record(ad2, "spatial_x")


# ---------------------------------------------------------------------- model queries
def _state(adata):
    return {
        "X": adata.X.copy(),
        "counts": adata.layers["counts"].copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "obsp": {k: v.copy() for k, v in adata.obsp.items()},
        "obs": adata.obs.copy(),
        "uns": sorted(adata.uns.keys()),
    }


def _assert_same_state(a, b):
    assert (a["X"] != b["X"]).nnz == 0 and (a["counts"] != b["counts"]).nnz == 0
    assert a["obsm"].keys() == b["obsm"].keys()
    for k in a["obsm"]:
        np.testing.assert_array_equal(a["obsm"][k], b["obsm"][k])
    assert a["obsp"].keys() == b["obsp"].keys()
    for k in a["obsp"]:
        assert (a["obsp"][k] != b["obsp"][k]).nnz == 0
    assert a["obs"].equals(b["obs"]) and a["uns"] == b["uns"]


def test_counterfactual_is_seeded_and_leaves_adata_alone(model):
    adata = model.adata
    focal, pool = _cells(adata, "healthy")[:80], _cells(adata, "tumour")
    before = _state(adata)
    a = model.get_counterfactual_expression(focal, pool, seed=0, n_neighbours=10, precomputed=False)
    b = model.get_counterfactual_expression(focal, pool, seed=0, n_neighbours=10, batch_size=7, precomputed=False)
    c = model.get_counterfactual_expression(focal, pool, seed=1, n_neighbours=10, precomputed=False)
    _assert_same_state(before, _state(adata))
    assert a.shape == (80, adata.n_vars) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert not np.allclose(a, c)
    # expected counts at the cell's own library size
    own = np.asarray(adata.layers["counts"][focal].sum(1)).ravel()
    np.testing.assert_allclose(a.sum(1), own, rtol=1e-3)
    scaled = model.get_counterfactual_expression(focal, pool, n_neighbours=10, library_size=1e4, precomputed=False)
    np.testing.assert_allclose(scaled.sum(1), 1e4, rtol=1e-3)


def test_counterfactual_matches_decoding_its_own_donors(model):
    adata = model.adata
    focal, pool = _cells(adata, "healthy")[:50], _cells(adata, "tumour")
    expr, donors = model.get_counterfactual_expression(
        focal,
        pool,
        n_neighbours=8,
        return_donors=True,
        seed=5,
        precomputed=False,
    )
    assert donors.shape == (1, 50, 8)
    assert np.isin(donors, pool).all() and not (donors[0] == focal[:, None]).any()
    ad2 = adata.copy()
    phi = pooled_niche_features(ad2.layers["counts"], donors[0], spatial_features_record(ad2, "spatial_x"))
    ad2.obsm["spatial_x_cf"] = ad2.obsm["spatial_x"].copy()
    ad2.obsm["spatial_x_cf"][focal] = phi
    np.testing.assert_allclose(model.get_perturbed_expression(ad2, indices=focal), expr, rtol=1e-4, atol=1e-5)
    # rewiring towards the tumour moves the prediction away from the factual one
    assert not np.allclose(expr, model.get_expression(indices=focal), rtol=1e-3)


def test_draws_average_and_report_their_spread(model):
    adata = model.adata
    focal, pool = _cells(adata, "healthy")[:30], _cells(adata, "tumour")
    mean, std, donors = model.get_counterfactual_expression(
        focal,
        pool,
        n_neighbours=5,
        n_draws=4,
        return_std=True,
        return_donors=True,
        precomputed=False,
    )
    assert mean.shape == std.shape == (30, adata.n_vars)
    assert donors.shape == (4, 30, 5)
    assert (std >= 0).all() and std.max() > 0
    singles = []
    for d in donors:
        ad2 = adata.copy()
        ad2.obsm["cf"] = ad2.obsm["spatial_x"].copy()
        ad2.obsm["cf"][focal] = pooled_niche_features(
            ad2.layers["counts"], d, spatial_features_record(ad2, "spatial_x")
        )
        singles.append(model.get_perturbed_expression(ad2, indices=focal, spatial_obsm_key="cf"))
    singles = np.stack(singles)
    np.testing.assert_allclose(mean, singles.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, singles.std(0), rtol=1e-3, atol=1e-4)
    _, std1 = model.get_counterfactual_expression(focal, pool, n_neighbours=5, return_std=True, precomputed=False)
    assert np.all(std1 == 0)
    with pytest.raises(ValueError, match="n_draws=0"):
        model.get_counterfactual_expression(focal, pool, n_draws=0, precomputed=False)


def test_counterfactual_latents_follow_the_same_draws(model):
    adata = model.adata
    focal, pool = _cells(adata, "healthy")[:40], _cells(adata, "tumour")
    s_cf, donors = model.get_counterfactual_latents(
        focal,
        pool,
        n_neighbours=6,
        seed=2,
        return_donors=True,
        precomputed=False,
    )
    _, donors_expr = model.get_counterfactual_expression(
        focal,
        pool,
        n_neighbours=6,
        seed=2,
        return_donors=True,
        precomputed=False,
    )
    np.testing.assert_array_equal(donors, donors_expr)
    assert s_cf.shape == (40, model.module.n_latent_spatial)
    s = model.get_latent_representation(indices=focal, latent_key="s")
    assert not np.allclose(s_cf, s)


def test_anchor_mode(model):
    adata = model.adata
    focal, pool = _cells(adata, "healthy")[:40], _cells(adata, "tumour")
    expr, anchors = model.get_counterfactual_expression(focal, pool, precomputed=True, return_donors=True, seed=0)
    assert anchors.shape == (1, 40) and np.isin(anchors, pool).all()
    # rebuilt from the anchor's neighbours in the unmasked graph (here identical to the
    # training graph), so it equals decoding the anchor's own niche features
    ad2 = adata.copy()
    ad2.obsm["cf"] = ad2.obsm["spatial_x"].copy()
    ad2.obsm["cf"][focal] = ad2.obsm["spatial_x"][anchors[0]]
    np.testing.assert_allclose(
        model.get_perturbed_expression(ad2, indices=focal, spatial_obsm_key="cf"),
        expr,
        rtol=1e-4,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match=r"obsp\['other_graph'\]"):
        model.get_counterfactual_expression(focal, pool, precomputed=True, connectivity_key="other_graph")


def test_bad_inputs_are_named(model):
    adata = model.adata
    with pytest.raises(ValueError, match="neighbour_indices is empty"):
        model.get_counterfactual_expression([0, 1], [], precomputed=False)
    with pytest.raises(ValueError, match="indices holds positions outside"):
        model.get_counterfactual_expression([adata.n_obs + 3], [0, 1], precomputed=False)
    with pytest.raises(ValueError, match="library_size='total'"):
        model.get_counterfactual_expression([0], [1, 2], library_size="total", precomputed=False)
    mask = np.zeros(adata.n_obs, bool)
    mask[:5] = True
    out = model.get_counterfactual_expression(mask, ~mask, n_neighbours=3, precomputed=False)
    assert out.shape == (5, adata.n_vars)


@pytest.fixture()
def restore_threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.mark.slow
def test_rewiring_recovers_the_exact_change_and_disentangles(restore_threads):
    """Against the synthetic tissue's exact counterfactual: right direction, real size."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score

    from cellina.datasets import true_counterfactual_edge, true_mean

    adata = synthetic_tissue(n_cells=2000, n_genes=150, seed=0)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=30)
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    Cellina.setup_anndata(adata, labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, n_latent=10, n_hidden=64, n_layers=1)
    # Pinned after scanpy's normalisation, which can reset torch's thread count; two
    # threads on a shared 2-core machine spin against other jobs and run ~4x slower.
    torch.set_num_threads(1)
    model.train(max_epochs=100, batch_size=256, plan_kwargs={"normalize_losses": True}, **QUIET)

    dom = adata.obs["domain"].to_numpy()
    ct = adata.obs["coarse_type"].to_numpy()
    focal = np.flatnonzero((dom == "healthy") & (ct == "Myeloid"))
    pool = np.flatnonzero(dom == "tumour")
    cf, donors = model.get_counterfactual_expression(focal, pool, return_donors=True, precomputed=False)
    factual = model.get_expression(indices=focal)

    def lfc(x):
        x = x / x.sum(1, keepdims=True) * 1e4
        return np.log2(x.mean(0) + 1e-6)

    pred = lfc(cf) - lfc(factual)
    true = lfc(true_counterfactual_edge(adata, focal, donors[0])) - lfc(true_mean(adata, focal))
    resp = responsive_genes(adata, "Myeloid")
    assert np.corrcoef(pred[resp], true[resp])[0, 1] > 0.9
    slope = np.polyfit(true[resp], pred[resp], 1)[0]
    assert slope > 0.2  # about 0.4 here; the plain ELBO (spatial_kl_weight=1) gives ~0.02

    z = model.get_latent_representation(latent_key="z")
    s = model.get_latent_representation(latent_key="s")
    idx = np.random.default_rng(0).permutation(adata.n_obs)
    tr, te = idx[:1400], idx[1400:]

    def probe(X, y):
        clf = LogisticRegression(max_iter=2000).fit(X[tr], y[tr])
        return balanced_accuracy_score(y[te], clf.predict(X[te]))

    # domain from z near chance within each cell type (malignant cells live in the tumour, so
    # identity alone predicts the domain across types)
    within_z = within_group_probe_scores(z, dom, ct)
    assert within_z["balanced_accuracy"] < within_z["chance"] + 0.1
    assert within_group_probe_scores(s, dom, ct)["balanced_accuracy"] > within_z["chance"] + 0.2
    assert probe(z, ct) > 0.9
