"""Tests of niche features phi = D^-1 W X and their provenance record."""

from __future__ import annotations

import copy
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from cellina._spatial_utils import compute_spatial_features, spatial_neighbors
from cellina.spatial import (
    CellinaKeyError,
    aggregate_neighbours,
    detect_representation,
    expression_representation,
)


def _counts_adata(n: int = 250, n_genes: int = 40, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(2, 0.6, size=(n, n_genes)).astype(np.float32)
    counts[rng.random((n, n_genes)) < 0.5] = 0  # realistic sparsity
    counts[7] = 0  # a cell without counts
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.obsm["spatial"] = rng.uniform(0, 300, size=(n, 2))
    adata.layers["counts"] = adata.X.copy()
    return adata


def _lognorm_adata(**kwargs) -> ad.AnnData:
    adata = _counts_adata(**kwargs)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def _dense_phi(W: sp.spmatrix, X) -> np.ndarray:
    Wd = W.toarray().astype(np.float64)
    Xd = X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    deg = Wd.sum(axis=1, keepdims=True)
    return np.divide(Wd @ Xd, deg, out=np.zeros((Wd.shape[0], Xd.shape[1])), where=deg > 0)


def test_phi_matches_dense_reference_and_records_provenance():
    adata = _lognorm_adata()
    held = np.arange(0, 250, 10)
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15, test_indices=held)
    X_before = adata.X.copy()
    compute_spatial_features(adata)
    phi = adata.obsm["spatial_x"]
    assert isinstance(phi, np.ndarray) and phi.dtype == np.float32
    assert phi.shape == (250, 40)
    ref = _dense_phi(adata.obsp["spatial_connectivities"], adata.X)
    np.testing.assert_allclose(phi, ref, rtol=1e-5, atol=1e-6)
    # held-out cells have no neighbours: zero rows
    assert np.all(phi[held] == 0)
    assert np.abs(phi[1]).sum() > 0
    assert (adata.X != X_before).nnz == 0  # source untouched
    rec = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    assert rec["connectivity_key"] == "spatial_connectivities"
    assert rec["layer"] is None
    assert rec["transform"] == "log1p_normalize_total"
    assert rec["target_sum"] == 1e4
    assert list(rec["genes"]) == list(adata.var_names)


def test_standardized_graph_gives_same_phi():
    adata = _lognorm_adata()
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15)
    compute_spatial_features(adata)
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15, standardize=True, key_added="std")
    compute_spatial_features(adata, connectivity_key="std_connectivities", obsm_key="phi_std")
    np.testing.assert_allclose(adata.obsm["phi_std"], adata.obsm["spatial_x"], rtol=1e-5, atol=1e-6)
    assert set(adata.uns["cellina"]["spatial_features"]) == {"spatial_x", "phi_std"}


