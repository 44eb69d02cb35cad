"""The Qt-free half of the plugin: selections, session state, gene shifts, colours, export."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.plugin._colours import colours_for, continuous_colours
from cellina.plugin._selection import points_in_polygons
from cellina.plugin._session import (
    DONORS,
    FOCAL,
    CellinaSession,
    SessionError,
    TissueKeys,
)
from cellina.plugin._workflow import (
    Progress,
    build_export,
    contrast_shift_table,
    export,
    preprocess_steps,
    run_sync,
    sender_groups,
)
from cellina.plugin._session import PreprocessParams


# ---------------------------------------------------------------------- selections
def _square(x0, y0, size):
    return np.array([[x0, y0], [x0, y0 + size], [x0 + size, y0 + size], [x0 + size, y0]], dtype=float)


@pytest.mark.parametrize("engine", ["shapely", "matplotlib"])
def test_points_in_polygons_union_and_boundaries(engine):
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 100, size=(5000, 2))
    mask = points_in_polygons(points, [_square(0, 0, 50), _square(60, 60, 20)], engine=engine)
    expected = ((points < 50).all(axis=1)) | (((points > 60) & (points < 80)).all(axis=1))
    np.testing.assert_array_equal(mask, expected)


def test_engines_agree_on_a_star_and_bowtie_is_repaired():
    rng = np.random.default_rng(1)
    points = rng.uniform(-1.2, 1.2, size=(20000, 2))
    angles = np.linspace(0, 2 * np.pi, 11)[:-1]
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
    star = np.c_[radii * np.cos(angles), radii * np.sin(angles)]
    a = points_in_polygons(points, [star], engine="shapely")
    b = points_in_polygons(points, [star], engine="matplotlib")
    # the two engines may differ only on points within floating error of an edge
    assert (a != b).sum() <= 2 and 0.1 < a.mean() < 0.5
    # a self-crossing lasso stroke (bow tie): both lobes count as inside
    bowtie = np.array([[0, 0], [1, 1], [1, 0], [0, 1]], dtype=float)
    inside = points_in_polygons(np.array([[0.1, 0.5], [0.9, 0.5], [0.5, 0.1]]), [bowtie])
    np.testing.assert_array_equal(inside, [True, True, False])


def test_points_in_polygons_rejects_bad_input():
    pts = np.zeros((3, 2))
    with pytest.raises(ValueError, match="polygon 0 has 2 vertices"):
        points_in_polygons(pts, [np.zeros((2, 2))])
    with pytest.raises(ValueError, match="polygon 1 has NaN"):
        points_in_polygons(pts, [_square(0, 0, 1), np.array([[0, 0], [np.nan, 1], [1, 1]])])
    with pytest.raises(ValueError, match="unknown point-in-polygon engine 'gpu'"):
        points_in_polygons(pts, [], engine="gpu")
    with pytest.raises(ValueError, match=r"points must be an \(n_points, 2\)"):
        points_in_polygons(np.zeros(3), [])
    assert not points_in_polygons(pts, []).any()


# ---------------------------------------------------------------------- a tiny tissue
@pytest.fixture
def tissue():
    rng = np.random.default_rng(0)
    n, g = 120, 12
    xy = np.c_[np.repeat(np.arange(12), 10) * 10.0, np.tile(np.arange(10), 12) * 10.0]
    counts = sp.csr_matrix(rng.poisson(3.0, size=(n, g)).astype(np.float32))
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(rng.choice(["A", "B", "C"], n)),
            "domain": pd.Categorical(np.where(xy[:, 0] < 60, "healthy", "tumour")),
            "x_px": xy[:, 0] / 0.5,
            "y_px": xy[:, 1] / 0.5,
        },
        index=[f"c{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    adata.layers["counts"] = counts
    adata.obsm["spatial"] = xy
    return adata


def test_session_coordinates_from_obs_columns_with_pixel_size(tissue):
    keys = TissueKeys(spatial_key=None, x_column="x_px", y_column="y_px", pixel_size=0.5)
    session = CellinaSession(tissue, keys)
    np.testing.assert_allclose(session.coordinates_um(), tissue.obsm["spatial"])
    np.testing.assert_allclose(session.display_coordinates(), tissue.obsm["spatial"][:, ::-1])


@pytest.mark.parametrize(
    ("keys", "culprit"),
    [
        (TissueKeys(spatial_key="xy"), "'xy'"),
        (TissueKeys(spatial_key=None, x_column="x_px", y_column="nope"), "'nope'"),
        (TissueKeys(cell_type_key="celltype"), "'celltype'"),
        (TissueKeys(domain_key="region"), "'region'"),
        (TissueKeys(counts_layer="raw"), "'raw'"),
        (TissueKeys(pixel_size=0.0), "pixel size"),
    ],
)
def test_bad_keys_are_named_and_leave_the_session_alone(tissue, keys, culprit):
    session = CellinaSession(tissue)
    before = session.keys
    with pytest.raises(SessionError, match=culprit):
        session.set_keys(keys)
    assert session.keys is before
    with pytest.raises(SessionError, match=culprit):
        CellinaSession(tissue, keys)


def test_selections_combine_refine_and_emit(tissue):
    session = CellinaSession(tissue)
    seen = []
    session.events.selection.connect(seen.append)
    # napari order: (row, col) = (y, x); a box over x in [0, 55], y in [0, 95]
    box = np.array([[-1, -1], [-1, 55], [95, 55], [95, -1]], dtype=float)
    mask = session.select_polygons(FOCAL, [box])
    assert mask.sum() == 60 and seen == [FOCAL]
    refined = session.refine_selection(FOCAL, cell_types=["A"])
    expected = (tissue.obsm["spatial"][:, 0] <= 55) & (tissue.obs["cell_type"] == "A").to_numpy()
    np.testing.assert_array_equal(refined, expected)
    # relaxing the filter brings the lasso's cells back
    assert session.refine_selection(FOCAL).sum() == 60
    with pytest.raises(SessionError, match=r"unknown domain\(s\) \['nowhere'\]"):
        session.refine_selection(FOCAL, domains=["nowhere"])
    assert session.selection_counts()[FOCAL] == 60
    with pytest.raises(SessionError, match="no selection named 'donors'"):
        session.selection_indices(DONORS)
    with pytest.raises(SessionError, match="positions out of range"):
        session.set_selection(DONORS, [0, 500])


def test_donor_pools(tissue):
    session = CellinaSession(tissue)
    W = sp.random(120, 120, density=0.05, random_state=0, format="csr")
    W.setdiag(0)
    W.eliminate_zeros()
    tissue.obsp["spatial_connectivities"] = W
    pool = session.donor_pool("observed", observed_cell_type="A", observed_domain="tumour")
    types = tissue.obs["cell_type"].to_numpy()
    targets = np.flatnonzero((types == "A") & (tissue.obs["domain"] == "tumour").to_numpy())
    expected = np.unique(W[targets].nonzero()[1])
    np.testing.assert_array_equal(pool, expected[types[expected] != "A"])
    with pytest.raises(SessionError, match="cell type 'Z' not found"):
        session.donor_pool("observed", observed_cell_type="Z", observed_domain="tumour")
    with pytest.raises(SessionError, match="no niche clusters"):
        session.donor_pool("niche", niche_cluster="0")
    session.set_selection(DONORS, np.zeros(120, dtype=bool))
    with pytest.raises(SessionError, match=r"donor pool \(lasso\) is empty"):
        session.donor_pool("lasso")
    with pytest.raises(SessionError, match="unknown donor pool 'everyone'"):
        session.donor_pool("everyone")


def test_gene_shift_table_and_sender_groups(tissue):
    session = CellinaSession(tissue)
    session.add_gene_shift("g1", 1.5)
    session.add_gene_shift("g2", -10, senders=["B"])
    session.add_gene_shift("g1", 0.5, senders=["B"])
    session.add_gene_shift("g1", 2.0)  # replaces the unrestricted g1 row
    assert session.gene_shifts["gene"].tolist() == ["g2", "g1", "g1"]
    assert session.gene_shifts["value"].tolist() == [-10.0, 0.5, 2.0]
    with pytest.raises(SessionError, match="unknown gene 'ACTB'"):
        session.add_gene_shift("ACTB", 1.0)
    with pytest.raises(SessionError, match=r"unknown sender cell type\(s\) \['Q'\]"):
        session.add_gene_shift("g3", 1.0, senders=["Q"])
    with pytest.raises(SessionError, match="finite"):
        session.add_gene_shift("g3", np.nan)
    groups, perturbations = sender_groups(session, session.gene_shifts)
    is_b = (tissue.obs["cell_type"] == "B").to_numpy()
    # B cells get every row (overlapping g1 rows add up); others only the unrestricted g1
    assert perturbations[groups[is_b][0]] == {"g2": -10.0, "g1": 2.5}
    assert perturbations[groups[~is_b][0]] == {"g1": 2.0}
    assert len(set(groups[is_b])) == 1 and len(set(groups[~is_b])) == 1
    # a region restriction needs a focal lasso
    session.add_gene_shift("g4", 1.0, region=True)
    with pytest.raises(SessionError, match="restricted to the lasso region"):
        sender_groups(session, session.gene_shifts)
    session.set_selection(FOCAL, np.arange(10))
    groups, perturbations = sender_groups(session, session.gene_shifts)
    assert all("g4" in perturbations[g] for g in set(groups[:10]))
    assert all("g4" not in perturbations[g] for g in set(groups[10:]))
    session.remove_gene_shift(0)
    assert "g2" not in session.gene_shifts["gene"].tolist()
    with pytest.raises(SessionError, match="no row 7"):
        session.remove_gene_shift(7)


def test_fill_from_contrast_matches_pseudobulk(tissue):
    session = CellinaSession(tissue)
    table = session.fill_from_contrast("healthy", "tumour", n_genes=3, holdout="C")
    assert len(table) == 9 and set(table["senders"].map(lambda s: s[0])) == {"A", "B", "C"}
    counts = tissue.layers["counts"].toarray()
    types = tissue.obs["cell_type"].to_numpy()
    dom = tissue.obs["domain"].to_numpy()

    def log_pb(mask):
        total = counts[mask].sum(axis=0)
        return np.log1p(total / total.sum() * 1e4)

    lfc_a = log_pb((types == "A") & (dom == "tumour")) - log_pb((types == "A") & (dom == "healthy"))
    rows_a = table[table["senders"].map(lambda s: s == ("A",))]
    top = np.argsort(-np.abs(lfc_a))[:3]
    assert set(rows_a["gene"]) == {f"g{j}" for j in top}
    np.testing.assert_allclose(rows_a.set_index("gene").loc[[f"g{j}" for j in top], "value"], lfc_a[top], rtol=1e-5)
    # the held-out type gets the global shift of the other types
    lfc_global = log_pb((types != "C") & (dom == "tumour")) - log_pb((types != "C") & (dom == "healthy"))
    rows_c = table[table["senders"].map(lambda s: s == ("C",))]
    for gene, value in zip(rows_c["gene"], rows_c["value"]):
        assert value == pytest.approx(lfc_global[int(gene[1:])], rel=1e-5)
    with pytest.raises(SessionError, match="'nowhere'"):
        contrast_shift_table(tissue, session.keys, "healthy", "nowhere")


def test_preprocess_steps_yield_progress_and_do_not_touch_the_input(tissue):
    before = tissue.copy()
    reports: list[Progress] = []
    params = PreprocessParams(n_top_genes=None, bandwidth_um=15, max_neighbours=8, min_counts_gene=0)
    out = run_sync(preprocess_steps(tissue, TissueKeys(), params), reports.append)
    steps = [r.step for r in reports]
    assert steps[0] == 0 and steps[-1] == 100 and steps == sorted(steps) and len(steps) >= 5
    assert out is not tissue and out.n_obs == 120
    assert tissue.obsp.keys() == before.obsp.keys() and "spatial_x" not in tissue.obsm
    np.testing.assert_array_equal(tissue.X.toarray(), before.X.toarray())
    # niche features are the weighted neighbour mean of log1p(CP10K) expression
    W = out.obsp["spatial_connectivities"]
    lognorm = out.layers["cellina_lognorm"].toarray()
    counts = out.layers["counts"].toarray()
    np.testing.assert_allclose(lognorm, np.log1p(counts / counts.sum(1, keepdims=True) * 1e4), rtol=1e-5)
    deg = np.asarray(W.sum(axis=1)).ravel()
    np.testing.assert_allclose(out.obsm["spatial_x"], (W @ lognorm) / deg[:, None], rtol=1e-4, atol=1e-5)
    assert W.max() > 0 and (W.getnnz(axis=1) <= 8).all()
    # bad input: a bandwidth of zero, non-count data
    with pytest.raises(SessionError, match="bandwidth"):
        run_sync(preprocess_steps(tissue, TissueKeys(), PreprocessParams(bandwidth_um=0)))
    tissue.layers["logged"] = tissue.layers["counts"] * 0.5
    with pytest.raises(SessionError, match=r"layers\['logged'\] does not hold raw counts"):
        run_sync(preprocess_steps(tissue, TissueKeys(counts_layer="logged"), params))


def test_export_without_runs_and_atomic_failure(tissue, tmp_path):
    session = CellinaSession(tissue)
    session.set_selection(FOCAL, np.arange(5))
    out = build_export(session)
    assert out.obs["cellina_focal"].sum() == 5 and "cellina_counterfactual" not in out.layers
    assert out.uns["cellina"]["provenance"]["runs"] == {}
    assert "cellina_focal" not in tissue.obs  # the session's own AnnData is untouched
    with pytest.raises(SessionError, match="could not write"):
        export(session, str(tmp_path / "missing_folder" / "x.h5ad"))
    path = tmp_path / "x.h5ad"
    export(session, str(path))
    back = ad.read_h5ad(path)
    assert back.obs["cellina_focal"].sum() == 5
    assert back.uns["cellina"]["provenance"]["keys"]["cell_type_key"] == "cell_type"


def test_colours_are_vectorised_lookups(tissue):
    rgba, info = colours_for(tissue, "cell_type")
    assert info.kind == "categorical" and info.categories == ["A", "B", "C"]
    codes = tissue.obs["cell_type"].cat.codes.to_numpy()
    np.testing.assert_array_equal(rgba, info.colours[codes])
    rgba, info = colours_for(tissue, "g3", layer="counts")
    assert info.kind == "continuous" and rgba.shape == (120, 4)
    values = tissue.layers["counts"][:, 3].toarray().ravel()
    # brighter viridis (higher value) means a larger green channel
    order = np.argsort(values)
    assert rgba[order[-1], 1] >= rgba[order[0], 1]
    rgba, info = continuous_colours(np.array([0.0, np.nan, 1.0]), "v", clim=(0, 1))
    np.testing.assert_allclose(rgba[1], [0.5, 0.5, 0.5, 1.0])
    with pytest.raises(KeyError, match="'nothing'"):
        colours_for(tissue, "nothing")


def test_library_layers_do_not_import_qt_or_napari():
    import subprocess

    code = (
        "import sys; import cellina.plugin._session, cellina.plugin._workflow, cellina.plugin._selection, "
        "cellina.plugin._colours; bad = [m for m in sys.modules if m.split('.')[0] in "
        "('napari', 'qtpy', 'PyQt6', 'PyQt5', 'PySide6')]; print(bad); assert not bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_scripting_the_whole_workflow_with_the_session(tmp_path):
    """The user guide's notebook path: no viewer, same steps as the docks."""
    from cellina.datasets import synthetic_tissue

    # two slides with the slide as batch: every prediction used to crash on such a model
    adata = synthetic_tissue(n_cells=700, n_genes=100, n_slides=2, seed=1, store_means=False)
    session = CellinaSession(adata, TissueKeys(cell_type_key="cell_type", domain_key="domain", batch_key="slide"))
    session.preprocess(n_top_genes=80, bandwidth_um=20, max_neighbours=15)
    session.train(max_epochs=2, batch_size=128, holdout_cell_type="myeloid_1", holdout_domain="tumour")
    adata = session.adata
    held_out = np.flatnonzero(((adata.obs["cell_type"] == "myeloid_1") & (adata.obs["domain"] == "tumour")).to_numpy())
    # held-out cells are nobody's neighbour in the training graph, but keep theirs in the unmasked one
    W = adata.obsp["spatial_connectivities"]
    assert W[held_out].nnz == 0 and W[:, held_out].nnz == 0
    assert adata.obsp["spatial_connectivities_orig"][held_out].nnz > 0
    assert adata.obsm["cellina_z"].shape == (adata.n_obs, 10)

    xy = session.display_coordinates()
    lo, hi = xy.min(0) - 1, xy.max(0) + 1
    lasso = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]])
    mask = session.select_polygons("focal", [lasso], cell_types=["myeloid_1"], domains=["healthy"])
    expected = ((adata.obs["cell_type"] == "myeloid_1") & (adata.obs["domain"] == "healthy")).to_numpy()
    np.testing.assert_array_equal(mask, expected)

    edge = session.run_edge(pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour",
                            n_neighbours=10, n_draws=3, seed=4)
    again = session.run_edge(pool="observed", observed_cell_type="myeloid_1", observed_domain="tumour",
                             n_neighbours=10, n_draws=3, seed=4)
    np.testing.assert_array_equal(edge.expression, again.expression)
    assert edge.std.shape == edge.expression.shape and (edge.std >= 0).all()
    pool = session.donor_pool("observed", observed_cell_type="myeloid_1", observed_domain="tumour")
    assert np.isin(edge.donors, pool).all()
    # each focal cell's donors in one draw are distinct and never the cell itself
    first = edge.donors[0]
    assert all(len(set(row)) == len(row) for row in first)
    assert not (first == edge.indices[:, None]).any()

    session.fill_from_contrast("healthy", "tumour", n_genes=5, holdout="myeloid_1")
    node = session.run_node()
    assert node.expression.shape == (expected.sum(), adata.n_vars)
    assert np.all(np.isfinite(node.log_fold_change()))
    assert "cellina_spatial_x_cf" in adata.obsm
    # shifting neighbours moves the niche features of the focal cells
    assert not np.allclose(adata.obsm["cellina_spatial_x_cf"][expected], adata.obsm["spatial_x"][expected])

    path = tmp_path / "scripted.h5ad"
    session.export(str(path))
    back = ad.read_h5ad(path)
    assert set(back.uns["cellina"]["provenance"]["runs"]) == {"edge 1", "edge 2", "node 1"}
    assert back.uns["cellina"]["provenance"]["current_run"] == "node 1"
    assert back.obs["cellina_focal"].sum() == expected.sum()


