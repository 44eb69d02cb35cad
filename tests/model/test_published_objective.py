"""The PUBLISHED preset trains the published objective; presets, batch-aware encoders, published options."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from cellina.model import PUBLISHED, RECOMMENDED, Cellina, get_preset
from cellina.model.presets import OPTION_NOTES

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture()
def adata(two_slide_tissue):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    return adata


def _minibatch(model, n=64):
    return next(iter(model._make_data_loader(model.adata, indices=np.arange(n), batch_size=n)))


def _nb_log_prob(x, mu, theta):
    """Negative-binomial log-probability written out by hand."""
    log_theta_mu = torch.log(theta + mu)
    return (
        torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
        + theta * (torch.log(theta) - log_theta_mu)
        + x * (torch.log(mu) - log_theta_mu)
    )


def _gaussian_kl(mean, var):
    return 0.5 * (mean.square() + var - torch.log(var) - 1.0).sum(-1)


def test_published_loss_is_the_published_elbo_plus_its_heads(adata):
    torch.manual_seed(0)
    model = Cellina.from_preset(adata, "published", **SMALL)
    module = model.module
    module.eval()  # no dropout, so the heads give the same logits when recomputed by hand
    batch = _minibatch(model)
    inf = module.inference(**module._get_inference_input(batch))
    gen = module.generative(**module._get_generative_input(batch, inf))
    kl_weight, a_clf, a_adv = 0.3, 7.0, 5.0
    out = module.loss(batch, inf, gen, kl_weight=kl_weight, classifier_scale=a_clf, discriminator_scale=a_adv)

    x = batch["X"]
    rec = -_nb_log_prob(x, gen["px"].mu, gen["px_r"]).sum(-1)
    kl = _gaussian_kl(inf["qzm"], inf["qzv"]) + _gaussian_kl(inf["qsm"], inf["qsv"])  # s-KL weight 1
    labels, domains = batch["labels"].view(-1).long(), batch["domains"].view(-1).long()
    clf = F.cross_entropy(module.classifier(inf["z"]), labels)
    # the published adversary: the encoder minimises minus the discriminator's cross-entropy
    fool = -F.cross_entropy(module.discriminator(inf["z"]), domains)
    expected = torch.mean(rec + kl_weight * kl) + a_clf * clf + a_adv * fool
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out.extra_metrics["fool_loss"], a_adv * fool.detach(), rtol=1e-5, atol=1e-5)
    assert out.extra_metrics["fool_loss"] < 0 < out.extra_metrics["classifier_loss"]
    assert set(out.kl_local) == {"kl_divergence_z", "kl_divergence_s", "kl_divergence_l"}


def test_published_schedule_measures_epoch_zero_and_warms_up_over_400_epochs(adata):
    torch.manual_seed(0)
    model = Cellina.from_preset(adata, "published", **SMALL)
    before = {n: p.detach().clone() for n, p in model.module.named_parameters()}
    model.train(max_epochs=1, batch_size=128, **QUIET)
    # epoch 0 only measures the loss scales: no parameter moved
    for name, value in model.module.named_parameters():
        torch.testing.assert_close(value, before[name], msg=name)
    assert bool(model.module.alphas_frozen) and float(model.module.alpha_classifier) > 10

    torch.manual_seed(0)
    model = Cellina.from_preset(adata, "published", **SMALL)
    model.train(max_epochs=3, batch_size=128, check_val_every_n_epoch=1, **QUIET)
    hist = model.history
    np.testing.assert_allclose(hist["kl_weight"].to_numpy(float).ravel(), [0.0, 1 / 400, 2 / 400])
    moved = [n for n, p in model.module.named_parameters() if not torch.equal(p, before[n])]
    assert "decoder.px_decoder.fc_layers.Layer 0.0.weight" in moved
    # the validation monitor uses the current warm-up weight, as published
    col = {
        k: hist[k].to_numpy(float).ravel()
        for k in ("vae_loss_validation", "reconstruction_loss_validation", "kl_z_validation", "kl_s_validation")
    }
    klw = hist["kl_weight"].to_numpy(float).ravel()
    np.testing.assert_allclose(
        col["vae_loss_validation"],
        col["reconstruction_loss_validation"] + klw * (col["kl_z_validation"] + col["kl_s_validation"]),
        rtol=1e-4,
    )


def test_presets_reach_the_model_and_its_training(adata, tmp_path):
    model = Cellina.from_preset(adata, "recommended", **SMALL, niche_rank=2)
    m = model.module
    assert model.preset == "recommended"
    assert (m.niche_decoder, m.spatial_decoding, m.type_aware_discriminator) == ("type_gated", "mean", True)
    assert m.decoder.state_directions.out_features == 2  # overrides land on top of the preset
    published = Cellina.from_preset(adata, PUBLISHED, **SMALL).module
    assert (published.spatial_kl_weight, published.adversarial_loss) == (1.0, "negative_ce")
    assert published.discriminator.classifier[0].fc_layers[0][0].out_features == 32
    assert published.classifier.classifier[0].fc_layers[0][0].out_features == 128
    model.train(max_epochs=1, batch_size=256, **QUIET)
    model.save(tmp_path / "m", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "m"), adata=adata)
    assert loaded.preset == "recommended" and loaded.module.niche_decoder == "type_gated"
    with pytest.raises(ValueError, match="unknown preset 'fast'.*published"):
        Cellina.from_preset(adata, "fast")
    assert get_preset("PUBLISHED") is PUBLISHED


def test_every_preset_option_is_explained_once():
    for preset in (PUBLISHED, RECOMMENDED):
        for option in (*preset.model, *preset.plan):
            assert option in OPTION_NOTES, option
    with pytest.raises(TypeError):
        PUBLISHED.model["spatial_kl_weight"] = 0.5  # presets are shared: read-only


@pytest.mark.parametrize("encode_batch", [True, False])
def test_batch_enters_both_encoders_when_asked(adata, encode_batch):
    model = Cellina(adata, encode_batch=encode_batch, **SMALL)
    n_batch = 2 if encode_batch else 0
    assert model.module.z_encoder.encoder.fc_layers[0][0].in_features == adata.n_vars + n_batch
    assert model.module.s_encoder.encoder.fc_layers[0][0].in_features == adata.obsm["spatial_x"].shape[1] + n_batch
    model.train(max_epochs=1, batch_size=256, **QUIET)
    # each slide's cells are encoded with their own slide: moving a cell to the other slide moves z
    batch = _minibatch(model, 32)
    model.module.eval()
    z = model.module.inference(**model.module._get_inference_input(batch))["qzm"]
    flipped = dict(batch, batch=1 - batch["batch"])
    z_flipped = model.module.inference(**model.module._get_inference_input(flipped))["qzm"]
    assert torch.allclose(z, z_flipped) is (not encode_batch)


def test_every_prediction_works_on_several_slides(adata):
    model = Cellina(adata, **SMALL)
    model.train(max_epochs=1, batch_size=256, **QUIET)
    idx = np.arange(20)
    assert np.isfinite(model.get_expression(indices=idx)).all()
    adata.obsm["spatial_x_cf"] = adata.obsm["spatial_x"] * 0.5
    assert np.isfinite(model.get_perturbed_expression(indices=idx)).all()
    assert np.isfinite(model.get_latent_representation(indices=idx)).all()


def test_sparse_niche_features_are_read_like_dense_ones(adata):
    model = Cellina(adata, **SMALL)
    model.train(max_epochs=1, batch_size=256, **QUIET)
    as_sparse = adata.copy()
    as_sparse.obsm["spatial_x"] = sp.csr_matrix(as_sparse.obsm["spatial_x"])
    np.testing.assert_allclose(
        model.get_expression(as_sparse, indices=np.arange(30)), model.get_expression(indices=np.arange(30)), rtol=1e-5
    )
    Cellina.setup_anndata(as_sparse, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    Cellina(as_sparse, **SMALL).train(max_epochs=1, batch_size=256, **QUIET)
    as_sparse.obsm["bad"] = sp.csr_matrix(np.full((as_sparse.n_obs, 3), np.nan))
    with pytest.raises(ValueError, match=r"obsm\['bad'\] holds NaN"):
        Cellina.setup_anndata(as_sparse, spatial_obsm_key="bad", layer="counts")


def test_published_head_options(adata):
    model = Cellina(
        adata,
        domain_classifier_lambda=1.5,
        classifier_kwargs={"n_hidden": 24},
        discriminator_kwargs={"n_hidden": 12, "n_layers": 1},
        **SMALL,
    )
    m = model.module
    assert m.domain_classifier is not None and m.domain_classifier_lambda == 1.5
    assert m.classifier.classifier[0].fc_layers[0][0].out_features == 24
    assert m.domain_discriminator is m.discriminator
    assert m.discriminator.classifier[0].fc_layers[0][0].out_features == 12
    model.train(max_epochs=2, batch_size=128, plan_kwargs={"normalize_losses": True}, **QUIET)
    hist = model.history
    assert "domain_classifier_loss_train" in hist and "domain_classifier_accuracy_train" in hist
    alpha = hist["alpha_domain_classifier"].to_numpy(float).ravel()
    assert alpha[0] == alpha[-1] > 1
    with pytest.raises(ValueError, match="'n_labels' of an auxiliary head"):
        Cellina(adata, classifier_kwargs={"n_labels": 3}, **SMALL)
    with pytest.raises(ValueError, match="domain_classifier_lambda=-1"):
        Cellina(adata, domain_classifier_lambda=-1, **SMALL)