def test_expression_representation_rebuilds_phi_from_counts():
    adata = _lognorm_adata()
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15)
    compute_spatial_features(adata)
    rec = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    W = adata.obsp["spatial_connectivities"]
    Xrep = expression_representation(adata.layers["counts"], rec)
    assert sp.isspmatrix_csr(Xrep) and Xrep.dtype == np.float32
    np.testing.assert_allclose(Xrep.toarray(), adata.X.toarray(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(aggregate_neighbours(W, Xrep), adata.obsm["spatial_x"], rtol=1e-5, atol=1e-6)
    # the AnnData form reads counts from a layer and matches genes by name
    Xrep2 = expression_representation(adata, rec, layer="counts")
    np.testing.assert_allclose(Xrep2.toarray(), Xrep.toarray())
    # a subset of rows (focal cells) works on its own
    sub = expression_representation(adata.layers["counts"][:30], rec)
    np.testing.assert_allclose(sub.toarray(), Xrep[:30].toarray())


def test_genes_subset_and_record_round_trip(tmp_path):
    adata = _lognorm_adata()
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15)
    genes = ["g5", "g0", "g17"]
    compute_spatial_features(adata, genes=genes, obsm_key="phi3")
    phi = adata.obsm["phi3"]
    ref = _dense_phi(adata.obsp["spatial_connectivities"], adata[:, genes].X)
    np.testing.assert_allclose(phi, ref, rtol=1e-5, atol=1e-6)
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    rec = back.uns["cellina"]["spatial_features"]["phi3"]
    assert list(rec["genes"]) == genes
    # normalisation totals run over all genes, not just the three kept ones
    Xrep = expression_representation(back.layers["counts"], rec)
    np.testing.assert_allclose(
        aggregate_neighbours(back.obsp["spatial_connectivities"], Xrep), phi, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="40"):
        expression_representation(back.layers["counts"][:, :3], rec)


def test_raw_counts_warn_loudly_and_record_identity():
    adata = _counts_adata()
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15)
    with pytest.warns(UserWarning, match=r"adata\.layers\['counts'\] looks like raw counts.*log1p"):
        compute_spatial_features(adata, layer="counts")
    rec = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    assert rec["transform"] == "identity" and rec["layer"] == "counts"
    assert rec["target_sum"] is None
    ref = _dense_phi(adata.obsp["spatial_connectivities"], adata.layers["counts"])
    np.testing.assert_allclose(adata.obsm["spatial_x"], ref, rtol=1e-5, atol=1e-5)


def test_detects_plain_log1p_and_dense_input():
    adata = _counts_adata()
    plain = adata.X.copy()
    plain.data = np.log1p(plain.data)
    assert detect_representation(plain) == ("log1p", None)
    lognorm = _lognorm_adata().X
    transform, total = detect_representation(lognorm.toarray())
    assert transform == "log1p_normalize_total" and total == 1e4
    with pytest.warns(UserWarning, match="negative"):
        assert detect_representation(np.array([[-1.0, 0.5], [0.2, 0.1]]))[0] == "identity"
    with pytest.warns(UserWarning, match="neither raw counts"):
        assert detect_representation(np.array([[0.3, 0.5], [0.2, 0.1]]))[0] == "log1p"


def test_dense_expression_and_zero_rows():
    adata = _lognorm_adata(n=60)
    adata.X = adata.X.toarray()
    # one isolated cell far away has no neighbour within the kernel's reach
    adata.obsm["spatial"][0] = [1e6, 1e6]
    spatial_neighbors(adata, bandwidth=10.0, max_neighbours=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_spatial_features(adata)
    phi = adata.obsm["spatial_x"]
    assert np.all(phi[0] == 0)
    np.testing.assert_allclose(phi, _dense_phi(adata.obsp["spatial_connectivities"], adata.X), rtol=1e-5, atol=1e-6)


def test_aggregate_neighbours_rectangular_weights():
    rng = np.random.default_rng(0)
    W = sp.random(7, 20, density=0.3, format="csr", random_state=1)
    W = W.tolil()
    W[3, :] = 0
    W = W.tocsr()
    X = sp.random(20, 9, density=0.4, format="csr", random_state=2)
    out = aggregate_neighbours(W, X)
    np.testing.assert_allclose(out, _dense_phi(W, X), rtol=1e-5, atol=1e-6)
    assert np.all(out[3] == 0)
    np.testing.assert_allclose(aggregate_neighbours(W, X.toarray()), out, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="20 columns"):
        aggregate_neighbours(W, rng.random((5, 9)))


def test_tutorial_sequence():
    """normalize_total + log1p, graph with test indices, compute_spatial_features(adata)."""
    adata = _counts_adata(n=300)
    adata.obsm["spatial"] = adata.obsm["spatial"] * 50
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    test_idx = np.arange(0, 300, 7)
    adata.obsp["spatial_connectivities_orig"] = spatial_neighbors(
        adata, bandwidth=100 / 0.12028, max_neighbours=200, standardize=False, inplace=False
    )
    spatial_neighbors(adata, bandwidth=100 / 0.12028, max_neighbours=200, standardize=False, test_indices=test_idx)
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    rec = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    assert rec["transform"] == "log1p_normalize_total"
    rebuilt = aggregate_neighbours(adata.obsp["spatial_connectivities"], expression_representation(adata, rec))
    np.testing.assert_allclose(rebuilt, adata.obsm["spatial_x"], rtol=1e-5, atol=1e-6)
    assert np.all(adata.obsm["spatial_x"][test_idx] == 0)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"connectivity_key": "graph"}, "connectivity_key='graph'"),
        ({"layer": "lognorm"}, "layer='lognorm'"),
        ({"genes": ["g1", "TP53", "EGFR"]}, r"Unknown gene.*'TP53', 'EGFR'"),
    ],
)
def test_bad_input_names_culprit_and_leaves_adata(kwargs, match):
    adata = _lognorm_adata(n=50)
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=5)
    before = copy.deepcopy(adata)
    with pytest.raises(CellinaKeyError, match=match):
        compute_spatial_features(adata, **kwargs)
    assert list(adata.obsm.keys()) == list(before.obsm.keys())
    assert "cellina" not in adata.uns
    assert (adata.X != before.X).nnz == 0


