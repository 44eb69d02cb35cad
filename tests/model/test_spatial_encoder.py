"""The linear niche encoder: the posterior mean of s is an affine map of the niche features."""

from __future__ import annotations

import pytest
import torch

from cellina.model import Cellina, CellinaModule
from cellina.model._encoders import LinearGaussianEncoder

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def test_the_posterior_mean_is_affine_in_the_features_once_trained():
    torch.manual_seed(0)
    encoder = LinearGaussianEncoder(5, 3, n_cat=2)
    encoder.train()
    encoder(torch.randn(64, 5) * 3 + 1, torch.zeros(64, 1))  # running statistics move
    encoder.eval()
    x, batch = torch.randn(4, 5), torch.tensor([[0], [1], [1], [0]])
    a, b = encoder(x, batch)[0].loc, encoder(2 * x, batch)[0].loc
    origin = encoder(torch.zeros_like(x), batch)[0].loc
    # affine: f(2x) - f(0) == 2 (f(x) - f(0)), so a niche twice as far moves s twice as far
    torch.testing.assert_close(b - origin, 2 * (a - origin))
    # the batch shifts the mean, and a sample comes with the distribution
    assert not torch.allclose(encoder(x, torch.zeros(4, 1))[0].loc, encoder(x, torch.ones(4, 1))[0].loc)
    dist, sample = encoder(x, batch)
    assert sample.shape == (4, 3) and torch.all(dist.scale > 0)


def test_module_option_is_checked_and_builds_the_encoder():
    options = {"n_input": 6, "n_spatial": 5, "n_batch": 2, "n_latent": 3, "n_hidden": 8, "n_labels": 2, "n_domains": 2}
    module = CellinaModule(**options, spatial_encoder="linear")
    assert isinstance(module.s_encoder, LinearGaussianEncoder) and module.s_encoder.n_cat == 2
    with pytest.raises(ValueError, match="spatial_encoder"):
        CellinaModule(**options, spatial_encoder="gat")


def test_a_model_with_the_linear_encoder_trains_on_two_slides_and_reloads(two_slide_tissue, tmp_path):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, n_hidden=16, n_latent=4, n_layers=1, spatial_encoder="linear")
    model.train(max_epochs=2, batch_size=128, **QUIET)
    s = model.get_latent_representation(latent_key="s")
    assert s.shape == (adata.n_obs, 4) and torch.isfinite(torch.as_tensor(s)).all()
    model.save(tmp_path / "m", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "m"), adata=adata)
    assert isinstance(loaded.module.s_encoder, LinearGaussianEncoder)
    torch.testing.assert_close(torch.as_tensor(loaded.get_latent_representation(latent_key="s")), torch.as_tensor(s))


def test_the_graph_variant_takes_the_recommended_preset_without_the_niche_encoder(two_slide_tissue):
    from cellina.model import CellinaGCN

    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = CellinaGCN.from_preset(adata, "recommended", n_hidden=16, n_latent=4, n_layers=1)
    assert model.module.spatial_encoder == "mlp" and model.preset == "recommended"
    with pytest.raises(ValueError, match="spatial_encoder='linear' does not apply to the graph variant"):
        CellinaGCN(adata, n_hidden=16, n_latent=4, n_layers=1, spatial_encoder="linear")