def test_cluster_labels_kmeans_and_leiden():
    from cellina.plugin._workflow import cluster_labels

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 0.1, (50, 3)), rng.normal(5, 0.1, (50, 3))]
    labels = cluster_labels(x, "kmeans", n_clusters=2)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]
    with pytest.raises(SessionError, match="unknown clustering method 'dbscan'"):
        cluster_labels(x, "dbscan")
    labels = cluster_labels(x, "leiden")
    assert len(set(labels[:50]) & set(labels[50:])) == 0


def _graph_state(adata):
    return (adata.obsp["spatial_connectivities"].copy(), adata.obsm["spatial_x"].copy(),
            sorted(adata.obsp.keys()), sorted(adata.obs.columns))


def _same_graph_state(adata, state):
    W, phi, obsp_keys, obs_columns = state
    return ((adata.obsp["spatial_connectivities"] != W).nnz == 0 and np.array_equal(adata.obsm["spatial_x"], phi)
            and sorted(adata.obsp.keys()) == obsp_keys and sorted(adata.obs.columns) == obs_columns)


def test_cancelled_or_failed_holdout_training_leaves_session_and_model_alone(tissue, monkeypatch):
    import threading

    from cellina.model import Cellina
    from cellina.plugin._workflow import TrainingCancelled, train_steps
    from cellina.plugin._session import TrainParams

    session = CellinaSession(tissue)
    session.preprocess(n_top_genes=None, bandwidth_um=15, max_neighbours=8, min_counts_gene=0)
    session.train(max_epochs=1, batch_size=32)
    model, adata = session.model, session.adata
    state = _graph_state(adata)
    s_before = model.get_latent_representation(adata, latent_key="s")
    held = dict(holdout_cell_type="A", holdout_domain="tumour")

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrainingCancelled):
        run_sync(train_steps(adata, session.keys, TrainParams(max_epochs=2, batch_size=32, **held), cancel))
    assert _same_graph_state(adata, state) and session.model is model

    def broken(self, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Cellina, "train", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_sync(train_steps(adata, session.keys, TrainParams(max_epochs=2, batch_size=32, **held)))
    assert _same_graph_state(adata, state) and session.model is model
    np.testing.assert_array_equal(model.get_latent_representation(adata, latent_key="s"), s_before)


def test_holdout_masking_follows_each_finished_training(tissue):
    session = CellinaSession(tissue)
    session.preprocess(n_top_genes=None, bandwidth_um=15, max_neighbours=8, min_counts_gene=0)
    adata = session.adata
    full = adata.obsp["spatial_connectivities"].copy()
    session.train(max_epochs=1, batch_size=32, holdout_cell_type="A", holdout_domain="tumour")
    held = np.flatnonzero(((adata.obs["cell_type"] == "A") & (adata.obs["domain"] == "tumour")).to_numpy())
    assert held.size > 0 and session.adata is adata
    W = adata.obsp["spatial_connectivities"]
    assert W[held].nnz == 0 and W[:, held].nnz == 0
    assert (adata.obsp["spatial_connectivities_orig"] != full).nnz == 0
    assert np.abs(adata.obsm["spatial_x"][held]).sum() == 0
    np.testing.assert_array_equal(adata.uns["spatial_neighbors"]["params"]["test_indices"], held)
    # training never wrote scvi-tools' setup into the session's AnnData from its worker
    assert session.model.adata is not adata
    # a later run that holds nobody out gets everyone back
    session.train(max_epochs=1, batch_size=32)
    assert (adata.obsp["spatial_connectivities"] != full).nnz == 0
    assert "spatial_connectivities_orig" not in adata.obsp
    assert np.abs(adata.obsm["spatial_x"][held]).sum() > 0


def test_sender_groups_match_row_by_row_resolution():
    rng = np.random.default_rng(3)
    n = 20_000
    types = np.array([f"type_{i}" for i in range(10)])
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(types, n))}, index=np.arange(n).astype(str))
    adata = ad.AnnData(X=sp.csr_matrix((n, 30), dtype=np.float32), obs=obs,
                       var=pd.DataFrame(index=[f"g{j}" for j in range(30)]))
    adata.obsm["spatial"] = rng.uniform(0, 1000, (n, 2))
    adata.layers["counts"] = adata.X
    session = CellinaSession(adata, TissueKeys(domain_key=None))
    region = rng.random(n) < 0.3
    session.set_selection(FOCAL, region)
    rows = [{"gene": f"g{j % 30}", "value": 0.1 * (j + 1), "senders": (str(types[j % 10]),) if j % 3 else (),
             "region": j % 4 == 0} for j in range(200)]
    table = pd.DataFrame(rows)
    groups, perturbations = sender_groups(session, table)
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


def test_node_run_groups_senders_in_the_worker_not_in_prepare(tissue, monkeypatch):
    import threading

    import cellina.plugin._workflow as wf

    session = CellinaSession(tissue)
    session.preprocess(n_top_genes=None, bandwidth_um=15, max_neighbours=8, min_counts_gene=0)
    session.train(max_epochs=1, batch_size=32)
    session.set_selection(FOCAL, np.arange(20))
    session.add_gene_shift("g1", -10.0, senders=["B"])
    threads = []
    original = wf.group_senders
    monkeypatch.setattr(wf, "group_senders", lambda *a: (threads.append(threading.current_thread().name),
                                                          original(*a))[1])
    job = wf.prepare_node(session)
    assert threads == []  # the main thread only checks and gathers references
    result = {}
    worker = threading.Thread(target=lambda: result.update(run=run_sync(wf.node_steps(**job))), name="node-worker")
    worker.start()
    worker.join()
    assert threads == ["node-worker"] and result["run"].expression.shape == (20, tissue.n_vars)
