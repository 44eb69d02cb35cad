"""Tissue dock: choose the data's keys, preprocess in a worker, colour the cells."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QSpinBox,
)

from cellina.plugin._state import PreprocessParams, SessionError, TissueKeys
from cellina.plugin.widgets._common import CellinaDock, combo_value, fill_combo, search_combo
from cellina.plugin.widgets._legend import LegendWidget

NONE = "(none)"
OBS_COLUMNS = "(two obs columns)"
X_MATRIX = "X"


def _spin(low: float, high: float, value: float, step: float = 1.0, decimals: int | None = None):
    if decimals is None:
        box = QSpinBox()
        box.setRange(int(low), int(min(high, 2**31 - 1)))
        box.setSingleStep(int(step))
        box.setValue(int(value))
        return box
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    return box


class TissueWidget(CellinaDock):
    """Load a tissue (sample or .h5ad layer), set its keys, preprocess, colour by any column or gene."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.source = QComboBox()
        self.use_button = QPushButton("Use this layer")
        self.form.addRow("tissue layer", self.source)
        self.form.addRow("", self.use_button)

        keys_box = QGroupBox("keys")
        keys_form = QFormLayout(keys_box)
        self.spatial = QComboBox()
        self.x_column, self.y_column = QComboBox(), QComboBox()
        self.pixel_size = _spin(1e-4, 1e4, 1.0, 0.1, decimals=4)
        self.cell_type, self.domain, self.batch, self.counts = QComboBox(), QComboBox(), QComboBox(), QComboBox()
        keys_form.addRow("coordinates", self.spatial)
        keys_form.addRow("x column", self.x_column)
        keys_form.addRow("y column", self.y_column)
        keys_form.addRow("pixel size (um)", self.pixel_size)
        keys_form.addRow("cell type", self.cell_type)
        keys_form.addRow("domain", self.domain)
        keys_form.addRow("batch / slide", self.batch)
        keys_form.addRow("counts", self.counts)
        self.layout().addWidget(keys_box)

        pre_box = QGroupBox("preprocessing")
        pre_form = QFormLayout(pre_box)
        defaults = PreprocessParams()
        self.min_counts_cell = _spin(0, 10**6, defaults.min_counts_cell)
        self.min_counts_gene = _spin(0, 10**6, defaults.min_counts_gene)
        self.use_hvg = QCheckBox("highly variable genes")
        self.use_hvg.setChecked(True)
        self.n_top_genes = _spin(10, 50000, defaults.n_top_genes)
        self.bandwidth = _spin(0.01, 1e5, defaults.bandwidth_um, 1.0, decimals=2)
        self.max_neighbours = _spin(1, 1000, defaults.max_neighbours)
        pre_form.addRow("min counts per cell", self.min_counts_cell)
        pre_form.addRow("min counts per gene", self.min_counts_gene)
        pre_form.addRow(self.use_hvg, self.n_top_genes)
        pre_form.addRow("bandwidth (um)", self.bandwidth)
        pre_form.addRow("max neighbours", self.max_neighbours)
        self.preprocess_button = QPushButton("Preprocess")
        pre_form.addRow(self.preprocess_button)
        self.layout().addWidget(pre_box)

        view_box = QGroupBox("display")
        view_form = QFormLayout(view_box)
        self.color_by = search_combo()
        self.point_size = _spin(0.1, 1000, self.bridge.point_size_um, 1.0, decimals=1)
        view_form.addRow("colour by", self.color_by)
        view_form.addRow("point size (um)", self.point_size)
        self.legend = LegendWidget()
        view_form.addRow(self.legend)
        self.layout().addWidget(view_box)
        self.finish_layout()

        self.use_button.clicked.connect(self.use_layer)
        self.spatial.currentTextChanged.connect(self._coordinate_mode)
        self.preprocess_button.clicked.connect(self.preprocess)
        self.color_by.activated.connect(lambda _i: self.recolour(self.color_by.currentText()))
        self.point_size.valueChanged.connect(lambda v: self.guarded(lambda: self.bridge.set_point_size(v)))
        self.bridge.colouring.connect(self._on_colouring)
        self.bridge.message.connect(self.notify_error)
        self.session.events.latents.connect(self._on_latents)
        self.session.events.busy.connect(lambda busy: self.preprocess_button.setEnabled(not busy))
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()
        self.follow_adata(self._on_adata)

    # ------------------------------------------------------------------ layers and keys
    def _on_layers_changed(self, event=None) -> None:
        layers = self.bridge.tissue_layers()
        fill_combo(self.source, [ly.name for ly in layers])
        # a dock opened on (or before) a tissue takes it over, so the user starts right away
        if self.session.adata is None and layers and (event is None or event.type == "inserted"):
            self.use_layer()

    def use_layer(self) -> None:
        """Make the chosen tissue layer the session's tissue."""
        name = self.source.currentText()
        if not name or name not in self.viewer.layers:
            self.notify_error("no tissue layer: open an .h5ad file or File > Open Sample > Synthetic tumour section")
            return
        self.guarded(lambda: self.bridge.adopt_layer(self.viewer.layers[name]))

    def _on_adata(self, adata) -> None:
        if adata is None:
            return
        keys = self.session.keys
        obs = list(adata.obs.columns)
        fill_combo(self.spatial, [*adata.obsm.keys(), OBS_COLUMNS], keep=False)
        self.spatial.setCurrentText(keys.spatial_key or OBS_COLUMNS)
        numeric = [c for c in obs if adata.obs[c].dtype.kind in "fiu"]
        for combo, value in ((self.x_column, keys.x_column), (self.y_column, keys.y_column)):
            fill_combo(combo, numeric, keep=False)
            if value:
                combo.setCurrentText(value)
        for combo, value in (
            (self.cell_type, keys.cell_type_key),
            (self.domain, keys.domain_key),
            (self.batch, keys.batch_key),
        ):
            fill_combo(combo, obs, keep=False, none_item=NONE)
            combo.setCurrentText(value or NONE)
        fill_combo(self.counts, [*adata.layers.keys(), X_MATRIX], keep=False)
        self.counts.setCurrentText(keys.counts_layer or X_MATRIX)
        self.pixel_size.setValue(keys.pixel_size)
        fill_combo(self.color_by, [*obs, *adata.var_names], keep=False)
        self.color_by.setCurrentText(self.bridge.color_by)
        self._coordinate_mode(self.spatial.currentText())
        self.status.setText(f"{adata.n_obs} cells x {adata.n_vars} genes")

    def _on_colouring(self, info) -> None:
        # the legend and the "colour by" box follow the cells layer, whoever recoloured it
        self.legend.show_info(info)
        if info is not None and self.color_by.currentText() != info.name:
            self.color_by.blockSignals(True)
            self.color_by.setCurrentText(info.name)
            self.color_by.blockSignals(False)

    def _on_latents(self) -> None:
        # the latent clusters are new obs columns: offer them as colours
        adata = self.session.adata
        if adata is not None:
            fill_combo(self.color_by, [*adata.obs.columns, *adata.var_names])

    def _coordinate_mode(self, text: str) -> None:
        by_columns = text == OBS_COLUMNS
        self.x_column.setEnabled(by_columns)
        self.y_column.setEnabled(by_columns)

    def keys(self) -> TissueKeys:
        """The keys as chosen in the dock."""
        by_columns = self.spatial.currentText() == OBS_COLUMNS
        counts = self.counts.currentText()
        return TissueKeys(
            spatial_key=None if by_columns else self.spatial.currentText() or None,
            x_column=self.x_column.currentText() if by_columns else None,
            y_column=self.y_column.currentText() if by_columns else None,
            pixel_size=float(self.pixel_size.value()),
            cell_type_key=combo_value(self.cell_type, NONE),
            domain_key=combo_value(self.domain, NONE),
            batch_key=combo_value(self.batch, NONE),
            counts_layer=None if counts in ("", X_MATRIX) else counts,
        )

    def params(self) -> PreprocessParams:
        return PreprocessParams(
            min_counts_cell=int(self.min_counts_cell.value()),
            min_counts_gene=int(self.min_counts_gene.value()),
            n_top_genes=int(self.n_top_genes.value()) if self.use_hvg.isChecked() else None,
            bandwidth_um=float(self.bandwidth.value()),
            max_neighbours=int(self.max_neighbours.value()),
        )

    # ------------------------------------------------------------------ actions
    def preprocess(self):
        """QC, HVG, log-normalisation, graph and niche features in a worker."""
        params = self.params()
        return self.run_job(lambda: self.session.preprocess_job(params, self.keys()))

    def recolour(self, key: str) -> None:
        """Colour the cells by an obs column or gene (errors become notifications)."""
        if not key:
            return
        try:
            self.bridge.recolour(key)
        except SessionError as err:
            self.notify_error(str(err))
