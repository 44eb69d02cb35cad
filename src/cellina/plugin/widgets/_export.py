"""Export dock: write the perturbed AnnData with provenance (atomic), in a worker."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QFileDialog, QPushButton

from cellina.plugin._workflow import export_inputs, export_steps
from cellina.plugin.widgets._common import CellinaDock


class ExportWidget(CellinaDock):
    """Write the tissue with counterfactual layers, selections, latents and provenance to .h5ad."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.export_button = QPushButton("Export perturbed AnnData...")
        self.layout().addWidget(self.export_button)
        self.finish_layout()
        self.last_written = None
        self.export_button.clicked.connect(lambda: self.export())
        self.session.events.busy.connect(lambda busy: self.export_button.setEnabled(not busy))

    def export(self, path: str | None = None):
        """Build and write to ``path`` (asks for it when None) in a worker.

        Returns the worker, or (when the dock runs synchronously) the AnnData written;
        None when nothing was started. The written AnnData is kept in ``last_written``.
        """
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export perturbed AnnData", "perturbed.h5ad", "AnnData (*.h5ad)")
            if not path:
                return None
        self.last_written = None

        def make():
            # the session's state is gathered here, on the main thread; building and writing run in the worker
            return export_steps(export_inputs(self.session), str(path))

        def apply(out) -> None:
            self.last_written = out
            self.notify(f"wrote {out.n_obs} cells x {out.n_vars} genes to {path}")

        worker = self.run_steps(make, apply, "export")
        return self.last_written if self.synchronous else worker
