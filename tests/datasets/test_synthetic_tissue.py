"""Synthetic tissue generator and its exact counterfactual truth."""

from __future__ import annotations

import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.datasets import (
    COARSE_TYPES,
    DOMAINS,
    FINE_TO_COARSE,
    GRAPH_KEY,
    TRUTH_KEY,
    synthetic_tissue,
    true_counterfactual_edge,
    true_counterfactual_node,
    true_mean,
)


@pytest.fixture(scope="module")
def tissue() -> ad.AnnData:
    return synthetic_tissue(n_cells=2400, n_genes=300, n_slides=2, seed=3)


def _programme(adata: ad.AnnData, name: str) -> np.ndarray:
    return (adata.var["cellina_programme"] == name).to_numpy()


def _genes(adata: ad.AnnData, name: str) -> list[str]:
    return [str(g) for g in adata.uns[TRUTH_KEY]["programmes"][name]]


def _healthy_and_tumour_myeloid(adata: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    obs = adata.obs
    myeloid = (obs["coarse_type"] == "Myeloid").to_numpy()
    healthy = np.flatnonzero(myeloid & (obs["domain"] == "healthy").to_numpy())
    tumour = np.flatnonzero(myeloid & (obs["domain"] == "tumour").to_numpy())
    return healthy, tumour


def _tumour_myeloid_neighbour_pool(adata: ad.AnnData) -> np.ndarray:
    """The tutorial's donor pool: observed neighbours of tumour Myeloid cells, Myeloid excluded."""
    _, tumour = _healthy_and_tumour_myeloid(adata)
    pool = np.unique(adata.obsp[GRAPH_KEY][tumour].indices)
    return pool[(adata.obs["coarse_type"].to_numpy()[pool] != "Myeloid")]


# ------------------------------------------------------------------------------ generator


def test_same_seed_gives_identical_tissue_and_other_seed_differs():
    a = synthetic_tissue(n_cells=500, n_genes=120, seed=11)
    b = synthetic_tissue(n_cells=500, n_genes=120, seed=11)
    c = synthetic_tissue(n_cells=500, n_genes=120, seed=12)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.obsm["spatial"], b.obsm["spatial"])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert (a.X != c.X).nnz > 0
    assert not np.allclose(a.obsm["spatial"], c.obsm["spatial"])
    assert not np.array_equal(a.var["cellina_true_baseline"], c.var["cellina_true_baseline"])


def test_gene_parameters_do_not_depend_on_cell_number():
    small = synthetic_tissue(n_cells=300, n_genes=150, seed=5)
    large = synthetic_tissue(n_cells=900, n_genes=150, seed=5)
    pd.testing.assert_frame_equal(small.var, large.var)


def test_layout_and_dtypes(tissue):
    n, g = tissue.shape
    assert (n, g) == (2400, 300)
    assert sp.issparse(tissue.X) and tissue.X.format == "csr" and tissue.X.dtype == np.float32
    values = tissue.X.data
    assert np.all(values > 0) and np.array_equal(values, np.round(values))
    counts = tissue.layers["counts"]
    assert (counts != tissue.X).nnz == 0
    assert not np.shares_memory(counts.data, tissue.X.data)
    coords = tissue.obsm["spatial"]
    assert coords.shape == (n, 2) and coords.dtype == np.float64 and np.isfinite(coords).all()
    assert list(tissue.obs_names[:3]) == ["cell_0", "cell_1", "cell_2"]
    assert tissue.var_names.is_unique and tissue.obs_names.is_unique
    for key in ("slide", "domain", "cell_type", "coarse_type"):
        assert isinstance(tissue.obs[key].dtype, pd.CategoricalDtype), key
    assert list(tissue.obs["slide"].cat.categories) == ["slide_0", "slide_1"]
    for layer in ("cellina_true_mean", "cellina_true_mean_intrinsic"):
        assert tissue.layers[layer].dtype == np.float32 and tissue.layers[layer].shape == (n, g)
    state = tissue.obs["cellina_true_state"]
    assert state.between(0, 1).all() and state.std() > 0.1


