"""Take the CellinaGCN attention screenshot of the user guide from a real run of the plugin.

Run under a display with OpenGL::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/gcn_screenshots.py

The synthetic tumour section (2,000 cells, 150 genes, two slides) is preprocessed in the Tissue
dock, a CellinaGCN is trained in the Model dock (two GATv2 layers, 10 and 5 neighbours per hop),
the Model dock is shot with the trained model's summary, then one cell at the tumour margin is picked
in the Results dock and the receiver x sender heatmap is drawn. Every step goes through the docks,
synchronously; the images land in ``docs/img/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

IMG = Path(__file__).resolve().parent / "img"


def settle() -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(10):
        QApplication.processEvents()
        time.sleep(0.05)


def bring_forward(widget, visible=None) -> None:
    """Raise the dock tab that holds ``widget`` and scroll ``visible`` (a child) into view."""
    from qtpy.QtWidgets import QDockWidget, QScrollArea

    frame = widget
    while frame is not None and not isinstance(frame, QDockWidget):
        frame = frame.parent()
    # raising a tab only sticks once the window has settled, so raise again just before
    frame.raise_()
    settle()
    scroll = widget.parent()
    while scroll is not None and not isinstance(scroll, QScrollArea):
        scroll = scroll.parent()
    if scroll is not None and visible is not None:
        scroll.ensureWidgetVisible(visible)
    frame.raise_()
    settle()


def shoot(viewer, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(IMG / name), canvas_only=False, flash=False)
    print("wrote", IMG / name, flush=True)


def main() -> int:
    import napari

    from cellina.datasets import synthetic_tissue
    from cellina.plugin.widgets import CellinaDock, add_cellina_docks
    from cellina.plugin.widgets._bridge import ATTENTION_LAYER

    CellinaDock.synchronous = True
    viewer = napari.Viewer(show=True, title="napari-cellina")
    viewer.window._qt_window.resize(1700, 1190)
    docks = add_cellina_docks(viewer)
    tissue, model, results = docks["1. Tissue"], docks["2. Model"], docks["5. Results"]
    adata = synthetic_tissue(n_cells=2000, n_genes=150, n_slides=2, seed=0, store_means=False)
    adata.X = adata.layers["counts"].copy()
    tissue.bridge.session.set_adata(adata)
    tissue.batch.setCurrentText("slide")
    tissue.n_top_genes.setValue(150)
    tissue.max_neighbours.setValue(15)
    tissue.preprocess()
    model.variant.setCurrentIndex(model.variant.findData("gcn"))
    model.max_epochs.setValue(15)
    model.batch_size.setValue(256)
    model.early_stopping.setChecked(False)
    t0 = time.perf_counter()
    model.train()
    session = model.session
    print(f"trained in {time.perf_counter() - t0:.1f} s: {session.model_source}", flush=True)
    bring_forward(model)
    shoot(viewer, "08_gcn_model.png")
    tissue.recolour("cell_type")
    # a receiver at the tumour margin, where neighbours of several types meet
    obs = session.adata.obs
    margin = np.flatnonzero(obs["domain"].astype(str).str.contains("margin").to_numpy())
    receiver = int(margin[len(margin) // 2]) if margin.size else session.adata.n_obs // 2
    results.attention.show_cell(receiver)
    results.attention.draw_heatmap()
    points = session.display_coordinates()
    viewer.layers[ATTENTION_LAYER].refresh()
    viewer.layers.selection.active = tissue.bridge.cells_layer
    viewer.scene.camera.center = (0.0, *points[receiver])
    viewer.scene.camera.zoom = 9.0
    tissue.bridge.cells_layer.opacity = 0.55  # dim the cells so the lines stand out
    bring_forward(results, results.attention.caption)
    shoot(viewer, "07_gcn_attention.png")
    errors = [d.last_error for d in docks.values() if d.last_error]
    print("dock errors:", errors, flush=True)
    viewer.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
