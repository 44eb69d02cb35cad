"""A viewer with every Cellina dock on the sample tissue, shared by a test module."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

import cellina.plugin._sample_data as sample_data
from cellina.plugin.widgets import (
    CellinaDock,
    EdgeWidget,
    ExportWidget,
    ModelWidget,
    NodeWidget,
    ResultsWidget,
    TissueWidget,
)

DOCK_CLASSES = {
    "tissue": TissueWidget,
    "model": ModelWidget,
    "edge": EdgeWidget,
    "node": NodeWidget,
    "results": ResultsWidget,
    "export": ExportWidget,
}


@contextmanager
def _fresh_app_model():
    """A fresh napari application model for a viewer that outlives one test.

    napari's ``make_napari_viewer`` gives each test its own application model and clears
    the plugin registration cache; a viewer shared by a module needs the same, or napari
    registers this plugin's commands twice on its global model.
    """
    from unittest.mock import patch

    from app_model import Application
    from napari._app_model._app import NapariApplication, _napari_names
    from napari._qt._qapp_model.qactions import init_qactions
    from napari.plugins import _initialize_plugins

    name = f"cellina_tests_{id(object())}"
    app = NapariApplication(name)
    app.injection_store.namespace = _napari_names
    _initialize_plugins.cache_clear()
    init_qactions.cache_clear()
    try:
        with patch.object(NapariApplication, "get_app_model", return_value=app):
            yield
    finally:
        Application.destroy(name)
        _initialize_plugins.cache_clear()
        init_qactions.cache_clear()


@contextmanager
def sample_viewer(synchronous: bool, errors: list[str] | None = None):
    """A viewer with the six docks and the sample on two slides (700 cells, 100 genes).

    The shipped sample is 6,000 cells on one slide; the same path on a small two-slide
    tissue keeps the tests fast and covers several batches.
    """
    import napari

    import cellina.plugin.widgets._common as common

    with _fresh_app_model(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(CellinaDock, "synchronous", synchronous)
        mp.setattr(sample_data, "SAMPLE_N_CELLS", 700)
        mp.setattr(sample_data, "SAMPLE_N_GENES", 100)
        mp.setattr(sample_data, "SAMPLE_N_SLIDES", 2)
        if errors is not None:
            mp.setattr(common, "show_error", errors.append)
        viewer = napari.Viewer(show=False)
        try:
            docks = {name: cls(viewer) for name, cls in DOCK_CLASSES.items()}
            for name, widget in docks.items():
                viewer.window.add_dock_widget(widget, name=name)
            viewer.open_sample("napari-cellina", "synthetic_tumour_section")
            docks["tissue"].batch.setCurrentText("slide")
            yield viewer, docks
        finally:
            viewer.close()


def preprocess_and_train(docks, epochs: int = 2, n_clusters: int = 4) -> None:
    """Preprocess (80 genes, 15 neighbours, the slide as batch) and train through the docks (synchronous)."""
    tissue, model = docks["tissue"], docks["model"]
    tissue.n_top_genes.setValue(80)
    tissue.max_neighbours.setValue(15)
    tissue.preprocess()
    assert tissue.last_error is None, tissue.last_error
    model.max_epochs.setValue(epochs)
    model.batch_size.setValue(128)
    model.n_clusters.setValue(n_clusters)
    model.train()
    assert model.last_error is None, model.last_error