def test_nan_expression_is_refused():
    adata = _lognorm_adata(n=50)
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=5)
    adata.X.data[0] = np.nan
    with pytest.raises(ValueError, match=r"adata\.X contains NaN"):
        compute_spatial_features(adata)
    assert "spatial_x" not in adata.obsm


def test_expression_representation_checks_input():
    adata = _lognorm_adata(n=50)
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=5)
    compute_spatial_features(adata)
    rec = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    with pytest.warns(UserWarning, match="looks already log-normalised"):
        expression_representation(adata.X, rec)  # log data passed where counts belong
    with pytest.raises(ValueError, match="transform"):
        expression_representation(adata.layers["counts"], {"genes": rec["genes"]})
    renamed = adata.copy()
    renamed.var_names = [f"x{i}" for i in range(renamed.n_vars)]
    with pytest.raises(CellinaKeyError, match="'g0'"):
        expression_representation(renamed, rec, layer="counts")


def test_compiled_and_scipy_products_agree():
    from cellina.spatial._features import _sparse_product_into

    adata = _lognorm_adata(n=150)
    W = spatial_neighbors(adata, bandwidth=30.0, max_neighbours=10, inplace=False)
    start = np.full((150, 40), 0.5, dtype=np.float32)  # the product is added into `out`
    fast, slow = start.copy(), start.copy()
    _sparse_product_into(W, adata.X, fast, use_numba=True)
    _sparse_product_into(W, adata.X, slow, use_numba=False)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, 0.5 + W.toarray() @ adata.X.toarray(), rtol=1e-5, atol=1e-5)


def test_neighbor_genes_is_the_published_name_of_genes():
    adata = _lognorm_adata()
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15)
    compute_spatial_features(adata, genes=["g3", "g1"], obsm_key="ours")
    compute_spatial_features(adata, neighbor_genes=["g3", "g1"], obsm_key="published")
    assert adata.obsm["published"].shape == (adata.n_obs, 2)
    np.testing.assert_array_equal(adata.obsm["published"], adata.obsm["ours"])
    assert list(adata.uns["cellina"]["spatial_features"]["published"]["genes"]) == ["g3", "g1"]
    with pytest.raises(ValueError, match="not both"):
        compute_spatial_features(adata, genes=["g1"], neighbor_genes=["g1"], obsm_key="both")
    assert "both" not in adata.obsm


def test_raw_counts_warning_uses_the_published_wording_and_only_for_counts():
    adata = _counts_adata()
    adata.layers["lognorm"] = _lognorm_adata().X
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=15)
    with pytest.warns(UserWarning, match="raw counts"):
        compute_spatial_features(adata, obsm_key="from_counts")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute_spatial_features(adata, obsm_key="from_lognorm", layer="lognorm")
