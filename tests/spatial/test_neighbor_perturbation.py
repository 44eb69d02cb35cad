"""Tests of node perturbation against a dense reference implementation."""

from __future__ import annotations

import copy
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from cellina import make_neighbor_perturbation
from cellina._spatial_utils import _node_perturbation, compute_spatial_features, spatial_neighbors
from cellina.spatial import (
    CellinaKeyError,
    aggregate_neighbours,
    expression_representation,
    make_perturbed_expression,
)

TYPES = ["Myeloid", "T_cell", "Fibroblast"]


def _tissue(n: int = 240, n_genes: int = 30, seed: int = 0) -> ad.AnnData:
    """Counts in layers['counts'], log1p(CP10K) in X, graph and phi as in the tutorial."""
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(3, 0.5, size=(n, n_genes)).astype(np.float32)
    counts[rng.random((n, n_genes)) < 0.45] = 0
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {"coarse_type": pd.Categorical(rng.choice(TYPES, size=n))},
            index=[f"c{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.obsm["spatial"] = rng.uniform(0, 400, size=(n, 2))
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    spatial_neighbors(adata, bandwidth=40.0, max_neighbours=12, test_indices=np.arange(0, n, 15))
    compute_spatial_features(adata)
    return adata


def _shift_table(adata, perturbations, groupby, base, add_shift):
    """Dense per-cell shift matrix (cells x genes) for the reference."""
    n, g = adata.shape
    table = np.zeros((n, g))
    factor = np.log(base) if add_shift else 1.0
    groups = [(None, perturbations)] if groupby is None else list(perturbations.items())
    for group, shifts in groups:
        rows = np.arange(n) if group is None else np.flatnonzero(adata.obs[groupby] == group)
        for gene, value in dict(shifts).items():
            if gene in adata.var_names:
                table[rows, adata.var_names.get_loc(gene)] = value * factor
    return table


def _reference_source(X, table, add_shift, base, renormalize):
    X = np.asarray(X, dtype=np.float64)
    out = X.copy()
    for i in np.flatnonzero((table != 0).any(axis=1)):
        v = table[i]
        x = X[i]
        if add_shift:
            new = np.where(v != 0, np.maximum(x + v, 0), x)
            if renormalize:
                r = np.expm1(x).sum() / np.expm1(new).sum()
                new = np.log1p(r * np.expm1(new))
        else:
            new = np.where(v != 0, np.maximum((x + 1) * base**v - 1, 0), x)
            if renormalize:
                new = new * (x.sum() / new.sum())
        out[i] = new
    return out


def _dense_phi(W, X):
    Wd = W.toarray().astype(np.float64)
    deg = Wd.sum(axis=1, keepdims=True)
    return np.divide(Wd @ X, deg, out=np.zeros((Wd.shape[0], X.shape[1])), where=deg > 0)


def _lognorm(counts, target=1e4):
    tot = counts.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(target * counts, tot, out=np.zeros_like(counts), where=tot > 0))


def _logfc_series_dict(adata, n_genes=8, seed=1):
    rng = np.random.default_rng(seed)
    out = {}
    for ct in TYPES:
        genes = rng.choice(adata.var_names, size=n_genes, replace=False)
        out[ct] = pd.Series(rng.normal(0, 1.5, size=n_genes), index=genes)
    return out


def test_tutorial_call_matches_dense_reference():
    adata = _tissue()
    logfc_series_dict = _logfc_series_dict(adata)
    labels_key = "coarse_type"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the tutorial's inputs are consistent: no warning
        make_neighbor_perturbation(
            adata,
            perturbations=logfc_series_dict,
            groupby=labels_key,
            obsm_key_out="spatial_x_cf",
            base=np.e,
            renormalize=True,
            add_shift=True,
        )
    table = _shift_table(adata, logfc_series_dict, labels_key, np.e, True)
    X_cf = _reference_source(adata.X.toarray(), table, True, np.e, True)
    ref = _dense_phi(adata.obsp["spatial_connectivities"], X_cf)
    phi_cf = adata.obsm["spatial_x_cf"]
    assert phi_cf.dtype == np.float32 and phi_cf.shape == adata.obsm["spatial_x"].shape
    np.testing.assert_allclose(phi_cf, ref, rtol=1e-4, atol=1e-5)
    assert np.abs(phi_cf - adata.obsm["spatial_x"]).max() > 0.1  # the shift is visible
    rec = adata.uns["cellina"]["neighbor_perturbation"]["spatial_x_cf"]
    assert rec["groupby"] == labels_key and rec["add_shift"] and rec["renormalize"]
    assert len(rec["perturbations"]["gene"]) == 3 * 8
    assert set(rec["perturbations"]["group"]) == set(TYPES)


