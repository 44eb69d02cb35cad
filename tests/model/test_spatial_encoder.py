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


def test_the_graph_variant_reads_the_option_as_the_kind_of_its_layers(two_slide_tissue, tmp_path):
    from cellina.model import CellinaGCN

    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    published = CellinaGCN(adata, n_hidden=16, n_latent=4, n_layers=2)
    assert published.module.spatial_encoder == "mlp"
    assert all(isinstance(n, torch.nn.LayerNorm) for n in published.module.s_encoder.norms)
    torch.manual_seed(0)
    model = CellinaGCN.from_preset(adata, "recommended", n_hidden=16, n_latent=4, n_layers=2, num_neighbors=[5, 3])
    assert model.module.spatial_encoder == "linear" and "(linear)" in model._model_summary_string
    assert all(isinstance(n, torch.nn.BatchNorm1d) for n in model.module.s_encoder.norms)
    model.train(max_epochs=2, batch_size=128, **QUIET)
    s = model.get_latent_representation(latent_key="s")
    assert s.shape == (adata.n_obs, 4) and torch.isfinite(torch.as_tensor(s)).all()
    # the layers learnt running statistics, which prediction uses and a saved model keeps
    assert not torch.allclose(model.module.s_encoder.norms[0].running_var, torch.ones(16))
    model.save(tmp_path / "gcn", overwrite=True)
    loaded = CellinaGCN.load(str(tmp_path / "gcn"), adata=adata)
    assert loaded.module.spatial_encoder == "linear"
    torch.testing.assert_close(torch.as_tensor(loaded.get_latent_representation(latent_key="s")), torch.as_tensor(s))
    with pytest.raises(ValueError, match="spatial_encoder='gat': the graph variant's layers are one of"):
        CellinaGCN(adata, n_hidden=16, n_latent=4, n_layers=1, spatial_encoder="gat")


def test_linear_graph_layers_are_affine_in_the_node_features():
    from cellina.model._graph_encoder import GraphEncoder

    torch.manual_seed(0)
    encoder = GraphEncoder(6, 3, n_hidden=8, n_layers=2, convolution_type="mean", kind="linear")
    # targets are the first rows of the sources; 0 and 1 read 2..4, and 2..4 read 5..7
    full = [
        torch.tensor([[5, 6, 7, 5, 6, 7, 2, 3, 4, 3], [2, 2, 3, 3, 4, 4, 0, 0, 1, 1]]),
        torch.tensor([[2, 3, 4, 3], [0, 0, 1, 1]]),
    ]
    encoder.train()
    for _ in range(3):
        encoder.propagate(torch.randn(8, 6) * 2 + 1, full, [8, 5, 2], 0)  # running statistics move
    # a lone target in training uses the running statistics instead of failing
    alone = encoder.layer(1, torch.randn(5, 8), torch.randn(1, 8), torch.tensor([[2, 3], [0, 0]]))[0]
    assert alone.shape == (1, 8) and torch.isfinite(alone).all()
    encoder.eval()
    x = torch.randn(8, 6)
    f = lambda v: encoder.propagate(v, full, [8, 5, 2], 0)  # noqa: E731
    # affine: a niche twice as far moves every layer's output twice as far
    torch.testing.assert_close(
        f(2 * x) - f(torch.zeros_like(x)), 2 * (f(x) - f(torch.zeros_like(x))), rtol=1e-4, atol=1e-5
    )
    published = GraphEncoder(6, 3, n_hidden=8, n_layers=2, convolution_type="mean").eval()
    g = lambda v: published.propagate(v, full, [8, 5, 2], 0)  # noqa: E731
    assert not torch.allclose(g(2 * x) - g(torch.zeros_like(x)), 2 * (g(x) - g(torch.zeros_like(x))), atol=1e-3)
