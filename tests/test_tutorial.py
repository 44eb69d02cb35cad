"""The published Cellina tutorial's code path, call for call, on a CI-sized synthetic tissue.

Differences from the published notebook, all forced by CI: the data come from
``synthetic_tissue`` (no download), with the tutorial's column names ('typ', 'coarse_type',
'CenterX_global_px', ...) added; 100 HVGs instead of 2,000; ``max_epochs`` 4 instead of
100; the decoupler pseudobulk is replaced by the equivalent sum-pseudobulk in pandas; no
plotting. Every cellina / scvi-tools call, key and argument is the tutorial's.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch
from scipy.stats import pearsonr
from sklearn.model_selection import train_test_split

from cellina.datasets import synthetic_tissue

UM_PER_PX = 0.12028
# The tutorial's kernel bandwidth is 100 um written in pixels (100 / 0.12028); the synthetic
# niche acts over ~20 um, so tutorial "pixels" here are 5 / 0.12028 per micrometre.
PX_PER_UM = 5.0 / UM_PER_PX


def _tutorial_adata(n_slides: int = 1) -> sc.AnnData:
    adata = synthetic_tissue(n_cells=2000, n_genes=150, n_slides=n_slides, seed=0, store_means=False)
    adata.obs["sid"] = adata.obs["slide"].astype(str)
    adata.obs["typ"] = (
        adata.obs["domain"].map({"healthy": "232_REF", "margin": "232_TVA", "tumour": "232_CRC"}).astype(str)
    )
    xy = np.asarray(adata.obsm["spatial"]) * PX_PER_UM
    adata.obs["CenterX_global_px"] = xy[:, 0]
    adata.obs["CenterY_global_px"] = xy[:, 1]
    del adata.obsm["spatial"]
    adata.X = adata.layers["counts"].copy()
    del adata.layers["counts"]
    return adata


def _sum_pseudobulk(adata, sample_col, groups_col):
    """Sum-pseudobulk of layers['counts'] per (sample, group), as decoupler's mode='sum'."""
    keys = [sample_col] if groups_col is None else [sample_col, groups_col]
    groups = adata.obs[keys].astype(str).agg("|".join, axis=1)
    codes, names = pd.factorize(groups)
    onehot = sp.csr_matrix((np.ones(adata.n_obs), (codes, np.arange(adata.n_obs))), shape=(len(names), adata.n_obs))
    summed = onehot @ sp.csr_matrix(adata.layers["counts"])
    obs = pd.DataFrame([n.split("|") for n in names], columns=keys, index=list(names))
    return sc.AnnData(X=sp.csr_matrix(summed), obs=obs, var=pd.DataFrame(index=adata.var_names))


def get_perturbation_logfc(adata, control_domain, holdout_domain, labels_key, domains_key):
    pdata_ct = _sum_pseudobulk(adata, domains_key, labels_key)
    sc.pp.normalize_total(pdata_ct, target_sum=1e4)
    sc.pp.log1p(pdata_ct)
    cell_types_with_both = [
        ct
        for ct in pdata_ct.obs[labels_key].unique()
        if ((pdata_ct.obs[domains_key] == control_domain) & (pdata_ct.obs[labels_key] == ct)).any()
        and ((pdata_ct.obs[domains_key] == holdout_domain) & (pdata_ct.obs[labels_key] == ct)).any()
    ]
    rows = []
    for ct in cell_types_with_both:
        crc = pdata_ct[(pdata_ct.obs[domains_key] == holdout_domain) & (pdata_ct.obs[labels_key] == ct)].X
        ref = pdata_ct[(pdata_ct.obs[domains_key] == control_domain) & (pdata_ct.obs[labels_key] == ct)].X
        crc_m = np.asarray(crc.mean(axis=0)).ravel()
        ref_m = np.asarray(ref.mean(axis=0)).ravel()
        rows.append(pd.Series(crc_m - ref_m, index=pdata_ct.var_names, name=ct))
    return pd.concat(rows, axis=1).T


def get_global_perturbation_logfc(adata, control_domain, holdout_domain, labels_key, domains_key, holdout_ct):
    adata_sub = adata[adata.obs[labels_key] != holdout_ct]
    pdata = _sum_pseudobulk(adata_sub, domains_key, None)
    sc.pp.normalize_total(pdata, target_sum=1e4)
    sc.pp.log1p(pdata)
    hold = np.asarray(pdata[pdata.obs[domains_key] == holdout_domain].X.mean(axis=0)).ravel()
    ctrl = np.asarray(pdata[pdata.obs[domains_key] == control_domain].X.mean(axis=0)).ravel()
    return pd.Series(hold - ctrl, index=pdata.var_names)


def _normalize_counts(x, eps=1e-8, scale=1e4):
    return x / (x.sum(axis=1, keepdims=True) + eps) * scale


