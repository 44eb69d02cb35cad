"""make_counterfactual_adata: the published Cellina's counterfactual AnnData, both modes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from cellina._spatial_utils import compute_spatial_features, make_counterfactual_adata


def _dense(x):
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def _lognorm(adata):
    return _dense(adata.layers["lognorm"])


def _rows(W, cell):
    W = sp.csr_matrix(W)
    return W.indices[W.indptr[cell] : W.indptr[cell + 1]]


def _snapshot(adata):
    return {
        "obsm": {k: _dense(v).copy() for k, v in adata.obsm.items()},
        "obsp": {k: v.copy() for k, v in adata.obsp.items()},
        "layers": sorted(adata.layers.keys()),
    }


def _same(a, b):
    assert a["obsm"].keys() == b["obsm"].keys() and a["obsp"].keys() == b["obsp"].keys()
    assert a["layers"] == b["layers"]
    for k in a["obsm"]:
        np.testing.assert_array_equal(a["obsm"][k], b["obsm"][k])
    for k in a["obsp"]:
        assert (a["obsp"][k] != b["obsp"][k]).nnz == 0


def _held_out(adata, anchors):
    """Cells to hold out: some neighbours of every anchor, and no anchor loses them all."""
    return np.unique(np.concatenate([_rows(adata.obsp["spatial_connectivities_orig"], a)[:2] for a in anchors]))


def _anchor(adata, focal, anchors, **kw):
    opts = dict(anchor_donors=True, layer="lognorm", connectivity_key="spatial_connectivities_orig")
    opts.update(kw)
    return make_counterfactual_adata(adata, focal, anchors, "spatial_x", **opts)


# ------------------------------------------------------------------------ pooled mode
def test_pooled_mode_averages_the_named_layer_over_drawn_donors(two_slide_counts):
    adata = two_slide_counts
    focal, pool = np.arange(0, 12), np.arange(100, 160)
    out = make_counterfactual_adata(
        adata,
        focal,
        pool,
        "spatial_x",
        anchor_donors=False,
        n_neighbors=6,
        random_state=2,
        layer="lognorm",
    )
    graph = sp.csr_matrix(adata.obsp["spatial_connectivities_cf"])
    rep = _lognorm(adata)
    for i, cell in enumerate(focal):
        donors = _rows(graph, cell)
        assert donors.size == 6 and np.isin(donors, pool).all() and cell not in donors
        np.testing.assert_allclose(_dense(out.obsm["spatial_x"])[i], rep[donors].mean(0), rtol=1e-5, atol=1e-6)
    # every other cell keeps its neighbourhood
    rest = np.setdiff1d(np.arange(adata.n_obs), focal)
    assert (graph[rest] != adata.obsp["spatial_connectivities"][rest]).nnz == 0
    np.testing.assert_array_equal(_dense(out.X), _dense(adata[focal].X))
    np.testing.assert_array_equal(_dense(out.obsm["spatial_x_cf"]), _dense(out.obsm["spatial_x"]))
    assert list(out.obs_names) == list(adata.obs_names[focal])


def test_pooled_draws_are_seeded_and_none_takes_the_whole_pool(two_slide_counts):
    adata = two_slide_counts
    focal, pool = np.arange(0, 12), np.arange(6, 60)  # the pool holds some focal cells

    def draw(**kw):
        return _dense(
            make_counterfactual_adata(adata, focal, pool, "spatial_x", anchor_donors=False, layer="lognorm", **kw).obsm[
                "spatial_x"
            ]
        )

    np.testing.assert_array_equal(draw(n_neighbors=4, random_state=5), draw(n_neighbors=4, random_state=5))
    assert not np.array_equal(draw(n_neighbors=4, random_state=5), draw(n_neighbors=4, random_state=6))
    everyone = draw(n_neighbors=None)
    rep = _lognorm(adata)
    for i, cell in enumerate(focal):
        # the focal cell is never its own donor, even when it is in the pool
        np.testing.assert_allclose(everyone[i], rep[pool[pool != cell]].mean(0), rtol=1e-5, atol=1e-6)


def test_pooled_mode_warns_when_it_would_average_raw_counts(two_slide_counts):
    adata = two_slide_counts
    focal, pool = np.arange(0, 5), np.arange(100, 140)
    with pytest.warns(UserWarning, match="raw counts"):
        out = make_counterfactual_adata(adata, focal, pool, "spatial_x", anchor_donors=False, n_neighbors=3)
    graph = sp.csr_matrix(adata.obsp["spatial_connectivities_cf"])
    counts = _dense(adata.X)
    expected = np.stack([counts[_rows(graph, c)].mean(0) for c in focal])
    np.testing.assert_allclose(_dense(out.obsm["spatial_x"]), expected, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_counterfactual_adata(adata, focal, pool, "spatial_x", anchor_donors=False, n_neighbors=3, layer="lognorm")


def test_pooled_mode_refuses_exclude_indices(two_slide_counts):
    with pytest.raises(ValueError, match="only used when anchor_donors=True"):
        make_counterfactual_adata(
            two_slide_counts,
            np.arange(5),
            np.arange(90, 120),
            "spatial_x",
            anchor_donors=False,
            n_neighbors=3,
            layer="lognorm",
            exclude_indices=np.arange(90, 95),
        )
    assert "spatial_connectivities_cf" not in two_slide_counts.obsp


# ------------------------------------------------------------------------ anchor mode
def test_anchor_rows_are_exactly_compute_spatial_features_on_the_masked_graph(two_slide_counts):
    adata = two_slide_counts
    focal, anchors = np.arange(0, 20), np.arange(100, 112)
    exclude = _held_out(adata, anchors)
    before = _snapshot(adata)
    out = _anchor(adata, focal, anchors, exclude_indices=exclude, random_state=3)
    _same(before, _snapshot(adata))  # the source is left as it was

    ref = adata.copy()
    W = sp.csr_matrix(ref.obsp["spatial_connectivities_orig"], copy=True)
    W.data[np.isin(W.indices, exclude)] = 0
    W.eliminate_zeros()
    ref.obsp["masked"] = W
    compute_spatial_features(ref, connectivity_key="masked", obsm_key="ref", layer="lognorm")
    draw = np.random.default_rng(3).integers(0, anchors.size, size=focal.size)
    got = out.obsm["spatial_x"]
    assert sp.issparse(got) and got.dtype == np.float32
    np.testing.assert_array_equal(got.toarray(), ref.obsm["ref"][anchors][draw])
    np.testing.assert_array_equal(out.obsm["spatial_x_cf"].toarray(), got.toarray())
    assert not np.array_equal(got.toarray(), adata.obsm["spatial_x"][anchors][draw])


def test_an_extreme_held_out_cell_beside_an_anchor_changes_nothing(two_slide_counts):
    adata = two_slide_counts
    focal, anchors = np.arange(0, 10), np.arange(100, 106)
    exclude = _held_out(adata, anchors)
    base = _anchor(adata, focal, anchors, exclude_indices=exclude).obsm["spatial_x"].toarray()
    leaky = _anchor(adata, focal, anchors).obsm["spatial_x"].toarray()
    assert not np.allclose(base, leaky)  # the held-out cells do sit in the anchors' niches

    extreme = _lognorm(adata)
    extreme[exclude] = 0
    extreme[exclude, 4] = 50.0
    adata.layers["lognorm"] = sp.csr_matrix(extreme.astype(np.float32))
    after = _anchor(adata, focal, anchors, exclude_indices=exclude).obsm["spatial_x"].toarray()
    np.testing.assert_array_equal(after, base)
    assert _anchor(adata, focal, anchors).obsm["spatial_x"].toarray()[:, 4].max() > leaky[:, 4].max() + 1


def test_without_exclusion_anchor_mode_reproduces_the_stored_rows(two_slide_counts):
    adata = two_slide_counts
    focal, anchors = np.arange(0, 30), np.arange(95, 110)
    out = make_counterfactual_adata(adata, focal, anchors, "spatial_x", layer="lognorm", random_state=11)
    draw = np.random.default_rng(11).integers(0, anchors.size, size=focal.size)
    np.testing.assert_array_equal(out.obsm["spatial_x"].toarray(), adata.obsm["spatial_x"][anchors][draw])
    assert "spatial_x_cf" not in adata.obsm and "spatial_connectivities_cf" not in adata.obsp
    # sparse stored features are read as well
    adata.obsm["spatial_x"] = sp.csr_matrix(adata.obsm["spatial_x"])
    again = make_counterfactual_adata(adata, focal, anchors, "spatial_x", layer="lognorm", random_state=11)
    np.testing.assert_array_equal(again.obsm["spatial_x"].toarray(), out.obsm["spatial_x"].toarray())


def test_anchor_mode_on_raw_counts_warns_and_differs(two_slide_counts):
    adata = two_slide_counts
    focal, anchors = np.arange(0, 8), np.arange(100, 108)
    with pytest.warns(UserWarning, match="raw counts"):
        out = make_counterfactual_adata(adata, focal, anchors, "spatial_x", random_state=0)
    draw = np.random.default_rng(0).integers(0, anchors.size, size=focal.size)
    assert not np.allclose(out.obsm["spatial_x"].toarray(), adata.obsm["spatial_x"][anchors][draw])


def test_homotypic_anchors_are_dropped_with_a_count(two_slide_counts):
    adata = two_slide_counts
    focal, anchors = np.arange(0, 25), np.arange(100, 110)
    lonely = int(anchors[4])
    exclude = np.union1d(_held_out(adata, anchors), _rows(adata.obsp["spatial_connectivities_orig"], lonely))
    with pytest.warns(UserWarning, match="1 of 10 anchors are homotypic"):
        dropped = _anchor(adata, focal, anchors, exclude_indices=exclude)
    by_hand = _anchor(adata, focal, anchors[anchors != lonely], exclude_indices=exclude)
    np.testing.assert_array_equal(dropped.obsm["spatial_x"].toarray(), by_hand.obsm["spatial_x"].toarray())
    assert (dropped.obsm["spatial_x"].toarray() != 0).any(axis=1).all()
    with pytest.raises(ValueError, match="All anchors are homotypic"):
        _anchor(adata, focal, np.array([lonely]), exclude_indices=exclude)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"neighbour_indices": np.array([], dtype=int)}, ValueError, "at least one anchor"),
        ({"exclude_indices": np.ones(180, dtype=bool)}, ValueError, "1-D integer"),
        ({"exclude_indices": np.array([180])}, ValueError, "outside"),
        ({"indices": np.array([-1, 2])}, ValueError, "outside"),
        ({"connectivity_key": "no_graph"}, KeyError, "connectivity_key"),
        ({"spatial_column": "no_features"}, KeyError, "no_features"),
    ],
)
def test_anchor_mode_names_the_bad_argument(two_slide_counts, kwargs, error, match):
    args = {"indices": np.arange(5), "neighbour_indices": np.arange(100, 110), "spatial_column": "spatial_x"}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(error, match=match):
        make_counterfactual_adata(two_slide_counts, **args, anchor_donors=True, layer="lognorm", **kwargs)


def test_anchor_mode_refuses_features_it_cannot_rebuild(two_slide_counts):
    adata = two_slide_counts
    adata.obsm["reduced"] = np.zeros((adata.n_obs, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="neighbor_genes"):
        make_counterfactual_adata(adata, np.arange(5), np.arange(100, 110), "reduced", layer="lognorm")
    compute_spatial_features(adata, obsm_key="subset", layer="lognorm", neighbor_genes=["g1", "g2"])
    with pytest.raises(ValueError, match="2 columns"):
        make_counterfactual_adata(adata, np.arange(5), np.arange(100, 110), "subset", layer="lognorm")
