"""Tissue dock: choose the data's keys and its pixel size, preprocess in a worker, colour the cells."""

from __future__ import annotations

from typing import Any

from qtpy.QtGui import QDoubleValidator
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from cellina.io_keys import PIXEL_SIZES_UM, file_pixel_size
from cellina.plugin._state import COUNTS_IN_X, PreprocessParams, SessionError, TissueKeys
from cellina.plugin._tissue import source_coordinates
from cellina.plugin.widgets._common import CellinaDock, WrappedLabel, combo_value, fill_combo, search_combo
from cellina.plugin.widgets._legend import LegendWidget
from cellina.plugin.widgets._reach import ReachPanel

NONE = "(none)"
OBS_COLUMNS = "(two obs columns)"
NOT_USED = "(not used)"
X_MATRIX = COUNTS_IN_X
CHOOSE = "choose the instrument..."
MICROMETRES = "micrometres already: 1"
WARNING_STYLE = "color: #e0a030"
#: the dock's key boxes and the TissueKeys field each sets
#: the "niche features" choices: label, PreprocessParams.composition
NICHE_FEATURE_CHOICES = (
    ("expression", "off"),
    ("expression + cell types", "added"),
    ("cell types only", "only"),
)
KEY_FIELDS = {"cell_type": "cell_type_key", "domain": "domain_key", "batch": "batch_key", "counts": "counts_layer"}


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


def pixel_text(value: float) -> str:
    """A pixel size as typed: every digit it has (0.12028, not 0.1203), no trailing zeros."""
    return format(float(value), ".12g")


