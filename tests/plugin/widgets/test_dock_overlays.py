"""What the canvas and the docks show around a selection and a contrast: rings around the selected
cells, lasso outlines of a constant width on screen, domains in reference-then-target order."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._state import DONORS, FOCAL
from cellina.plugin.widgets import CellinaDock
from cellina.plugin.widgets._bridge import LASSO_COLOURS, RING_LAYERS, get_bridge
from cellina.plugin.widgets._overlays import LASSO_WIDTH_PX, RING_MIN_PX

from .._helpers import cosmx_style, quadrant
from ._viewers import DOCK_CLASSES


@pytest.fixture
def cosmx_viewer(make_napari_viewer, monkeypatch):
    """Tissue, edge, node and results docks on a CosMx-style tissue read with its pixel size."""
    from cellina.plugin._state import TissueKeys

    monkeypatch.setattr(CellinaDock, "synchronous", True)
    adata, _ = cosmx_style(n_cells=320)
    viewer = make_napari_viewer()
    docks = {name: DOCK_CLASSES[name](viewer) for name in ("tissue", "edge", "node", "results")}
    keys = TissueKeys(
        x_column="CenterX_global_px",
        y_column="CenterY_global_px",
        pixel_size=0.12028,
        cell_type_key="ist",
        domain_key="typ",
    )
    get_bridge(viewer).adopt_layer(viewer.add_points(np.zeros((adata.n_obs, 2)), metadata={"adata": adata}), keys)
    return viewer, docks


def _lasso(viewer, name: str, which: str):
    bridge = get_bridge(viewer)
    layer = bridge.lasso_layer(name)
    layer.add(quadrant(bridge.session.display_coordinates(), which), shape_type="polygon")
    return layer


def test_selected_cells_are_ringed_in_their_lasso_colour(cosmx_viewer):
    viewer, docks = cosmx_viewer
    session = docks["tissue"].session
    _lasso(viewer, FOCAL, "low")
    _lasso(viewer, DONORS, "high")
    for name in (FOCAL, DONORS):
        ring = viewer.layers[RING_LAYERS[name]]
        assert len(ring.data) == session.selection_counts()[name] > 0
        np.testing.assert_allclose(ring.border_color[0][:3], _rgb(LASSO_COLOURS[name]), atol=1e-3)
        assert ring.canvas_size_limits[0] == RING_MIN_PX
    names = [layer.name for layer in viewer.layers]
    cells = get_bridge(viewer).cells_layer.name
    assert names.index(cells) < names.index(RING_LAYERS[FOCAL]) < names.index("focal lasso")
    docks["edge"].clear_lassos()
    assert RING_LAYERS[FOCAL] not in viewer.layers and RING_LAYERS[DONORS] not in viewer.layers


def test_a_refined_selection_rings_only_the_cells_it_keeps(cosmx_viewer):
    viewer, docks = cosmx_viewer
    session = docks["tissue"].session
    _lasso(viewer, FOCAL, "low")
    before = len(viewer.layers[RING_LAYERS[FOCAL]].data)
    session.refine_selection(FOCAL, domains=["232_REF"])
    assert len(viewer.layers[RING_LAYERS[FOCAL]].data) == session.selection_counts()[FOCAL] < before


def test_lasso_outlines_keep_their_width_on_screen_at_any_zoom(cosmx_viewer):
    viewer, _ = cosmx_viewer
    layer = _lasso(viewer, FOCAL, "low")
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    for zoom in (0.05, 1.0, 20.0):
        camera.zoom = zoom
        assert layer.edge_width[0] * zoom == pytest.approx(LASSO_WIDTH_PX)
        assert layer.current_edge_width * zoom == pytest.approx(LASSO_WIDTH_PX)


def test_contrasts_and_donors_default_to_reference_then_diseased_domain(cosmx_viewer):
    _, docks = cosmx_viewer
    node, edge, results = docks["node"], docks["edge"], docks["results"]
    assert (node.control_domain.currentText(), node.target_domain.currentText()) == ("232_REF", "232_CRC")
    assert "control <b>232_REF</b> -> target <b>232_CRC</b>" in node.direction.text()
    assert edge.pool_domain.currentText() == "232_CRC" and results.target_domain.currentText() == "232_CRC"
    assert edge.refine_domains.item(0).text() == "232_REF"
    node.target_domain.setCurrentText("232_TVA")
    assert "target <b>232_TVA</b>" in node.direction.text()


def test_a_contrast_fill_says_what_it_filled_and_which_way(cosmx_viewer):
    _, docks = cosmx_viewer
    node = docks["node"]
    node.n_genes.setValue(5)
    node.fill_from_contrast()
    shifts = node.session.gene_shifts
    assert len(shifts) > 0 and node.table.rowCount() == len(shifts)
    assert node.status.text().startswith(f"filled {len(shifts)} shifts, the top 5 genes of")
    assert node.status.text().endswith("control 232_REF -> target 232_CRC")


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def test_the_donors_an_edge_run_drew_are_ringed_until_a_node_run_is_shown(cosmx_viewer):
    from cellina.plugin._state import RunResult

    viewer, docks = cosmx_viewer
    session = docks["tissue"].session
    focal, values = np.array([0, 1]), np.ones((2, session.adata.n_vars))
    drawn = np.array([[[5, 6, 7], [6, 8, 9]]])
    session.add_run(RunResult("edge 1", "edge", focal, values, values, {}, donors=drawn))
    np.testing.assert_allclose(viewer.layers[RING_LAYERS[DONORS]].data, session.display_coordinates()[[5, 6, 7, 8, 9]])
    session.add_run(RunResult("node 1", "node", focal, values, values, {}))
    assert RING_LAYERS[DONORS] not in viewer.layers
    session.set_current_run("edge 1")
    assert len(viewer.layers[RING_LAYERS[DONORS]].data) == 5


def test_a_run_with_a_range_shows_it_beside_each_gene(cosmx_viewer):
    import pandas as pd

    from cellina.plugin._state import RunResult

    _, docks = cosmx_viewer
    session, results = docks["tissue"].session, docks["results"]
    genes = session.adata.var_names
    focal, factual = np.array([0, 1]), np.ones((2, genes.size))
    moved = factual * np.linspace(0.5, 2.0, genes.size)
    lfc = np.log2(np.linspace(0.5, 2.0, genes.size))
    change_range = pd.DataFrame({"lfc": lfc, "low": lfc - 0.25, "high": lfc + 0.5}, index=genes)
    change_range.attrs.update(checked_types={"T cell": {"reference": 40, "donors": 35}}, n_draws=5)
    session.add_run(RunResult("edge 1", "edge", focal, moved, factual, {}, change_range=change_range))
    table = results.top_table
    assert [table.horizontalHeaderItem(j).text() for j in range(table.columnCount())][-1] == "range"
    for row in range(table.rowCount()):
        low, high = change_range.loc[table.item(row, 0).text(), ["low", "high"]]
        assert table.item(row, 2).text() == f"{low:+.2f} to {high:+.2f}"
    assert table.item(0, 2).text() in ("-1.25 to -0.50", "+0.75 to +1.50")  # halved or doubled, changed most
    assert "error on 1 other type(s) checked among the donors (T cell)" in results.draws_label.text()
    assert "widened by two spreads of 5 donor draws" in results.draws_label.text()