def test_store_means_false_omits_dense_layers_but_keeps_counts():
    with_means = synthetic_tissue(n_cells=400, n_genes=120, seed=2)
    without = synthetic_tissue(n_cells=400, n_genes=120, seed=2, store_means=False)
    assert "cellina_true_mean" not in without.layers and "cellina_true_mean_intrinsic" not in without.layers
    assert (with_means.X != without.X).nnz == 0
    np.testing.assert_allclose(true_mean(without), with_means.layers["cellina_true_mean"], rtol=1e-6)


def test_cell_spacing_and_slides_do_not_overlap(tissue):
    coords = tissue.obsm["spatial"]
    slide = tissue.obs["slide"].to_numpy()
    x0 = coords[slide == "slide_0", 0]
    x1 = coords[slide == "slide_1", 0]
    assert x0.max() + 100 < x1.min()
    # area per cell of the slide's bounding box ~ 150-250 um^2
    xy = coords[slide == "slide_0"]
    area = np.ptp(xy[:, 0]) * np.ptp(xy[:, 1]) / xy.shape[0]
    assert 150 <= area <= 250
    graph = tissue.obsp[GRAPH_KEY]
    rows, cols = graph.nonzero()
    assert np.all(slide[rows] == slide[cols])
    assert graph.diagonal().sum() == 0


def test_every_slide_has_all_domains_in_target_fractions(tissue):
    for slide, obs in tissue.obs.groupby("slide", observed=True):
        fractions = obs["domain"].value_counts(normalize=True)
        assert set(fractions.index[fractions > 0]) == set(DOMAINS), slide
        assert 0.25 <= fractions["tumour"] <= 0.35
        assert 0.15 <= fractions["margin"] <= 0.25


def test_margin_lies_between_tumour_and_healthy(tissue):
    """Tumour cells border margin cells far more often than healthy ones."""
    graph = tissue.obsp[GRAPH_KEY]
    domain = tissue.obs["domain"].to_numpy()
    tumour = np.flatnonzero(domain == "tumour")
    neighbour_domains = pd.Series(domain[graph[tumour].indices]).value_counts()
    assert neighbour_domains.get("margin", 0) > 5 * neighbour_domains.get("healthy", 0)


def test_cell_type_structure(tissue):
    obs = tissue.obs
    assert (obs["cell_type"].astype(str).map(FINE_TO_COARSE) == obs["coarse_type"].astype(str)).all()
    table = pd.crosstab(obs["coarse_type"], obs["domain"])
    assert set(table.index) == set(COARSE_TYPES)
    assert ((table > 0).sum(axis=1) >= 2).all()
    assert (table.loc["Myeloid"] > 0).all()
    assert (obs["coarse_type"] == "Myeloid").mean() > 0.05
    by_domain = pd.crosstab(obs["domain"], obs["cell_type"], normalize="index")
    assert by_domain.loc["tumour", "epi_tumour"] > 0.3 > by_domain.loc["healthy", "epi_tumour"]
    assert by_domain.loc["healthy", "epi_normal"] > 0.3 > by_domain.loc["tumour", "epi_normal"]
    assert by_domain.loc["tumour", "fib_caf"] > 3 * by_domain.loc["healthy", "fib_caf"]


def test_library_sizes_are_plausible_and_scale_with_the_median():
    small = synthetic_tissue(n_cells=800, n_genes=200, seed=1, library_size_median=500.0, store_means=False)
    large = synthetic_tissue(n_cells=800, n_genes=200, seed=1, library_size_median=2000.0, store_means=False)
    lib_small = np.asarray(small.X.sum(axis=1)).ravel()
    lib_large = np.asarray(large.X.sum(axis=1)).ravel()
    assert 400 <= np.median(lib_small) <= 1000
    assert lib_small.min() > 20
    assert 3.5 <= np.median(lib_large) / np.median(lib_small) <= 4.5
    # counts are over-dispersed relative to Poisson: variance well above the mean
    dense = small.X.toarray()
    mean, var = dense.mean(axis=0), dense.var(axis=0)
    busy = mean > 2
    assert busy.sum() > 20
    assert np.median(var[busy] / mean[busy]) > 1.3


