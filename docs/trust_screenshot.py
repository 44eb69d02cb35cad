"""Take the user guide's screenshot of how much to trust a prediction (the Results dock).

Run under a display with OpenGL::

    xvfb-run -a -s "-screen 0 1920x1200x24" python docs/trust_screenshot.py

A smaller section than the guide's other screenshots (2,000 cells, 150 genes, two slides), so
it runs in a few minutes: preprocess, train, an edge run with five donor draws from the
observed neighbours of tumour myeloid cells, then an edge run whose donors are one small patch
of the tissue. On this section neither run puts a focal niche outside training, so the warning
is shown on a demonstration run: the second run with its focal cells' niche codes moved far
from every training niche (``s + 50``) and scored by the real
:func:`cellina.counterfactual.niche_novelty`; its name says so. The Results dock then shows
each top gene's log2FC with its spread across draws, the number of draws and the warning.
The image lands in ``docs/img/07_trust.png``. A last run takes every tumour and margin cell as donors, so
other cell types among them can check the model, and its Results dock, with a range for each gene, lands in
``docs/img/07_range.png``.
"""

from __future__ import annotations

import sys
from dataclasses import replace

import numpy as np
from user_guide_screenshots import Shooter


def main() -> int:
    import napari
    from qtpy.QtCore import Qt

    import cellina.plugin._sample_data as sample_data
    from cellina.counterfactual import niche_novelty
    from cellina.plugin.widgets import CellinaDock, add_cellina_docks

    CellinaDock.synchronous = True
    sample_data.SAMPLE_N_CELLS, sample_data.SAMPLE_N_GENES, sample_data.SAMPLE_N_SLIDES = 2000, 150, 2
    viewer = napari.Viewer(show=True, title="napari-cellina")
    viewer.window._qt_window.resize(1700, 1050)
    docks = add_cellina_docks(viewer)
    shooter = Shooter(viewer)
    viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    tissue, model = docks["1. Tissue"], docks["2. Model"]
    edge, results = docks["3. Edge perturbation"], docks["5. Results"]
    tissue.batch.setCurrentText("slide")
    tissue.n_top_genes.setValue(120)
    tissue.preprocess()
    model.max_epochs.setValue(30)
    model.batch_size.setValue(256)
    model.train()
    session = edge.session
    points = session.display_coordinates()
    lo, hi = points.min(axis=0), points.max(axis=0)
    edge.draw_focal.click()
    viewer.layers["focal lasso"].add(
        np.array([[lo[0] - 5, lo[1] - 5], [hi[0] + 5, lo[1] - 5], [hi[0] + 5, hi[1] + 5], [lo[0] - 5, hi[1] + 5]]),
        shape_type="polygon",
    )
    viewer.layers["focal lasso"].mode = "pan_zoom"
    edge.refine_target.setCurrentText("focal")
    for widget, value in ((edge.refine_types, "myeloid_1"), (edge.refine_domains, "healthy")):
        widget.findItems(value, Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    edge.refine()
    edge.pool.setCurrentIndex(1)  # observed neighbours of type X in domain Y
    edge.pool_type.setCurrentText("myeloid_1")
    edge.n_neighbours.setValue(30)
    edge.n_draws.setValue(5)
    edge.run()
    # the second run's donors: every cell of one small patch of the section
    centre = points[np.argmax(points[:, 0])]
    edge.draw_donors.click()
    size = 0.08 * (hi - lo)
    patch = np.array(
        [
            centre - size,
            [centre[0] - size[0], centre[1] + size[1]],
            centre + size,
            [centre[0] + size[0], centre[1] - size[1]],
        ]
    )
    viewer.layers["donor lasso"].add(patch, shape_type="polygon")
    viewer.layers["donor lasso"].mode = "pan_zoom"
    edge.pool.setCurrentIndex(0)
    edge.run()
    for name, run in session.runs.items():
        print(name, "outside training:", run.novelty.n_outside, "of", run.novelty.outside_training.size, flush=True)
    tissue.recolour("cell_type")
    viewer.layers["synthetic tumour section"].opacity = 0.35
    viewer.reset_view()
    shooter.show("5. Results")
    run = session.runs["edge 1"]
    far = session.model.get_latent_representation(session.adata, indices=run.indices, latent_key="s") + 50.0
    novelty = niche_novelty(session.model, session.adata, run.indices, far)
    session.add_run(replace(run, name="edge 1, niches moved far (demo)", novelty=novelty))
    results.show_result()
    shooter.settle(20)
    shooter.shot("07_trust.png", "5. Results")
    # a run with a range: every tumour and margin cell a donor, so other types among them check the model
    viewer.layers["donor lasso"].data = []
    viewer.layers["donor lasso"].add(
        np.array([[lo[0] - 5, lo[1] - 5], [hi[0] + 5, lo[1] - 5], [hi[0] + 5, hi[1] + 5], [lo[0] - 5, hi[1] + 5]]),
        shape_type="polygon",
    )
    edge.refine_target.setCurrentText("donors")
    edge.refine_types.clearSelection()
    edge.refine_domains.clearSelection()
    for value in ("tumour", "margin"):
        edge.refine_domains.findItems(value, Qt.MatchFlag.MatchExactly)[0].setSelected(True)
    edge.refine()
    edge.change_range.setChecked(True)
    edge.run()
    run = session.runs[session.current_run]
    print(session.current_run, "range:", run.change_range is not None, run.range_note, flush=True)
    results.show_result()
    shooter.settle(20)
    shooter.shot("07_range.png", "5. Results")
    errors = [d.last_error for d in docks.values() if d.last_error]
    print("dock errors:", errors, flush=True)
    viewer.close()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
