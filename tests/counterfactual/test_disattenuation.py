"""Counterfactual changes in ``s`` divided by the split-half reliability of the niche codes: both
variants, trained on a two-slide tissue, and the estimator's parts checked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellina.counterfactual import (
    NicheReliability,
    disattenuated_niche_latent,
    edge_counterfactual,
    niche_reliability,
    pooled_niche_features,
    spatial_features_record,
    split_neighbours,
)
from cellina.counterfactual._reliability import MIN_CELLS_PER_TYPE, MIN_RELIABILITY
from cellina.model import Cellina, CellinaGCN

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SETUP = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}
SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
EDGE = {"precomputed": False, "n_neighbours": 10, "n_draws": 2, "seed": 3}


@pytest.fixture(scope="module")
def gcn(two_slide_tissue):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    torch.manual_seed(0)
    model = CellinaGCN(adata, **SMALL, num_neighbors=[6], disattenuate_niche=True)
    model.train(max_epochs=1, batch_size=128, **QUIET)
    return model


def _cells(model):
    domain = model.adata.obs["domain"].to_numpy()
    return np.flatnonzero(domain == "healthy")[:60], np.flatnonzero(domain == "tumour")


def _types(model, focal):
    return model.adata.obs["coarse_type"].astype(str).to_numpy()[focal]


# ---------------------------------------------------------------- the estimator's parts


def test_split_neighbours_puts_every_edge_in_one_half_and_weighs_the_noise():
    rng = np.random.default_rng(1)
    graph = sp.random(300, 300, density=0.05, random_state=2, format="csr")
    a, b, factor = split_neighbours(graph, np.random.default_rng(5))
    np.testing.assert_allclose((a + b).toarray(), graph.toarray())
    assert a.multiply(b).nnz == 0
    # with equal weights, k neighbours split m / k - m: (1/k) / (1/m + 1/(k - m)) = m (k - m) / k^2
    ones = graph.copy()
    ones.data[:] = 1.0
    a1, b1, factor1 = split_neighbours(ones, np.random.default_rng(5))
    m, k = np.diff(a1.indptr), np.diff(ones.indptr)
    both = (m > 0) & (m < k)
    np.testing.assert_allclose(factor1[both], m[both] * (k[both] - m[both]) / k[both] ** 2)
    assert np.isnan(factor1[~both]).all()
    # the same generator seed splits the same way
    a2, _, _ = split_neighbours(graph, np.random.default_rng(5))
    assert (a2 != a).nnz == 0
    # the point of the factor: factor * var(half mean a - half mean b) is the noise variance of the whole mean
    values = rng.normal(size=(graph.shape[0], 4000))

    def mean(w):
        return (w @ values) / np.asarray(w.sum(axis=1))

    rows = np.isfinite(factor)
    whole = mean(graph[rows]).var(axis=1)
    estimate = (factor[rows, None] * (mean(a[rows]) - mean(b[rows])) ** 2).mean(axis=1)
    np.testing.assert_allclose(estimate, whole, rtol=0.12)


def test_reliability_along_a_direction():
    total = np.diag([1.0, 2.0])
    noise = np.diag([0.5, 0.0])
    reliability = NicheReliability({None: (total, noise), "A": (total, np.diag([3.0, 0.0]))}, {None: 10, "A": 5})
    assert reliability.along(None, np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert reliability.along(None, np.array([0.0, 1.0])) == pytest.approx(1.0)
    # noise beyond the spread is floored; no change means nothing to correct; unknown types use all cells
    assert reliability.along("A", np.array([1.0, 0.0])) == MIN_RELIABILITY
    assert reliability.along(None, np.zeros(2)) == 1.0
    assert reliability.along("B", np.array([1.0, 0.0])) == pytest.approx(0.5)


def test_disattenuated_latent_divides_each_types_change():
    reliability = NicheReliability({None: (np.eye(2), 0.5 * np.eye(2)), "A": (np.eye(2), 0.75 * np.eye(2))}, {})
    factual = np.zeros((4, 2))
    moved = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 2.0]])
    out = disattenuated_niche_latent(factual, moved, np.array(["A", "A", "B", "B"]), reliability)
    np.testing.assert_allclose(out, [[4.0, 0.0], [12.0, 0.0], [0.0, 4.0], [0.0, 4.0]])
    np.testing.assert_allclose(disattenuated_niche_latent(factual, moved, None, reliability), 2 * moved)
    # part of the correction: the reliability raised to the strength (A's is 0.25, B's all cells' 0.5)
    half = disattenuated_niche_latent(factual, moved, np.array(["A", "A", "B", "B"]), reliability, strength=0.5)
    np.testing.assert_allclose(half, [[2.0, 0.0], [6.0, 0.0], [0.0, 2 * 2**0.5], [0.0, 2 * 2**0.5]])
    np.testing.assert_allclose(disattenuated_niche_latent(factual, moved, None, reliability, strength=0), moved)
    for bad in (1.5, -0.1, float("nan"), "half"):
        with pytest.raises(ValueError, match="strength="):
            disattenuated_niche_latent(factual, moved, None, reliability, strength=bad)


# ---------------------------------------------------------------- trained models


def test_decoding_a_given_niche_latent_reproduces_the_factual(cellina):
    focal, _ = _cells(cellina)
    s = cellina.get_latent_representation(indices=focal, latent_key="s")
    np.testing.assert_allclose(
        cellina.predict_with_niche_latent(None, focal, s), cellina.get_expression(indices=focal), rtol=1e-5
    )
    with pytest.raises(ValueError, match=r"niche_latent must have shape \(60, 4\)"):
        cellina.predict_with_niche_latent(None, focal, s[:, :2])
    s[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cellina.predict_with_niche_latent(None, focal, s)


def test_the_estimate_is_made_on_training_cells_per_type(cellina):
    adata = cellina.adata
    types = sorted(set(adata.obs["coarse_type"].astype(str)))
    reliability = niche_reliability(cellina, adata, types)
    assert reliability.n_cells[None] > 500
    for total, noise in reliability.covariances.values():
        assert total.shape == noise.shape == (4, 4)
        assert np.all(np.linalg.eigvalsh(total) > -1e-8) and np.all(np.linalg.eigvalsh(noise) > -1e-8)
    # a neighbour mean of a few cells is noisy: some of the spread of s is noise, not all of it
    share = np.trace(reliability.covariances[None][1]) / np.trace(reliability.covariances[None][0])
    assert 0.02 < share < 1.5
    # deterministic: the split is seeded
    again = niche_reliability(cellina, adata, types)
    np.testing.assert_array_equal(again.covariances[None][1], reliability.covariances[None][1])


def test_disattenuated_counterfactual_is_the_hand_computed_one(cellina):
    adata = cellina.adata
    focal, pool = _cells(cellina)
    plain = cellina.get_counterfactual_expression(focal, pool, **EDGE)
    assert cellina.disattenuate_niche is False and cellina.niche_reliability_ is None
    np.testing.assert_array_equal(cellina.get_counterfactual_expression(focal, pool, disattenuate=False, **EDGE), plain)
    corrected, donors = cellina.get_counterfactual_expression(
        focal, pool, disattenuate=True, return_donors=True, **EDGE
    )
    # measured on the first request and kept
    assert cellina.niche_reliability_ is not None
    # by hand: the same draws' codes, each draw's change divided by the reliability of its direction
    types = _types(cellina, focal)
    reliability = niche_reliability(cellina, adata, sorted(set(types)))
    s_factual = cellina.get_latent_representation(indices=focal, latent_key="s")
    record = spatial_features_record(adata, cellina.spatial_obsm_key)
    expected = np.zeros_like(corrected)
    for drawn in donors:
        moved = cellina.predict_from_niche(
            adata, focal, pooled_niche_features(adata.layers["counts"], drawn, record), output="s"
        )
        s = disattenuated_niche_latent(s_factual, moved, types, reliability)
        expected += cellina.predict_with_niche_latent(adata, focal, s) / len(donors)
    np.testing.assert_allclose(corrected, expected, rtol=1e-4)
    # dividing by a reliability <= 1 makes the niche's effect larger, never smaller, on average
    factual = cellina.get_expression(indices=focal)
    change_plain = np.abs(np.log(plain.mean(0) + 1e-3) - np.log(factual.mean(0) + 1e-3)).mean()
    change_corrected = np.abs(np.log(corrected.mean(0) + 1e-3) - np.log(factual.mean(0) + 1e-3)).mean()
    assert change_corrected > change_plain


def test_the_option_is_the_models_default_and_survives_saving(two_slide_tissue, tmp_path):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, **SETUP)
    torch.manual_seed(0)
    model = Cellina(adata, **SMALL, spatial_encoder="linear", disattenuate_niche=True)
    model.train(max_epochs=1, batch_size=128, **QUIET)
    focal, pool = _cells(model)
    on = model.get_counterfactual_expression(focal, pool, **EDGE)
    np.testing.assert_array_equal(on, model.get_counterfactual_expression(focal, pool, disattenuate=True, **EDGE))
    assert not np.allclose(on, model.get_counterfactual_expression(focal, pool, disattenuate=False, **EDGE))
    # measured when training ended, for every registered type, and saved with the model
    stored = model.niche_reliability_
    sizes = adata.obs["coarse_type"].astype(str).value_counts()
    assert "" in stored["types"] and set(stored["types"]) <= set(sizes.index) | {""}
    # types too small to estimate apart are read with the statistics of all cells
    assert set(sizes.index[sizes >= 2 * MIN_CELLS_PER_TYPE]) <= set(stored["types"])
    assert not set(sizes.index[sizes < MIN_CELLS_PER_TYPE]) & set(stored["types"])
    model.save(tmp_path / "m", save_anndata=False)
    loaded = Cellina.load(tmp_path / "m", adata=adata)
    assert loaded.disattenuate_niche is True
    np.testing.assert_array_equal(loaded.niche_reliability_["noise"], stored["noise"])
    np.testing.assert_allclose(loaded.get_counterfactual_expression(focal, pool, **EDGE), on, rtol=1e-5)
    with pytest.raises(ValueError, match="disattenuate_niche='yes'"):
        Cellina(adata, **SMALL, disattenuate_niche="yes")
    with pytest.raises(ValueError, match="disattenuate=2"):
        model.get_counterfactual_expression(focal, pool, disattenuate=2, **EDGE)
    with pytest.raises(ValueError, match="give_mean=False"):
        edge_counterfactual(model, adata, focal, pool, disattenuate=True, give_mean=False)
    # the library function takes part of the correction too: 0 is none, 1 all of it, 0.5 in between
    draws = {"n_neighbours": EDGE["n_neighbours"], "n_draws": EDGE["n_draws"], "seed": EDGE["seed"]}
    none, full = (edge_counterfactual(model, adata, focal, pool, disattenuate=v, **draws) for v in (0.0, 1))
    half = edge_counterfactual(model, adata, focal, pool, disattenuate=0.5, **draws)
    np.testing.assert_array_equal(half, model.get_counterfactual_expression(focal, pool, disattenuate=0.5, **EDGE))
    np.testing.assert_allclose(none, model.get_counterfactual_expression(focal, pool, disattenuate=False, **EDGE))
    np.testing.assert_allclose(full, on, rtol=1e-6)
    factual = np.log(model.get_expression(indices=focal).mean(0))
    sizes = [np.abs(np.log(x.mean(0)) - factual).mean() for x in (none, half, full)]
    assert sizes[0] < sizes[1] < sizes[2]
    with pytest.raises(ValueError, match="disattenuate=2"):
        edge_counterfactual(model, adata, focal, pool, disattenuate=2)


def test_graph_variant_corrects_its_codes_the_same_way(gcn):
    adata = gcn.adata
    focal, pool = _cells(gcn)
    corrected = gcn.get_counterfactual_expression(focal, pool, **{**EDGE, "n_draws": 1})
    plain = gcn.get_counterfactual_expression(focal, pool, disattenuate=False, **{**EDGE, "n_draws": 1})
    assert corrected.shape == plain.shape == (60, adata.n_vars) and np.isfinite(corrected).all()
    moved = gcn.get_counterfactual_latents(focal, pool, **{**EDGE, "n_draws": 1})
    types = _types(gcn, focal)
    s = disattenuated_niche_latent(
        gcn.get_latent_representation(indices=focal, latent_key="s"),
        moved,
        types,
        niche_reliability(gcn, adata, sorted(set(types))),
    )
    np.testing.assert_allclose(corrected, gcn.predict_with_niche_latent(adata, focal, s), rtol=1e-4)
