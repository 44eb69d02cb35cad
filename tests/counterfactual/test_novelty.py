"""How far counterfactual niches lie from training: trained models on a two-slide tissue."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellina.counterfactual import NicheNovelty, edge_counterfactual, niche_novelty, node_niche_codes
from cellina.model import Cellina, CellinaGCN

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SETUP = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}


def _lognorm(adata) -> np.ndarray:
    counts = adata.layers["counts"]
    counts = np.asarray(counts.toarray() if sp.issparse(counts) else counts, dtype=np.float64)
    return np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)


@pytest.fixture(scope="module")
def model(two_slide_tissue):
    adata = two_slide_tissue.copy()
    # the recorded representation of the niche features, and the same scaled far beyond anything seen
    adata.layers["lognorm"] = _lognorm(adata)
    adata.layers["lognorm_x10"] = adata.layers["lognorm"] * 10.0
    Cellina.setup_anndata(adata, **SETUP)
    torch.manual_seed(0)
    m = Cellina(adata, n_hidden=16, n_latent=4, n_layers=1)
    m.train(max_epochs=5, batch_size=128, **QUIET)
    return m


def _domain(adata, name):
    return np.flatnonzero(adata.obs["domain"].to_numpy() == name)


@pytest.mark.parametrize("anchor", [True, False])
def test_ordinary_donor_niches_lie_within_training(model, anchor):
    adata = model.adata
    focal, pool = _domain(adata, "healthy")[:100], _domain(adata, "tumour")
    plain = model.get_counterfactual_expression(focal, pool, precomputed=anchor, n_neighbours=20, n_draws=2)
    mean, std, novelty = model.get_counterfactual_expression(
        focal, pool, precomputed=anchor, n_neighbours=20, n_draws=2, return_std=True, return_novelty=True
    )
    # asking for the novelty changes nothing in the prediction
    np.testing.assert_array_equal(mean, plain)
    assert std.shape == mean.shape and (std > 0).any()
    assert isinstance(novelty, NicheNovelty)
    assert novelty.distance.shape == (focal.size,) and novelty.grouped.all()
    assert novelty.share_outside <= 0.1
    assert 20 < float(np.median(novelty.percentile)) < 90
    assert "within what the model saw" in novelty.message() or novelty.n_outside <= 10


def test_donor_niches_far_beyond_training_are_outside(model):
    adata = model.adata
    focal, pool = _domain(adata, "healthy")[:60], _domain(adata, "tumour")
    kwargs = {"precomputed": False, "n_neighbours": 20, "return_novelty": True}
    _, near = model.get_counterfactual_expression(focal, pool, layer="lognorm", **kwargs)
    _, far = model.get_counterfactual_expression(focal, pool, layer="lognorm_x10", **kwargs)
    assert near.share_outside <= 0.1
    assert far.outside_training.all()
    assert (far.percentile == 100).all() and (far.distance > far.threshold).all()
    assert far.message().startswith(f"{focal.size} of {focal.size} focal cells (100%)")
    record = far.record()
    assert record["n_outside_training"] == focal.size and record["quantile"] == 0.99


def test_novelty_matches_a_direct_neighbour_search(model):
    """Codes of training cells themselves score as the reference distribution says."""
    from sklearn.neighbors import NearestNeighbors

    adata = model.adata
    s = model.get_latent_representation(adata, latent_key="s")
    types = adata.obs["coarse_type"].astype(str).to_numpy()
    focal = np.flatnonzero(types == types[0])[:5]
    shifted = s[focal] + 3.0
    novelty = niche_novelty(model, adata, focal, shifted, n_neighbours=5, quantile=0.9)
    same = np.flatnonzero(types == types[0])
    nn = NearestNeighbors(n_neighbors=6).fit(s[same])
    ref = nn.kneighbors(s[same])[0][:, 1:].mean(1)
    expected = nn.kneighbors(shifted, n_neighbors=5)[0].mean(1)
    np.testing.assert_allclose(novelty.distance, expected, rtol=1e-4)
    np.testing.assert_allclose(novelty.threshold, np.quantile(ref, 0.9), rtol=1e-4)
    np.testing.assert_allclose(novelty.percentile, 100 * (ref[None] <= expected[:, None]).mean(1), atol=1e-3)
    # several draws: distances are averaged over draws
    two = niche_novelty(model, adata, focal, np.stack([shifted, s[focal]]), n_neighbours=5, quantile=0.9)
    own = nn.kneighbors(s[focal], n_neighbors=5)[0].mean(1)
    np.testing.assert_allclose(two.distance, (expected + own) / 2, rtol=1e-4)


def test_novelty_refuses_bad_inputs(model):
    adata = model.adata
    focal = np.arange(4)
    codes = np.zeros((4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="quantile=1.5"):
        niche_novelty(model, adata, focal, codes, quantile=1.5)
    with pytest.raises(ValueError, match="n_focal=4"):
        niche_novelty(model, adata, focal, codes[:3])
    with pytest.raises(ValueError, match="dimension 3"):
        niche_novelty(model, adata, focal, codes[:, :3])
    with pytest.raises(ValueError, match="reference cells"):
        niche_novelty(model, adata, focal, codes, reference=np.arange(5), n_neighbours=10)
    with pytest.raises(ValueError, match="NaN"):
        niche_novelty(model, adata, focal, np.full((4, 4), np.nan))


def test_node_niche_codes_are_the_perturbed_niches_s(model):
    from cellina.counterfactual import GeneShifts, node_counterfactual

    adata = model.adata
    focal = _domain(adata, "healthy")[:20]
    result = node_counterfactual(model, adata, GeneShifts.from_mapping({"LGD1": 2.0}), focal)
    codes = node_niche_codes(model, adata, focal, result.spatial_x)
    expected = model.predict_from_niche(adata, focal, result.spatial_x[focal], "s")
    np.testing.assert_array_equal(codes, expected)
    assert niche_novelty(model, adata, focal, codes).distance.shape == (20,)


def test_graph_model_novelty(two_slide_tissue):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    torch.manual_seed(0)
    gcn = CellinaGCN(adata, n_hidden=16, n_latent=4, n_layers=1, num_neighbors=[6])
    gcn.train(max_epochs=1, batch_size=128, **QUIET)
    focal, pool = _domain(adata, "healthy")[:30], _domain(adata, "tumour")
    mean, novelty = edge_counterfactual(gcn, adata, focal, pool, n_neighbours=10, return_novelty=True)
    assert mean.shape == (30, adata.n_vars)
    assert novelty.distance.shape == (30,) and np.isfinite(novelty.distance).all()
    assert novelty.outside_training.dtype == bool
