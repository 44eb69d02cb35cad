"""Take the user guide's screenshots from a real run of the plugin on an instrument-style file.

Run under a display with OpenGL::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/user_guide_screenshots.py

The file is the synthetic tumour section (6,000 cells, 300 genes, two slides) written the way a
CosMx export names things: counts in ``X``, coordinates only in the obs columns
``CenterX_global_px``/``CenterY_global_px`` in pixels of 0.12028 um, the domain in ``typ``
(232_REF, 232_TVA, 232_CRC), the cell type in ``ist`` and the slide in ``sid``. Every step goes
through the docks (their buttons' methods), synchronously so each screenshot shows a finished
step; the images land in ``docs/img/``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMG = Path(__file__).resolve().parent / "img"
PIXEL_UM = 0.12028
DOMAINS = {"healthy": "232_REF", "margin": "232_TVA", "tumour": "232_CRC"}


def instrument_file(folder: Path) -> Path:
    """The synthetic section written with CosMx's names and pixel coordinates."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from cellina.datasets import synthetic_tissue

    tissue = synthetic_tissue(n_cells=6000, n_genes=300, n_slides=2, seed=0, store_means=False)
    xy = np.asarray(tissue.obsm["spatial"]) / PIXEL_UM
    obs = pd.DataFrame(
        {
            "CenterX_global_px": xy[:, 0],
            "CenterY_global_px": xy[:, 1],
            "typ": tissue.obs["domain"].astype(str).map(DOMAINS).to_numpy(),
            "ist": tissue.obs["cell_type"].astype(str).to_numpy(),
            "sid": tissue.obs["slide"].astype(str).map({"slide_0": "S1", "slide_1": "S2"}).to_numpy(),
        },
        index=tissue.obs_names,
    )
    adata = ad.AnnData(X=sp.csr_matrix(tissue.layers["counts"]), obs=obs, var=pd.DataFrame(index=tissue.var_names))
    path = folder / "cosmx_232.h5ad"
    adata.write_h5ad(path)
    return path


class Shooter:
    """Raises a dock's tab and takes a screenshot of the whole window."""

    def __init__(self, viewer):
        from qtpy.QtWidgets import QApplication

        self.viewer = viewer
        self.app = QApplication.instance()

    def settle(self, n: int = 5) -> None:
        for _ in range(n):
            self.app.processEvents()
            time.sleep(0.05)

    def show(self, name: str) -> None:
        from qtpy.QtWidgets import QDockWidget

        widget = self.viewer.window.dock_widgets[f"{name} (napari-cellina)"]
        while widget is not None and not isinstance(widget, QDockWidget):
            widget = widget.parent()
        widget.raise_()
        self.settle()

    def shot(self, filename: str, dock: str) -> None:
        # raising a tab only sticks once the window has settled, so raise again just before
        self.show(dock)
        self.settle()
        self.viewer.screenshot(str(IMG / filename), canvas_only=False, flash=False)
        print("wrote", IMG / filename, flush=True)


def choose(combo, text: str) -> None:
    """Pick the item starting with ``text`` as a user does (the box reports it was activated)."""
    index = next(i for i in range(combo.count()) if combo.itemText(i).startswith(text))
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def tissue_and_model(shooter, docks, path) -> None:
    tissue, model = docks["1. Tissue"], docks["2. Model"]
    viewer = shooter.viewer
    viewer.open(str(path), plugin="napari-cellina")
    viewer.reset_view()
    shooter.shot("00_open.png", "1. Tissue")
    tissue.preprocess()  # refused: the coordinates look like pixels and no pixel size is chosen yet
    choose(tissue.instrument, "CosMx")
    tissue.n_top_genes.setValue(200)
    tissue.suggest_reach()  # the validation curve; its suggestion fills the bandwidth boxes
    print(f"reach: {tissue.session.reach_curve.describe()}", flush=True)
    tissue.preprocess()
    print(f"preprocessed: {tissue.status.text()}", flush=True)
    tissue.recolour("typ")
    viewer.reset_view()
    shooter.shot("01_tissue.png", "1. Tissue")

    shooter.show("2. Model")
    model.max_epochs.setValue(50)
    model.early_stopping.setChecked(False)
    model.batch_size.setValue(256)
    model.holdout_type.setCurrentText("myeloid_1")
    model.holdout_domain.setCurrentText("232_CRC")
    t0 = time.perf_counter()
    model.train()
    print(f"trained in {time.perf_counter() - t0:.1f} s: {tissue.session.model_source}", flush=True)
    model.colour_by_clusters("s")
    shooter.shot("02_model_niches.png", "2. Model")