def test_counts_follow_the_stored_means(tissue):
    """Observed totals per gene track the exact expected totals (NB noise averages out)."""
    observed = np.asarray(tissue.X.sum(axis=0)).ravel()
    expected = tissue.layers["cellina_true_mean"].sum(axis=0, dtype=np.float64)
    assert np.all(expected > 50)
    np.testing.assert_allclose(observed, expected, rtol=0.2)
    assert np.corrcoef(np.log(observed + 1), np.log(expected))[0, 1] > 0.98


def test_gene_programmes_are_disjoint_and_mostly_null(tissue):
    programmes = tissue.uns[TRUTH_KEY]["programmes"]
    names = {
        key: set(map(str, programmes[key]))
        for key in ("state", "ligand", "composition_response", "ligand_response", "null")
    }
    names["marker"] = {str(g) for genes in programmes["markers"].values() for g in genes}
    own = programmes["type_response"]
    assert set(own) == set(COARSE_TYPES)
    names["type_response"] = {str(g) for genes in own.values() for g in genes}
    union = set()
    for key, genes in names.items():
        assert genes, key
        assert not genes & union, key
        union |= genes
        assert set(tissue.var_names[_programme(tissue, key)]) == genes, key
    assert union == set(tissue.var_names)
    assert _programme(tissue, "null").mean() >= 0.6
    assert all(re.fullmatch(r"[A-Z]{3,4}\d+", g) for g in tissue.var_names)
    # subtypes of a lineage share its markers, also across annotated types (malignant epithelium)
    markers = programmes["markers"]
    assert set(markers["myeloid_1"]) & set(markers["myeloid_2"])
    assert set(markers["myeloid_1"]) != set(markers["myeloid_2"])
    assert set(markers["epi_normal"]) & set(markers["epi_tumour"])
    assert set(markers["fib_normal"]) & set(markers["fib_caf"])


def test_null_genes_have_the_same_mean_per_unit_size_in_every_cell(tissue):
    null = _programme(tissue, "null")
    per_size = tissue.layers["cellina_true_mean"][:, null] / tissue.obs["cellina_true_size"].to_numpy()[:, None]
    expected = np.exp(tissue.var["cellina_true_baseline"].to_numpy()[null])
    np.testing.assert_allclose(per_size, np.broadcast_to(expected, per_size.shape), rtol=1e-6)


def _own_response(tissue, coarse_type):
    """Genes of a coarse type's own composition response, from the stored effect matrix."""
    truth = tissue.uns[TRUTH_KEY]
    return tissue.varm[truth["type_response_key"]][:, list(truth["coarse_types"]).index(coarse_type)]


def test_niche_effects_touch_only_the_response_programmes(tissue):
    ratio = np.log(tissue.layers["cellina_true_mean"] / tissue.layers["cellina_true_mean_intrinsic"])
    shared = _programme(tissue, "composition_response") | _programme(tissue, "ligand_response")
    coarse = tissue.obs["coarse_type"].astype(str).to_numpy()
    for name in COARSE_TYPES:
        cells = coarse == name
        own = _own_response(tissue, name) != 0
        assert own.sum() >= _programme(tissue, "type_response").sum() // len(COARSE_TYPES), name
        # a type's own response genes move with its niche; nothing outside them and the shared programmes does
        assert np.abs(ratio[np.ix_(cells, own)]).max() > 0.3, name
        assert np.abs(ratio[np.ix_(cells, ~(own | shared))]).max() < 1e-6, name
    # the ligand senders make more ligand in a tumour niche
    ligand = _programme(tissue, "ligand")
    for name in ("CAF", "Myeloid", "Endothelial"):
        assert np.all(_own_response(tissue, name)[ligand] > 0), name
    myeloid = coarse == "Myeloid"
    assert np.abs(ratio[np.ix_(myeloid, shared)]).mean() > 0.2
    # the shared programmes move in proportion to each type's responsiveness
    tcell, bcell = coarse == "T_cell", coarse == "B_cell"
    comp = _programme(tissue, "composition_response")
    c = tissue.obs["cellina_true_composition"].to_numpy()
    slope = [
        np.abs(ratio[np.ix_(cells & (c > 0.3), comp)]).mean() / c[cells & (c > 0.3)].mean() for cells in (tcell, bcell)
    ]
    assert slope[0] > 2 * slope[1]


