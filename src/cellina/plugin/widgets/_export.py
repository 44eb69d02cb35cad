"""Export dock: write the perturbed AnnData with provenance (atomic), in a worker."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QFileDialog, QPushButton

from cellina.plugin._state import Outcome
from cellina.plugin._tissue import source_coordinates
from cellina.plugin.widgets._common import CellinaDock, WrappedLabel

EXPORT_TEXT = "Export perturbed AnnData..."


class ExportWidget(CellinaDock):
    """Write the tissue with counterfactual layers, selections, latents and provenance to .h5ad."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.run_label = WrappedLabel("")
        self.layout().addWidget(self.run_label)
        self.keys_label = WrappedLabel("")
        self.layout().addWidget(self.keys_label)
        self.export_button = QPushButton(EXPORT_TEXT)
        self.layout().addWidget(self.export_button)
        self.finish_layout()
        self.last_written = None
        self.export_button.clicked.connect(lambda: self.export())
        self.session.events.busy.connect(lambda busy: self.export_button.setEnabled(not busy))
        self.session.events.current_run.connect(lambda _name: self._show_run())
        self.session.events.runs.connect(self._show_run)
        self.session.events.step.connect(self._on_step)
        self.session.events.keys.connect(lambda _keys: self._show_keys())
        self.follow_adata(lambda _adata: self._show_keys())
        self._show_run()

    def _show_keys(self) -> None:
        """The keys the provenance records, coordinates as the file named them."""
        adata, keys = self.session.adata, self.session.keys
        if adata is None:
            self.keys_label.setText("")
            return
        source = source_coordinates(adata, keys)
        where = (
            f"obs columns {source['x_column']}/{source['y_column']}"
            if source["x_column"]
            else f"obsm[{source['spatial_key']!r}]"
        )
        self.keys_label.setText(
            f"provenance records the keys: cell type {keys.cell_type_key!r}, domain {keys.domain_key!r}, "
            f"batch {keys.batch_key!r}; coordinates from {where} at {source['pixel_size']:g} um per unit"
        )

    def _show_run(self) -> None:
        name = self.session.current_run
        run = self.session.runs.get(name) if name else None
        if run is None:
            self.run_label.setText("no run yet: writes the tissue, selections and latents")
            self.export_button.setText(EXPORT_TEXT)
            return
        preset = run.params.get("preset") or "no"
        others = len(self.session.runs) - 1
        self.run_label.setText(
            f"writes run <b>{run.name}</b> ({run.kind} perturbation of {run.indices.size} focal cells, "
            f"{preset} preset) into the layers" + (f", and the records of {others} other run(s)" if others else "")
        )
        self.export_button.setText(f"Export run '{run.name}'...")

    def _on_step(self, name: str, outcome: Outcome) -> None:
        if name == "export" and outcome.status == "done":
            self.last_written = outcome.value.adata

    def export(self, path: str | None = None):
        """Build and write to ``path`` (asks for it when None) in a worker.

        Returns the worker, or (when the dock runs synchronously) the AnnData written;
        None when nothing was started. The written AnnData is kept in ``last_written``.
        """
        if path is None:
            path, _ = QFileDialog.getSaveFileName(
                self, "Export perturbed AnnData", "perturbed.h5ad", "AnnData (*.h5ad)"
            )
            if not path:
                return None
        self.last_written = None
        worker = self.run_job(lambda: self.session.export_job(str(path)))
        return self.last_written if self.synchronous else worker
