"""Export dock: write the perturbed AnnData with provenance (atomic)."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QFileDialog, QPushButton

from cellina.plugin.widgets._common import CellinaDock


class ExportWidget(CellinaDock):
    """Write the tissue with counterfactual layers, selections, latents and provenance to .h5ad."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.export_button = QPushButton("Export perturbed AnnData...")
        self.layout().addWidget(self.export_button)
        self.finish_layout()
        self.export_button.clicked.connect(lambda: self.export())
        self.session.events.busy.connect(lambda busy: self.export_button.setEnabled(not busy))

    def export(self, path: str | None = None):
        """Write to ``path`` (asks for it when None); returns the AnnData written, or None."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Export perturbed AnnData", "perturbed.h5ad", "AnnData (*.h5ad)")
            if not path:
                return None
        if self.session.busy:
            self.notify_error("a Cellina step is still running; export when it has finished")
            return None
        out = self.guarded(lambda: self.session.export(path))
        if out is not None:
            self.notify(f"wrote {out.n_obs} cells x {out.n_vars} genes to {path}")
        return out