def test_stored_niche_signals_match_their_definition(tissue):
    """c and l recomputed here from the graph, the types and the intrinsic layer."""
    graph = tissue.obsp[GRAPH_KEY].astype(np.float64)
    truth = tissue.uns[TRUTH_KEY]
    degree = np.asarray(graph.sum(axis=1)).ravel()
    assert (degree > 0).mean() > 0.99
    has = degree > 0
    assoc = tissue.obs["cell_type"].isin(list(truth["tumour_associated"])).to_numpy().astype(float)
    c = np.zeros(tissue.n_obs)
    c[has] = (graph @ assoc)[has] / degree[has]
    np.testing.assert_allclose(tissue.obs["cellina_true_composition"], c, atol=1e-12)

    # q: the cell's expected ligand expression (with its own niche induction) over its intrinsic total
    intrinsic = tissue.layers["cellina_true_mean_intrinsic"].astype(np.float64)
    mean = tissue.layers["cellina_true_mean"].astype(np.float64)
    cp10k = 1e4 * mean / intrinsic.sum(axis=1, keepdims=True)
    q = np.log1p(cp10k[:, _programme(tissue, "ligand")]).mean(axis=1)
    l_ref = float(truth["l_ref"])
    l = np.full(tissue.n_obs, l_ref)
    l[has] = (graph @ q)[has] / degree[has]
    np.testing.assert_allclose(tissue.obs["cellina_true_ligand"], l, rtol=1e-5)
    healthy = (tissue.obs["domain"] == "healthy").to_numpy() & has
    assert abs(l[healthy].mean() - l_ref) < 1e-4
    sender = tissue.obs["cell_type"].isin(["fib_caf", "myeloid_2", "endothelial"]).to_numpy()
    assert q[sender].mean() > q[~sender].mean() + 1.0


def test_stored_graph_is_the_library_graph_with_the_truth_parameters(tissue):
    from cellina.spatial import spatial_neighbors

    params = tissue.uns[TRUTH_KEY]["graph"]
    rebuilt = spatial_neighbors(
        tissue,
        bandwidth=float(params["bandwidth"]),
        max_neighbours=int(params["max_neighbours"]),
        cutoff=float(params["cutoff"]),
        kernel=str(params["kernel"]),
        library_key="slide",
        inplace=False,
    )
    stored = tissue.obsp[GRAPH_KEY]
    assert (rebuilt != stored).nnz == 0


def test_progress_is_reported_from_zero_to_one():
    seen: list[tuple[float, str]] = []
    synthetic_tissue(n_cells=300, n_genes=120, seed=0, progress=lambda f, m: seen.append((f, m)))
    fractions = [f for f, _ in seen]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(b >= a for a, b in zip(fractions, fractions[1:], strict=False))
    assert all(isinstance(m, str) and m for _, m in seen)


def test_composition_override():
    only = {d: {"t_cell": 1.0, "myeloid_1": 1.0} for d in DOMAINS}
    adata = synthetic_tissue(n_cells=400, n_genes=120, seed=0, composition=only)
    assert set(adata.obs["cell_type"].astype(str)) == {"t_cell", "myeloid_1"}
    assert adata.uns[TRUTH_KEY]["composition"]["tumour"]["t_cell"] == pytest.approx(0.5)


