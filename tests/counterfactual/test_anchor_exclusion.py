"""Anchor and donor draws that leave excluded (held-out) cells out of every rebuilt niche."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from cellina.counterfactual import (
    anchor_niche_features,
    masked_rows,
    rewired_niche_features,
    sample_anchors,
    sample_donors,
    spatial_features_record,
    usable_anchors,
)
from cellina.spatial import compute_spatial_features


def _graph(adata):
    return sp.csr_matrix(adata.obsp["spatial_connectivities_orig"])


def _neighbours(adata, cell):
    W = _graph(adata)
    return W.indices[W.indptr[cell] : W.indptr[cell + 1]]


def _zero_columns(W, cells):
    out = sp.csr_matrix(W, copy=True)
    out.data[np.isin(out.indices, cells)] = 0
    out.eliminate_zeros()
    return out


def _anchor_with_neighbours(adata, at_least=3):
    degrees = np.diff(_graph(adata).indptr)
    return int(np.flatnonzero(degrees >= at_least)[0])


def _far_cell(adata, anchor):
    """A cell on the other slide: never a neighbour of ``anchor``."""
    slides = adata.obs["slide"].to_numpy()
    return int(np.flatnonzero(slides != slides[anchor])[0])


# ------------------------------------------------------------------ masked neighbourhoods
def test_masked_rows_drops_excluded_columns_and_the_focal_cell_only(two_slide_counts):
    adata = two_slide_counts
    a = _anchor_with_neighbours(adata)
    nb = _neighbours(adata, a)
    W = masked_rows(_graph(adata), np.array([a, a]), exclude=nb[:1], drop=np.array([nb[1], -1]))
    assert list(W[0].indices) == list(nb[2:])
    assert list(W[1].indices) == list(nb[1:])
    np.testing.assert_array_equal(W[1].data, _graph(adata)[a].data[1:])


# ------------------------------------------------------------------ anchor niche features
def test_an_extreme_excluded_neighbour_does_not_move_the_anchor_niche(two_slide_counts):
    adata = two_slide_counts
    record = spatial_features_record(adata, "spatial_x")
    a = _anchor_with_neighbours(adata)
    held_out = int(_neighbours(adata, a)[0])
    focal = np.array([_far_cell(adata, a)])
    counts = adata.layers["counts"].toarray()

    def phi(counts, exclude):
        return anchor_niche_features(counts, _graph(adata), np.array([a]), focal, record, exclude)

    before = phi(counts, np.array([held_out]))
    extreme = counts.copy()
    extreme[held_out] = 0
    extreme[held_out, 3] = 1e6  # a held-out cell that is all one gene
    np.testing.assert_array_equal(phi(extreme, np.array([held_out])), before)
    # control: without the exclusion the same cell drags gene 3 up (its log-normalised
    # value saturates at log1p(1e4), so the shift is its weight share of that)
    leaky_before, leaky_after = phi(counts, None), phi(extreme, None)
    assert leaky_after[0, 3] > leaky_before[0, 3] + 0.1


def test_anchor_niche_without_excluded_cells_is_the_masked_graph_niche(two_slide_counts):
    adata = two_slide_counts
    record = spatial_features_record(adata, "spatial_x")
    anchors = np.array([3, 40, 120, 150])
    focal = np.array([_far_cell(adata, x) for x in anchors])
    exclude = np.unique(np.concatenate([_neighbours(adata, x)[:2] for x in anchors]))
    phi = anchor_niche_features(adata.layers["counts"], _graph(adata), anchors, focal, record, exclude)
    ref = adata.copy()
    ref.obsp["masked"] = _zero_columns(_graph(adata), exclude)
    compute_spatial_features(ref, connectivity_key="masked", obsm_key="ref", layer="lognorm")
    np.testing.assert_allclose(phi, ref.obsm["ref"][anchors], rtol=1e-5, atol=1e-6)
    assert not np.allclose(phi, adata.obsm["spatial_x"][anchors], atol=1e-4)


def test_an_anchor_whose_only_neighbour_is_the_focal_cell_is_reported(two_slide_counts):
    adata = two_slide_counts
    record = spatial_features_record(adata, "spatial_x")
    a = _anchor_with_neighbours(adata)
    nb = _neighbours(adata, a)
    with pytest.warns(UserWarning, match="1 focal cell.*empty niche"):
        phi = anchor_niche_features(adata.layers["counts"], _graph(adata), np.array([a]), nb[:1], record, nb[1:])
    assert not phi.any()


# ------------------------------------------------------------------ anchor pools
def test_homotypic_anchors_leave_the_pool_before_the_draw(two_slide_counts):
    adata = two_slide_counts
    pool = np.array([3, 40, 120])
    homotypic = int(pool[1])
    exclude = _neighbours(adata, homotypic)
    focal = np.array([_far_cell(adata, x) for x in pool] * 5)
    with pytest.warns(UserWarning, match=r"1 of 3 anchors are homotypic"):
        phi, anchors = rewired_niche_features(
            adata,
            adata.layers["counts"],
            focal,
            pool,
            "spatial_x",
            np.random.default_rng(4),
            precomputed=True,
            exclude=exclude,
        )
    assert homotypic not in anchors
    expected = sample_anchors(focal, pool[pool != homotypic], np.random.default_rng(4))
    np.testing.assert_array_equal(anchors, expected)
    assert (phi != 0).any(axis=1).all()
    with pytest.raises(ValueError, match="All anchors are homotypic"):
        rewired_niche_features(
            adata,
            adata.layers["counts"],
            focal,
            np.array([homotypic]),
            "spatial_x",
            np.random.default_rng(4),
            precomputed=True,
            exclude=exclude,
        )


def test_without_exclusion_the_anchor_draw_is_unchanged(two_slide_counts):
    adata = two_slide_counts
    pool, focal = np.arange(90, 130), np.arange(0, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        phi, anchors = rewired_niche_features(
            adata,
            adata.layers["counts"],
            focal,
            pool,
            "spatial_x",
            np.random.default_rng(9),
            precomputed=True,
        )
    np.testing.assert_array_equal(anchors, sample_anchors(focal, pool, np.random.default_rng(9)))
    # focal cells lie on the other slide, so each inherits its anchor's stored niche
    np.testing.assert_allclose(phi, adata.obsm["spatial_x"][anchors], rtol=1e-5, atol=1e-6)


def test_usable_anchors_needs_an_anchor(two_slide_counts):
    with pytest.raises(ValueError, match="at least one anchor"):
        usable_anchors(_graph(two_slide_counts), np.array([], dtype=int), None, "the graph")


# ------------------------------------------------------------------ donor pools
def test_excluded_cells_are_never_donors(two_slide_counts):
    adata = two_slide_counts
    pool, focal = np.arange(90, 180), np.arange(0, 40)
    exclude = np.arange(90, 170)
    _, donors = rewired_niche_features(
        adata,
        adata.layers["counts"],
        focal,
        pool,
        "spatial_x",
        np.random.default_rng(1),
        n_neighbours=5,
        exclude=exclude,
    )
    assert not np.isin(donors, exclude).any() and np.isin(donors, pool).all()
    with pytest.raises(ValueError, match="excluded"):
        rewired_niche_features(
            adata,
            adata.layers["counts"],
            focal,
            pool,
            "spatial_x",
            np.random.default_rng(1),
            exclude=np.arange(90, 180),
        )
    # without exclude the donors are exactly the plain draw
    _, plain = rewired_niche_features(
        adata,
        adata.layers["counts"],
        focal,
        pool,
        "spatial_x",
        np.random.default_rng(1),
        n_neighbours=5,
    )
    np.testing.assert_array_equal(plain, sample_donors(focal, pool, 5, np.random.default_rng(1)))


def test_exclude_must_be_positions_inside_the_anndata(two_slide_counts):
    adata = two_slide_counts
    with pytest.raises(ValueError, match="outside"):
        rewired_niche_features(
            adata,
            adata.layers["counts"],
            np.arange(3),
            np.arange(90, 100),
            "spatial_x",
            np.random.default_rng(0),
            precomputed=True,
            exclude=np.array([adata.n_obs]),
        )