def safe_log2_fold_change(a, b, eps=1e-6):
    return np.log2((np.asarray(a) + eps) / (np.asarray(b) + eps))


def get_lfc(control, target, counterfactual, normalize_counts=True, n_deg=200):
    if normalize_counts:
        control = _normalize_counts(control)
        target = _normalize_counts(target)
        counterfactual = _normalize_counts(counterfactual)
    gt_vec = safe_log2_fold_change(np.nanmean(target, axis=0), np.nanmean(control, axis=0))
    cf_vec = safe_log2_fold_change(np.nanmean(counterfactual, axis=0), np.nanmean(control, axis=0))
    top_features = np.argsort(-np.abs(gt_vec))[:n_deg]
    return gt_vec, cf_vec, top_features


# The tutorial as published (one section, no batch), and as a user with two slides runs it:
# the only line that differs is the batch key.
@pytest.mark.parametrize("n_slides, tutorial_batch_key", [(1, None), (2, "sid")])
def test_published_tutorial_runs_unchanged(tmp_path, monkeypatch, n_slides, tutorial_batch_key):
    monkeypatch.chdir(tmp_path)
    from scvi.train._callbacks import EarlyStopping, SaveCheckpoint

    from cellina import Cellina, make_neighbor_perturbation
    from cellina._spatial_utils import compute_spatial_features, spatial_neighbors

    seed = 0
    np.random.seed(seed)
    torch.manual_seed(seed)

    adata = _tutorial_adata(n_slides)
    adata.obs_names_make_unique()
    labels_key = "coarse_type"
    domains_key = "typ"
    batch_key = tutorial_batch_key
    adata = adata[~adata.obs[domains_key].isna()]
    adata = adata[~adata.obs[labels_key].isna()]
    sc.pp.filter_cells(adata, min_counts=3)
    sc.pp.filter_genes(adata, min_counts=3)
    adata.layers["counts"] = adata.X.copy()
    sc.pp.highly_variable_genes(adata, layer="counts", flavor="seurat_v3", n_top_genes=100, subset=True)

    holdout_ct = "Myeloid"
    is_tumor_region = adata.obs[domains_key].str.contains("CRC", regex=True)
    is_holdout_ct = adata.obs[labels_key] == holdout_ct
    test_mask = (is_tumor_region) & (is_holdout_ct)
    test_idx = np.where(test_mask)[0]
    all_idx = np.arange(adata.n_obs)
    trainval_idx = np.setdiff1d(all_idx, test_idx)
    adata.obs["is_holdout"] = False
    adata.obs.iloc[test_idx, adata.obs.columns.get_loc("is_holdout")] = True
    train_idx, val_idx = train_test_split(trainval_idx, test_size=0.1, random_state=0, shuffle=True)

    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    max_neighbors = 200
    adata.obsm["spatial"] = adata.obs[["CenterX_global_px", "CenterY_global_px"]].values
    adata.obsp["spatial_connectivities_orig"] = spatial_neighbors(
        adata,
        bandwidth=100 / 0.12028,
        max_neighbours=max_neighbors,
        standardize=False,
        inplace=False,
    )
    spatial_neighbors(
        adata,
        bandwidth=100 / 0.12028,
        max_neighbours=max_neighbors,
        standardize=False,
        test_indices=test_idx,
    )
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    # held-out cells must not leak into the training graph
    assert adata.obsp["spatial_connectivities"][:, test_idx].nnz == 0

    train_args = {
        "max_epochs": 4,
        "batch_size": 2048,
        "check_val_every_n_epoch": 1,
        "early_stopping": True,
        "enable_checkpointing": True,
        "early_stopping_patience": 10,
        "early_stopping_monitor": "vae_loss_validation",
        "devices": [0],
        "datasplitter_kwargs": {"external_indexing": [train_idx, val_idx, test_idx]},
        "callbacks": [
            SaveCheckpoint(monitor="vae_loss_validation", dirpath="scvi_log/cellina/", load_best_on_end=True),
            EarlyStopping(monitor="vae_loss_validation", patience=10, mode="min"),
        ],
    }
    plan_kwargs = {"lr": 1e-3, "normalize_losses": True}
    cellina_args = {
        "n_latent": 64,
        "use_observed_lib_size": True,
        "condition_on_intrinsic": False,
        "classifier_lambda": 1.0,
        "discriminator_lambda": 1.0,
        "gene_likelihood": "nb",
        "n_layers": 2,
    }
    Cellina.setup_anndata(
        adata,
        batch_key=batch_key,
        labels_key=labels_key,
        domains_key=domains_key,
        spatial_obsm_key="spatial_x",
        layer="counts",
    )
    cellina_model = Cellina(adata, **cellina_args)
    with warnings.catch_warnings():
        # on a CPU-only machine devices=[0] falls back to the CPU with a warning
        warnings.simplefilter("ignore", UserWarning)
        cellina_model.train(**train_args, plan_kwargs=plan_kwargs)
    hist = cellina_model.history
    assert len(hist["vae_loss_validation"]) == 4
    np.testing.assert_array_equal(np.sort(cellina_model.test_indices), np.sort(test_idx))

    checkpoint_name = os.listdir("scvi_log/cellina/")[0]
    assert checkpoint_name.startswith("epoch=")
    model = Cellina.load(f"scvi_log/cellina/{checkpoint_name}", adata=adata)
    best = float(np.min(hist["vae_loss_validation"].to_numpy(dtype=float)))
    assert float(checkpoint_name.split("vae_loss_validation=")[1]) == pytest.approx(best, rel=1e-5)
    # load_best_on_end: the trained model holds the best checkpoint's weights
    for (n, p), (_, q) in zip(cellina_model.module.state_dict().items(), model.module.state_dict().items()):
        assert torch.equal(p.cpu(), q.cpu()), n

    adata.obsm["cellina_basal"] = model.get_latent_representation(latent_key="z", batch_size=2048)
    adata.obsm["cellina_spatial"] = model.get_latent_representation(latent_key="s", batch_size=2048)
    assert adata.obsm["cellina_basal"].shape == (adata.n_obs, 64)
    assert adata.obsm["cellina_spatial"].shape == (adata.n_obs, 64)

    is_control_region = adata.obs[domains_key].str.contains("REF")
    mask_control = is_control_region & is_holdout_ct
    idx_control = np.where(mask_control.values)[0]
    mask_target = is_tumor_region & is_holdout_ct
    conn = adata.obsp["spatial_connectivities_orig"]
    idx_target = np.where(mask_target.values)[0]
    sub_conn = conn[idx_target]
    neighbor_indices = np.unique(sub_conn.nonzero()[1])
    neighbor_indices = neighbor_indices[~is_holdout_ct.values[neighbor_indices]]

    args_gex = {
        "indices": idx_control,
        "batch_size": 2048,
        "seed": 0,
        "neighbour_indices": neighbor_indices,
        "precomputed": False,
    }
    counterfactual_counts = model.get_counterfactual_expression(**args_gex)
    assert counterfactual_counts.shape == (len(idx_control), adata.n_vars)
    np.testing.assert_array_equal(counterfactual_counts, model.get_counterfactual_expression(**args_gex))

    control = np.array(adata.layers["counts"][mask_control.values, :].todense())
    target = np.array(adata.layers["counts"][mask_target.values, :].todense())
    true_lfc, pred_lfc, deg = get_lfc(control=control, target=target, counterfactual=counterfactual_counts, n_deg=50)
    pearson, _ = pearsonr(true_lfc[deg], pred_lfc[deg])
    assert np.isfinite(pearson)

    n_pert_genes = 50
    control_domain = "232_REF"
    target_domain = "232_CRC"
    domain_logfc_df = get_perturbation_logfc(adata, control_domain, target_domain, labels_key, domains_key)
    global_logfc_series = get_global_perturbation_logfc(
        adata, control_domain, target_domain, labels_key, domains_key, holdout_ct
    )
    domain_logfc_df.loc[holdout_ct, global_logfc_series.index] = global_logfc_series
    logfc_series_dict = {}
    for ct in domain_logfc_df.index:
        s = domain_logfc_df.loc[ct]
        top_g = s.abs().nlargest(n_pert_genes).index.tolist()
        logfc_series_dict[ct] = s[top_g]

    counts_before = adata.layers["counts"].copy()
    phi_before = adata.obsm["spatial_x"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    make_neighbor_perturbation(
        adata,
        perturbations=logfc_series_dict,
        groupby=labels_key,
        obsm_key_out="spatial_x_cf",
        base=np.e,
        renormalize=True,
        add_shift=True,
    )
    pert_expr = model.get_perturbed_expression(
        adata=adata,
        indices=idx_control,
        spatial_obsm_key="spatial_x_cf",
        batch_size=2048,
        library_size=1e4,
    )
    assert pert_expr.shape == (len(idx_control), adata.n_vars)
    np.testing.assert_allclose(pert_expr.sum(1), 1e4, rtol=1e-3)
    assert (adata.layers["counts"] != counts_before).nnz == 0
    np.testing.assert_array_equal(adata.obsm["spatial_x"], phi_before)
    assert not np.allclose(adata.obsm["spatial_x_cf"][idx_control], phi_before[idx_control])

    control = np.array(adata.layers["counts"][mask_control.values, :].todense())
    target = np.array(adata.layers["counts"][mask_target.values, :].todense())
    true_lfc, pred_lfc, deg = get_lfc(control=control, target=target, counterfactual=pert_expr, n_deg=20)
    pearson, _ = pearsonr(true_lfc[deg], pred_lfc[deg])
    assert np.isfinite(pearson)