# ------------------------------------------------------------------------------ truth


def test_true_mean_reproduces_the_stored_layers(tissue):
    np.testing.assert_allclose(true_mean(tissue), tissue.layers["cellina_true_mean"], rtol=1e-6)
    np.testing.assert_allclose(true_mean(tissue, niche=False), tissue.layers["cellina_true_mean_intrinsic"], rtol=1e-6)
    idx = np.array([5, 0, 2399, 5])
    np.testing.assert_allclose(true_mean(tissue, idx), tissue.layers["cellina_true_mean"][idx], rtol=1e-6)
    mask = (tissue.obs["domain"] == "margin").to_numpy()
    np.testing.assert_allclose(true_mean(tissue, mask), tissue.layers["cellina_true_mean"][mask], rtol=1e-6)


def test_edge_with_the_true_neighbours_reproduces_the_factual_mean(tissue):
    graph = tissue.obsp[GRAPH_KEY]
    focal = np.arange(0, tissue.n_obs, 3)
    donors = [graph[i].indices for i in focal]
    weights = [graph[i].data for i in focal]
    counterfactual = true_counterfactual_edge(tissue, focal, donors, weights=weights)
    np.testing.assert_allclose(counterfactual, true_mean(tissue, focal), rtol=1e-12)
    np.testing.assert_allclose(true_counterfactual_edge(tissue, focal, graph[focal]), counterfactual, rtol=1e-12)
    # uniform weights over the same neighbours are a different (but close) neighbourhood
    uniform = true_counterfactual_edge(tissue, focal, donors)
    assert not np.allclose(uniform, counterfactual, rtol=1e-6)