@pytest.mark.parametrize("add_shift", [True, False])
@pytest.mark.parametrize("renormalize", [True, False])
@pytest.mark.parametrize("base", [np.e, 2.0])
def test_both_modes_match_dense_reference(add_shift, renormalize, base):
    adata = _tissue(seed=2)
    pert = {"T_cell": {"g1": 2.0, "g4": -1.0, "g9": 0.7}, "Myeloid": {"g4": 1.0, "g20": -3.0}}
    layer = None if add_shift else "counts"
    make_neighbor_perturbation(
        adata,
        pert,
        groupby="coarse_type",
        layer=layer,
        base=base,
        renormalize=renormalize,
        add_shift=add_shift,
    )
    make_perturbed_expression(
        adata,
        pert,
        groupby="coarse_type",
        layer=layer,
        base=base,
        renormalize=renormalize,
        add_shift=add_shift,
    )
    table = _shift_table(adata, pert, "coarse_type", base, add_shift)
    src = (adata.X if add_shift else adata.layers["counts"]).toarray()
    X_cf = _reference_source(src, table, add_shift, base, renormalize)
    layer_cf = adata.layers["counts_cf"]
    assert sp.isspmatrix_csr(layer_cf) and layer_cf.dtype == np.float32
    np.testing.assert_allclose(layer_cf.toarray(), X_cf, rtol=1e-5, atol=1e-5)
    rep = X_cf if add_shift else _lognorm(X_cf)
    ref = _dense_phi(adata.obsp["spatial_connectivities"], rep)
    np.testing.assert_allclose(adata.obsm["spatial_x_cf"], ref, rtol=1e-4, atol=1e-5)
    if not add_shift:
        # the perturbed counts layer, turned into features the usual way, gives the same phi
        rec = adata.uns["cellina"]["spatial_features"]["spatial_x"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # non-integer perturbed counts are legitimate
            rebuilt = aggregate_neighbours(
                adata.obsp["spatial_connectivities"], expression_representation(layer_cf, rec)
            )
        np.testing.assert_allclose(adata.obsm["spatial_x_cf"], rebuilt, rtol=1e-4, atol=1e-5)


def test_groupby_restricts_to_senders_of_the_group():
    adata = _tissue(seed=3)
    make_perturbed_expression(
        adata,
        {"Fibroblast": {"g2": 1.5, "g3": -2.0}},
        groupby="coarse_type",
        layer="counts",
        renormalize=False,
    )
    diff = (adata.layers["counts_cf"] - adata.layers["counts"]).tocoo()
    changed_rows = np.unique(diff.row[diff.data != 0])
    fib = np.flatnonzero(adata.obs["coarse_type"] == "Fibroblast")
    assert changed_rows.size > 0 and np.all(np.isin(changed_rows, fib))
    assert set(np.unique(diff.col[diff.data != 0])) <= {2, 3}
    # phi changes only for receivers with a fibroblast neighbour
    make_neighbor_perturbation(adata, {"Fibroblast": {"g2": 1.5}}, groupby="coarse_type", add_shift=True)
    W = adata.obsp["spatial_connectivities"]
    has_fib_nbr = np.asarray(W[:, fib].sum(axis=1)).ravel() > 0
    moved = np.abs(adata.obsm["spatial_x_cf"] - adata.obsm["spatial_x"]).max(axis=1) > 1e-6
    assert moved.any()
    assert not np.any(moved & ~has_fib_nbr)


def test_perturb_fraction_is_seeded_and_sized():
    adata = _tissue(seed=4)
    pert = {ct: {"g5": 2.0} for ct in TYPES}
    kwargs = dict(groupby="coarse_type", layer="counts", renormalize=False, perturb_fraction=0.4)
    make_perturbed_expression(adata, pert, layer_key="a", random_state=7, **kwargs)
    make_perturbed_expression(adata, pert, layer_key="b", random_state=7, **kwargs)
    make_perturbed_expression(adata, pert, layer_key="c", random_state=8, **kwargs)
    cells = adata.uns["cellina"]["perturbed_expression"]["a"]["perturbed_cells"]
    sizes = adata.obs["coarse_type"].value_counts()
    assert len(cells) == sum(int(round(0.4 * sizes[ct])) for ct in TYPES)
    for ct in TYPES:
        in_ct = adata.obs["coarse_type"].to_numpy()[cells] == ct
        assert in_ct.sum() == int(round(0.4 * sizes[ct]))
    changed = np.flatnonzero(
        adata.layers["a"][:, 5].toarray().ravel() != adata.layers["counts"][:, 5].toarray().ravel()
    )
    np.testing.assert_array_equal(changed, cells)  # a +2 log-fold shift changes every chosen cell
    assert (adata.layers["a"] != adata.layers["b"]).nnz == 0
    assert (adata.layers["a"] != adata.layers["c"]).nnz > 0


def test_zero_perturbation_reproduces_phi():
    adata = _tissue(seed=5)
    make_neighbor_perturbation(adata, {"g0": 0.0, "g7": 0.0}, add_shift=True)
    np.testing.assert_allclose(adata.obsm["spatial_x_cf"], adata.obsm["spatial_x"], rtol=1e-5, atol=1e-6)
    make_neighbor_perturbation(adata, pd.Series({"g3": 0.0}), layer="counts", obsm_key_out="cf2")
    np.testing.assert_allclose(adata.obsm["cf2"], adata.obsm["spatial_x"], rtol=1e-4, atol=1e-5)


def test_ungrouped_shift_applies_to_every_cell_and_uses_record_genes():
    adata = _tissue(seed=6)
    genes = ["g3", "g1", "g10"]
    compute_spatial_features(adata, genes=genes, obsm_key="phi3")
    make_neighbor_perturbation(
        adata,
        {"g1": 1.0, "g2": 2.0},
        add_shift=True,
        renormalize=True,
        features_key="phi3",
        obsm_key_out="phi3_cf",
    )
    table = _shift_table(adata, {"g1": 1.0, "g2": 2.0}, None, np.e, True)
    X_cf = _reference_source(adata.X.toarray(), table, True, np.e, True)
    cols = [adata.var_names.get_loc(g) for g in genes]
    ref = _dense_phi(adata.obsp["spatial_connectivities"], X_cf[:, cols])
    np.testing.assert_allclose(adata.obsm["phi3_cf"], ref, rtol=1e-4, atol=1e-5)
    assert list(adata.uns["cellina"]["neighbor_perturbation"]["phi3_cf"]["genes"]) == genes


def test_caller_matrices_unchanged_and_record_round_trips(tmp_path):
    adata = _tissue(seed=7)
    before = adata.copy()
    pert = _logfc_series_dict(adata)
    make_neighbor_perturbation(adata, pert, groupby="coarse_type", add_shift=True)
    make_perturbed_expression(adata, pert, groupby="coarse_type", layer="counts", layer_key="cf")
    for name, a, b in [("X", adata.X, before.X), ("counts", adata.layers["counts"], before.layers["counts"])]:
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
        np.testing.assert_array_equal(a.indices, b.indices, err_msg=name)
        np.testing.assert_array_equal(a.indptr, b.indptr, err_msg=name)
    np.testing.assert_array_equal(adata.obsm["spatial_x"], before.obsm["spatial_x"])
    path = tmp_path / "p.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    rec = back.uns["cellina"]["neighbor_perturbation"]["spatial_x_cf"]
    assert len(rec["perturbations"]["value"]) == 24
    np.testing.assert_allclose(back.obsm["spatial_x_cf"], adata.obsm["spatial_x_cf"])


def test_dataframe_of_shifts_by_group():
    adata = _tissue(seed=8)
    frame = pd.DataFrame({"g1": [1.0, np.nan], "g2": [np.nan, -1.0]}, index=["Myeloid", "T_cell"])
    make_perturbed_expression(adata, frame, groupby="coarse_type", layer="counts", renormalize=False)
    as_dict = {"Myeloid": {"g1": 1.0}, "T_cell": {"g2": -1.0}}
    make_perturbed_expression(adata, as_dict, groupby="coarse_type", layer="counts", renormalize=False, layer_key="ref")
    assert (adata.layers["counts_cf"] != adata.layers["ref"]).nnz == 0


# ----------------------------------------------------------------------------- bad input


def test_unknown_genes_warn_by_name_and_all_unknown_is_an_error():
    adata = _tissue(seed=9)
    with pytest.warns(UserWarning, match=r"not in adata\.var_names.*'T_cell'.*'NOPE1'"):
        make_neighbor_perturbation(adata, {"T_cell": {"g1": 1.0, "NOPE1": 2.0}}, groupby="coarse_type", add_shift=True)
    before = copy.deepcopy(adata)
    with pytest.raises(CellinaKeyError, match=r"None of the perturbed genes.*'NOPE1', 'NOPE2'"):
        make_neighbor_perturbation(adata, {"NOPE1": 1.0, "NOPE2": 2.0}, add_shift=True, obsm_key_out="x")
    assert "x" not in adata.obsm
    assert set(adata.uns["cellina"]["neighbor_perturbation"]) == set(before.uns["cellina"]["neighbor_perturbation"])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"perturbations": {"B_cell": {"g1": 1.0}}, "groupby": "coarse_type"}, ValueError, "'B_cell'"),
        ({"perturbations": {"T_cell": {"g1": 1.0}}}, ValueError, "groupby"),
        ({"perturbations": {"g1": 1.0}, "groupby": "tissue"}, CellinaKeyError, "groupby='tissue'"),
        ({"perturbations": {"g1": np.nan}}, ValueError, "'g1'"),
        ({"perturbations": {"g1": "up"}}, TypeError, "'g1'"),
        ({"perturbations": {"g1": 1.0}, "perturb_fraction": 0.0}, ValueError, "perturb_fraction"),
        ({"perturbations": {"g1": 1.0}, "perturb_fraction": 1.5}, ValueError, "perturb_fraction"),
        ({"perturbations": {"g1": 1.0}, "base": -2.0}, ValueError, "base"),
        ({"perturbations": {"g1": 1.0}, "connectivity_key": "g"}, CellinaKeyError, "connectivity_key='g'"),
        ({"perturbations": {"g1": 1.0}, "layer": "raw"}, CellinaKeyError, "layer='raw'"),
        ({"perturbations": [1.0, 2.0]}, TypeError, "perturbations"),
    ],
)
def test_bad_input_is_refused_before_writing(kwargs, error, match):
    adata = _tissue(seed=10, n=60)
    before = copy.deepcopy(adata)
    with pytest.raises(error, match=match) as info:
        make_neighbor_perturbation(adata, add_shift=True, **kwargs)
    assert isinstance(info.value, ValueError)  # every bad input is a ValueError
    assert set(adata.obsm.keys()) == set(before.obsm.keys())
    assert set(adata.uns["cellina"]) == set(before.uns["cellina"])
    assert (adata.X != before.X).nnz == 0


