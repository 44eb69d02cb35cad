"""The session's cells: named selections, donor pools, the gene-shift table and its sender groups."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.counterfactual import GeneShifts
from cellina.plugin._session import CellinaSession
from cellina.plugin._state import DONORS, FOCAL, SessionError, TissueKeys

# napari order: (row, col) = (y, x); a box over x in [0, 55], y in [0, 95]
LEFT = np.array([[-1, -1], [-1, 55], [95, 55], [95, -1]], dtype=float)


# ---------------------------------------------------------------------- selections
def test_a_lasso_selects_the_cells_inside_and_emits(tissue):
    session = CellinaSession(tissue)
    seen = []
    session.events.selection.connect(seen.append)
    mask = session.select_polygons(FOCAL, [LEFT])
    assert mask.sum() == 60 and seen == [FOCAL]


def test_refining_keeps_the_chosen_types(tissue):
    session = CellinaSession(tissue)
    session.select_polygons(FOCAL, [LEFT])
    refined = session.refine_selection(FOCAL, cell_types=["A"])
    expected = (tissue.obsm["spatial"][:, 0] <= 55) & (tissue.obs["cell_type"] == "A").to_numpy()
    np.testing.assert_array_equal(refined, expected)


def test_relaxing_the_filter_brings_the_lasso_cells_back(tissue):
    session = CellinaSession(tissue)
    session.select_polygons(FOCAL, [LEFT], cell_types=["A"])
    assert session.refine_selection(FOCAL).sum() == 60


def test_an_unknown_domain_leaves_the_selection(tissue):
    session = CellinaSession(tissue)
    session.select_polygons(FOCAL, [LEFT])
    with pytest.raises(SessionError, match=r"unknown domain\(s\) \['nowhere'\]"):
        session.refine_selection(FOCAL, domains=["nowhere"])
    assert session.selection_counts()[FOCAL] == 60


def test_selection_errors_name_the_problem(tissue):
    session = CellinaSession(tissue)
    with pytest.raises(SessionError, match="no selection named 'donors'"):
        session.selection_indices(DONORS)
    with pytest.raises(SessionError, match="positions out of range"):
        session.set_selection(DONORS, [0, 500])
    with pytest.raises(SessionError, match="no focal cells"):
        session.focal_indices()


# ---------------------------------------------------------------------- donor pools
@pytest.fixture
def graph_tissue(tissue):
    W = sp.random(120, 120, density=0.05, random_state=0, format="csr")
    W.setdiag(0)
    W.eliminate_zeros()
    tissue.obsp["spatial_connectivities"] = W
    return tissue


def test_the_observed_pool_is_the_neighbours_of_type_x_in_domain_y_but_not_x(graph_tissue):
    session = CellinaSession(graph_tissue)
    pool = session.donor_pool("observed", observed_cell_type="A", observed_domain="tumour")
    W = graph_tissue.obsp["spatial_connectivities"]
    types = graph_tissue.obs["cell_type"].to_numpy()
    targets = np.flatnonzero((types == "A") & (graph_tissue.obs["domain"] == "tumour").to_numpy())
    expected = np.unique(W[targets].nonzero()[1])
    np.testing.assert_array_equal(pool, expected[types[expected] != "A"])


def test_donor_pool_errors_name_the_problem(graph_tissue):
    session = CellinaSession(graph_tissue)
    with pytest.raises(SessionError, match="cell type 'Z' not found"):
        session.donor_pool("observed", observed_cell_type="Z", observed_domain="tumour")
    with pytest.raises(SessionError, match="no niche clusters"):
        session.donor_pool("niche", niche_cluster="0")
    session.set_selection(DONORS, np.zeros(120, dtype=bool))
    with pytest.raises(SessionError, match=r"donor pool \(lasso\) is empty"):
        session.donor_pool("lasso")
    with pytest.raises(SessionError, match="unknown donor pool 'everyone'"):
        session.donor_pool("everyone")


# ---------------------------------------------------------------------- gene shifts
def _shifted(tissue) -> CellinaSession:
    session = CellinaSession(tissue)
    session.add_gene_shift("g1", 1.5)
    session.add_gene_shift("g2", -10, senders=["B"])
    session.add_gene_shift("g1", 0.5, senders=["B"])
    session.add_gene_shift("g1", 2.0)  # replaces the unrestricted g1 row
    return session


def test_a_row_with_the_same_gene_and_restrictions_is_replaced(tissue):
    table = _shifted(tissue).gene_shifts.table
    assert table["gene"].tolist() == ["g2", "g1", "g1"]
    assert table["value"].tolist() == [-10.0, 0.5, 2.0]


def test_bad_shifts_are_refused_by_name(tissue):
    session = _shifted(tissue)
    with pytest.raises(SessionError, match="unknown gene 'ACTB'"):
        session.add_gene_shift("ACTB", 1.0)
    with pytest.raises(SessionError, match=r"unknown sender cell type\(s\) \['Q'\]"):
        session.add_gene_shift("g3", 1.0, senders=["Q"])
    with pytest.raises(SessionError, match="finite"):
        session.add_gene_shift("g3", np.nan)
    assert len(session.gene_shifts) == 3


def test_removing_rows(tissue):
    session = _shifted(tissue)
    session.remove_gene_shift(0)
    assert "g2" not in session.gene_shifts.table["gene"].tolist()
    with pytest.raises(SessionError, match="no row 7"):
        session.remove_gene_shift(7)


def test_overlapping_rows_add_up_on_the_senders_they_share(tissue):
    session = _shifted(tissue)
    groups, perturbations = session.sender_groups()
    is_b = (tissue.obs["cell_type"] == "B").to_numpy()
    # B cells get every row (overlapping g1 rows add up); others only the unrestricted g1
    assert perturbations[groups[is_b][0]] == {"g2": -10.0, "g1": 2.5}
    assert perturbations[groups[~is_b][0]] == {"g1": 2.0}
    assert len(set(groups[is_b])) == 1 and len(set(groups[~is_b])) == 1


def test_a_region_restriction_needs_a_focal_lasso(tissue):
    session = _shifted(tissue)
    session.add_gene_shift("g4", 1.0, region=True)
    with pytest.raises(SessionError, match="restricted to the lasso region"):
        session.sender_groups()


def test_a_region_restriction_applies_inside_the_lasso_only(tissue):
    session = _shifted(tissue)
    session.add_gene_shift("g4", 1.0, region=True)
    session.set_selection(FOCAL, np.arange(10))
    groups, perturbations = session.sender_groups()
    assert all("g4" in perturbations[g] for g in set(groups[:10]))
    assert all("g4" not in perturbations[g] for g in set(groups[10:]))


def _log_pseudobulk(tissue, mask):
    total = tissue.layers["counts"].toarray()[mask].sum(axis=0)
    return np.log1p(total / total.sum() * 1e4)


def test_fill_from_contrast_matches_pseudobulk_per_type(tissue):
    session = CellinaSession(tissue)
    table = session.fill_from_contrast("healthy", "tumour", n_genes=3, holdout="C").table
    assert len(table) == 9 and set(table["senders"].map(lambda s: s[0])) == {"A", "B", "C"}
    types, dom = tissue.obs["cell_type"].to_numpy(), tissue.obs["domain"].to_numpy()
    lfc_a = _log_pseudobulk(tissue, (types == "A") & (dom == "tumour")) - _log_pseudobulk(
        tissue, (types == "A") & (dom == "healthy")
    )
    rows_a = table[table["senders"].map(lambda s: s == ("A",))]
    top = np.argsort(-np.abs(lfc_a))[:3]
    assert set(rows_a["gene"]) == {f"g{j}" for j in top}
    np.testing.assert_allclose(rows_a.set_index("gene").loc[[f"g{j}" for j in top], "value"], lfc_a[top], rtol=1e-5)


def test_the_held_out_type_gets_the_global_shift_of_the_others(tissue):
    session = CellinaSession(tissue)
    table = session.fill_from_contrast("healthy", "tumour", n_genes=3, holdout="C").table
    types, dom = tissue.obs["cell_type"].to_numpy(), tissue.obs["domain"].to_numpy()
    lfc_global = _log_pseudobulk(tissue, (types != "C") & (dom == "tumour")) - _log_pseudobulk(
        tissue, (types != "C") & (dom == "healthy")
    )
    rows_c = table[table["senders"].map(lambda s: s == ("C",))]
    for gene, value in zip(rows_c["gene"], rows_c["value"]):
        assert value == pytest.approx(lfc_global[int(gene[1:])], rel=1e-5)


def test_an_unknown_contrast_domain_is_named_and_leaves_the_table(tissue):
    session = _shifted(tissue)
    before = session.gene_shifts
    with pytest.raises(SessionError, match="'nowhere'"):
        session.fill_from_contrast("healthy", "nowhere")
    assert session.gene_shifts is before


def test_sender_groups_match_row_by_row_resolution():
    rng = np.random.default_rng(3)
    n = 20_000
    types = np.array([f"type_{i}" for i in range(10)])
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(types, n))}, index=np.arange(n).astype(str))
    adata = ad.AnnData(
        X=sp.csr_matrix((n, 30), dtype=np.float32), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(30)])
    )
    adata.obsm["spatial"] = rng.uniform(0, 1000, (n, 2))
    adata.layers["counts"] = adata.X
    session = CellinaSession(adata, TissueKeys(domain_key=None))
    region = rng.random(n) < 0.3
    session.set_selection(FOCAL, region)
    rows = [
        {
            "gene": f"g{j % 30}",
            "value": 0.1 * (j + 1),
            "senders": (str(types[j % 10]),) if j % 3 else (),
            "region": j % 4 == 0,
        }
        for j in range(200)
    ]
    groups, perturbations = session.sender_groups(GeneShifts.from_rows(rows))
    # every cell's shifts equal the sum over the rows whose restrictions it meets
    labels = np.asarray(groups)
    for i in rng.choice(n, 300, replace=False):
        expected: dict[str, float] = {}
        for row in rows:
            if (not row["senders"] or obs["cell_type"].iloc[i] in row["senders"]) and (not row["region"] or region[i]):
                expected[row["gene"]] = expected.get(row["gene"], 0.0) + row["value"]
        got = perturbations.get(labels[i], {})
        assert got.keys() == expected.keys()
        assert all(np.isclose(got[g], expected[g]) for g in expected)
    assert len(perturbations) == 20  # 10 types x inside/outside the region