def edge_and_results(shooter, docks) -> None:
    from qtpy.QtCore import Qt

    edge, results, tissue = docks["3. Edge perturbation"], docks["5. Results"], docks["1. Tissue"]
    viewer, session = shooter.viewer, edge.session
    shooter.show("3. Edge perturbation")
    # focal: every myeloid_1 cell of 232_REF, lassoed over the lower half of the section
    edge.draw_focal.click()
    points = session.display_coordinates()
    lo, hi = points.min(axis=0), points.max(axis=0)
    mid = (lo + hi) / 2
    lasso = np.array([[lo[0] - 5, lo[1] - 5], [hi[0] + 5, lo[1] - 5], [hi[0] + 5, mid[1]], [lo[0] - 5, mid[1]]])
    viewer.layers["focal lasso"].add(lasso, shape_type="polygon")
    viewer.layers["focal lasso"].mode = "pan_zoom"
    edge.refine_target.setCurrentText("focal")
    for widget, value in ((edge.refine_types, "myeloid_1"), (edge.refine_domains, "232_REF")):
        widget.findItems(value, Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    edge.refine()
    edge.pool.setCurrentIndex(1)  # observed neighbours of type X in domain Y (Y defaults to 232_CRC)
    edge.pool_type.setCurrentText("myeloid_1")
    edge.n_neighbours.setValue(30)
    edge.n_draws.setValue(5)
    edge.run()
    tissue.recolour("typ")
    # dim the tissue and zoom on the lasso so the ringed focal cells and the drawn donors stand out
    viewer.layers["cosmx_232"].opacity = 0.35
    viewer.reset_view()
    viewer.scene.camera.center = (0.0, float(mid[0]), float((lo[1] + mid[1]) / 2))
    viewer.scene.camera.zoom = viewer.scene.camera.zoom * 1.6
    shooter.shot("03_edge.png", "3. Edge perturbation")

    shooter.show("5. Results")
    results.target_type.setCurrentText("myeloid_1")
    results.plot_comparison()
    results.show_result()
    shooter.shot("04_results.png", "5. Results")


def node_and_export(shooter, docks) -> int:
    node, export = docks["4. Node perturbation"], docks["6. Export"]
    shooter.show("4. Node perturbation")
    node.n_genes.setValue(20)
    node.holdout.setCurrentText("myeloid_1")
    node.fill_from_contrast()  # control 232_REF -> target 232_CRC, the defaults
    shooter.shot("05_node.png", "4. Node perturbation")
    node.run()
    shooter.show("6. Export")
    out = export.export(str(IMG.parent / ".user_guide_export.h5ad"))
    shooter.shot("06_export.png", "6. Export")
    print("exported", out, flush=True)
    (IMG.parent / ".user_guide_export.h5ad").unlink(missing_ok=True)
    return 0


def main() -> int:
    import napari

    from cellina.plugin.widgets import CellinaDock, add_cellina_docks

    CellinaDock.synchronous = True
    IMG.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-cellina")
    viewer.window._qt_window.resize(1700, 1050)
    docks = add_cellina_docks(viewer)
    shooter = Shooter(viewer)
    with tempfile.TemporaryDirectory() as folder:
        path = instrument_file(Path(folder))
        tissue_and_model(shooter, docks, path)
        edge_and_results(shooter, docks)
        node_and_export(shooter, docks)
    # the first preprocess was refused on purpose; the one after it cleared the dock's error
    errors = [d.last_error for d in docks.values() if d.last_error]
    print("dock errors:", errors, flush=True)
    viewer.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
