"""The niche adversary: a regressor reads the niche code s from z and the type; z is pushed to hide it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cellina.model import Cellina, CellinaGCN, CellinaModule

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _module(**kwargs) -> CellinaModule:
    torch.manual_seed(0)
    return CellinaModule(n_input=6, n_spatial=5, n_hidden=8, n_latent=3, n_labels=2, n_domains=2, **kwargs)


def test_the_regressor_exists_only_when_asked_and_older_models_keep_their_state():
    plain = _module()
    assert plain.niche_regressor is None
    assert not any("niche" in k or "s_mean" in k for k in plain.state_dict())
    module = _module(niche_adversary_lambda=2.0)
    assert module.niche_regressor is not None and module.niche_adversary_lambda == 2.0
    assert {"alpha_niche_adversary", "s_mean_by_type"} <= set(module.state_dict())
    # the regressor trains in the adversary step, never in the VAE step
    regressor = {id(p) for p in module.niche_regressor.parameters()}
    assert regressor <= {id(p) for p in module.discriminator_parameters()}
    assert not regressor & {id(p) for p in module.vae_parameters()}
    with pytest.raises(ValueError, match="niche_adversary_lambda=-1"):
        _module(niche_adversary_lambda=-1)


def test_regressor_loss_and_the_type_means_it_keeps():
    module = _module(niche_adversary_lambda=1.0)
    z, s = torch.randn(6, 3), torch.randn(6, 3)
    labels = torch.tensor([[0], [0], [1], [1], [1], [0]])
    loss = module.niche_regressor_loss(z, s, labels)
    onehot = F.one_hot(labels.view(-1), 2).float()
    expected = F.mse_loss(module.niche_regressor(torch.cat([z, onehot], -1)), s)
    torch.testing.assert_close(loss, expected)
    # the first minibatch sets each type's mean s; later ones move it a little
    first = torch.stack([s[labels.view(-1) == t].mean(0) for t in (0, 1)])
    torch.testing.assert_close(module.s_mean_by_type, first)
    module.niche_regressor_loss(z, s + 10.0, labels)
    assert torch.all(module.s_mean_by_type > first) and torch.all(module.s_mean_by_type < first + 10.0)


def test_the_encoder_is_pushed_towards_the_types_mean_code():
    module = _module(niche_adversary_lambda=1.0)
    labels = torch.tensor([[0], [1]])
    module.s_mean_by_type.copy_(torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]]))
    z = torch.randn(2, 3)
    pred = module.niche_regressor(torch.cat([z, F.one_hot(labels.view(-1), 2).float()], -1))
    torch.testing.assert_close(module._niche_fool_loss(z, labels), F.mse_loss(pred, module.s_mean_by_type))


@pytest.mark.parametrize("model_class", [Cellina, CellinaGCN])
def test_training_logs_both_sides_and_saves(two_slide_tissue, tmp_path, model_class):
    adata = two_slide_tissue.copy()
    model_class.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = model_class(adata, niche_adversary_lambda=1.0, **SMALL)
    model.train(max_epochs=2, batch_size=128, plan_kwargs={"normalize_losses": True}, **QUIET)
    hist = model.history
    for key in ("niche_regressor_loss_train", "niche_fool_loss_train", "alpha_niche_adversary"):
        assert key in hist, key
    assert float(model.module.alpha_niche_adversary) != 1.0  # measured over epoch 0, then frozen
    assert model.module.s_mean_by_type.abs().sum() > 0
    model.save(tmp_path / "m", overwrite=True)
    loaded = model_class.load(str(tmp_path / "m"), adata=adata)
    torch.testing.assert_close(loaded.module.s_mean_by_type, model.module.s_mean_by_type)
