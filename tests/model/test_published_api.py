"""Code ported from the published Cellina finds its names, defaults and internals here."""

from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc
import torch

import cellina
from cellina.model import Cellina
from cellina.spatial import compute_spatial_features, spatial_neighbors

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def trained(two_slide_tissue):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, domain_classifier_lambda=1.0, **SMALL)
    model.train(max_epochs=2, batch_size=128, plan_kwargs={"normalize_losses": True}, **QUIET)
    return model


def test_top_level_names_of_the_published_package():
    for name in (
        "Cellina",
        "CellinaModule",
        "CellinaAdversarialTrainingPlan",
        "compute_spatial_features",
        "make_counterfactual_adata",
        "make_neighbor_perturbation",
        "make_perturbed_expression",
        "spatial_neighbors",
    ):
        assert callable(getattr(cellina, name)), name
    assert cellina.CellinaAdversarialTrainingPlan is cellina.model.CellinaTrainingPlan


def test_module_internals_keep_the_published_names(trained):
    module = trained.module
    assert module.classifier_lambda == 1.0 and module.discriminator_lambda == 1.0
    assert module.domain_discriminator is module.discriminator is not None
    batch = next(iter(trained._make_data_loader(trained.adata, batch_size=16)))
    inputs = module._get_inference_input(batch)
    assert set(inputs) == {"x", "spatial_x", "batch_index"}
    module.eval()
    out = module.inference(**inputs)
    for key, width in (("z", 4), ("s", 4), ("qzm", 4), ("qzv", 4), ("qsm", 4), ("qsv", 4), ("shifted", 8)):
        assert out[key].shape == (16, width), key
    assert out["classifier_logits"].shape[1] == trained.summary_stats.n_labels
    assert out["discriminator_logits"].shape[1] == 3  # healthy, margin, tumour
    loss = module.loss(
        batch,
        out,
        module.generative(**module._get_generative_input(batch, out)),
        classifier_scale=2.0,
        discriminator_scale=3.0,
        domain_classifier_scale=4.0,
    )
    assert set(loss.kl_local) == {"kl_divergence_z", "kl_divergence_s", "kl_divergence_l"}
    metrics = loss.extra_metrics
    for name, scale in (("classifier_loss", 2.0), ("fool_loss", 3.0), ("domain_classifier_loss", 4.0)):
        torch.testing.assert_close(metrics[name], metrics[name + "_raw"] * scale)


def test_the_plan_exposes_its_frozen_scales(trained):
    plan = trained.trainer.strategy.model
    assert plan._normalize_losses and plan._warmup_done
    assert plan._scale_clf == pytest.approx(float(trained.module.alpha_classifier)) and plan._scale_clf > 1
    assert plan._scale_fool > 1 and plan._scale_domain_classifier > 1


def test_counterfactual_latents_take_a_latent_key(trained):
    adata = trained.adata
    focal = np.flatnonzero(adata.obs["domain"] == "healthy")[:20]
    pool = np.flatnonzero(adata.obs["domain"] == "tumour")
    dims = {"s": 4, "z": 4, "shifted": 8}
    for key, width in dims.items():
        out = trained.get_counterfactual_latents(focal, pool, latent_key=key, anchor_donors=False, n_neighbors=5)
        assert out.shape == (20, width), key
    # rewiring never changes z
    np.testing.assert_allclose(
        trained.get_counterfactual_latents(focal, pool, latent_key="z", anchor_donors=False, n_neighbors=5),
        trained.get_latent_representation(indices=focal, latent_key="z"),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="latent_key must be"):
        trained.get_counterfactual_latents(focal, pool, latent_key="x")


def test_published_argument_names_are_aliases(trained):
    adata = trained.adata
    focal = np.flatnonzero(adata.obs["domain"] == "healthy")[:15]
    pool = np.flatnonzero(adata.obs["domain"] == "tumour")
    ours = trained.get_counterfactual_expression(focal, pool, precomputed=False, n_neighbours=6, seed=4)
    published = trained.get_counterfactual_expression(focal, pool, anchor_donors=False, n_neighbors=6, seed=4)
    np.testing.assert_array_equal(ours, published)
    # anchor mode is the published default
    _, anchors = trained.get_counterfactual_expression(focal, pool, return_donors=True)
    assert anchors.shape == (1, 15)
    with pytest.raises(ValueError, match="precomputed=True and anchor_donors=False disagree"):
        trained.get_counterfactual_expression(focal, pool, precomputed=True, anchor_donors=False)
    cf = trained._make_counterfactual_adata(focal, pool, seed=0)
    assert cf.n_obs == 15 and np.asarray(cf.obsm["spatial_x"].todense()).any()


def _held_out_tissue(make_tissue):
    """A two-slide tissue with tumour Myeloid cells held out of the training graph, as published."""
    adata = make_tissue(n_cells=800)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    test = np.flatnonzero((adata.obs["coarse_type"] == "Myeloid") & (adata.obs["domain"] == "tumour"))
    kwargs = {"bandwidth": 20.0, "max_neighbours": 20, "library_key": "slide"}
    adata.obsp["spatial_connectivities_orig"] = spatial_neighbors(adata, inplace=False, **kwargs)
    spatial_neighbors(adata, test_indices=test, **kwargs)
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    return adata, test


def test_held_out_cells_never_reach_an_anchor_niche(make_tissue):
    adata, test = _held_out_tissue(make_tissue)
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(adata, **SMALL)
    rest = np.setdiff1d(np.arange(adata.n_obs), test)
    model.train(
        max_epochs=1,
        batch_size=128,
        datasplitter_kwargs={"external_indexing": [rest, np.array([], int), test]},
        **QUIET,
    )
    np.testing.assert_array_equal(model.heldout_indices_, test)
    # anchors: the observed neighbours of one held-out cell, as in the published protocol
    held = test[0]
    graph = adata.obsp["spatial_connectivities_orig"].tocsr()
    anchors = np.setdiff1d(graph[held].indices, test)
    focal = np.flatnonzero(adata.obs["domain"] == "healthy")[:25]
    before = model.get_counterfactual_expression(focal, anchors, seed=1)
    extreme = adata.copy()
    counts = extreme.layers["counts"].tolil()
    counts[held] = counts[held].toarray() * 50 + 30
    extreme.layers["counts"] = counts.tocsr()
    # the held-out cell's expression does not move the prediction made for cells rewired near it
    np.testing.assert_array_equal(model.get_counterfactual_expression(focal, anchors, adata=extreme, seed=1), before)
    leaky = model.get_counterfactual_expression(focal, anchors, adata=extreme, seed=1, exclude_indices=None)
    assert not np.allclose(leaky, before, rtol=1e-3)
    # the pooled draw never takes a held-out donor either
    _, donors = model.get_counterfactual_expression(
        focal, np.r_[anchors, test], precomputed=False, n_neighbours=3, return_donors=True
    )
    assert not np.isin(donors, test).any()
