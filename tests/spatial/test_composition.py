"""The neighbourhood-composition block of the niche features, from computing it to every rebuild."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch

from cellina.counterfactual import (
    GeneShifts,
    anchor_niche_features,
    make_counterfactual_adata,
    node_counterfactual,
    pooled_niche_features,
    spatial_features_record,
)
from cellina.evaluation import LeaveOneOutConfig
from cellina.model import Cellina
from cellina.preprocessing import prepare_tissue
from cellina.spatial import (
    CellinaKeyError,
    compute_spatial_features,
    make_neighbor_perturbation,
    n_niche_features,
    record_codes,
)

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
KEY = "coarse_type"


@pytest.fixture(scope="module")
def tissue(make_tissue):
    """Two slides, a graph kept unmasked, features of the expression followed by the type shares."""
    adata = make_tissue(n_cells=600, seed=3, composition_key=KEY)
    adata.obsp["spatial_connectivities_orig"] = adata.obsp["spatial_connectivities"].copy()
    return adata


def _log_normalised(tissue):
    """A copy of ``tissue`` with log1p(CP10K) of its counts in X, as niche features are built from."""
    out = tissue.copy()
    out.X = out.layers["counts"].copy()
    sc.pp.normalize_total(out, target_sum=1e4)
    sc.pp.log1p(out)
    return out


def _shares(adata, W):
    types = sorted(set(adata.obs[KEY].astype(str)))
    onehot = (adata.obs[KEY].astype(str).to_numpy()[:, None] == np.array(types)[None, :]).astype(np.float64)
    W = W.toarray().astype(np.float64)
    deg = W.sum(1, keepdims=True)
    return np.divide(W @ onehot, deg, out=np.zeros((W.shape[0], len(types))), where=deg > 0), types


def test_features_end_in_the_neighbours_type_shares(tissue):
    record = spatial_features_record(tissue, "spatial_x")
    shares, types = _shares(tissue, tissue.obsp["spatial_connectivities"])
    phi = tissue.obsm["spatial_x"]
    assert record["composition_key"] == KEY and record["composition_categories"] == types
    assert phi.shape == (tissue.n_obs, tissue.n_vars + len(types)) == (tissue.n_obs, n_niche_features(record))
    np.testing.assert_allclose(phi[:, tissue.n_vars :], shares, atol=1e-6)
    has_neighbours = np.asarray(tissue.obsp["spatial_connectivities"].sum(1)).ravel() > 0
    np.testing.assert_allclose(phi[has_neighbours, tissue.n_vars :].sum(1), 1.0, atol=1e-5)
    # the expression block is what it is without the composition
    plain = _log_normalised(tissue)
    compute_spatial_features(plain, obsm_key="plain")
    np.testing.assert_allclose(phi[:, : tissue.n_vars], plain.obsm["plain"], atol=1e-5)


def test_composition_alone_and_bad_keys(tissue):
    ad2 = _log_normalised(tissue)
    compute_spatial_features(ad2, obsm_key="types_only", genes=[], composition_key=KEY)
    assert ad2.obsm["types_only"].shape[1] == len(set(ad2.obs[KEY]))
    with pytest.raises(CellinaKeyError, match="composition_key='no_such_column'"):
        compute_spatial_features(ad2, obsm_key="x2", composition_key="no_such_column")
    with pytest.raises(ValueError, match="`genes` is empty"):
        compute_spatial_features(ad2, obsm_key="x3", genes=[])
    ad2.obs["partial"] = ad2.obs[KEY].astype(object)
    ad2.obs.iloc[5, ad2.obs.columns.get_loc("partial")] = None
    with pytest.raises(ValueError, match=r"adata.obs\['partial'\] has 1 missing"):
        compute_spatial_features(ad2, obsm_key="x4", composition_key="partial")
    assert "x2" not in ad2.obsm and "x3" not in ad2.obsm and "x4" not in ad2.obsm


def test_rebuilt_features_match_the_stored_ones(tissue):
    record = spatial_features_record(tissue, "spatial_x")
    codes = record_codes(tissue, record)
    W = tissue.obsp["spatial_connectivities"]
    anchors = np.array([4, 50, 123])
    far = np.array([599, 598, 597])
    assert all(W[a, f] == 0 for a, f in zip(anchors, far))
    phi = anchor_niche_features(tissue.layers["counts"], W, anchors, far, record, codes=codes)
    np.testing.assert_allclose(phi, tissue.obsm["spatial_x"][anchors], rtol=1e-5, atol=1e-6)
    # pooled donors: the composition block is the donors' type shares
    donors = np.array([[3, 10, 11, 12], [0, 5, 42, 43]])
    pooled = pooled_niche_features(tissue.layers["counts"], donors, record, codes)
    n_types = len(record["composition_categories"])
    expected = np.stack([np.bincount(codes[row], minlength=n_types) / row.size for row in donors])
    np.testing.assert_allclose(pooled[:, tissue.n_vars :], expected, atol=1e-6)
    with pytest.raises(ValueError, match="composition of adata.obs\\['coarse_type'\\]"):
        pooled_niche_features(tissue.layers["counts"], donors, record)


def test_new_categories_are_refused(tissue):
    ad2 = tissue.copy()
    ad2.obs[KEY] = ad2.obs[KEY].astype(str)
    ad2.obs.iloc[0, ad2.obs.columns.get_loc(KEY)] = "Unseen"
    with pytest.raises(ValueError, match="not built with: 'Unseen'"):
        record_codes(ad2, spatial_features_record(ad2, "spatial_x"))


def test_node_perturbation_keeps_the_composition(tissue):
    ad2 = tissue.copy()
    ad2.X = ad2.layers["counts"].copy()
    make_neighbor_perturbation(ad2, {ad2.var_names[0]: 2.0}, obsm_key_out="cf")
    phi, cf = ad2.obsm["spatial_x"], ad2.obsm["cf"]
    assert cf.shape == phi.shape
    np.testing.assert_allclose(cf[:, ad2.n_vars :], phi[:, ad2.n_vars :], atol=1e-6)
    has_neighbours = np.asarray(ad2.obsp["spatial_connectivities"].sum(1)).ravel() > 0
    assert (cf[has_neighbours, 0] > phi[has_neighbours, 0]).mean() > 0.9
    ad2 = _log_normalised(tissue)
    compute_spatial_features(ad2, obsm_key="types_only", genes=[], composition_key=KEY)
    with pytest.raises(ValueError, match="hold no genes"):
        make_neighbor_perturbation(ad2, {ad2.var_names[0]: 2.0}, features_key="types_only", obsm_key_out="cf2")


def test_counterfactual_adata_rebuilds_the_composition(tissue):
    ad2 = _log_normalised(tissue)
    focal, anchors = np.arange(5), np.array([300, 301, 302])
    out = make_counterfactual_adata(ad2, focal, anchors, "spatial_x", anchor_donors=True, exclude_indices=focal)
    assert out.obsm["spatial_x"].shape[1] == ad2.n_vars + len(set(ad2.obs[KEY]))
    donors = make_counterfactual_adata(
        ad2, focal, np.arange(100, 140), "spatial_x", anchor_donors=False, n_neighbors=40
    )
    # every focal cell takes the whole pool: its type shares are the pool's
    codes = record_codes(ad2, spatial_features_record(ad2, "spatial_x"))
    pool_shares = np.bincount(codes[100:140], minlength=out.obsm["spatial_x"].shape[1] - ad2.n_vars) / 40
    np.testing.assert_allclose(
        donors.obsm["spatial_x"].toarray()[:, ad2.n_vars :], np.tile(pool_shares, (5, 1)), atol=1e-6
    )


def test_model_trains_and_answers_with_the_composition(tissue):
    adata = tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key=KEY, domains_key="domain", layer="counts")
    model = Cellina.from_preset(adata, "recommended", n_hidden=16, n_latent=4, n_layers=1)
    assert model.module.n_spatial == adata.n_vars + len(set(adata.obs[KEY]))
    torch.manual_seed(0)
    model.train(max_epochs=2, batch_size=128, **QUIET)
    healthy = np.flatnonzero(adata.obs["domain"] == "healthy")[:40]
    tumour = np.flatnonzero(adata.obs["domain"] == "tumour")
    for precomputed in (False, True):
        out = np.asarray(
            model.get_counterfactual_expression(indices=healthy, neighbour_indices=tumour, precomputed=precomputed)
        )
        assert out.shape == (healthy.size, adata.n_vars) and np.isfinite(out).all()
    # pooled donors reach the model with their type shares: a tumour niche is not a healthy one
    moved = np.asarray(model.get_counterfactual_latents(indices=healthy, neighbour_indices=tumour, precomputed=False))
    own = model.get_latent_representation(indices=healthy, latent_key="s")
    assert moved.shape == own.shape and not np.allclose(moved, own)
    shifts = GeneShifts.from_mapping({"Myeloid": pd.Series({adata.var_names[3]: 1.5})})
    result = node_counterfactual(model, adata, shifts, healthy, sender_key=KEY)
    assert result.spatial_x.shape[1] == model.module.n_spatial and np.isfinite(result.expression).all()


def test_preparation_and_protocol_options(tissue):
    raw = tissue.copy()
    del raw.obsm["spatial_x"]
    out = prepare_tissue(raw, bandwidth=20.0, library_key="slide", composition_key=KEY, composition_only=True)
    assert out.obsm["spatial_x"].shape[1] == len(set(raw.obs[KEY]))
    with pytest.raises(ValueError, match="composition_only=True needs a composition_key"):
        prepare_tissue(raw, bandwidth=20.0, composition_only=True)
    with pytest.raises(CellinaKeyError, match="composition_key='cell_kind'"):
        prepare_tissue(raw, bandwidth=20.0, composition_key="cell_kind")
    with pytest.raises(ValueError, match="no node perturbation"):
        LeaveOneOutConfig(composition="only")
    with pytest.raises(ValueError, match="composition='both'"):
        LeaveOneOutConfig(composition="both")
    assert LeaveOneOutConfig(composition="only", perturbations=("edge",)).composition == "only"


def test_record_survives_h5ad(tissue, tmp_path):
    import anndata as ad

    path = tmp_path / "tissue.h5ad"
    tissue.write_h5ad(path)
    back = ad.read_h5ad(path)
    record = spatial_features_record(back, "spatial_x")
    assert (
        list(record["composition_categories"]) == spatial_features_record(tissue, "spatial_x")["composition_categories"]
    )
    np.testing.assert_array_equal(
        record_codes(back, record), record_codes(tissue, spatial_features_record(tissue, "spatial_x"))
    )


def test_the_linear_encoder_can_read_principal_directions_of_the_expression(tissue, tmp_path):
    adata = tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key=KEY, domains_key="domain", layer="counts")
    model = Cellina.from_preset(adata, "recommended", n_hidden=16, n_latent=4, n_layers=1, spatial_components=5)
    encoder = model.module.s_encoder
    n_types = len(set(adata.obs[KEY]))
    assert (encoder.n_components, encoder.n_passthrough, encoder.n_projected) == (5, n_types, adata.n_vars)
    # the directions are the leading principal directions of the expression columns of cells with a niche
    phi = np.asarray(adata.obsm["spatial_x"], dtype=np.float64)
    expr = phi[np.abs(phi).sum(1) > 0, : adata.n_vars]
    _, _, vt = np.linalg.svd(expr - expr.mean(0), full_matrices=False)
    rotation = encoder.projection.numpy()
    np.testing.assert_allclose(np.abs(np.sum(rotation * vt[:5].T, axis=0)), 1.0, atol=1e-4)
    torch.manual_seed(0)
    model.train(max_epochs=1, batch_size=128, **QUIET)
    healthy = np.flatnonzero(adata.obs["domain"] == "healthy")[:20]
    tumour = np.flatnonzero(adata.obs["domain"] == "tumour")
    out = np.asarray(model.get_counterfactual_expression(indices=healthy, neighbour_indices=tumour, precomputed=False))
    model.save(tmp_path / "m", overwrite=True)
    back = Cellina.load(tmp_path / "m", adata=adata)
    np.testing.assert_array_equal(back.module.s_encoder.projection.numpy(), rotation)
    again = np.asarray(back.get_counterfactual_expression(indices=healthy, neighbour_indices=tumour, precomputed=False))
    np.testing.assert_allclose(again, out, rtol=1e-5)
    with pytest.raises(ValueError, match="spatial_components needs spatial_encoder='linear'"):
        Cellina.from_preset(adata, "published", spatial_components=5)
    with pytest.raises(ValueError, match="spatial_components=500 must be between 1 and the 100"):
        Cellina.from_preset(adata, "recommended", spatial_components=500)
