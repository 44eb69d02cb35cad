"""Cellina module, model and adversarial training plan on a small synthetic tissue."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import torch
from lightning.pytorch.callbacks import Callback

from cellina.datasets import synthetic_tissue
from cellina.model import Cellina, CellinaModule, FactorisedNicheDecoder, auto_kl_warmup_epochs
from cellina.spatial import compute_spatial_features, spatial_neighbors

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def _tissue(n_cells: int = 640, n_genes: int = 100, seed: int = 0):
    # two slides, as real data has; models below take the slide as their batch
    adata = synthetic_tissue(n_cells=n_cells, n_genes=n_genes, n_slides=2, seed=seed, store_means=False)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=20, library_key="slide")
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    return adata


@pytest.fixture(scope="module")
def tissue():
    return _tissue()


@pytest.fixture()
def adata(tissue):
    return tissue.copy()


def _split(n_obs: int, n_train: int, seed: int = 0):
    perm = np.random.default_rng(seed).permutation(n_obs)
    return [perm[:n_train], perm[n_train:], np.array([], dtype=np.int64)]


@pytest.fixture(scope="module")
def trained(tissue):
    """A model trained 3 epochs with loss normalisation on equal-size batches."""
    adata = tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = Cellina(adata, **SMALL)
    torch.manual_seed(0)
    model.train(
        max_epochs=3,
        batch_size=128,
        check_val_every_n_epoch=1,
        datasplitter_kwargs={"external_indexing": _split(adata.n_obs, 512)},
        plan_kwargs={"normalize_losses": True},
        **QUIET,
    )
    return model, adata


# ---------------------------------------------------------------------- setup validation
def _snapshot(adata):
    return (list(adata.obs.columns), sorted(adata.uns.keys()), sorted(adata.obsm.keys()))


def test_setup_rejects_log_normalised_counts_without_touching_adata(adata):
    adata.X = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=r"adata\.X holds non-integer"):
        Cellina.setup_anndata(adata, labels_key="coarse_type", domains_key="domain")
    assert _snapshot(adata) == before
    assert "_scvi_labels" not in adata.obs


def test_setup_rejects_negative_counts(adata):
    adata.layers["bad"] = adata.layers["counts"].copy()
    adata.layers["bad"].data[0] = -1.0
    with pytest.raises(ValueError, match=r"adata\.layers\['bad'\] holds negative"):
        Cellina.setup_anndata(adata, layer="bad")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer": "raw"}, r"layer='raw' is not in adata\.layers"),
        ({"layer": "counts", "spatial_obsm_key": "niche"}, r"spatial_obsm_key='niche'"),
        ({"layer": "counts", "labels_key": "celltype"}, r"labels_key='celltype'"),
        ({"layer": "counts", "domains_key": "region"}, r"domains_key='region'"),
        ({"layer": "counts", "batch_key": "sample"}, r"batch_key='sample'"),
    ],
)
def test_setup_names_the_missing_key(adata, kwargs, message):
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=message):
        Cellina.setup_anndata(adata, **kwargs)
    assert _snapshot(adata) == before


def test_setup_needs_two_domains_and_complete_labels(adata):
    adata.obs["one_domain"] = "healthy"
    with pytest.raises(ValueError, match=r"'one_domain'.*1 domain"):
        Cellina.setup_anndata(adata, layer="counts", domains_key="one_domain")
    adata.obs["partial"] = adata.obs["coarse_type"].astype(object)
    adata.obs.iloc[3, adata.obs.columns.get_loc("partial")] = np.nan
    with pytest.raises(ValueError, match=r"'partial'.*1 missing"):
        Cellina.setup_anndata(adata, layer="counts", labels_key="partial")


def test_setup_rejects_nonfinite_niche_features(adata):
    adata.obsm["spatial_x"] = adata.obsm["spatial_x"].copy()
    adata.obsm["spatial_x"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"obsm\['spatial_x'\] holds NaN"):
        Cellina.setup_anndata(adata, layer="counts")


def test_heads_need_their_keys(adata):
    Cellina.setup_anndata(adata, layer="counts", domains_key="domain")
    # as published: without labels the classifier is simply off (its weight reads 0)
    unlabelled = Cellina(adata, **SMALL)
    assert unlabelled.module.classifier is None and unlabelled.module.classifier_lambda == 0.0
    with pytest.raises(ValueError, match="labels_key"):
        Cellina(adata, niche_decoder="type_gated", **SMALL)
    with pytest.raises(ValueError, match="labels_key"):
        Cellina(adata, type_aware_discriminator=True, **SMALL)
    Cellina.setup_anndata(adata, layer="counts", labels_key="coarse_type")
    with pytest.raises(ValueError, match="domains_key"):
        Cellina(adata, **SMALL)
    model = Cellina(adata, discriminator_lambda=0.0, **SMALL)
    assert model.module.discriminator is None and model.module.classifier is not None


# ---------------------------------------------------------------------- training plan
def test_history_has_the_published_monitors(trained):
    model, _ = trained
    hist = model.history
    for key in (
        "vae_loss_train",
        "vae_loss_validation",
        "elbo_train",
        "elbo_validation",
        "reconstruction_loss_train",
        "kl_local_train",
        "classifier_accuracy_train",
        "classifier_accuracy_validation",
        "discriminator_accuracy_train",
        "discriminator_accuracy_validation",
        "alpha_classifier",
        "alpha_adversarial",
        "kl_weight",
    ):
        assert key in hist, key
        assert len(hist[key]) == 3, key
        assert np.all(np.isfinite(hist[key].to_numpy(dtype=float))), key


def test_alphas_are_measured_over_epoch_zero_then_frozen(trained):
    model, _ = trained
    hist = model.history
    a_clf = hist["alpha_classifier"].to_numpy(dtype=float).ravel()
    a_adv = hist["alpha_adversarial"].to_numpy(dtype=float).ravel()
    assert np.all(a_clf == a_clf[0]) and np.all(a_adv == a_adv[0])
    # 512 training cells in batches of 128: epoch means equal the per-batch means the plan
    # accumulates, so the ratio can be recomputed from the logged epoch-0 values.
    vae0 = float(hist["vae_loss_train"].iloc[0, 0])
    # the factors are measured on each head's unweighted loss (``*_raw``)
    clf0 = float(hist["classifier_loss_raw_train"].iloc[0, 0])
    adv0 = float(hist["fool_loss_raw_train"].iloc[0, 0])
    assert a_clf[0] == pytest.approx(vae0 / clf0, rel=1e-4)
    assert a_adv[0] == pytest.approx(vae0 / adv0, rel=1e-4)
    assert a_clf[0] > 10  # the reconstruction term is orders of magnitude larger
    assert bool(model.module.alphas_frozen)
    assert float(model.module.alpha_classifier) == pytest.approx(a_clf[0])


def test_without_normalisation_alphas_stay_one(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = Cellina(adata, **SMALL)
    model.train(max_epochs=1, batch_size=256, **QUIET)
    assert float(model.module.alpha_classifier) == 1.0
    assert float(model.module.alpha_adversarial) == 1.0
    assert not bool(model.module.alphas_frozen)


def test_kl_weight_reaches_one(trained):
    model, _ = trained
    klw = model.history["kl_weight"].to_numpy(dtype=float).ravel()
    assert klw[0] == 0.0 and klw[-1] == 1.0
    assert auto_kl_warmup_epochs(100) == 25
    assert auto_kl_warmup_epochs(2) == 1
    assert auto_kl_warmup_epochs(2000) == 100


def test_vae_loss_validation_has_full_kl_weight(trained):
    model, _ = trained
    hist = model.history

    def col(key):
        return hist[key].to_numpy(dtype=float).ravel()

    w = model.module.spatial_kl_weight
    assert w == 0.1
    np.testing.assert_allclose(
        col("vae_loss_validation"),
        col("reconstruction_loss_validation") + col("kl_z_validation") + w * col("kl_s_validation"),
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        col("elbo_validation"),
        col("reconstruction_loss_validation") + col("kl_z_validation") + col("kl_s_validation"),
        rtol=1e-4,
    )
    # epoch 0 trains with KL weight 0: the training objective is the reconstruction alone
    assert col("vae_loss_train")[0] == pytest.approx(col("reconstruction_loss_train")[0], rel=1e-5)


class _StepRecorder(Callback):
    """Snapshots every parameter before each optimiser step and at the batch end."""

    def __init__(self):
        self.snapshots = []

    def _snap(self, pl_module, tag):
        self.snapshots.append((tag, {n: p.detach().clone() for n, p in pl_module.module.named_parameters()}))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = {
            n: (p.grad is not None and bool(p.grad.abs().sum() > 0)) for n, p in pl_module.module.named_parameters()
        }
        self.snapshots.append(("grads", grads))
        self._snap(pl_module, "before_step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._snap(pl_module, "batch_end")


def test_each_step_updates_only_its_own_parameters(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = Cellina(adata, **SMALL)
    rec = _StepRecorder()
    model.train(max_steps=1, max_epochs=1, batch_size=256, callbacks=[rec], **QUIET)
    tags = [t for t, _ in rec.snapshots]
    assert tags == ["grads", "before_step", "grads", "before_step", "batch_end"]
    disc_grads, before_disc = rec.snapshots[0][1], rec.snapshots[1][1]
    vae_grads, before_vae = rec.snapshots[2][1], rec.snapshots[3][1]
    after = rec.snapshots[4][1]
    is_disc = {n: n.startswith("discriminator.") for n in before_disc}
    assert any(is_disc.values())
    # discriminator step: gradients only on the discriminator (z is detached)
    assert all(disc_grads[n] == is_disc[n] for n in is_disc if disc_grads[n] or is_disc[n])
    assert not any(disc_grads[n] for n in is_disc if not is_disc[n])
    changed_1 = {n for n in before_disc if not torch.equal(before_disc[n], before_vae[n])}
    changed_2 = {n for n in before_vae if not torch.equal(before_vae[n], after[n])}
    assert changed_1 and all(is_disc[n] for n in changed_1)
    assert changed_2 and not any(is_disc[n] for n in changed_2)
    assert any(n.startswith("z_encoder.") for n in changed_2)
    assert any(n.startswith("s_encoder.") for n in changed_2)
    assert any(n.startswith("classifier.") for n in changed_2)
    # the adversarial term reaches the z encoder but leaves the discriminator's grads alone
    assert vae_grads["z_encoder.encoder.fc_layers.Layer 0.0.weight"]


def test_ablation_trains_with_one_optimiser(adata):
    Cellina.setup_anndata(adata, layer="counts")
    model = Cellina(adata, classifier_lambda=0.0, discriminator_lambda=0.0, **SMALL)
    assert model.module.classifier is None and model.module.discriminator is None
    model.train(max_epochs=1, batch_size=256, **QUIET)
    assert "discriminator_loss_train" not in model.history
    assert "classifier_loss_train" not in model.history
    assert np.isfinite(model.history["vae_loss_train"].to_numpy(dtype=float)).all()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_gpu_device_list_falls_back_to_cpu(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = Cellina(adata, **SMALL)
    with pytest.warns(UserWarning, match="training on the CPU"):
        model.train(max_epochs=1, batch_size=256, devices=[0], **QUIET)
    assert model.is_trained


# ---------------------------------------------------------------------- module
@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_module_likelihoods_give_finite_losses(likelihood):
    torch.manual_seed(0)
    module = CellinaModule(
        n_input=30,
        n_spatial=30,
        n_labels=3,
        n_domains=2,
        n_hidden=8,
        n_latent=3,
        gene_likelihood=likelihood,
    )
    x = torch.poisson(torch.full((16, 30), 3.0))
    tensors = {
        "X": x,
        "spatial_x": torch.rand(16, 30),
        "batch": torch.zeros(16, 1),
        "labels": torch.randint(0, 3, (16, 1)).float(),
        "domains": torch.randint(0, 2, (16, 1)).float(),
    }
    inf, gen, out = module(tensors)
    assert torch.isfinite(out.loss)
    assert out.extra_metrics["vae_loss"] > 0
    # the decoder scale sums to one, so expected counts sum to the observed library
    px = gen["px"]
    mean = px.rate if likelihood == "poisson" else px.mu
    torch.testing.assert_close(mean.sum(1), x.sum(1), rtol=1e-4, atol=1e-3)


def test_module_rejects_unknown_likelihood():
    with pytest.raises(ValueError, match="gene_likelihood='normal'"):
        CellinaModule(n_input=5, n_spatial=5, classifier_lambda=0, discriminator_lambda=0, gene_likelihood="normal")


def test_condition_on_intrinsic_feeds_a_detached_z():
    torch.manual_seed(0)
    module = CellinaModule(
        n_input=20,
        n_spatial=12,
        n_hidden=8,
        n_latent=3,
        classifier_lambda=0,
        discriminator_lambda=0,
        condition_on_intrinsic=True,
    )
    assert module.s_encoder.encoder.fc_layers[0][0].in_features == 12 + 3
    x = torch.poisson(torch.full((8, 20), 2.0))
    inf = module.inference(x, torch.rand(8, 12), torch.zeros(8, 1))
    inf["s"].sum().backward()
    assert all(p.grad is None for p in module.z_encoder.parameters())
    assert any(p.grad is not None for p in module.s_encoder.parameters())


def test_model_options_reach_the_module(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = Cellina(
        adata,
        gene_likelihood="zinb",
        use_observed_lib_size=False,
        n_latent_spatial=6,
        condition_on_intrinsic=True,
        **SMALL,
    )
    model.train(max_epochs=1, batch_size=256, **QUIET)
    assert model.module.gene_likelihood == "zinb"
    assert model.get_latent_representation(latent_key="s").shape == (adata.n_obs, 6)
    expr = model.get_expression(indices=np.arange(10))
    assert expr.shape == (10, adata.n_vars) and np.all(np.isfinite(expr))


# ---------------------------------------------------------------------- latents and expression
def test_latents_shapes_and_determinism(trained):
    model, adata = trained
    z = model.get_latent_representation(latent_key="z", batch_size=100)
    s = model.get_latent_representation(latent_key="s")
    assert z.shape == (adata.n_obs, 4) and s.shape == (adata.n_obs, 4)
    np.testing.assert_array_equal(z, model.get_latent_representation(latent_key="z"))
    idx = np.array([5, 0, 17])
    np.testing.assert_allclose(
        model.get_latent_representation(indices=idx, latent_key="z"), z[idx], rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(z, s[:, : z.shape[1]])
    # the default, as published, is "shifted": [z; s], what the decoder reads
    np.testing.assert_allclose(model.get_latent_representation(), np.hstack([z, s]), rtol=1e-5)
    means, variances = model.get_latent_representation(latent_key="shifted", return_dist=True)
    np.testing.assert_allclose(means, np.hstack([z, s]), rtol=1e-5)
    assert variances.shape == means.shape and (variances > 0).all()
    with pytest.raises(ValueError, match="latent_key must be one of .* got 'x'"):
        model.get_latent_representation(latent_key="x")
    with pytest.raises(ValueError, match="indices holds positions outside"):
        model.get_latent_representation(indices=[adata.n_obs])


def test_perturbed_s_reads_the_perturbed_niche(trained):
    model, adata = trained
    ad2 = adata.copy()
    with pytest.raises(ValueError, match=r"obsm\['spatial_x_cf'\] does not exist"):
        model.get_latent_representation(ad2, latent_key="s_perturbed")
    ad2.obsm["spatial_x_cf"] = ad2.obsm["spatial_x"].copy()
    s = model.get_latent_representation(ad2, latent_key="s")
    np.testing.assert_allclose(model.get_latent_representation(ad2, latent_key="s_perturbed"), s)
    ad2.obsm["spatial_x_cf"] = ad2.obsm["spatial_x"] + 1.0
    shifted = model.get_latent_representation(ad2, latent_key="s_perturbed")
    assert not np.allclose(shifted, s)
    np.testing.assert_allclose(model.get_perturbed_latents(ad2), shifted, rtol=1e-5)


def test_perturbed_expression_leaves_registered_data_alone(trained):
    model, adata = trained
    ad2 = adata.copy()
    ad2.obsm["spatial_x_cf"] = ad2.obsm["spatial_x"] * 0.5
    phi_before = ad2.obsm["spatial_x"].copy()
    counts_before = ad2.layers["counts"].copy()
    # as in the published tutorial: adata.X log-normalised, the model reads its counts layer
    sc.pp.normalize_total(ad2, target_sum=1e4)
    sc.pp.log1p(ad2)
    idx = np.arange(0, 200, 3)
    pert = model.get_perturbed_expression(ad2, indices=idx, library_size=1e4, batch_size=32)
    assert pert.shape == (len(idx), ad2.n_vars)
    np.testing.assert_allclose(pert.sum(1), 1e4, rtol=1e-3)
    np.testing.assert_array_equal(ad2.obsm["spatial_x"], phi_before)
    assert (ad2.layers["counts"] != counts_before).nnz == 0
    factual = model.get_expression(ad2, indices=idx, library_size=1e4)
    assert not np.allclose(pert, factual)
    ad2.obsm["spatial_x_cf"] = phi_before
    np.testing.assert_allclose(model.get_perturbed_expression(ad2, indices=idx, library_size=1e4), factual, rtol=1e-5)
    # at the cell's own library the expected counts sum to its observed total
    own = model.get_perturbed_expression(ad2, indices=idx)
    np.testing.assert_allclose(own.sum(1), np.asarray(counts_before[idx].sum(1)).ravel(), rtol=1e-3)
    ad2.obsm["narrow"] = phi_before[:, :5]
    with pytest.raises(ValueError, match=r"obsm\['narrow'\] must have shape"):
        model.get_perturbed_expression(ad2, spatial_obsm_key="narrow")
    with pytest.raises(ValueError, match="library_size"):
        model.get_perturbed_expression(ad2, library_size=-1)


# ---------------------------------------------------------------------- save / load
def test_save_load_round_trip(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "m"), adata=adata.copy())
    np.testing.assert_allclose(
        loaded.get_latent_representation(latent_key="s"),
        model.get_latent_representation(latent_key="s"),
        rtol=1e-5,
    )
    assert float(loaded.module.alpha_adversarial) == float(model.module.alpha_adversarial)
    assert bool(loaded.module.alphas_frozen)


def test_load_rejects_other_genes(trained, tmp_path):
    model, adata = trained
    model.save(tmp_path / "m", overwrite=True)
    other = adata[:, 1:].copy()
    with pytest.raises(ValueError, match=r"var_names do not match.*missing \['"):
        Cellina.load(str(tmp_path / "m"), adata=other)
    shuffled = adata[:, ::-1].copy()
    with pytest.raises(ValueError, match="different order"):
        Cellina.load(str(tmp_path / "m"), adata=shuffled)


def test_unknown_plan_kwargs_are_rejected(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    model = Cellina(adata, **SMALL)
    with pytest.raises(ValueError, match=r"Unknown plan_kwargs.*normalise_losses"):
        model.train(max_epochs=1, plan_kwargs={"normalise_losses": True}, **QUIET)
    with pytest.raises(ValueError, match="n_epochs_kl_warmup"):
        model.train(max_epochs=1, plan_kwargs={"n_epochs_kl_warmup": "half"}, **QUIET)


@pytest.mark.parametrize("per_cell_theta", [False, True])
def test_nb_log_likelihood_matches_scvi(per_cell_theta):
    from scvi.distributions import NegativeBinomial

    from cellina.model._losses import nb_log_likelihood

    torch.manual_seed(1)
    x = torch.poisson(torch.full((6, 40), 2.5))
    mu = (torch.rand(6, 40) * 5 + 0.01).requires_grad_()
    theta = (torch.rand(6, 40) if per_cell_theta else torch.rand(40)) * 3 + 0.05
    theta.requires_grad_()
    ours = nb_log_likelihood(x, mu, theta)
    ref = NegativeBinomial(mu=mu, theta=theta).log_prob(x).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-3)
    g_ours = torch.autograd.grad(ours.sum(), [mu, theta])
    g_ref = torch.autograd.grad(ref.sum(), [mu, theta])
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_holdout_split_is_the_published_construction():
    from sklearn.model_selection import train_test_split

    from cellina.model import holdout_split

    test = np.array([7, 3, 11])
    train, val, held = holdout_split(40, test, validation_size=0.25, seed=3)
    np.testing.assert_array_equal(held, [3, 7, 11])
    rest = np.setdiff1d(np.arange(40), test)
    ref_train, ref_val = train_test_split(rest, test_size=0.25, random_state=3, shuffle=True)
    np.testing.assert_array_equal(train, np.sort(ref_train))
    np.testing.assert_array_equal(val, np.sort(ref_val))
    assert np.intersect1d(np.r_[train, val], test).size == 0
    train_all, no_val, _ = holdout_split(40, test, validation_size=0.0)
    assert no_val.size == 0 and train_all.size == 37
    with pytest.raises(ValueError, match="validation_size"):
        holdout_split(40, test, validation_size=1.0)
    with pytest.raises(IndexError, match=r"\[0, 40\)"):
        holdout_split(40, [40])


def test_factorised_decoder_trains_saves_and_answers_the_niche(adata, tmp_path):
    """The factorised decoder starts as a pure intrinsic decoder and learns a niche response."""
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, niche_decoder="factorised", niche_rank=3, **SMALL)
    assert isinstance(model.module.decoder, FactorisedNicheDecoder)
    assert "niche_decoder factorised (rank 3)" in model._model_summary_string
    z = torch.randn(5, SMALL["n_latent"])
    lib, batch = torch.zeros(5, 1), torch.zeros(5, 1)
    with torch.no_grad():
        # zero-initialised gene loadings: s has no effect before training
        a = model.module.generative(z, torch.randn(5, SMALL["n_latent"]), lib, batch)["px"].scale
        b = model.module.generative(z, torch.randn(5, SMALL["n_latent"]), lib, batch)["px"].scale
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a.sum(-1), torch.ones(5))
    model.train(max_epochs=3, batch_size=128, **QUIET)
    assert model.module.decoder.gene_loadings.weight.abs().sum() > 0
    with torch.no_grad():
        a = model.module.generative(z, torch.randn(5, SMALL["n_latent"]), lib, batch)["px"].scale
        b = model.module.generative(z, torch.randn(5, SMALL["n_latent"]), lib, batch)["px"].scale
    assert not torch.allclose(a, b)
    model.save(tmp_path / "f", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "f"), adata=adata.copy())
    assert isinstance(loaded.module.decoder, FactorisedNicheDecoder)
    np.testing.assert_allclose(
        loaded.get_expression(indices=np.arange(10)), model.get_expression(indices=np.arange(10)), rtol=1e-5
    )


def test_type_gated_term_is_the_probability_weighted_sum_of_type_maps():
    """sum_t p_t W_t s: a type whose map is zero ignores the niche; a mixture mixes the maps."""
    torch.manual_seed(0)
    dec = FactorisedNicheDecoder(3, 2, 6, 1, rank=2, n_layers=1, n_hidden=8, n_types=2)
    assert dec.type_niche_loadings.shape == (2 * 2, 6)
    assert dec.type_niche_loadings.abs().sum() == 0  # zero at the start
    w0 = torch.randn(2, 6)
    with torch.no_grad():
        dec.type_niche_loadings[:2] = w0  # type 0 answers the niche, type 1 does not
    dec.eval()
    z, lib, batch = torch.randn(4, 3), torch.zeros(4, 1), torch.zeros(4, 1)
    z_s0 = torch.cat([z, torch.zeros(4, 2)], dim=-1)
    s = torch.randn(4, 2)
    z_s = torch.cat([z, s], dim=-1)

    def logits(zs, probs):
        return torch.log(dec("gene", zs, lib, batch, type_probs=probs)[0])

    with torch.no_grad():
        type1 = torch.tensor([[0.0, 1.0]]).expand(4, 2)
        mix = torch.tensor([[0.25, 0.75]]).expand(4, 2)
        # the shared low-rank term is zero-initialised, so only the gated term moves logits
        delta1 = logits(z_s, type1) - logits(z_s0, type1)
        delta_mix = logits(z_s, mix) - logits(z_s0, mix)
    shift = 0.25 * s @ w0
    torch.testing.assert_close(delta1 - delta1.mean(-1, keepdim=True), torch.zeros(4, 6), atol=1e-5, rtol=0)
    # softmax removes a per-cell constant; compare centred logits
    torch.testing.assert_close(
        delta_mix - delta_mix.mean(-1, keepdim=True), shift - shift.mean(-1, keepdim=True), atol=1e-5, rtol=0
    )
    with pytest.raises(ValueError, match=r"type_probs must have shape \(4, 2\), got None"):
        dec("gene", z_s, lib, batch)
    with pytest.raises(ValueError, match=r"got \(4, 3\)"):
        dec("gene", z_s, lib, batch, type_probs=torch.ones(4, 3) / 3)


def test_type_gated_decoder_trains_saves_and_reads_the_classifier(adata, tmp_path):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, niche_decoder="type_gated", niche_rank=2, **SMALL)
    n_types = adata.obs["coarse_type"].nunique()
    dec = model.module.decoder
    assert dec.type_niche_loadings.shape == (n_types * SMALL["n_latent"], adata.n_vars)
    assert "niche_decoder type_gated (rank 2)" in model._model_summary_string
    # the gate reads the classifier without training it: the likelihood gives it no gradient
    x = torch.as_tensor(adata.layers["counts"][:16].toarray(), dtype=torch.float32)
    phi = torch.as_tensor(adata.obsm["spatial_x"][:16], dtype=torch.float32)
    inf = model.module.inference(x, phi, torch.zeros(16, 1))
    with torch.no_grad():
        dec.type_niche_loadings.normal_()
    gen = model.module.generative(inf["z"], inf["s"], inf["library"], torch.zeros(16, 1))
    gen["px"].log_prob(x).sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.module.classifier.parameters())
    assert dec.type_niche_loadings.grad.abs().sum() > 0
    model.module.zero_grad()
    with torch.no_grad():
        dec.type_niche_loadings.zero_()
    model.train(max_epochs=3, batch_size=128, **QUIET)
    assert dec.type_niche_loadings.abs().sum() > 0
    model.save(tmp_path / "g", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "g"), adata=adata.copy())
    torch.testing.assert_close(loaded.module.decoder.type_niche_loadings, dec.type_niche_loadings)
    np.testing.assert_allclose(
        loaded.get_expression(indices=np.arange(10)), model.get_expression(indices=np.arange(10)), rtol=1e-5
    )


def test_type_gated_decoder_needs_the_classifier(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    with pytest.raises(ValueError, match=r"niche_decoder='type_gated'.*classifier_lambda > 0 \(got 0.0\)"):
        Cellina(adata, niche_decoder="type_gated", classifier_lambda=0.0, **SMALL)
    with pytest.raises(ValueError, match="needs classifier_lambda > 0"):
        CellinaModule(
            n_input=5, n_spatial=5, n_labels=3, classifier_lambda=0, discriminator_lambda=0, niche_decoder="type_gated"
        )


def test_mean_spatial_decoding_decodes_the_posterior_mean_of_s(adata, tmp_path):
    """Training with spatial_decoding='mean' feeds the decoder qs.loc, not a sample; z is still sampled."""
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    x = torch.as_tensor(adata.layers["counts"][:16].toarray(), dtype=torch.float32)
    phi = torch.as_tensor(adata.obsm["spatial_x"][:16], dtype=torch.float32)
    batch = torch.zeros(16, 1)
    torch.manual_seed(0)
    sampled = Cellina(adata, **SMALL)
    inf = sampled.module.inference(x, phi, batch)
    assert not torch.allclose(inf["s"], inf["qs"].loc)
    model = Cellina(adata, spatial_decoding="mean", **SMALL)
    assert model.module.spatial_decoding == "mean"
    assert "spatial_decoding mean" in model._model_summary_string
    with pytest.raises(ValueError, match="spatial_decoding='mode'"):
        Cellina(adata, spatial_decoding="mode", **SMALL)
    inf = model.module.inference(x, phi, batch)
    torch.testing.assert_close(inf["s"], inf["qs"].loc)
    assert not torch.allclose(inf["z"], inf["qz"].loc)
    model.train(max_epochs=2, batch_size=128, **QUIET)
    # s is a deterministic code: give_mean no longer matters for it
    np.testing.assert_array_equal(
        model.get_latent_representation(latent_key="s", give_mean=False),
        model.get_latent_representation(latent_key="s"),
    )
    model.save(tmp_path / "m", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "m"), adata=adata.copy())
    assert loaded.module.spatial_decoding == "mean"


def test_type_aware_discriminator_is_told_the_type_and_targets_its_domain_mix():
    """The discriminator reads [z; one-hot type]; the encoder's target is the type's domain mix."""
    torch.manual_seed(0)
    module = CellinaModule(
        n_input=6, n_spatial=4, n_hidden=8, n_latent=3, n_labels=2, n_domains=3, type_aware_discriminator=True
    )
    assert module.discriminator.classifier[0].fc_layers[0][0].in_features == 3 + 2
    labels = torch.tensor([[0], [0], [0], [1]])
    domains = torch.tensor([[0], [0], [1], [2]])
    module.count_domains(labels, domains)
    torch.testing.assert_close(module.domain_counts_by_type, torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    # add-one smoothed frequencies: type 0 lives mostly in domain 0, type 1 in domain 2
    torch.testing.assert_close(
        module.domain_mix_by_type(), torch.tensor([[3 / 6, 2 / 6, 1 / 6], [1 / 4, 1 / 4, 2 / 4]])
    )
    module.eval()  # no dropout: the same inputs give the same logits
    z = torch.randn(4, 3)
    # the type changes the discriminator's answer for the same z
    logits = module._discriminator_logits(z, labels)
    other = module._discriminator_logits(z, 1 - labels)
    assert not torch.allclose(logits, other)
    # the adversarial loss is the cross-entropy against each cell's type mix, not against uniform
    target = module.domain_mix_by_type()[labels.view(-1)]
    expected = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(module._adversarial_loss(z, labels), expected)
    with pytest.raises(ValueError, match="cell-type labels of the minibatch"):
        module._discriminator_logits(z, None)
    # type-blind (published): z alone, uniform target, and no counts kept or saved
    blind = CellinaModule(n_input=6, n_spatial=4, n_hidden=8, n_latent=3, n_labels=2, n_domains=3)
    assert blind.discriminator.classifier[0].fc_layers[0][0].in_features == 3
    blind.count_domains(labels, domains)
    assert blind.domain_counts_by_type.numel() == 0 and "domain_counts_by_type" not in blind.state_dict()


def test_type_aware_discriminator_trains_saves_and_needs_labels(adata, tmp_path):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    # without the adversary the option does nothing
    assert not Cellina(
        adata, type_aware_discriminator=True, discriminator_lambda=0.0, **SMALL
    ).module.type_aware_discriminator
    model = Cellina(adata, type_aware_discriminator=True, **SMALL)
    assert "type-aware discriminator" in model._model_summary_string
    model.train(max_epochs=2, batch_size=128, plan_kwargs={"normalize_losses": True}, **QUIET)
    counts = model.module.domain_counts_by_type.cpu().numpy()
    # two epochs over the training cells: each type's domain counts, twice
    n_train = len(model.train_indices)
    assert counts.sum() == 2 * n_train
    train_obs = adata.obs.iloc[model.train_indices]
    observed = train_obs.groupby(["coarse_type", "domain"], observed=False).size().unstack().to_numpy()
    np.testing.assert_array_equal(counts, 2 * observed)
    assert np.isfinite(model.history["discriminator_accuracy_train"].to_numpy(dtype=float)).all()
    model.save(tmp_path / "m", overwrite=True)
    loaded = Cellina.load(str(tmp_path / "m"), adata=adata.copy())
    assert loaded.module.type_aware_discriminator
    np.testing.assert_array_equal(loaded.module.domain_counts_by_type.cpu().numpy(), counts)
    # without labels it is a clear error naming the missing key
    unlabelled = adata.copy()
    Cellina.setup_anndata(unlabelled, domains_key="domain", layer="counts")
    with pytest.raises(ValueError, match="labels_key"):
        Cellina(unlabelled, classifier_lambda=0.0, type_aware_discriminator=True, **SMALL)


def test_bad_niche_decoder_is_named(adata):
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    with pytest.raises(ValueError, match="niche_decoder='mlp'"):
        Cellina(adata, niche_decoder="mlp", **SMALL)
    with pytest.raises(ValueError, match="niche_rank=0"):
        Cellina(adata, niche_decoder="factorised", niche_rank=0, **SMALL)


def test_early_stopping_waits_for_the_kl_warm_up(adata):
    """The validation loss rises while the KL weight grows; early stopping must not fire then."""
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, **SMALL)
    model.train(
        max_epochs=8,
        batch_size=128,
        early_stopping=True,
        early_stopping_patience=1,
        early_stopping_min_delta=1e6,  # no epoch ever counts as an improvement
        check_val_every_n_epoch=1,
        datasplitter_kwargs={"external_indexing": _split(adata.n_obs, 512)},
        plan_kwargs={"n_epochs_kl_warmup": 6},
        **QUIET,
    )
    assert len(model.history["vae_loss_validation"]) >= 6
