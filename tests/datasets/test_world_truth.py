"""Exact truth of the evaluation worlds: factual means, edge and node interventions, gene sets."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina.datasets import (
    WORLD_KEY,
    TissueTruth,
    TruthKeyError,
    WorldTruth,
    synthetic_tissue,
    true_counterfactual_edge,
    true_mean,
    truth_for,
)
from cellina.datasets.worlds import spec_from_dict


def _healthy_and_tumour(adata: ad.AnnData, coarse: str) -> tuple[np.ndarray, np.ndarray]:
    obs = adata.obs
    of_type = (obs["coarse_type"] == coarse).to_numpy()
    healthy = np.flatnonzero(of_type & (obs["domain"] == "healthy").to_numpy())
    tumour = np.flatnonzero(of_type & (obs["domain"] == "tumour").to_numpy())
    return healthy, tumour


# ------------------------------------------------------------------ the documented formula, by hand


def _dose(channel: dict, x: float) -> float:
    if channel["dose"] == "linear":
        return x
    if channel["dose"] == "saturating":
        k = channel["half_saturation"]
        return (1 + k) * max(x, 0.0) / (max(x, 0.0) + k)
    return 1.0 / (1.0 + np.exp(-(x - channel["threshold"]) / channel["width"]))


def _intrinsic(adata: ad.AnnData, cell: int) -> np.ndarray:
    fine = list(adata.uns[WORLD_KEY]["fine_types"]).index(adata.obs["cell_type"].iloc[cell])
    return (
        adata.var["cellina_true_baseline"].to_numpy()
        + adata.varm["cellina_world_type_effects"][:, fine]
        + adata.obs["cellina_true_state"].iloc[cell] * adata.var["cellina_true_state_effect"].to_numpy()
    )


def _hand_mean(adata: ad.AnnData, cell: int, sensed: dict[str, float]) -> np.ndarray:
    """size * exp(intrinsic + batch + sum_c R_c[:, k] (f_c(x) - f_ref)) for one cell, from the AnnData."""
    truth = adata.uns[WORLD_KEY]
    k = list(truth["coarse_types"]).index(adata.obs["coarse_type"].iloc[cell])
    eta = _intrinsic(adata, cell) + adata.varm["cellina_world_batch"][:, adata.obs["slide"].cat.codes.iloc[cell]]
    for name, level in sensed.items():
        ch = truth["channels"][name]
        if np.isfinite(level):
            x = (level - ch["low"]) / (ch["high"] - ch["low"])
            eta = eta + adata.varm[ch["response_key"]][:, k] * (_dose(ch, x) - ch["reference"])
    return adata.obs["cellina_true_size"].iloc[cell] * np.exp(eta)


def _hand_property(
    adata: ad.AnnData, name: str, cell: int, shift: dict[str, float] | None = None, renormalize: bool = False
) -> float:
    ch = adata.uns[WORLD_KEY]["channels"][name]
    if ch["sensed"] == "fraction":
        return float(adata.obs["cell_type"].iloc[cell] in set(ch["senders"]))
    if ch["sensed"] == "structure":
        return float(adata.obs["cellina_world_structure"].iloc[cell])
    if ch["sensed"] == "gradient":
        return float(adata.obs["cellina_world_gradient"].iloc[cell])
    m = np.exp(_intrinsic(adata, cell))
    total = m.sum()
    factor = np.ones_like(m)
    for gene, lfc in (shift or {}).items():
        factor[adata.var_names.get_loc(gene)] = np.exp(lfc)
    if renormalize:
        total = (m * factor).sum()
    lig = [adata.var_names.get_loc(g) for g in ch["ligand_genes"]]
    return float(np.mean(np.log1p(1e4 * m[lig] * factor[lig] / total)))


def _kernel_neighbours(adata: ad.AnnData, cell: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Other cells of the same slide within the channel's reach, and their kernel weights (brute force)."""
    ch = adata.uns[WORLD_KEY]["channels"][name]
    xy = adata.obsm["spatial"]
    d = np.hypot(*(xy - xy[cell]).T)
    same = (adata.obs["slide"] == adata.obs["slide"].iloc[cell]).to_numpy()
    near = np.flatnonzero(same & (d <= ch["reach"]) & (np.arange(adata.n_obs) != cell))
    w = {
        "contact": np.ones(near.size),
        "gaussian": np.exp(-0.5 * (d[near] / ch["scale"]) ** 2),
        "exponential": np.exp(-d[near] / ch["scale"]),
    }[ch["kernel"]]
    return near, w