def test_mode_mismatch_is_said_loudly():
    adata = _tissue(seed=11, n=60)
    with pytest.warns(UserWarning, match=r"add_shift=True.*adata\.layers\['counts'\] looks like raw counts"):
        make_neighbor_perturbation(adata, {"g1": 1.0}, layer="counts", add_shift=True)
    with pytest.warns(UserWarning, match=r"add_shift=False multiplies counts.*adata\.X"):
        make_neighbor_perturbation(adata, {"g1": 1.0}, add_shift=False)


def test_blockwise_processing_matches_single_block(monkeypatch):
    """Large inputs are processed in blocks of cells; tiny blocks must give the same result."""
    import cellina.spatial._features as features
    import cellina.spatial._perturb as perturb

    pert = {"T_cell": {"g1": 2.0, "g4": -1.0}, "Myeloid": {"g4": 1.0, "g20": -3.0}}
    results = []
    for entries in (None, 7):
        adata = _tissue(seed=12)
        if entries is not None:
            monkeypatch.setattr(perturb, "_BLOCK_ENTRIES", entries)
            monkeypatch.setattr(features, "_BLOCK_ENTRIES", entries)
            monkeypatch.setattr(perturb, "_SENDER_SLAB", 37)
        for add_shift in (True, False):
            layer = None if add_shift else "counts"
            make_neighbor_perturbation(
                adata, pert, groupby="coarse_type", layer=layer, add_shift=add_shift, obsm_key_out=f"cf{add_shift}"
            )
            make_perturbed_expression(
                adata, pert, groupby="coarse_type", layer=layer, add_shift=add_shift, layer_key=f"cf{add_shift}"
            )
        compute_spatial_features(adata, obsm_key="again")
        results.append(adata)
    small, blocked = results
    for key in ("cfTrue", "cfFalse", "again"):
        np.testing.assert_allclose(blocked.obsm[key], small.obsm[key], rtol=1e-5, atol=1e-6)
    for key in ("cfTrue", "cfFalse"):
        np.testing.assert_allclose(blocked.layers[key].toarray(), small.layers[key].toarray(), rtol=1e-6)
    # the blocked run really is blocked against the dense reference as well
    table = _shift_table(small, pert, "coarse_type", np.e, True)
    X_cf = _reference_source(small.X.toarray(), table, True, np.e, True)
    np.testing.assert_allclose(
        blocked.obsm["cfTrue"], _dense_phi(small.obsp["spatial_connectivities"], X_cf), rtol=1e-4, atol=1e-5
    )


