"""The niche reach from data in the Tissue dock and the session: scan, curve, suggestion, provenance.

The tissue is a two-slide world whose receivers sense a ligand over a Gaussian kernel of 25 um.
"""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._session import CellinaSession
from cellina.plugin._state import SessionError, TissueKeys
from cellina.plugin.widgets import CellinaDock, TissueWidget

KEYS = TissueKeys(cell_type_key="coarse_type", domain_key="domain", batch_key="slide", counts_layer="counts")


@pytest.fixture(scope="module")
def ligand_world():
    from cellina.datasets import make_world

    return make_world("dev_ligand_gaussian", n_cells=4000, n_genes=200)


def test_the_session_scans_and_preprocessing_records_the_suggestion(ligand_world):
    session = CellinaSession(ligand_world.copy(), KEYS)
    heard = []
    session.events.reach.connect(heard.append)
    curve = session.scan_reach()
    assert heard == [curve] and session.reach_curve is curve
    assert curve.signal and 12.5 <= curve.suggested_bandwidth <= 50
    session.preprocess(
        n_top_genes=None, bandwidth_um=curve.suggested_bandwidth, max_neighbours=curve.suggested_max_neighbours
    )
    record = session.adata.uns["cellina"]["preprocess"]["niche_reach"]
    assert record["suggestion_taken"] and record["suggested_bandwidth"] == curve.suggested_bandwidth
    assert session.adata.uns["spatial_neighbors"]["params"]["bandwidth"] == curve.suggested_bandwidth
    # the scan stays with the preprocessed copy of the same cells
    assert session.reach_curve is curve


def test_the_scan_needs_the_cell_types(ligand_world):
    session = CellinaSession(ligand_world.copy(), KEYS)
    with pytest.raises(SessionError, match="cell-type key"):
        session.run(session.reach_job(TissueKeys(cell_type_key=None, domain_key="domain", batch_key="slide")))
    assert session.reach_curve is None


def _tissue_dock(make_napari_viewer, monkeypatch, adata):
    from cellina.plugin._points import points_layer_data

    monkeypatch.setattr(CellinaDock, "synchronous", True)
    viewer = make_napari_viewer()
    dock = TissueWidget(viewer)
    data, kwargs, _ = points_layer_data(adata, color_by="coarse_type", spatial_key="spatial")
    viewer.add_points(data, **kwargs)
    dock.cell_type.setCurrentText("coarse_type")
    dock.batch.setCurrentText("slide")
    dock.cell_type.activated.emit(dock.cell_type.currentIndex())
    return dock


def test_the_dock_shows_the_curve_and_takes_the_suggestion(make_napari_viewer, monkeypatch, ligand_world):
    dock = _tissue_dock(make_napari_viewer, monkeypatch, ligand_world.copy())
    assert dock.session.keys.cell_type_key == "coarse_type"
    assert not dock.reach.plot.isVisible()
    dock.reach.button.click()
    assert dock.last_error is None, dock.last_error
    curve = dock.session.reach_curve
    assert curve is not None and curve.signal
    assert not dock.reach.plot.isHidden() and len(dock.reach.plot.axes.lines) >= 2
    assert dock.bandwidth.value() == pytest.approx(curve.suggested_bandwidth, abs=0.01)
    assert dock.max_neighbours.value() == curve.suggested_max_neighbours
    assert "suggested bandwidth" in dock.reach.note.text()
    dock.n_top_genes.setValue(150)
    dock.preprocess()
    assert dock.last_error is None, dock.last_error
    params = dock.session.adata.uns["spatial_neighbors"]["params"]
    assert params["bandwidth"] == pytest.approx(curve.suggested_bandwidth, abs=0.01)
    # the preprocessed copy keeps its scan; another tissue does not
    assert not dock.reach.plot.isHidden()
    dock.session.set_adata(ligand_world[:2000].copy(), KEYS)
    assert dock.reach.plot.isHidden() and dock.reach.note.text() == ""


def test_without_signal_the_dock_keeps_its_bandwidth_and_says_so(make_napari_viewer, monkeypatch, ligand_world):
    shuffled = ligand_world.copy()
    shuffled.obsm["spatial"] = shuffled.obsm["spatial"][np.random.default_rng(0).permutation(shuffled.n_obs)]
    dock = _tissue_dock(make_napari_viewer, monkeypatch, shuffled)
    before = (dock.bandwidth.value(), dock.max_neighbours.value())
    dock.reach.button.click()
    assert dock.last_error is None, dock.last_error
    assert not dock.session.reach_curve.signal
    assert (dock.bandwidth.value(), dock.max_neighbours.value()) == before
    assert "no reach stands out" in dock.reach.note.text()
    assert "e0a030" in dock.reach.note.styleSheet()