def _hand_sensed(adata, cell, shift=None, renormalize=False) -> dict[str, float]:
    out = {}
    for name in adata.uns[WORLD_KEY]["channel_order"]:
        near, w = _kernel_neighbours(adata, cell, name)
        p = np.array([_hand_property(adata, name, u, shift, renormalize) for u in near])
        out[name] = float((w * p).sum() / w.sum()) if w.sum() > 0 else np.nan
    return out


# ------------------------------------------------------------------------------- factual truth


@pytest.mark.parametrize("world", ["ligand_world", "vessel_world"])
def test_factual_mean_is_the_documented_formula(world, request):
    adata = request.getfixturevalue(world)
    truth = truth_for(adata)
    cells = [3, 400, 1201, 2399]
    got = truth.mean(cells)
    for row, cell in enumerate(cells):
        sensed = _hand_sensed(adata, cell)
        for name in truth.channel_names:
            assert sensed[name] == pytest.approx(adata.obs[f"cellina_world_sensed_{name}"].iloc[cell], rel=1e-9)
        np.testing.assert_allclose(got[row], _hand_mean(adata, cell, sensed), rtol=1e-9)


def test_stored_sensed_levels_are_recomputed_from_the_anndata(vessel_world):
    stored = vessel_world.obs[[f"cellina_world_sensed_{c}" for c in ("perf", "hyp")]].to_numpy()
    np.testing.assert_allclose(truth_for(vessel_world).sensed(), stored, rtol=1e-12)


@pytest.mark.parametrize("world", ["ligand_world", "vessel_world"])
def test_truth_reproduces_the_sampled_counts(world, request):
    adata = request.getfixturevalue(world)
    mean = truth_for(adata).mean()
    counts = adata.layers["counts"].toarray()
    ratio = counts.sum(axis=0) / mean.sum(axis=0)
    big = mean.sum(axis=0) > 400  # genes with enough counts for the ratio to be precise
    assert big.sum() > 40
    assert np.abs(ratio[big] - 1).max() < 0.15
    assert abs(np.median(ratio[big]) - 1) < 0.03
    # the niche part too: responsive genes of each large (domain, type) group
    truth = truth_for(adata)
    for (domain, coarse), rows in adata.obs.groupby(["domain", "coarse_type"], observed=True).indices.items():
        if rows.size < 150 or coarse == "Malignant":
            continue
        genes = truth.responsive(coarse) & (mean[rows].sum(axis=0) > 300)
        group_ratio = counts[rows][:, genes].sum(axis=0) / mean[rows][:, genes].sum(axis=0)
        assert np.abs(group_ratio - 1).max() < 0.25, (domain, coarse)


# --------------------------------------------------------------------------------- edge truth


@pytest.mark.parametrize("world", ["ligand_world", "vessel_world"])
def test_edge_with_own_neighbours_at_equal_weight_is_the_hand_computation(world, request):
    adata = request.getfixturevalue(world)
    truth = truth_for(adata)
    name = truth.channel_names[0]
    cells = [10, 900, 1800]
    donors = [_kernel_neighbours(adata, cell, name)[0] for cell in cells]
    got = truth.edge(cells, donors)
    for row, cell in enumerate(cells):
        # every channel senses the donors at weight 1 each, whatever its kernel
        sensed = {c: float(np.mean([_hand_property(adata, c, u) for u in donors[row]])) for c in truth.channel_names}
        np.testing.assert_allclose(got[row], _hand_mean(adata, cell, sensed), rtol=1e-9)


def test_edge_with_own_contact_neighbours_reproduces_the_factual_mean(ligand_world):
    # the contact kernel weighs every neighbour equally, like donors; the other channel is then
    # the only one that differs, so compare on genes only the contact channel moves
    truth = truth_for(ligand_world)
    cells = np.arange(0, 2400, 97)
    donors = [_kernel_neighbours(ligand_world, c, "frac")[0] for c in cells]
    only_contact = (ligand_world.varm["cellina_world_response_lig"] == 0).all(axis=1)
    np.testing.assert_allclose(
        truth.edge(cells, donors)[:, only_contact], truth.mean(cells)[:, only_contact], rtol=1e-12
    )


