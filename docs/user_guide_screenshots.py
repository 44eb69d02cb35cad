"""Take the user guide's screenshots from a real run of the plugin on the sample tissue.

Run under a display with OpenGL::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/user_guide_screenshots.py

Every step goes through the docks (their buttons' methods), synchronously so each
screenshot shows a finished step; the images land in ``docs/img/``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

IMG = Path(__file__).resolve().parent / "img"


def main() -> int:
    import napari
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    from cellina.plugin.widgets import CellinaDock, add_cellina_docks

    CellinaDock.synchronous = True
    IMG.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-cellina")
    viewer.window._qt_window.resize(1700, 1050)
    docks = add_cellina_docks(viewer)
    app = QApplication.instance()

    def show(name: str) -> None:
        from qtpy.QtWidgets import QDockWidget

        widget = viewer.window.dock_widgets[f"{name} (napari-cellina)"]
        while widget is not None and not isinstance(widget, QDockWidget):
            widget = widget.parent()
        widget.raise_()
        for _ in range(5):
            app.processEvents()
            time.sleep(0.05)

    def shot(filename: str, dock: str) -> None:
        # raising a tab only sticks once the window has settled, so raise again just before
        show(dock)
        for _ in range(5):
            app.processEvents()
            time.sleep(0.05)
        viewer.screenshot(str(IMG / filename), canvas_only=False, flash=False)
        print("wrote", IMG / filename, flush=True)

    tissue, model, edge = docks["1. Tissue"], docks["2. Model"], docks["3. Edge perturbation"]
    node, results, export = docks["4. Node perturbation"], docks["5. Results"], docks["6. Export"]
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    session = tissue.session
    show("1. Tissue")
    tissue.n_top_genes.setValue(200)
    tissue.preprocess()
    tissue.color_by.setCurrentText("domain")
    tissue.recolour("domain")
    viewer.reset_view()
    shot("01_tissue.png", "1. Tissue")

    show("2. Model")
    model.max_epochs.setValue(50)
    model.early_stopping.setChecked(False)
    model.batch_size.setValue(256)
    model.n_latent.setValue(10)
    model.holdout_type.setCurrentText("myeloid_1")
    model.holdout_domain.setCurrentText("tumour")
    t0 = time.perf_counter()
    model.train()
    print(f"trained in {time.perf_counter() - t0:.1f} s: {session.model_source}", flush=True)
    # the niche clusters of s are a colour of the cells layer (and a hover column)
    tissue.color_by.setCurrentText("cellina_s_cluster")
    tissue.recolour("cellina_s_cluster")
    shot("02_model_niches.png", "2. Model")

    # focal: every myeloid_1 cell of the healthy tissue, lassoed over the left half
    show("3. Edge perturbation")
    edge.draw_focal.click()
    points = session.display_coordinates()
    lo, hi = points.min(axis=0), points.max(axis=0)
    mid = (lo + hi) / 2
    lasso = np.array([[lo[0] - 5, lo[1] - 5], [hi[0] + 5, lo[1] - 5], [hi[0] + 5, mid[1]], [lo[0] - 5, mid[1]]])
    viewer.layers["focal lasso"].add(lasso, shape_type="polygon")
    edge.refine_target.setCurrentText("focal")
    for widget, value in ((edge.refine_types, "myeloid_1"), (edge.refine_domains, "healthy")):
        widget.findItems(value, Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    edge.refine()
    edge.pool.setCurrentIndex(1)
    edge.pool_type.setCurrentText("myeloid_1")
    edge.pool_domain.setCurrentText("tumour")
    edge.n_neighbours.setValue(30)
    edge.n_draws.setValue(5)
    edge.run()
    viewer.layers["focal lasso"].mode = "pan_zoom"
    tissue.recolour("domain")
    # dim the tissue and zoom on the lasso so the focal cells stand out
    viewer.layers["synthetic tumour section"].opacity = 0.35
    viewer.camera.center = (0.0, float(mid[0]), float((lo[1] + mid[1]) / 2))
    viewer.camera.zoom = viewer.camera.zoom * 1.15
    shot("03_edge.png", "3. Edge perturbation")

    show("5. Results")
    results.target_type.setCurrentText("myeloid_1")
    results.target_domain.setCurrentText("tumour")
    results.plot_comparison()
    results.show_result()
    shot("04_results.png", "5. Results")

    show("4. Node perturbation")
    node.control_domain.setCurrentText("healthy")
    node.target_domain.setCurrentText("tumour")
    node.n_genes.setValue(20)
    node.holdout.setCurrentText("myeloid_1")
    node.fill_from_contrast()
    node.run()
    shot("05_node.png", "4. Node perturbation")

    show("6. Export")
    out = export.export(str(IMG.parent / ".user_guide_export.h5ad"))
    print("exported", out, flush=True)
    (IMG.parent / ".user_guide_export.h5ad").unlink(missing_ok=True)
    errors = [d.last_error for d in docks.values() if d.last_error]
    print("dock errors:", errors, flush=True)
    viewer.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
