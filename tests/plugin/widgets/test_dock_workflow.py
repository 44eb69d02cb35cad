"""End to end through the docks on two slides with the slide as batch.

sample -> preprocess -> train -> lasso -> edge and node runs -> results -> export, run once
(synchronously) by a module fixture that records what the user saw at each step; each
test then checks one behaviour.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from qtpy.QtCore import Qt

from cellina.plugin._state import CLUSTER_COLUMNS, DONORS, FOCAL
from cellina.plugin.widgets._bridge import CELLS, RESULT_LAYER

from .._helpers import quadrant
from ._viewers import sample_viewer


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    shown: list[str] = []
    with sample_viewer(synchronous=True, errors=shown) as (viewer, docks):
        seen = _run_workflow(viewer, docks, tmp_path_factory.mktemp("workflow"))
        seen["errors"] = list(shown)
        yield viewer, docks, seen


def _run_workflow(viewer, w, folder) -> dict:
    seen: dict = {}
    session, bridge = w["tissue"].session, w["tissue"].bridge
    seen["sample"] = viewer.layers["synthetic tumour section"]
    seen["adopted"] = (session.adata.n_obs, bridge.cells_layer)
    _preprocess_and_train(w, seen)
    seen["layers after training"] = [layer.name for layer in viewer.layers]
    seen["colour choices"] = [w["tissue"].color_by.itemText(i) for i in range(w["tissue"].color_by.count())]
    _recolour(w, seen)
    _lasso(viewer, w, seen)
    _edge(viewer, w, seen)
    _node(viewer, w, seen)
    _results(w, seen)
    _export(w, seen, folder)
    _far_niches(w, seen)
    return seen


def _preprocess_and_train(w, seen) -> None:
    tissue, model = w["tissue"], w["model"]
    tissue.n_top_genes.setValue(80)
    tissue.max_neighbours.setValue(15)
    tissue.preprocess()
    seen["preprocess error"] = tissue.last_error
    model.max_epochs.setValue(2)
    model.batch_size.setValue(128)
    model.n_clusters.setValue(4)
    model.train()
    seen["train error"] = model.last_error


def _recolour(w, seen) -> None:
    tissue, adata = w["tissue"], w["tissue"].session.adata
    tissue.recolour("domain")
    seen["domain legend"] = tissue.legend.labels()
    tissue.recolour(adata.var_names[0])
    seen["gene legend"] = tissue.legend.info.kind
    tissue.recolour(CLUSTER_COLUMNS["s"])
    seen["cluster legend"] = tissue.legend.labels()
    seen["cluster colours"] = tissue.bridge.cells_layer.face_color.copy()


def _lasso(viewer, w, seen) -> None:
    session, edge = w["tissue"].session, w["edge"]
    edge.draw_focal.click()
    seen["lasso mode"] = viewer.layers["focal lasso"].mode
    points = session.display_coordinates()
    viewer.layers["focal lasso"].add(quadrant(points, "low"), shape_type="polygon")
    edge.draw_donors.click()
    viewer.layers["donor lasso"].add(quadrant(points, "high"), shape_type="polygon")
    y, x = points[:, 0], points[:, 1]
    mid = (points.min(axis=0) + points.max(axis=0)) / 2
    seen["expected focal"] = int(((y <= mid[0]) & (x <= mid[1])).sum())
    seen["counts"] = session.selection_counts()
    seen["counts text"] = edge.counts.text()
    # refine the focal cells to the lasso's most common domain
    domains = session.adata.obs["domain"].astype(str)
    domain = domains[session.selections[FOCAL].base].value_counts().index[0]
    edge.refine_target.setCurrentText(FOCAL)
    edge.refine_domains.findItems(domain, Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    edge.refine()
    seen["in domain"] = int((session.selections[FOCAL].base & (domains == domain).to_numpy()).sum())
    seen["refined count"] = session.selection_counts()[FOCAL]


def _edge(viewer, w, seen) -> None:
    w["edge"].n_neighbours.setValue(8)
    w["edge"].n_draws.setValue(2)
    w["edge"].run()
    seen["edge error"] = w["edge"].last_error
    seen["result layer"] = viewer.layers[RESULT_LAYER]
    seen["result cells"] = len(viewer.layers[RESULT_LAYER].data)
    seen["top genes"] = w["results"].top_table.rowCount()


def _node(viewer, w, seen) -> None:
    gene = w["results"].top_table.item(0, 0).text()
    w["node"].gene.setCurrentText(gene)
    w["node"].knockout.click()
    w["node"].add_shift()
    seen["node gene"] = gene
    seen["shift values"] = w["node"].session.gene_shifts.table["value"].tolist()
    w["node"].run()
    seen["node error"] = w["node"].last_error
    seen["result layers"] = [layer for layer in viewer.layers if layer.name.startswith(RESULT_LAYER)]


def _results(w, seen) -> None:
    results = w["results"]
    results.run_choice.setCurrentText("edge 1")
    results.run_choice.activated.emit(0)
    seen["current after switch"] = results.session.current_run
    results.show_result()
    seen["lfc legend"] = results.legend.info.name
    seen["table header"] = results.top_table.horizontalHeaderItem(1).text()
    seen["lfc column"] = [results.top_table.item(i, 1).text() for i in range(results.top_table.rowCount())]
    table = results.top_table
    seen["headers"] = [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())]
    seen["last column"] = [table.item(i, table.columnCount() - 1).text() for i in range(table.rowCount())]
    seen["draws text"] = results.draws_label.text()
    seen["warning shown"] = not results.warning.isHidden()
    results.mode.setCurrentText("std across draws")
    results.show_result()
    seen["std legend"] = results.legend.info.name
    results.target_type.setCurrentText("myeloid_1")
    results.target_domain.setCurrentText("tumour")
    seen["plot"] = results.plot_comparison()
    seen["layer order"] = [layer.name for layer in results.viewer.layers]


def _export(w, seen, folder) -> None:
    from napari.plugins.io import save_layers

    path = folder / "perturbed.h5ad"
    seen["written"] = w["export"].export(str(path))
    seen["export label"] = w["export"].run_label.text()
    seen["back"] = ad.read_h5ad(path) if path.exists() else None
    # File > Save through our writer writes the same export
    seen["saved"] = save_layers(str(folder / "saved.h5ad"), [w["tissue"].bridge.cells_layer], plugin="napari-cellina")


def _far_niches(w, seen) -> None:
    """A run whose focal cells get niche codes far from every training niche: the dock warns."""
    from dataclasses import replace
    from unittest.mock import patch

    from cellina.counterfactual import niche_novelty

    results, session = w["results"], w["results"].session
    run = session.runs["edge 1"]
    far = session.model.get_latent_representation(session.adata, indices=run.indices, latent_key="s") + 50.0
    novelty = niche_novelty(session.model, session.adata, run.indices, far)
    warned: list[str] = []
    with patch("cellina.plugin.widgets._results.show_warning", warned.append):
        session.add_run(replace(run, name="edge far", novelty=novelty))
        seen["far warning"] = results.warning.text() if not results.warning.isHidden() else ""
        seen["far export"] = session.build_export()
        session.set_current_run("edge 1")
        seen["warning after switching back"] = not results.warning.isHidden()
    seen["far notifications"] = warned


# ---------------------------------------------------------------------- tissue and model
def test_the_tissue_dock_adopts_the_sample_as_it_appears(workflow):
    _, _, seen = workflow
    assert seen["adopted"] == (700, seen["sample"])


def test_preprocessing_and_training_raise_no_error(workflow):
    _, _, seen = workflow
    assert seen["preprocess error"] is None and seen["train error"] is None


def test_preprocessing_builds_the_graph_per_slide(workflow):
    _, w, _ = workflow
    adata = w["tissue"].session.adata
    assert adata.n_vars == 80 and "spatial_x" in adata.obsm and "cellina_lognorm" in adata.layers
    assert adata.uns["spatial_neighbors"]["params"]["library_key"] == "slide"
    W = adata.obsp["spatial_connectivities"].tocoo()
    slides = adata.obs["slide"].to_numpy()
    assert (slides[W.row] == slides[W.col]).all()


def test_the_cells_layer_is_updated_in_place_not_duplicated(workflow):
    viewer, w, seen = workflow
    assert w["tissue"].bridge.cells_layer is seen["sample"]
    assert len(seen["sample"].data) == w["tissue"].session.adata.n_obs and CELLS not in viewer.layers


def test_training_uses_the_slide_as_batch_and_the_recommended_preset(workflow):
    _, w, _ = workflow
    model = w["tissue"].session.model
    assert model is not None and model.module.n_batch == 2 and model.preset == "recommended"
    assert len(w["model"].loss_curve.series) > 0


def test_latent_clusters_are_columns_of_the_cells_layer_not_extra_layers(workflow):
    _, w, seen = workflow
    adata, cells = w["tissue"].session.adata, seen["sample"]
    assert [name for name in seen["layers after training"] if "cluster" in name or "niche" in name] == []
    for column in CLUSTER_COLUMNS.values():
        assert adata.obs[column].nunique() == 4
        np.testing.assert_array_equal(cells.features[column].astype(str), adata.obs[column].astype(str))


def test_latent_clusters_are_colour_choices_with_a_legend(workflow):
    _, w, seen = workflow
    adata = w["tissue"].session.adata
    assert set(CLUSTER_COLUMNS.values()) <= set(seen["colour choices"])
    assert seen["cluster legend"] == list(adata.obs[CLUSTER_COLUMNS["s"]].cat.categories)
    codes = adata.obs[CLUSTER_COLUMNS["s"]].cat.codes.to_numpy()
    assert len(np.unique(seen["cluster colours"][codes == 0], axis=0)) == 1


def test_hovering_a_cell_shows_its_niche_cluster(workflow):
    _, w, seen = workflow
    cells = seen["sample"]
    status = cells.get_status(cells.data[0], world=True)
    text = status["coordinates"] if isinstance(status, dict) else str(status)
    row = cells.features.iloc[cells.get_value(cells.data[0], world=True)]
    assert f"{CLUSTER_COLUMNS['s']}: {row[CLUSTER_COLUMNS['s']]}" in text


def test_recolouring_by_domain_and_gene_shows_legend_and_colorbar(workflow):
    _, w, seen = workflow
    adata = w["tissue"].session.adata
    assert set(seen["domain legend"]) >= set(adata.obs["domain"].astype(str).unique())
    assert seen["gene legend"] == "continuous"


# ---------------------------------------------------------------------- lassos
def test_the_draw_buttons_open_lasso_layers(workflow):
    _, _, seen = workflow
    assert seen["lasso mode"] == "add_polygon_lasso"


def test_lassos_select_the_cells_inside(workflow):
    _, _, seen = workflow
    assert seen["counts"][FOCAL] == seen["expected focal"] and seen["counts"][DONORS] > 0
    assert f"focal: {seen['expected focal']} cells" in seen["counts text"]


def test_refining_keeps_one_domain_of_the_lasso(workflow):
    _, _, seen = workflow
    assert seen["refined count"] == seen["in domain"] > 0


# ---------------------------------------------------------------------- runs
def test_an_edge_run_with_two_draws_keeps_mean_and_spread(workflow):
    _, w, seen = workflow
    session = w["tissue"].session
    run = session.runs["edge 1"]
    assert seen["edge error"] is None
    assert run.expression.shape == (seen["in domain"], session.adata.n_vars) and run.std is not None
    assert run.donors.shape == (2, seen["in domain"], 8)


def test_edge_donors_come_from_the_donor_lasso_never_the_cell_itself(workflow):
    _, w, _ = workflow
    session = w["tissue"].session
    run = session.runs["edge 1"]
    assert np.isin(run.donors, session.selection_indices(DONORS)).all()
    assert not (run.donors == run.indices[None, :, None]).any()


def test_a_run_is_shown_on_its_focal_cells_with_the_top_genes(workflow):
    _, _, seen = workflow
    assert seen["result cells"] == seen["in domain"] and seen["top genes"] == 20


def test_a_knockout_node_run(workflow):
    _, w, seen = workflow
    session = w["tissue"].session
    node_run, edge_run = session.runs["node 1"], session.runs["edge 1"]
    assert seen["shift values"] == [-10.0] and seen["node error"] is None
    assert node_run.kind == "node" and node_run.expression.shape == edge_run.expression.shape


def test_the_result_layer_is_reused_across_runs(workflow):
    _, _, seen = workflow
    assert seen["result layers"] == [seen["result layer"]]


# ---------------------------------------------------------------------- results
def test_switching_back_to_an_earlier_run(workflow):
    _, _, seen = workflow
    assert seen["current after switch"] == "edge 1"


def test_the_spread_across_draws_is_shown(workflow):
    _, _, seen = workflow
    assert seen["std legend"].endswith("std of the counterfactual across draws")


def test_the_top_genes_carry_their_spread_across_draws(workflow):
    _, w, seen = workflow
    table = w["tissue"].session.top_changed_genes("edge 1")
    expected = [f"{v:+.3f}  ± {sd:.3f}" for v, sd in zip(table["log2fc"], table["std"], strict=True)]
    assert seen["lfc column"] == expected and (table["std"] > 0).all()
    assert seen["draws text"].startswith("2 donor draws")


def test_the_edge_dock_asks_for_a_range_only_when_ticked(workflow):
    _, w, seen = workflow
    run = w["tissue"].session.runs["edge 1"]
    assert run.params["change_range"] is False and run.change_range is None and run.range_note == ""
    assert "Range" not in seen["draws text"] and "range" not in seen["headers"]


def test_the_dock_says_what_the_model_saw_of_the_focal_types(workflow):
    _, w, seen = workflow
    support = w["tissue"].session.runs["edge 1"].support
    assert support is not None and support.n_training[0] > 0
    assert support.message() in seen["draws text"] and "training cells of that type" in seen["draws text"]


def test_no_warning_when_the_niches_lie_within_training(workflow):
    _, w, seen = workflow
    assert w["tissue"].session.runs["edge 1"].novelty.share_outside < 0.2
    assert not seen["warning shown"] or "outside what the model saw" in w["results"].warning.text()


def test_niches_outside_training_raise_a_warning_in_the_dock_and_a_notification(workflow):
    _, w, seen = workflow
    n = seen["in domain"]
    assert seen["far warning"].startswith(f"⚠ {n} of {n} focal cells (100%)")
    assert "outside what the model saw in training" in seen["far warning"]
    assert len(seen["far notifications"]) == 1 and seen["far notifications"][0].startswith("edge far: ")
    assert seen["warning after switching back"] == (w["tissue"].session.runs["edge 1"].novelty.n_outside > 0)


def test_the_export_stores_novelty_and_the_warning_count(workflow):
    _, w, seen = workflow
    back, run = seen["back"], w["tissue"].session.runs["edge 1"]
    novelty = back.obs["cellina_niche_novelty"].to_numpy()
    np.testing.assert_allclose(novelty[run.indices], run.novelty.percentile)
    assert np.isnan(np.delete(novelty, run.indices)).all()
    assert back.obs["cellina_outside_training"].sum() == run.novelty.n_outside
    np.testing.assert_allclose(back.layers["cellina_counterfactual_std"][run.indices].toarray(), run.std, rtol=1e-6)
    prov = back.uns["cellina"]["provenance"]
    assert prov["n_outside_training"] == run.novelty.n_outside
    assert prov["runs"]["edge 1"]["novelty"]["n_outside_training"] == run.novelty.n_outside
    assert "n_outside_training" in prov["runs"]["node 1"]["novelty"]
    far = seen["far export"]
    assert far.obs["cellina_outside_training"].sum() == seen["in domain"]
    assert far.uns["cellina"]["provenance"]["n_outside_training"] == seen["in domain"]


def test_results_are_drawn_above_the_cells_and_below_rings_and_lassos(workflow):
    _, _, seen = workflow
    order = seen["layer order"]
    cells = seen["sample"].name
    assert order.index(cells) < order.index(RESULT_LAYER) < order.index("focal cells") < order.index("focal lasso")
    assert order[-1] in ("focal lasso", "donor lasso")


def test_every_log_fold_change_names_its_base_and_reference(workflow):
    _, _, seen = workflow
    assert seen["lfc legend"].endswith("log2 fold change, counterfactual vs factual (per cell)")
    assert seen["table header"] == "log2FC, counterfactual vs factual (focal mean)"


def test_observed_versus_predicted(workflow):
    _, _, seen = workflow
    data = seen["plot"]
    assert data is not None and np.isfinite(data["pearson"]) and len(data["deg"]) == 50


# ---------------------------------------------------------------------- export
def test_the_export_dock_names_the_run_it_writes(workflow):
    _, _, seen = workflow
    assert "edge 1" in seen["export label"]


def test_the_export_holds_the_current_run_s_expression(workflow):
    _, w, seen = workflow
    back, run = seen["back"], w["tissue"].session.runs["edge 1"]
    assert seen["written"] is not None and back.n_obs == w["tissue"].session.adata.n_obs
    assert back.obs["cellina_focal"].sum() == seen["in domain"]
    assert "cellina_z" in back.obsm and "cellina_s" in back.obsm
    cf = back.layers["cellina_counterfactual"]
    np.testing.assert_allclose(cf[run.indices].toarray(), run.expression, rtol=1e-6)
    assert cf[np.setdiff1d(np.arange(back.n_obs), run.indices)].nnz == 0


def test_the_export_provenance_records_every_run_and_the_model(workflow):
    _, w, seen = workflow
    prov, run = seen["back"].uns["cellina"]["provenance"], w["tissue"].session.runs["edge 1"]
    assert prov["current_run"] == "edge 1" and set(prov["runs"]) == {"edge 1", "node 1"}
    np.testing.assert_array_equal(prov["runs"]["edge 1"]["donor_indices"], run.donors)
    assert list(prov["runs"]["node 1"]["gene_shifts"]["gene"]) == [seen["node gene"]]
    assert prov["model"]["class"] == "Cellina" and len(prov["model"]["weights_sha256"]) == 64
    assert prov["model"]["init_params"]["preset"] == "recommended"
    assert "scvi-tools" in prov["versions"]


def test_file_save_writes_the_same_export(workflow):
    _, _, seen = workflow
    assert seen["saved"] and ad.read_h5ad(seen["saved"][0]).uns["cellina"]["provenance"]["current_run"] == "edge 1"


def test_the_whole_workflow_shows_no_error(workflow):
    _, _, seen = workflow
    assert seen["errors"] == []


def test_the_dock_s_default_options_reach_the_model(workflow):
    from cellina.model import FactorisedNicheDecoder

    _, w, _ = workflow
    module = w["tissue"].session.model.module
    assert w["model"].params().niche_decoder == "type_gated"
    assert w["model"].params().spatial_decoding == "mean" and module.spatial_decoding == "mean"
    assert w["model"].params().type_aware_discriminator and module.type_aware_discriminator
    assert isinstance(module.decoder, FactorisedNicheDecoder) and module.decoder.type_niche_loadings is not None
