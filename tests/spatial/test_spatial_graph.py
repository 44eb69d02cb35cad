"""Tests of cellina.spatial.spatial_neighbors against a brute-force reference."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.spatial import CellinaKeyError, spatial_neighbors


def _adata(n: int = 300, seed: int = 0, n_slides: int = 1) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(
        X=sp.random(n, 5, density=0.5, format="csr", random_state=seed, dtype=np.float32),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n)]),
    )
    adata.obsm["spatial"] = rng.uniform(0, 500, size=(n, 2))
    if n_slides > 1:
        adata.obs["slide"] = pd.Categorical(rng.integers(0, n_slides, size=n).astype(str))
    return adata


def _kernel(d: np.ndarray, l: float, kernel: str) -> np.ndarray:
    if kernel == "gaussian":
        return np.exp(-(d**2) / (2 * l**2))
    if kernel == "exponential":
        return np.exp(-d / l)
    return np.maximum(0.0, 1 - d / l)


def _brute_force(coords, bandwidth, cutoff, k, kernel, standardize, groups=None, held_out=()):
    n = len(coords)
    groups = np.zeros(n, dtype=int) if groups is None else np.asarray(groups)
    active = np.ones(n, dtype=bool)
    active[list(held_out)] = False
    W = np.zeros((n, n))
    D = np.zeros((n, n))
    for i in range(n):
        if not active[i]:
            continue
        cand = np.flatnonzero(active & (groups == groups[i]))
        cand = cand[cand != i]
        dist = np.linalg.norm(coords[cand] - coords[i], axis=1)
        order = np.argsort(dist, kind="stable")[:k]
        w = _kernel(dist[order], bandwidth, kernel)
        keep = w > cutoff
        W[i, cand[order][keep]] = w[keep]
        D[i, cand[order][keep]] = dist[order][keep]
    if standardize:
        s = W.sum(axis=1, keepdims=True)
        W = np.divide(W, s, out=np.zeros_like(W), where=s > 0)
    return W, D


@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "linear"])
@pytest.mark.parametrize("standardize", [False, True])
def test_matches_brute_force(kernel, standardize):
    adata = _adata()
    spatial_neighbors(adata, bandwidth=40.0, cutoff=0.05, max_neighbours=12, kernel=kernel, standardize=standardize)
    W = adata.obsp["spatial_connectivities"]
    D = adata.obsp["spatial_distances"]
    W_ref, D_ref = _brute_force(adata.obsm["spatial"], 40.0, 0.05, 12, kernel, standardize)
    assert isinstance(W, sp.csr_matrix) and W.dtype == np.float32
    assert W.has_sorted_indices and D.has_sorted_indices
    np.testing.assert_allclose(W.toarray(), W_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(D.toarray(), D_ref, rtol=1e-10)
    # distances share the connectivities' sparsity pattern
    np.testing.assert_array_equal(W.indptr, D.indptr)
    np.testing.assert_array_equal(W.indices, D.indices)
    assert W.diagonal().sum() == 0
    if standardize:
        sums = np.asarray(W.sum(axis=1)).ravel()
        has = np.diff(W.indptr) > 0
        np.testing.assert_allclose(sums[has], 1.0, rtol=1e-5)


def test_k_cap_and_cutoff():
    adata = _adata(n=200)
    # a huge bandwidth keeps every candidate: each row has exactly k neighbours
    W = spatial_neighbors(adata, bandwidth=1e9, max_neighbours=7, inplace=False)
    assert np.all(np.diff(W.indptr) == 7)
    # cutoff removes exactly the edges whose weight is <= cutoff
    W_cut = spatial_neighbors(adata, bandwidth=20.0, cutoff=0.5, max_neighbours=7, inplace=False)
    W_all = spatial_neighbors(adata, bandwidth=20.0, cutoff=0.0, max_neighbours=7, inplace=False)
    dense_all = W_all.toarray()
    expected = np.where(dense_all > 0.5, dense_all, 0)
    np.testing.assert_allclose(W_cut.toarray(), expected)
    assert W_cut.nnz < W_all.nnz
    assert W_cut.data.min() > 0.5


def test_fewer_cells_than_k():
    adata = _adata(n=5)
    W = spatial_neighbors(adata, bandwidth=1e6, max_neighbours=50, inplace=False)
    assert np.all(np.diff(W.indptr) == 4)
    single = _adata(n=1)
    assert spatial_neighbors(single, bandwidth=1.0, inplace=False).nnz == 0


def test_library_key_has_no_cross_edges():
    adata = _adata(n=400, n_slides=3)
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=10, library_key="slide")
    W = adata.obsp["spatial_connectivities"].tocoo()
    slides = adata.obs["slide"].to_numpy()
    assert W.nnz > 0
    assert np.all(slides[W.row] == slides[W.col])
    W_ref, _ = _brute_force(adata.obsm["spatial"], 30.0, 0.1, 10, "gaussian", False, groups=slides)
    np.testing.assert_allclose(adata.obsp["spatial_connectivities"].toarray(), W_ref, rtol=1e-5)
    assert adata.uns["spatial_neighbors"]["params"]["library_key"] == "slide"


def test_test_indices_are_masked_and_others_keep_k():
    adata = _adata(n=300)
    rng = np.random.default_rng(1)
    held = rng.choice(300, size=40, replace=False)
    W = spatial_neighbors(adata, bandwidth=1e9, max_neighbours=9, test_indices=held, inplace=False)
    dense = W.toarray()
    assert dense[held].sum() == 0  # no neighbours
    assert dense[:, held].sum() == 0  # nobody's neighbour
    others = np.setdiff1d(np.arange(300), held)
    assert np.all(np.diff(W.indptr)[others] == 9)  # masked in the tree, not post-filtered
    W_ref, _ = _brute_force(adata.obsm["spatial"], 1e9, 0.1, 9, "gaussian", False, held_out=held)
    np.testing.assert_allclose(dense, W_ref, rtol=1e-6)
    # a boolean mask means the same as positions
    mask = np.zeros(300, dtype=bool)
    mask[held] = True
    W_mask = spatial_neighbors(adata, bandwidth=1e9, max_neighbours=9, test_indices=mask, inplace=False)
    assert (W_mask != W).nnz == 0


def test_duplicate_coordinates_exclude_self_by_index():
    adata = _adata(n=30)
    coords = adata.obsm["spatial"]
    coords[:12] = coords[0]  # twelve cells at the same spot
    W = spatial_neighbors(adata, bandwidth=10.0, max_neighbours=5, inplace=False)
    assert W.diagonal().sum() == 0
    assert np.all(np.diff(W.indptr)[:12] == 5)
    # each stacked cell links only to other stacked cells, with weight 1 at distance 0
    dense = W.toarray()
    for i in range(12):
        nbrs = np.flatnonzero(dense[i])
        assert i not in nbrs and np.all(nbrs < 12)
        np.testing.assert_allclose(dense[i, nbrs], 1.0)
    # distance-0 edges are stored explicitly in the distances matrix
    spatial_neighbors(adata, bandwidth=10.0, max_neighbours=5)
    D = adata.obsp["spatial_distances"]
    assert D[:12].nnz == 12 * 5
    assert np.all(D[:12].data == 0)


def test_squidpy_layout_and_key_added():
    adata = _adata(n=50)
    spatial_neighbors(adata, bandwidth=50.0, max_neighbours=6, key_added="niche")
    assert set(adata.obsp.keys()) == {"niche_connectivities", "niche_distances"}
    info = adata.uns["niche_neighbors"]
    assert info["connectivities_key"] == "niche_connectivities"
    assert info["distances_key"] == "niche_distances"
    params = info["params"]
    assert params["n_neighbors"] == 6 and params["bandwidth"] == 50.0
    assert params["kernel"] == "gaussian" and params["cutoff"] == 0.1
    assert "spatial" not in adata.uns  # left free for scanpy's image metadata


def test_written_graph_round_trips_h5ad(tmp_path):
    adata = _adata(n=60, n_slides=2)
    spatial_neighbors(adata, bandwidth=50.0, max_neighbours=6, library_key="slide", test_indices=[1, 2])
    path = tmp_path / "g.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.obsp["spatial_connectivities"] != adata.obsp["spatial_connectivities"]).nnz == 0
    np.testing.assert_array_equal(back.uns["spatial_neighbors"]["params"]["test_indices"], [1, 2])


def test_inplace_false_writes_nothing():
    adata = _adata(n=80)
    before = copy.deepcopy(adata)
    W = spatial_neighbors(adata, bandwidth=50.0, max_neighbours=5, inplace=False)
    assert sp.issparse(W) and W.shape == (80, 80)
    assert len(adata.obsp) == 0 and dict(adata.uns) == dict(before.uns)


def test_tutorial_calls():
    """The published tutorial's two calls, with pixel coordinates."""
    rng = np.random.default_rng(3)
    adata = _adata(n=500)
    adata.obsm["spatial"] = rng.uniform(0, 20000, size=(500, 2))
    test_idx = np.where(rng.random(500) < 0.1)[0]
    adata.obsp["spatial_connectivities_orig"] = spatial_neighbors(
        adata, bandwidth=100 / 0.12028, max_neighbours=200, standardize=False, inplace=False
    )
    out = spatial_neighbors(
        adata,
        bandwidth=100 / 0.12028,
        max_neighbours=200,
        standardize=False,
        test_indices=test_idx,
    )
    assert out is None
    W = adata.obsp["spatial_connectivities"]
    W_orig = adata.obsp["spatial_connectivities_orig"]
    assert W[test_idx].nnz == 0 and W[:, test_idx].nnz == 0
    assert W_orig[test_idx].nnz > 0
    W_ref, _ = _brute_force(adata.obsm["spatial"], 100 / 0.12028, 0.1, 200, "gaussian", False)
    np.testing.assert_allclose(W_orig.toarray(), W_ref, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- bad input


def _bad_coords(kind):
    adata = _adata(n=20)
    if kind == "nan":
        adata.obsm["spatial"][3, 0] = np.nan
    elif kind == "inf":
        adata.obsm["spatial"][5, 1] = np.inf
    elif kind == "text":
        adata.obsm["spatial"] = np.array([["a", "b"]] * 20, dtype=object)
    elif kind == "1col":
        adata.obsm["spatial"] = adata.obsm["spatial"][:, :1]
    elif kind == "frame":
        adata.obsm["spatial"] = pd.DataFrame({"x": ["1"] * 20, "y": np.zeros(20)}, index=adata.obs_names)
    return adata


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("nan", r"obsm\['spatial'\].*NaN or infinite.*cell3"),
        ("inf", r"obsm\['spatial'\].*NaN or infinite.*cell5"),
        ("text", r"obsm\['spatial'\].*numeric"),
        ("1col", r"obsm\['spatial'\].*shape"),
        ("frame", r"obsm\['spatial'\].*numeric.*'x'"),
    ],
)
def test_bad_coordinates(kind, match):
    adata = _bad_coords(kind)
    before = copy.deepcopy(adata)
    with pytest.raises(ValueError, match=match):
        spatial_neighbors(adata, bandwidth=10.0)
    _assert_unchanged(adata, before)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"spatial_key": "xy"}, CellinaKeyError, "spatial_key='xy'"),
        ({"bandwidth": 0.0}, ValueError, "bandwidth"),
        ({"bandwidth": -3.0}, ValueError, "bandwidth"),
        ({"bandwidth": np.nan}, ValueError, "bandwidth"),
        ({"bandwidth": np.inf}, ValueError, "bandwidth"),
        ({"cutoff": 1.0}, ValueError, "cutoff"),
        ({"cutoff": -0.1}, ValueError, "cutoff"),
        ({"max_neighbours": 0}, ValueError, "max_neighbours"),
        ({"max_neighbours": 2.5}, TypeError, "max_neighbours"),
        ({"kernel": "cosine"}, ValueError, "kernel='cosine'"),
        ({"library_key": "sample"}, CellinaKeyError, "library_key='sample'"),
        ({"test_indices": [0, 20]}, ValueError, r"test_indices.*20"),
        ({"test_indices": [-1]}, ValueError, r"test_indices.*-1"),
        ({"test_indices": [0.5, 2.0]}, TypeError, "test_indices"),
        ({"test_indices": np.ones(7, dtype=bool)}, ValueError, r"test_indices.*length 7"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    adata = _adata(n=20)
    before = copy.deepcopy(adata)
    args = {"bandwidth": 10.0, **kwargs}
    with pytest.raises(error, match=match) as info:
        spatial_neighbors(adata, **args)
    assert isinstance(info.value, ValueError)  # every bad input is a ValueError
    _assert_unchanged(adata, before)


def test_errors_are_value_errors():
    """Missing keys raise an error that is both a KeyError and a ValueError."""
    adata = _adata(n=10)
    with pytest.raises(ValueError):
        spatial_neighbors(adata, bandwidth=1.0, spatial_key="nope")
    with pytest.raises(KeyError):
        spatial_neighbors(adata, bandwidth=1.0, spatial_key="nope")


def test_missing_library_values_and_empty_adata():
    adata = _adata(n=20, n_slides=2)
    adata.obs.loc["cell4", "slide"] = np.nan
    with pytest.raises(ValueError, match=r"obs\['slide'\].*missing.*cell4"):
        spatial_neighbors(adata, bandwidth=10.0, library_key="slide")
    empty = ad.AnnData(np.zeros((0, 3), dtype=np.float32))
    empty.obsm["spatial"] = np.zeros((0, 2))
    with pytest.raises(ValueError, match="empty"):
        spatial_neighbors(empty, bandwidth=10.0)


def _assert_unchanged(adata: ad.AnnData, before: ad.AnnData) -> None:
    assert list(adata.obsp.keys()) == list(before.obsp.keys())
    assert list(adata.uns.keys()) == list(before.uns.keys())
    assert list(adata.obsm.keys()) == list(before.obsm.keys())
    for key in before.obsm.keys():
        a, b = adata.obsm[key], before.obsm[key]
        if isinstance(b, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b)
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    pd.testing.assert_frame_equal(adata.obs, before.obs)


def test_published_keyword_calls():
    """Every keyword the published package's calls use, with test_indices as a list."""
    adata = _adata(n=150)
    kw = dict(bandwidth=50.0, cutoff=0.1, max_neighbours=10, kernel="gaussian", spatial_key="spatial")
    assert spatial_neighbors(adata, key_added="spatial", inplace=True, **kw) is None
    W = adata.obsp["spatial_connectivities"]
    assert sp.issparse(W) and W.shape == (150, 150) and W.nnz > 0
    held = spatial_neighbors(adata, test_indices=[0, 1, 2], inplace=False, **kw)
    assert held.shape == (150, 150)
    assert held[[0, 1, 2]].nnz == 0 and held[:, [0, 1, 2]].nnz == 0 and held[3:].nnz > 0