def test_unlabelled_cells_are_not_senders():
    adata = _tissue(seed=13)
    adata.obs["coarse_type"] = adata.obs["coarse_type"].astype(object)
    adata.obs.iloc[:20, 0] = np.nan
    make_perturbed_expression(adata, {"T_cell": {"g2": 2.0}}, groupby="coarse_type", layer="counts", renormalize=False)
    cells = adata.uns["cellina"]["perturbed_expression"]["counts_cf"]["perturbed_cells"]
    expected = np.flatnonzero(adata.obs["coarse_type"].to_numpy() == "T_cell")
    np.testing.assert_array_equal(cells, expected)
    assert np.all(cells >= 20)


# ------------------------------------------------------------------ published extras
@pytest.mark.parametrize(("add_shift", "layer"), [(True, None), (False, "counts")])
def test_layer_key_stores_the_perturbed_sender_matrix(add_shift, layer):
    adata = _tissue()
    shifts = _logfc_series_dict(adata)
    kwargs = dict(
        groupby="coarse_type",
        layer=layer,
        add_shift=add_shift,
        renormalize=True,
        perturb_fraction=0.5,
        random_state=3,
    )
    layers_before = sorted(adata.layers.keys())
    make_neighbor_perturbation(adata, shifts, obsm_key_out="plain", **kwargs)
    assert sorted(adata.layers.keys()) == layers_before  # no layer_key, no layer
    make_neighbor_perturbation(adata, shifts, layer_key="senders", **kwargs)

    record = adata.uns["cellina"]["neighbor_perturbation"]["spatial_x_cf"]
    assert record["layer_key"] == "senders"
    table = _shift_table(adata, shifts, "coarse_type", np.e, add_shift)
    table[~np.isin(np.arange(adata.n_obs), record["perturbed_cells"])] = 0
    source = (adata.X if layer is None else adata.layers[layer]).toarray()
    expected = _reference_source(source, table, add_shift, np.e, True)
    senders = adata.layers["senders"]
    assert sp.issparse(senders) and senders.dtype == np.float32
    np.testing.assert_allclose(senders.toarray(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(adata.obsm["spatial_x_cf"], adata.obsm["plain"])
    if add_shift:  # shifted log values are the niche representation itself
        ref = _dense_phi(adata.obsp["spatial_connectivities"], expected)
        np.testing.assert_allclose(adata.obsm["spatial_x_cf"], ref, rtol=1e-4, atol=1e-5)
    make_perturbed_expression(adata, shifts, layer_key="direct", **kwargs)
    assert (adata.layers["direct"] != senders).nnz == 0


def test_node_perturbation_of_a_bare_matrix_matches_the_formula():
    rng = np.random.default_rng(5)
    X = rng.random((40, 6)).astype(np.float32)
    X[X < 0.3] = 0
    before = X.copy()
    names = {f"g{j}": j for j in range(6)}
    shifts = {"g0": 2.0, "g4": -1.0}
    v = np.array([2.0, 0, 0, 0, -1.0, 0])
    add = _node_perturbation(sp.csr_matrix(X), names, shifts, add_shift=True)
    mult = _node_perturbation(X, names, shifts, add_shift=False)
    assert sp.issparse(add) and add.dtype == np.float32
    np.testing.assert_allclose(add.toarray(), np.where(v != 0, np.maximum(X + v, 0), X), rtol=1e-6)
    expected = np.where(v != 0, np.maximum((X + 1) * np.exp(v) - 1, 0), X)
    np.testing.assert_allclose(mult.toarray(), expected, rtol=1e-5, atol=1e-6)
    for add_shift in (True, False):
        out = _node_perturbation(X, names, shifts, add_shift=add_shift, renormalize=True)
        # renormalised to the plain row sums in both modes, as published
        np.testing.assert_allclose(np.asarray(out.sum(1)).ravel(), X.sum(1), rtol=1e-5)
    np.testing.assert_array_equal(X, before)


def test_node_perturbation_fraction_and_groups():
    rng = np.random.default_rng(6)
    X = rng.random((60, 4)).astype(np.float32) + 0.1
    names = {"a": 0, "b": 1, "c": 2, "d": 3}

    def changed(**kw):
        out = _node_perturbation(X, names, {"b": 1.0}, add_shift=True, **kw).toarray()
        return np.flatnonzero((out != X).any(axis=1))

    assert changed(perturb_fraction=0.0).size == 0
    half = changed(perturb_fraction=0.5, random_state=2)
    assert half.size == 30
    np.testing.assert_array_equal(half, changed(perturb_fraction=0.5, random_state=2))
    assert not np.array_equal(half, changed(perturb_fraction=0.5, random_state=3))
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="perturb_fraction"):
            _node_perturbation(X, names, {"b": 1.0}, perturb_fraction=bad)
    labels = np.where(np.arange(60) < 20, "T", "B")
    grouped = _node_perturbation(X, names, {"T": {"a": 1.0}}, groupby="type", labels=labels, add_shift=True)
    np.testing.assert_array_equal(np.flatnonzero((grouped.toarray() != X).any(axis=1)), np.arange(20))
    with pytest.raises(ValueError, match="outside"):
        _node_perturbation(X, {"a": 9}, {"a": 1.0})


def test_neighbor_genes_restrict_the_output_features():
    """The published ``neighbor_genes``: the perturbed features of just those genes."""
    import anndata as ad
    import scipy.sparse as sp

    from cellina.spatial import make_neighbor_perturbation

    rng = np.random.default_rng(0)
    lognorm = np.log1p(rng.poisson(4.0, size=(30, 6)).astype(np.float32))
    adata = ad.AnnData(X=sp.csr_matrix(lognorm))
    adata.var_names = [f"g{i}" for i in range(6)]
    adata.obsp["spatial_connectivities"] = sp.csr_matrix(rng.random((30, 30)) < 0.2, dtype=np.float32)
    make_neighbor_perturbation(adata, {"g1": 1.0}, add_shift=True, renormalize=False, obsm_key_out="full")
    make_neighbor_perturbation(
        adata, {"g1": 1.0}, add_shift=True, renormalize=False, obsm_key_out="two", neighbor_genes=["g4", "g1"]
    )
    np.testing.assert_allclose(adata.obsm["two"], adata.obsm["full"][:, [4, 1]], rtol=1e-6)
    with pytest.raises(KeyError, match="unknown: 'g9'"):
        make_neighbor_perturbation(adata, {"g1": 1.0}, add_shift=True, neighbor_genes=["g9"])