def test_edge_donors_as_a_padded_2d_array(tissue):
    focal = np.array([3, 10, 20])
    donors = np.array([[1, 2, 3, 4], [5, 6, 7, 7], [8, 9, 10, 11]])
    weights = np.array([[1.0, 1.0, 0.5, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    as_2d = true_counterfactual_edge(tissue, focal, donors, weights=weights)
    as_list = true_counterfactual_edge(
        tissue, focal, [[1, 2, 3], [5, 6, 7], [8, 9, 10, 11]], weights=[[1, 1, 0.5], [1, 1, 2], [1, 1, 1, 1]]
    )
    np.testing.assert_allclose(as_2d, as_list, rtol=1e-12)


def test_edge_shared_pool_equals_the_pool_given_to_every_cell(tissue):
    healthy, _ = _healthy_and_tumour_myeloid(tissue)
    pool = _tumour_myeloid_neighbour_pool(tissue)
    shared = true_counterfactual_edge(tissue, healthy, pool)
    per_cell = true_counterfactual_edge(tissue, healthy, [pool] * healthy.size)
    np.testing.assert_allclose(shared, per_cell, rtol=1e-12)


def test_healthy_myeloid_moved_into_tumour_changes_only_response_genes(tissue):
    healthy, tumour = _healthy_and_tumour_myeloid(tissue)
    pool = _tumour_myeloid_neighbour_pool(tissue)
    factual = true_mean(tissue, healthy)
    moved = true_counterfactual_edge(tissue, healthy, pool)
    change = np.log(moved.mean(axis=0) / factual.mean(axis=0))
    composition = _programme(tissue, "composition_response")
    ligand = _programme(tissue, "ligand_response")
    own_effect = _own_response(tissue, "Myeloid")
    own = own_effect != 0
    response = composition | ligand | own
    np.testing.assert_allclose(change[~response], 0.0, atol=1e-10)
    size = np.abs(change[response])
    assert 0.5 <= np.median(size) <= 2.0
    assert size.max() <= 3.0 and size.min() > 0.2
    # up- and down-regulated genes, in the direction of their coefficients
    for mask, effect in (
        (composition, tissue.var["cellina_true_composition_effect"].to_numpy()),
        (ligand, tissue.var["cellina_true_ligand_effect"].to_numpy()),
        (own, own_effect),
    ):
        np.testing.assert_array_equal(np.sign(change[mask]), np.sign(effect[mask]))
    # the true tumour Myeloid means move the same way as the counterfactual (not identically: the
    # pool holds no Myeloid donors, whose ligand the real tumour neighbourhoods do have)
    observed = np.log(true_mean(tissue, tumour).mean(axis=0) / factual.mean(axis=0))
    assert np.corrcoef(observed[response], change[response])[0, 1] > 0.85


def test_empty_neighbourhood_and_niche_false_give_intrinsic_means(tissue):
    focal = np.array([1, 2, 3])
    intrinsic = true_mean(tissue, focal, niche=False)
    empty = true_counterfactual_edge(tissue, focal, [[], [], []])
    np.testing.assert_allclose(empty, intrinsic, rtol=1e-12)
    zero_weights = true_counterfactual_edge(tissue, focal, np.array([4, 5]), weights=np.zeros(2))
    np.testing.assert_allclose(zero_weights, intrinsic, rtol=1e-12)
    np.testing.assert_allclose(true_counterfactual_edge(tissue, focal, np.array([4]), niche=False), intrinsic)


def test_node_perturbation_of_a_null_gene_changes_nothing(tissue):
    focal = np.arange(0, tissue.n_obs, 5)
    null_gene = _genes(tissue, "null")[0]
    shifted = true_counterfactual_node(tissue, focal, {null_gene: 3.0})
    np.testing.assert_allclose(shifted, true_mean(tissue, focal), rtol=1e-12)


def test_node_perturbation_of_ligands_moves_ligand_response_of_responsive_cells(tissue):
    obs = tissue.obs
    focal = np.flatnonzero((obs["coarse_type"] == "Myeloid").to_numpy())
    up = true_counterfactual_node(tissue, focal, {g: 1.0 for g in _genes(tissue, "ligand")})
    change = np.log(up / true_mean(tissue, focal))
    ligand = _programme(tissue, "ligand_response")
    gamma = tissue.var["cellina_true_ligand_effect"].to_numpy()
    has_neighbours = np.diff(tissue.obsp[GRAPH_KEY][focal].indptr) > 0
    assert np.all(np.sign(change[np.ix_(has_neighbours, ligand)]) == np.sign(gamma[ligand]))
    assert np.abs(change[:, ligand]).mean() > 0.5
    np.testing.assert_allclose(change[:, ~ligand], 0.0, atol=1e-10)
    # a knockout goes the other way; non-responsive focal cells do not move
    down = true_counterfactual_node(tissue, focal, {g: -2.0 for g in _genes(tissue, "ligand")})
    down_change = np.log(down / true_mean(tissue, focal))[np.ix_(has_neighbours, ligand)]
    assert np.all(np.sign(down_change) == -np.sign(gamma[ligand]))
    cafs = np.flatnonzero((obs["coarse_type"] == "CAF").to_numpy())  # deaf to the ligand signal
    unmoved = true_counterfactual_node(tissue, cafs, {g: 1.0 for g in _genes(tissue, "ligand")})
    np.testing.assert_allclose(unmoved, true_mean(tissue, cafs), rtol=1e-12)


def test_node_perturbation_by_group(tissue):
    obs = tissue.obs
    focal = np.flatnonzero((obs["coarse_type"] == "Myeloid").to_numpy())
    ligands = _genes(tissue, "ligand")
    everyone = {g: 1.5 for g in ligands}
    per_group = {ct: pd.Series(everyone) for ct in obs["coarse_type"].cat.categories}
    np.testing.assert_allclose(
        true_counterfactual_node(tissue, focal, per_group, groupby="coarse_type"),
        true_counterfactual_node(tissue, focal, everyone),
        rtol=1e-12,
    )
    base = true_mean(tissue, focal)
    ligand = _programme(tissue, "ligand_response")
    only_fibroblasts = true_counterfactual_node(tissue, focal, {"Fibroblast": everyone}, groupby="coarse_type")
    all_senders = true_counterfactual_node(tissue, focal, everyone)
    partial = np.abs(np.log(only_fibroblasts / base)[:, ligand]).mean()
    full = np.abs(np.log(all_senders / base)[:, ligand]).mean()
    assert 0 < partial < full
    # only cells with a Fibroblast neighbour can change
    coarse = obs["coarse_type"].to_numpy()
    graph = tissue.obsp[GRAPH_KEY]
    no_fib = np.array([not np.any(coarse[graph[i].indices] == "Fibroblast") for i in focal])
    assert no_fib.any()
    np.testing.assert_allclose(only_fibroblasts[no_fib], base[no_fib], rtol=1e-12)


def test_node_renormalize_dilutes_ligands_when_other_genes_rise(tissue):
    focal = np.flatnonzero((tissue.obs["coarse_type"] == "Myeloid").to_numpy())[:50]
    null_genes = _genes(tissue, "null")[:20]
    kept = true_counterfactual_node(tissue, focal, {g: 3.0 for g in null_genes})
    diluted = true_counterfactual_node(tissue, focal, {g: 3.0 for g in null_genes}, renormalize=True)
    base = true_mean(tissue, focal)
    np.testing.assert_allclose(kept, base, rtol=1e-12)
    ligand = _programme(tissue, "ligand_response")
    gamma = tissue.var["cellina_true_ligand_effect"].to_numpy()[ligand]
    change = np.log(diluted / base)[:, ligand]
    # less ligand in the neighbourhood: opposite sign to the ligand coefficients
    assert np.all(np.sign(change[:, gamma > 0]) < 0) and np.all(np.sign(change[:, gamma < 0]) > 0)


def test_h5ad_round_trip_keeps_the_truth(tissue, tmp_path):
    path = tmp_path / "tissue.h5ad"
    tissue.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_allclose(true_mean(back), back.layers["cellina_true_mean"], rtol=1e-6)
    healthy, _ = _healthy_and_tumour_myeloid(back)
    pool = _tumour_myeloid_neighbour_pool(back)
    np.testing.assert_allclose(
        true_counterfactual_edge(back, healthy, pool), true_counterfactual_edge(tissue, healthy, pool), rtol=1e-12
    )
    ligands = _genes(back, "ligand")
    np.testing.assert_allclose(
        true_counterfactual_node(back, healthy, {g: 1.0 for g in ligands}),
        true_counterfactual_node(tissue, healthy, {g: 1.0 for g in ligands}),
        rtol=1e-12,
    )
    assert back.uns[TRUTH_KEY]["params"]["seed"] == 3
    pd.testing.assert_frame_equal(back.var, tissue.var)


def test_truth_functions_leave_adata_untouched(tissue):
    before_obs = tissue.obs.copy()
    before_keys = (set(tissue.obsp), set(tissue.layers), set(tissue.uns), set(tissue.obsm))
    before_x = tissue.X.copy()
    true_mean(tissue, [1, 2])
    true_counterfactual_edge(tissue, [1, 2], np.array([3, 4]))
    true_counterfactual_node(tissue, [1, 2], {_genes(tissue, "ligand")[0]: 1.0})
    with pytest.raises(ValueError):
        true_counterfactual_node(tissue, [1, 2], {"NOT_A_GENE": 1.0})
    pd.testing.assert_frame_equal(tissue.obs, before_obs)
    assert (set(tissue.obsp), set(tissue.layers), set(tissue.uns), set(tissue.obsm)) == before_keys
    assert (tissue.X != before_x).nnz == 0


# ------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"n_cells": 0}, "n_cells"),
        ({"n_cells": -5}, "n_cells"),
        ({"n_cells": 2.5}, "n_cells"),
        ({"n_cells": 30, "n_slides": 2}, "n_cells"),
        ({"n_genes": 40}, "n_genes"),
        ({"n_slides": 0}, "n_slides"),
        ({"seed": -1}, "seed"),
        ({"library_size_median": 0.0}, "library_size_median"),
        ({"niche_bandwidth": float("nan")}, "niche_bandwidth"),
        ({"niche_max_neighbours": 0}, "niche_max_neighbours"),
        ({"tumour_fraction": 0.7, "margin_fraction": 0.4}, "tumour_fraction"),
        ({"composition": {"tumour": {"t_cell": 1.0}}}, "composition"),
        ({"composition": {d: {"alien": 1.0} for d in DOMAINS}}, "alien"),
        ({"progress": "yes"}, "progress"),
    ],
)
def test_generator_rejects_bad_arguments_by_name(kwargs, culprit):
    args = {"n_cells": 200, "n_genes": 120, **kwargs}
    with pytest.raises(ValueError, match=culprit):
        synthetic_tissue(**args)


def test_truth_rejects_bad_indices_by_name(tissue):
    n = tissue.n_obs
    with pytest.raises(ValueError, match="focal"):
        true_counterfactual_edge(tissue, [0, n], np.array([1]))
    with pytest.raises(ValueError, match="focal"):
        true_counterfactual_node(tissue, [-1], {_genes(tissue, "ligand")[0]: 1.0})
    with pytest.raises(ValueError, match="donors"):
        true_counterfactual_edge(tissue, [0], np.array([n + 3]))
    with pytest.raises(ValueError, match=r"donors\[1\]"):
        true_counterfactual_edge(tissue, [0, 1], [[2], [n]])
    with pytest.raises(ValueError, match="donor sets"):
        true_counterfactual_edge(tissue, [0, 1], [[2], [3], [4]])
    with pytest.raises(ValueError, match="empty pool"):
        true_counterfactual_edge(tissue, [0], np.array([], dtype=int))
    with pytest.raises(ValueError, match="weights"):
        true_counterfactual_edge(tissue, [0], np.array([1, 2]), weights=np.ones(3))
    with pytest.raises(ValueError, match="weights"):
        true_counterfactual_edge(tissue, [0], np.array([1, 2]), weights=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="sparse donors"):
        true_counterfactual_edge(tissue, [0, 1], tissue.obsp[GRAPH_KEY][:3])
    with pytest.raises(ValueError, match="indices"):
        true_mean(tissue, np.array([0.5]))
    with pytest.raises(ValueError, match="indices"):
        true_mean(tissue, np.ones(n + 1, dtype=bool))


def test_truth_rejects_unknown_genes_groups_and_columns(tissue):
    ligand = _genes(tissue, "ligand")[0]
    with pytest.raises(ValueError, match="NOT_A_GENE"):
        true_counterfactual_node(tissue, [0], {ligand: 1.0, "NOT_A_GENE": 1.0})
    with pytest.raises(ValueError, match="Martian"):
        true_counterfactual_node(tissue, [0], {"Martian": {ligand: 1.0}}, groupby="coarse_type")
    with pytest.raises(ValueError, match="no_such_column"):
        true_counterfactual_node(tissue, [0], {"Myeloid": {ligand: 1.0}}, groupby="no_such_column")
    with pytest.raises(ValueError, match=ligand):
        true_counterfactual_node(tissue, [0], {ligand: float("inf")})


def test_truth_needs_the_whole_generated_tissue(tissue):
    with pytest.raises(ValueError, match="subset"):
        true_mean(tissue[:100].copy())
    plain = ad.AnnData(X=sp.csr_matrix((5, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=TRUTH_KEY):
        true_mean(plain)
    broken = tissue.copy()
    del broken.obsp[GRAPH_KEY]
    with pytest.raises(ValueError, match=GRAPH_KEY):
        true_counterfactual_edge(broken, [0], np.array([1]))
