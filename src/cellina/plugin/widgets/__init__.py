"""Cellina dock widgets: thin Qt views over the session (all science lives in the library)."""

from cellina.plugin.widgets._bridge import get_bridge
from cellina.plugin.widgets._common import CellinaDock
from cellina.plugin.widgets._edge import EdgeWidget
from cellina.plugin.widgets._export import ExportWidget
from cellina.plugin.widgets._model import ModelWidget
from cellina.plugin.widgets._node import NodeWidget
from cellina.plugin.widgets._results import ResultsWidget
from cellina.plugin.widgets._tissue import TissueWidget

__all__ = [
    "DOCKS",
    "add_cellina_docks",
    "CellinaDock",
    "EdgeWidget",
    "ExportWidget",
    "ModelWidget",
    "NodeWidget",
    "ResultsWidget",
    "TissueWidget",
    "get_bridge",
]

DOCKS = (
    ("1. Tissue", TissueWidget),
    ("2. Model", ModelWidget),
    ("3. Edge perturbation", EdgeWidget),
    ("4. Node perturbation", NodeWidget),
    ("5. Results", ResultsWidget),
    ("6. Export", ExportWidget),
)


def add_cellina_docks(viewer) -> dict[str, CellinaDock]:
    """Open every Cellina dock in ``viewer`` (tabbed on the right) and return them by name.

    The docks come from the plugin manifest, so napari's Plugins menu shows them as open.
    """
    docks = {}
    for name, _cls in DOCKS:
        _dock, widget = viewer.window.add_plugin_dock_widget("napari-cellina", name, tabify=True)
        docks[name] = widget
    # the tissue dock is where a session starts
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QDockWidget

    tissue = viewer.window.dock_widgets.get(f"{DOCKS[0][0]} (napari-cellina)")
    while tissue is not None and not isinstance(tissue, QDockWidget):
        tissue = tissue.parent()
    if tissue is not None:
        tissue.raise_()
        # tabification settles on the next turn of the event loop, which raises the last
        # tab added; raise the tissue tab again once it has
        QTimer.singleShot(0, tissue.raise_)
    return docks