class TissueWidget(CellinaDock):
    """Load a tissue (sample or .h5ad layer), set its keys and pixel size, preprocess, colour the cells."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.source = QComboBox()
        self.use_button = QPushButton("Use this layer")
        self.form.addRow("tissue layer", self.source)
        self.form.addRow("", self.use_button)
        self._build_keys()
        self._build_preprocessing()
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
        self._pixel_size_chosen = False

        self.use_button.clicked.connect(self.use_layer)
        self.spatial.activated.connect(lambda _i: self._keys_edited("spatial"))
        for name in ("x_column", "y_column", *KEY_FIELDS):
            getattr(self, name).activated.connect(lambda _i, n=name: self._keys_edited(n))
        self.pixel_size.editingFinished.connect(self._pixel_size_typed)
        self.instrument.activated.connect(lambda _i: self._instrument_chosen())
        self.preprocess_button.clicked.connect(self.preprocess)
        self.reach.button.clicked.connect(self.suggest_reach)
        self.session.events.reach.connect(self._on_reach)
        self.color_by.activated.connect(lambda _i: self.recolour(self.color_by.currentText()))
        self.point_size.valueChanged.connect(lambda v: self.guarded(lambda: self.bridge.set_point_size(v)))
        self.bridge.colouring.connect(self._on_colouring)
        self.bridge.message.connect(self.notify_error)
        self.session.events.latents.connect(self._on_latents)
        self.session.events.keys.connect(lambda _keys: self._show_keys())
        self.session.events.busy.connect(self._on_busy)
        self.viewer.layers.events.inserted.connect(self._on_layers_changed)
        self.viewer.layers.events.removed.connect(self._on_layers_changed)
        self._on_layers_changed()
        self.follow_adata(self._on_adata)

    def _build_keys(self) -> None:
        keys_box = QGroupBox("keys")
        keys_form = QFormLayout(keys_box)
        self.guesses = WrappedLabel("")
        self.spatial = QComboBox()
        self.x_column, self.y_column = QComboBox(), QComboBox()
        self.pixel_size = QLineEdit("1")
        self.pixel_size.setValidator(QDoubleValidator(1e-9, 1e9, 12))
        self.pixel_size.setToolTip("micrometres per coordinate unit; every digit typed is kept")
        self.instrument = QComboBox()
        self.units = WrappedLabel("")
        pixel_row = QHBoxLayout()
        pixel_row.addWidget(self.pixel_size, 1)
        pixel_row.addWidget(self.instrument, 2)
        self.cell_type, self.domain, self.batch, self.counts = QComboBox(), QComboBox(), QComboBox(), QComboBox()
        keys_form.addRow(self.guesses)
        keys_form.addRow("coordinates", self.spatial)
        keys_form.addRow("x column", self.x_column)
        keys_form.addRow("y column", self.y_column)
        keys_form.addRow("pixel size (um)", pixel_row)
        keys_form.addRow(self.units)
        keys_form.addRow("cell type", self.cell_type)
        keys_form.addRow("domain", self.domain)
        keys_form.addRow("batch / slide", self.batch)
        keys_form.addRow("counts", self.counts)
        self.layout().addWidget(keys_box)

    def _build_preprocessing(self) -> None:
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
        self.composition = QComboBox()
        for label, value in NICHE_FEATURE_CHOICES:
            self.composition.addItem(label, value)
        self.composition.setCurrentIndex(self.composition.findData(defaults.composition))
        self.composition.setToolTip(
            "What the model reads of a cell's neighbours. Their cell types (the cell-type key) are "
            "exact where types read from their counts are noisy, and noisy niche features shrink the "
            "predicted responses. 'cell types only' answers neighbourhood swaps but no gene shift "
            "of the senders."
        )
        pre_form.addRow("min counts per cell", self.min_counts_cell)
        pre_form.addRow("min counts per gene", self.min_counts_gene)
        pre_form.addRow(self.use_hvg, self.n_top_genes)
        pre_form.addRow("bandwidth (um)", self.bandwidth)
        pre_form.addRow("max neighbours", self.max_neighbours)
        pre_form.addRow("niche features", self.composition)
        self.reach = ReachPanel()
        pre_form.addRow(self.reach)
        self.preprocess_button = QPushButton("Preprocess")
        pre_form.addRow(self.preprocess_button)
        self.layout().addWidget(pre_box)

    def _on_busy(self, busy: bool) -> None:
        self.preprocess_button.setEnabled(not busy)
        self.reach.button.setEnabled(not busy)

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
        self._pixel_size_chosen = False
        if self.session.reach_curve is None:  # a new tissue: the last scan was of another one
            self.reach.clear()
        obs = list(adata.obs.columns)
        fill_combo(self.spatial, [*adata.obsm.keys(), OBS_COLUMNS], keep=False)
        numeric = [c for c in obs if adata.obs[c].dtype.kind in "fiu"]
        for combo in (self.x_column, self.y_column):
            fill_combo(combo, numeric, keep=False, none_item=NOT_USED)
        for combo in (self.cell_type, self.domain, self.batch):
            fill_combo(combo, obs, keep=False, none_item=NONE)
        fill_combo(self.counts, [*adata.layers.keys(), X_MATRIX], keep=False)
        self.instrument.clear()
        self.instrument.addItem(CHOOSE, None)
        self.instrument.addItem(MICROMETRES, 1.0)
        stated = file_pixel_size(adata)
        if stated is not None:
            self.instrument.addItem(f"this file's scale factors: {pixel_text(stated)}", stated)
        for name, size in PIXEL_SIZES_UM.items():
            self.instrument.addItem(f"{name}: {pixel_text(size)}", size)
        fill_combo(self.color_by, [*obs, *adata.var_names], keep=False)
        self.color_by.setCurrentText(self.bridge.color_by or "")
        self._show_keys()
        self.status.setText(f"{adata.n_obs} cells x {adata.n_vars} genes")

    def _show_keys(self) -> None:
        """The boxes show the session's keys; x/y show the columns the coordinates came from, or none."""
        adata, keys = self.session.adata, self.session.keys
        if adata is None:
            return
        self.spatial.setCurrentText(keys.spatial_key or OBS_COLUMNS)
        source = source_coordinates(adata, keys)
        for combo, column in ((self.x_column, source["x_column"]), (self.y_column, source["y_column"])):
            combo.setCurrentText(column if column and combo.findText(column) >= 0 else NOT_USED)
        for box, field in KEY_FIELDS.items():
            value = getattr(keys, field)
            if box == "counts":
                value = value or ("counts" if "counts" in adata.layers else X_MATRIX)
            getattr(self, box).setCurrentText(value or NONE)
        self.pixel_size.setText(pixel_text(keys.pixel_size))
        by_columns = keys.spatial_key is None
        self.x_column.setEnabled(by_columns)
        self.y_column.setEnabled(by_columns)
        self._show_guesses(keys)
        self._show_units(adata, keys, source)

    def _show_guesses(self, keys: TissueKeys) -> None:
        shown = {
            "cell_type_key": "cell type",
            "domain_key": "domain",
            "batch_key": "batch",
            "counts_layer": "counts",
            "x_column": "x",
            "y_column": "y",
            "spatial_key": "coordinates",
        }
        parts = [f"{shown[f]} {getattr(keys, f)!r}" for f in shown if f in keys.guessed and getattr(keys, f)]
        self.guesses.setText(
            f"<i>guessed from the names: {', '.join(parts)}. Check them.</i>" if parts else "<i>keys as chosen</i>"
        )
        for box, field in (*KEY_FIELDS.items(), ("x_column", "x_column"), ("y_column", "y_column")):
            combo = getattr(self, box)
            guessed = field in keys.guessed
            font = combo.font()
            font.setItalic(guessed)
            combo.setFont(font)
            combo.setToolTip("guessed from the column names; choose another if it is wrong" if guessed else "")

    def _show_units(self, adata, keys: TissueKeys, source: dict) -> None:
        problem = self.guarded(lambda: self.session.units_problem())
        if problem:
            self.units.setText(f"Units: {problem}")
            self.units.setStyleSheet(WARNING_STYLE)
        elif keys.spatial_key is not None and source["x_column"]:
            self.units.setText(
                f"coordinates: obsm[{keys.spatial_key!r}] in um, made from {source['x_column']}/"
                f"{source['y_column']} x {pixel_text(source['pixel_size'])} um per pixel"
            )
            self.units.setStyleSheet("")
        else:
            self.units.setText("")
            self.units.setStyleSheet("")

    def _keys_edited(self, _box: str) -> None:
        """A key chosen by the user applies at once: the cells move or recolour, the guess note follows."""
        if self.session.adata is None:
            return
        by_columns = self.spatial.currentText() == OBS_COLUMNS
        self.x_column.setEnabled(by_columns)
        self.y_column.setEnabled(by_columns)
        if by_columns and NOT_USED in (self.x_column.currentText(), self.y_column.currentText()):
            self.status.setText("choose the x and the y column")
            return
        self.guarded(lambda: self.session.set_keys(self.keys()))

    def _pixel_size_typed(self) -> None:
        self._pixel_size_chosen = True
        self.instrument.setCurrentIndex(0)
        self._keys_edited("pixel_size")

    def _instrument_chosen(self) -> None:
        size = self.instrument.currentData()
        if size is None:
            return
        self.pixel_size.setText(pixel_text(size))
        self._pixel_size_chosen = True
        self._keys_edited("pixel_size")

    def pixel_size_value(self) -> float:
        """The typed pixel size (a :class:`SessionError` naming the text when it is not a positive number)."""
        text = self.pixel_size.text().strip()
        try:
            value = float(text)
        except ValueError:
            raise SessionError(f"pixel size {text!r} is not a number of micrometres") from None
        if not value > 0:
            raise SessionError(f"pixel size must be a positive number of micrometres, got {text!r}")
        return value

    def keys(self) -> TissueKeys:
        """The keys as chosen in the dock; a key still as guessed stays marked as a guess."""
        by_columns = self.spatial.currentText() == OBS_COLUMNS
        chosen = {
            "spatial_key": None if by_columns else self.spatial.currentText() or None,
            "x_column": combo_value(self.x_column, NOT_USED) if by_columns else None,
            "y_column": combo_value(self.y_column, NOT_USED) if by_columns else None,
            "cell_type_key": combo_value(self.cell_type, NONE),
            "domain_key": combo_value(self.domain, NONE),
            "batch_key": combo_value(self.batch, NONE),
            "counts_layer": combo_value(self.counts, ""),
        }
        before = self.session.keys
        guessed = tuple(f for f in before.guessed if f in chosen and chosen[f] == getattr(before, f))
        return TissueKeys(pixel_size=self.pixel_size_value(), guessed=guessed, **chosen)

    def params(self) -> PreprocessParams:
        return PreprocessParams(
            min_counts_cell=int(self.min_counts_cell.value()),
            min_counts_gene=int(self.min_counts_gene.value()),
            n_top_genes=int(self.n_top_genes.value()) if self.use_hvg.isChecked() else None,
            bandwidth_um=float(self.bandwidth.value()),
            max_neighbours=int(self.max_neighbours.value()),
            composition=str(self.composition.currentData()),
        )

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

    # ------------------------------------------------------------------ actions
    def _check_units(self, keys: TissueKeys) -> None:
        """Refuse coordinates that look like pixels until the user has chosen a pixel size."""
        if self._pixel_size_chosen or keys.pixel_size != 1.0 or self.session.adata is None:
            return
        problem = self.session.units_problem(keys)
        if problem:
            raise SessionError(
                f"{problem}. Choose the pixel size in the keys box (or type 1 there if the coordinates are "
                "micrometres), then preprocess"
            )

    def _run_with_keys(self, make_job):
        """Run ``make_job(params, keys)`` with the dock's settings and keys, pixel coordinates refused first."""
        params = self.params()

        def job():
            keys = self.keys()
            self._check_units(keys)
            return make_job(params, keys)

        return self.run_job(job)

    def preprocess(self):
        """QC, HVG, log-normalisation, graph and niche features in a worker."""
        return self._run_with_keys(self.session.preprocess_job)

    def suggest_reach(self):
        """Scan graph bandwidths in a worker; the suggestion fills the bandwidth and max-neighbours boxes."""
        return self._run_with_keys(lambda params, keys: self.session.reach_job(keys, params))

    def _on_reach(self, curve) -> None:
        self.reach.show_curve(curve)
        if curve.signal:
            self.bandwidth.setValue(curve.suggested_bandwidth)
            self.max_neighbours.setValue(curve.suggested_max_neighbours)

    def recolour(self, key: str) -> None:
        """Colour the cells by an obs column or gene (errors become notifications)."""
        if not key:
            return
        try:
            self.bridge.recolour(key)
        except SessionError as err:
            self.notify_error(str(err))
