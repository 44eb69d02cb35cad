"""Edge draws that sample the model's posterior (``uncertainty="posterior"``): seeded, wider, same prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellina.model import Cellina

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SETUP = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}
SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}


def _trained(tissue, **options) -> Cellina:
    adata = tissue.copy()
    Cellina.setup_anndata(adata, **SETUP)
    model = Cellina(adata, **SMALL, **options)
    torch.manual_seed(0)
    model.train(max_epochs=2, batch_size=128, **QUIET)
    return model


@pytest.fixture(scope="module")
def sampled(two_slide_tissue):
    """Trained decoding samples of ``s`` (the published ``spatial_decoding``)."""
    return _trained(two_slide_tissue, spatial_decoding="sample")


@pytest.fixture(scope="module")
def mean_s(two_slide_tissue):
    """Trained decoding the posterior mean of ``s`` (the recommended ``spatial_decoding``)."""
    return _trained(two_slide_tissue, spatial_decoding="mean")


def _cells(model):
    domain = model.adata.obs["domain"].to_numpy()
    return np.flatnonzero(domain == "healthy")[:50], np.flatnonzero(domain == "tumour")


def _edge(model, **kwargs):
    focal, pool = _cells(model)
    options = {"precomputed": False, "n_neighbours": 6, "n_draws": 3, "seed": 4, "return_std": True, **kwargs}
    return model.get_counterfactual_expression(focal, pool, **options)


def test_posterior_draws_keep_the_prediction_and_the_donors_and_widen_the_spread(sampled):
    mean_d, std_d, donors_d = _edge(sampled, return_donors=True)
    mean_p, std_p, donors_p = _edge(sampled, return_donors=True, uncertainty="posterior")
    np.testing.assert_array_equal(donors_p, donors_d)
    np.testing.assert_array_equal(mean_p, mean_d)
    assert (std_p >= 0).all()
    # the posterior adds to the spread of the donors
    assert std_p.mean() > 1.1 * std_d.mean()
    assert np.mean(std_p > std_d) > 0.5


def test_the_posterior_spread_is_that_of_the_change_not_of_the_cells_level(mean_s):
    from cellina.counterfactual import pooled_niche_features, spatial_features_record

    mean, std, donors = _edge(mean_s, uncertainty="posterior", return_donors=True)
    focal, _ = _cells(mean_s)
    record = spatial_features_record(mean_s.adata, "spatial_x")
    counts = mean_s.adata.layers["counts"]
    samples = [
        mean_s.predict_from_niche(indices=focal, spatial_x=pooled_niche_features(counts, d, record), give_mean=False)
        for d in donors
    ]
    # a sample of z moves a cell's counterfactual and its factual alike; taken against its factual,
    # the spread left is the niche change's, much narrower than the counterfactual's own
    assert std.mean() < 0.5 * np.stack(samples).std(0).mean()


def test_posterior_draws_are_seeded_and_do_not_depend_on_the_minibatches(sampled):
    mean, a = _edge(sampled, uncertainty="posterior")
    _, b = _edge(sampled, uncertainty="posterior", batch_size=7)
    _, c = _edge(sampled, uncertainty="posterior", seed=5)
    # float32 sums in other orders: differences far below the spread, relative to the values
    assert np.all(np.abs(a - b) <= 1e-3 * a + 1e-5 * mean)
    assert np.abs(a - c).mean() > 0.1 * a.mean()


def test_one_posterior_draw_has_no_spread(sampled):
    _, std = _edge(sampled, uncertainty="posterior", n_draws=1)
    assert np.all(std == 0)


def test_s_is_sampled_only_where_the_decoder_was_trained_on_samples(sampled, mean_s):
    focal, pool = _cells(sampled)
    kwargs = {"precomputed": False, "n_neighbours": 6, "n_draws": 3, "return_std": True}
    for model, s_sampled in ((sampled, True), (mean_s, False)):
        _, std_z = model.get_counterfactual_latents(focal, pool, latent_key="z", uncertainty="posterior", **kwargs)
        assert std_z.min() > 0  # z: always from q(z | x)
        _, s_donors = model.get_counterfactual_latents(focal, pool, **kwargs)
        _, s_posterior = model.get_counterfactual_latents(focal, pool, uncertainty="posterior", **kwargs)
        if s_sampled:
            assert s_posterior.mean() > 2 * s_donors.mean()
        else:  # spatial_decoding="mean": s stays the deterministic niche code the decoder reads
            np.testing.assert_allclose(s_posterior, s_donors, rtol=1e-5, atol=1e-6)


def test_a_seeded_posterior_sample_is_reproducible(sampled):
    focal, _ = _cells(sampled)
    a = sampled.predict_from_niche(indices=focal, give_mean=False, rng=3)
    b = sampled.predict_from_niche(indices=focal, give_mean=False, rng=np.random.default_rng(3), batch_size=9)
    mean = sampled.predict_from_niche(indices=focal)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not np.allclose(a, mean)
    # rng only matters for samples: the posterior means ignore it
    np.testing.assert_array_equal(sampled.predict_from_niche(indices=focal, rng=3), mean)


def test_a_pair_of_streams_draws_s_apart_from_z(sampled):
    focal, _ = _cells(sampled)

    def draw(output, rng):
        return sampled.predict_from_niche(indices=focal, output=output, give_mean=False, rng=rng)

    np.testing.assert_array_equal(draw("z", (3, 4)), draw("z", (3, 5)))
    assert not np.allclose(draw("s", (3, 4)), draw("s", (3, 5)))
    np.testing.assert_array_equal(draw("s", (3, 4)), draw("s", (8, 4)))
    with pytest.raises(ValueError, match="a tuple of 3"):
        draw("z", (1, 2, 3))


def test_an_unknown_uncertainty_is_named(sampled):
    focal, pool = _cells(sampled)
    with pytest.raises(ValueError, match="uncertainty='model'"):
        sampled.get_counterfactual_expression(focal, pool, precomputed=False, uncertainty="model")
    with pytest.raises(ValueError, match="uncertainty='Posterior'"):
        sampled.get_counterfactual_latents(focal, pool, precomputed=False, uncertainty="Posterior")
