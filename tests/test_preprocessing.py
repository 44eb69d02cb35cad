"""From counts to training-ready AnnData in one call, and donor pools."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellina.counterfactual import cluster_pool, observed_neighbour_pool, select_cells
from cellina.datasets import synthetic_tissue
from cellina.preprocessing import LOGNORM_LAYER, UNMASKED_CONNECTIVITIES, prepare_tissue


@pytest.fixture(scope="module")
def tissue():
    return synthetic_tissue(n_cells=1500, n_genes=150, n_slides=2, seed=1)


@pytest.fixture(scope="module")
def prepared(tissue):
    held = select_cells(tissue, "domain == 'tumour' and coarse_type == 'Myeloid'")
    return prepare_tissue(tissue, bandwidth=25.0, max_neighbours=30, library_key="slide", test_indices=held), held


def test_prepare_builds_everything_and_leaves_input_alone(tissue, prepared):
    out, held = prepared
    assert LOGNORM_LAYER not in tissue.layers and "spatial_x" not in tissue.obsm
    counts = out.layers["counts"]
    expected = np.log1p(counts.toarray() / counts.sum(axis=1).A * 1e4)
    np.testing.assert_allclose(out.layers[LOGNORM_LAYER].toarray(), expected, rtol=1e-5, atol=1e-5)
    graph = out.obsp["spatial_connectivities"]
    assert graph[held].nnz == 0 and graph[:, held].nnz == 0
    unmasked = out.obsp[UNMASKED_CONNECTIVITIES]
    assert unmasked[held].nnz > 0
    slides = out.obs["slide"].to_numpy()
    rows, cols = unmasked.nonzero()
    assert np.all(slides[rows] == slides[cols])
    phi = out.obsm["spatial_x"]
    assert phi.shape == (out.n_obs, out.n_vars)
    assert np.all(phi[held] == 0)
    record = out.uns["cellina"]["spatial_features"]["spatial_x"]
    assert record["layer"] == LOGNORM_LAYER and record["transform"] == "log1p_normalize_total"


def test_prepare_selects_genes_and_filters(tissue):
    out = prepare_tissue(tissue, bandwidth=25.0, n_top_genes=60, min_counts_cell=300, min_counts_gene=5)
    assert out.n_vars == 60
    totals = np.asarray(tissue.layers["counts"].sum(axis=1)).ravel()
    assert out.n_obs == int((totals >= 300).sum()) < tissue.n_obs
    assert np.all(totals[tissue.obs_names.get_indexer(out.obs_names)] >= 300)
    assert out.obsm["spatial_x"].shape == (out.n_obs, 60)


def test_prepare_takes_counts_from_x_when_layer_missing(tissue):
    bare = tissue.copy()
    del bare.layers["counts"]
    out = prepare_tissue(bare, bandwidth=25.0)
    assert (out.layers["counts"] != sp.csr_matrix(tissue.X)).nnz == 0


def test_prepare_refuses_non_counts(tissue):
    bad = tissue.copy()
    bad.layers["counts"] = bad.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="counts"):
        prepare_tissue(bad, bandwidth=25.0)
    with pytest.raises(ValueError, match="test_indices"):
        prepare_tissue(tissue, bandwidth=25.0, test_indices=[0], min_counts_cell=3)


def test_select_cells_accepts_queries_masks_and_positions(tissue):
    by_query = select_cells(tissue, "coarse_type == 'Myeloid'")
    mask = (tissue.obs["coarse_type"] == "Myeloid").to_numpy()
    np.testing.assert_array_equal(by_query, np.flatnonzero(mask))
    np.testing.assert_array_equal(select_cells(tissue, mask), by_query)
    np.testing.assert_array_equal(select_cells(tissue, by_query[::-1]), by_query)
    with pytest.raises(ValueError, match="no_such_column"):
        select_cells(tissue, "no_such_column == 1")
    with pytest.raises(IndexError, match=r"\[0, 1500\)"):
        select_cells(tissue, [5, 1500])
    with pytest.raises(ValueError, match="length"):
        select_cells(tissue, np.ones(3, dtype=bool))


def test_observed_neighbour_pool_is_the_published_construction(prepared):
    out, held = prepared
    pool = observed_neighbour_pool(
        out, held, connectivity_key=UNMASKED_CONNECTIVITIES, exclude="coarse_type == 'Myeloid'"
    )
    graph = out.obsp[UNMASKED_CONNECTIVITIES].toarray()
    expected = np.flatnonzero(graph[held].sum(axis=0) > 0)
    expected = expected[(out.obs["coarse_type"].to_numpy()[expected] != "Myeloid")]
    np.testing.assert_array_equal(pool, expected)
    with pytest.raises(KeyError, match="missing_graph"):
        observed_neighbour_pool(out, held, connectivity_key="missing_graph")
    with pytest.raises(ValueError, match="selects no cells"):
        observed_neighbour_pool(out, "coarse_type == 'nothing'")
    with pytest.raises(ValueError, match="empty"):
        observed_neighbour_pool(out, held, connectivity_key=UNMASKED_CONNECTIVITIES, exclude=np.ones(out.n_obs, bool))


def test_cluster_pool(tissue):
    pool = cluster_pool(tissue, "domain", ["tumour", "margin"])
    assert set(tissue.obs["domain"].to_numpy()[pool]) == {"tumour", "margin"}
    with pytest.raises(ValueError, match="necrosis"):
        cluster_pool(tissue, "domain", "necrosis")
    with pytest.raises(KeyError, match="niche_s"):
        cluster_pool(tissue, "niche_s", "0")


def test_coordinates_in_pixels_are_refused(tissue):
    in_pixels = tissue.copy()
    in_pixels.obsm["spatial"] = tissue.obsm["spatial"] / 0.12028
    with pytest.raises(ValueError, match="no neighbour within the bandwidth.*nearest cell.*pixels"):
        prepare_tissue(in_pixels, bandwidth=25.0, max_neighbours=30)


def test_the_graph_is_summarised_when_done(tissue):
    messages = []
    prepare_tissue(tissue, bandwidth=25.0, max_neighbours=30, progress=lambda f, m: messages.append(m))
    assert messages[-1].startswith("done: median ") and "neighbours per cell" in messages[-1]