@pytest.mark.parametrize("world", ["ligand_world", "vessel_world"])
def test_rewiring_healthy_cells_to_tumour_donors_moves_exactly_the_responsive_genes(world, request):
    adata = request.getfixturevalue(world)
    truth = truth_for(adata)
    for coarse in ("Myeloid", "Fibroblast", "T_cell"):
        healthy, tumour = _healthy_and_tumour(adata, coarse)
        pool = np.flatnonzero((adata.obs["domain"] == "tumour").to_numpy() & (adata.obs["coarse_type"] != coarse))
        donors = np.random.default_rng(0).choice(pool, size=(healthy.size, 30))
        factual, rewired = truth.mean(healthy), truth.edge(healthy, donors)
        responsive = truth.responsive(coarse)
        assert 0 < responsive.sum() < adata.n_vars
        np.testing.assert_array_equal(rewired[:, ~responsive], factual[:, ~responsive])
        change = np.abs(np.log(rewired[:, responsive].mean(axis=0) / factual[:, responsive].mean(axis=0)))
        assert change.min() > 1e-3 and change.mean() > 0.05
        assert truth.null_genes().sum() > 0 and not (truth.null_genes() & responsive).any()


def test_edge_accepts_a_shared_pool_and_sparse_weights(ligand_world):
    import scipy.sparse as sp

    truth = truth_for(ligand_world)
    focal, pool = np.array([5, 6, 7]), np.array([100, 200, 300, 300])
    shared = truth.edge(focal, pool)
    np.testing.assert_allclose(shared, truth.edge(focal, np.tile(pool, (3, 1))), rtol=1e-12)
    rows = sp.csr_matrix(([1.0, 1.0, 2.0] * 3, [100, 200, 300] * 3, [0, 3, 6, 9]), shape=(3, ligand_world.n_obs))
    np.testing.assert_allclose(truth.edge(focal, rows), shared, rtol=1e-12)
    # an empty donor set means no niche signal at all: each channel sits at its reference
    empty = truth.edge([5], [np.array([], dtype=int)])
    np.testing.assert_allclose(empty[0], _hand_mean(ligand_world, 5, {}), rtol=1e-9)


# --------------------------------------------------------------------------------- node truth


def test_node_with_an_empty_table_is_the_factual_mean(ligand_world):
    truth = truth_for(ligand_world)
    cells = np.arange(0, 2400, 50)
    np.testing.assert_array_equal(truth.node(cells, {}), truth.mean(cells))
    np.testing.assert_array_equal(truth.node(cells, {}, groupby="coarse_type", renormalize=True), truth.mean(cells))


def test_node_moves_only_when_a_sensed_ligand_is_shifted(ligand_world, vessel_world):
    truth = truth_for(ligand_world)
    cells = np.arange(0, 2400, 25)
    factual = truth.mean(cells)
    ligand = list(ligand_world.uns[WORLD_KEY]["channels"]["lig"]["ligand_genes"])
    other = [g for g in ligand_world.var_names if g.startswith("mk_")][:5]
    np.testing.assert_array_equal(truth.node(cells, {g: 2.0 for g in other}), factual)
    shifted = truth.node(cells, {g: 2.0 for g in ligand})
    moved = np.abs(np.log(shifted / factual)).max(axis=0) > 1e-9
    lig_genes = (ligand_world.varm["cellina_world_response_lig"] != 0).any(axis=1)
    np.testing.assert_array_equal(moved, lig_genes)
    # renormalising makes a shift of other genes dilute the ligand: a (small) change
    diluted = truth.node(cells, {g: 2.0 for g in other}, renormalize=True)
    assert np.abs(np.log(diluted / factual))[:, lig_genes].max() > 1e-6
    # a world without an expression-sensing channel ignores every node intervention
    vessel = truth_for(vessel_world)
    everything = {g: 1.5 for g in vessel_world.var_names[:60]}
    np.testing.assert_array_equal(vessel.node(cells, everything, renormalize=True), vessel.mean(cells))


def test_node_by_group_is_the_hand_computation(ligand_world):
    truth = truth_for(ligand_world)
    ligand = list(ligand_world.uns[WORLD_KEY]["channels"]["lig"]["ligand_genes"])
    table = {"Myeloid": pd.Series({ligand[0]: 1.5, ligand[1]: -1.0, "bg_3": 2.0}), "T_cell": {"bg_4": 3.0}}
    cells = [50, 1300]
    got = truth.node(cells, table, groupby="coarse_type", renormalize=True)
    coarse = ligand_world.obs["coarse_type"].astype(str).to_numpy()
    for row, cell in enumerate(cells):
        sensed = {}
        for name in ("frac", "lig"):
            near, w = _kernel_neighbours(ligand_world, cell, name)
            shifts = [{k: float(v) for k, v in dict(table.get(coarse[u], {})).items()} for u in near]
            p = np.array([_hand_property(ligand_world, name, u, s, True) for u, s in zip(near, shifts, strict=True)])
            sensed[name] = float((w * p).sum() / w.sum())
        np.testing.assert_allclose(got[row], _hand_mean(ligand_world, cell, sensed), rtol=1e-9)


# ----------------------------------------------------------------------- storage and interface


def test_h5ad_round_trip_keeps_the_truth_usable(ligand_world, ligand_spec, tmp_path):
    path = tmp_path / "world.h5ad"
    ligand_world.write_h5ad(path)
    back = ad.read_h5ad(path)
    a, b = truth_for(ligand_world), truth_for(back)
    cells = np.arange(0, 2400, 60)
    donors = np.random.default_rng(1).choice(ligand_world.n_obs, size=(cells.size, 20))
    table = {"Myeloid": {g: 1.0 for g in ligand_world.uns[WORLD_KEY]["channels"]["lig"]["ligand_genes"]}}
    np.testing.assert_allclose(b.mean(cells), a.mean(cells), rtol=1e-12)
    np.testing.assert_allclose(b.edge(cells, donors), a.edge(cells, donors), rtol=1e-12)
    np.testing.assert_allclose(
        b.node(cells, table, groupby="coarse_type"), a.node(cells, table, groupby="coarse_type"), rtol=1e-12
    )
    np.testing.assert_array_equal(b.responsive("Myeloid"), a.responsive("Myeloid"))
    assert spec_from_dict(back.uns[WORLD_KEY]["spec"]) == ligand_spec


def test_truth_for_serves_the_synthetic_tissue_through_the_same_interface():
    tissue = synthetic_tissue(n_cells=600, n_genes=120, seed=2)
    truth = truth_for(tissue)
    assert isinstance(truth, TissueTruth)
    cells, donors = np.arange(0, 600, 40), np.arange(100, 120)
    np.testing.assert_array_equal(truth.mean(cells), true_mean(tissue, cells))
    np.testing.assert_array_equal(truth.edge(cells, donors), true_counterfactual_edge(tissue, cells, donors))
    assert truth.responsive("Myeloid").sum() > truth.responsive("not a type").sum() > 0
    assert not (truth.null_genes() & truth.responsive("Myeloid")).any()


def test_truth_refuses_subsets_missing_keys_and_unknown_types(ligand_world):
    assert isinstance(truth_for(ligand_world), WorldTruth)
    with pytest.raises(ValueError, match="whole world"):
        truth_for(ligand_world[:100].copy())
    broken = ligand_world.copy()
    del broken.varm["cellina_world_batch"]
    with pytest.raises(TruthKeyError, match="cellina_world_batch"):
        truth_for(broken)
    with pytest.raises(TruthKeyError, match="Microglia"):
        truth_for(ligand_world).responsive("Microglia")
    with pytest.raises(TruthKeyError, match="no exact truth|neither"):
        truth_for(ad.AnnData(np.zeros((3, 2))))
    with pytest.raises(ValueError, match="focal"):
        truth_for(ligand_world).edge([ligand_world.n_obs], [[1, 2]])
    with pytest.raises(TruthKeyError, match="groupby"):
        truth_for(ligand_world).node([0], {"Myeloid": {"bg_1": 1.0}}, groupby="niche")
