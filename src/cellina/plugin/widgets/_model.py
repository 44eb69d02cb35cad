"""Model dock: the variant, a preset and its options, Train / Cancel in a worker with a live loss curve,
Save / Load, latents."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from cellina.plugin._state import CLUSTER_COLUMNS, VARIANTS, Progress, TrainParams, format_num_neighbors
from cellina.plugin.widgets._common import CellinaDock, PlotWidget, combo_value, describe, fill_combo, obs_levels
from cellina.plugin.widgets._legend import LegendWidget
from cellina.plugin.widgets._tissue import _spin

NONE = "(none)"


class LossCurve(PlotWidget):
    """A small matplotlib plot of the training losses, redrawn once per epoch."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__((3.2, 2.0), 160, parent)
        self.series: dict[str, list[tuple[int, float]]] = {}
        self.clear()

    def clear(self) -> None:
        self.series = {}
        self.redraw()

    def add(self, epoch: int, losses: dict[str, float]) -> None:
        for name, value in losses.items():
            self.series.setdefault(name, []).append((epoch, value))
        self.redraw()

    def redraw(self) -> None:
        ax = self.axes
        ax.clear()
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        # the VAE part is comparable across epochs; the total jumps when the loss weights freeze
        shown = [k for k in self.series if k in ("vae_loss_train", "vae_loss_validation")] or list(self.series)[:3]
        for name in shown:
            xs, ys = zip(*self.series[name])
            ax.plot(xs, ys, marker="o", ms=3, label=name)
        if shown:
            ax.legend(fontsize=7, frameon=False)
        self.canvas.draw_idle()


def _choice(options: dict[str, object], current: object, tooltip: str) -> QComboBox:
    """A combo box of labelled values (label -> value, e.g. a string or a bool) set to ``current``."""
    combo = QComboBox()
    for label, value in options.items():
        combo.addItem(label, value)
    combo.setCurrentIndex(combo.findData(current))
    combo.setToolTip(tooltip)
    return combo


def _option_labels(name: str) -> dict[str, object]:
    """The choices of a preset option, each marked with the presets that use it."""
    from cellina.model.presets import PRESETS

    labels = {}
    for label, value in OPTION_CHOICES[name][1].items():
        users = [preset.name for preset in PRESETS.values() if preset.model.get(name) == value]
        labels[f"{label} ({', '.join(sorted(users, reverse=True))})" if users else label] = value
    return labels


def _preset_tooltip(name: str) -> str:
    """What a preset sets, each option with its explanation (from the presets module)."""
    from cellina.model.presets import OPTION_NOTES, get_preset

    preset = get_preset(name)
    rows = [
        f"<li><b>{key}</b> = {value}: {OPTION_NOTES.get(key, '')}</li>"
        for key, value in {**preset.model, **preset.plan}.items()
    ]
    return f"<p><b>{preset.name}</b>: {preset.summary}.</p><ul>{''.join(rows)}</ul>"


#: what each variant is, for its tooltip
VARIANT_NOTES = {
    "cellina": "Cellina: the niche code s is encoded from the niche features, a kernel-weighted mean of the "
    "neighbours' log-normalised expression.",
    "gcn": "CellinaGCN: s is encoded by GATv2 attention over each cell's neighbours in the spatial graph "
    "(no niche features needed), with a contrastive loss on s; the Results dock then shows whom each cell "
    "attends to.",
}
#: tooltips of the graph variant's own options
GRAPH_NOTES = {
    "num_neighbors": "Neighbours sampled per hop while training: 'all', one number for every hop, or one per "
    "layer (e.g. '10, 5'); fewer is faster. Predictions always read every neighbour. The preset chooses it: "
    "all published, '10, 5' recommended.",
    "link_prediction_weight": (
        "Weight of the supervised-contrastive loss on s (0: off). The preset chooses it: 1 published, "
        "0 recommended (with linear graph layers s learns the niche from the likelihood)."
    ),
    "convolution_type": "Graph layer: 'gat' (GATv2 attention, the only one with attention maps), 'gcn', 'gin', "
    "'sg' or 'mean'.",
    "subgraph_type": "'induced': every graph edge between the sampled cells; 'directional': only the sampled edges. "
    "The preset chooses it: induced published, directional recommended.",
    "seed_patches": "Take each training minibatch's cells from this many spatial patches instead of at random "
    "('random', as published). Neighbouring cells share their neighbourhoods, so an epoch is several times "
    "faster, most with every neighbour; predictions are computed as before. On two development worlds it cost "
    "the recommended preset a few hundredths of skill and slope (docs/gcn.md).",
}

#: options of the preset the dock shows: row label, then choice label -> value
OPTION_CHOICES = {
    "niche_decoder": ("niche decoder", {"type-gated": "type_gated", "factorised": "factorised", "concat": "concat"}),
    "spatial_decoding": ("niche code", {"posterior mean": "mean", "sample": "sample"}),
    "type_aware_discriminator": ("discriminator sees", {"z and cell type": True, "z only": False}),
    "spatial_encoder": ("niche encoder", {"linear": "linear", "MLP": "mlp"}),
}


class ModelWidget(CellinaDock):
    """Train or load a Cellina model from a preset; the ``z`` and ``s`` clusters become colours of the cells."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        from cellina.model.presets import OPTION_NOTES, PRESETS

        d = TrainParams()
        self.preset = QComboBox()
        for name in PRESETS:
            self.preset.addItem(name, name)
            self.preset.setItemData(self.preset.count() - 1, _preset_tooltip(name), Qt.ItemDataRole.ToolTipRole)
        self.preset.setCurrentIndex(self.preset.findData(d.preset))
        self.form.addRow("preset", self.preset)
        self.variant = QComboBox()
        for label, name in VARIANTS.items():
            self.variant.addItem(label, name)
            self.variant.setItemData(self.variant.count() - 1, VARIANT_NOTES[name], Qt.ItemDataRole.ToolTipRole)
        self.variant.setCurrentIndex(self.variant.findData(d.variant))
        self.form.addRow("model", self.variant)
        self._build_graph_options(d)
        for name, (row, _) in OPTION_CHOICES.items():
            combo = _choice(_option_labels(name), getattr(d, name), OPTION_NOTES[name])
            setattr(self, "discriminator_input" if name == "type_aware_discriminator" else name, combo)
            self.form.addRow(row, combo)
        self._build_sizes(d)
        self._build_buttons()
        self.finish_layout()

        self.preset.currentIndexChanged.connect(lambda _i: self._preset_chosen())
        self._preset_chosen()
        self.variant.currentIndexChanged.connect(lambda _i: self._variant_chosen())
        self._variant_chosen()
        self.train_button.clicked.connect(self.train)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save_model())
        self.load_button.clicked.connect(lambda: self.load_model())
        self.cluster_button.clicked.connect(self.compute_latents)
        self.show_s.clicked.connect(lambda: self.colour_by_clusters("s"))
        self.show_z.clicked.connect(lambda: self.colour_by_clusters("z"))
        self.bridge.colouring.connect(self.legend.show_info)
        self.legend.show_info(self.bridge.colour_info)
        self.session.events.latents.connect(self._on_latents)
        self._on_latents()
        self.session.events.busy.connect(self._on_busy)
        self.follow_adata(self._on_adata)

    def _build_graph_options(self, d: TrainParams) -> None:
        """The graph variant's own options, in a box shown only while CellinaGCN is chosen."""
        from cellina.model import CONVOLUTION_TYPES, SUBGRAPH_TYPES

        self.graph_box = QGroupBox("graph variant (CellinaGCN)")
        form = QFormLayout(self.graph_box)
        self.num_neighbors = QLineEdit(format_num_neighbors(d.num_neighbors))
        self.link_prediction_weight = _spin(0, 100, d.link_prediction_weight, 0.1, decimals=2)
        self.convolution_type, self.subgraph_type = QComboBox(), QComboBox()
        self.convolution_type.addItems(list(CONVOLUTION_TYPES))
        self.convolution_type.setCurrentText(d.convolution_type)
        self.subgraph_type.addItems(list(SUBGRAPH_TYPES))
        self.subgraph_type.setCurrentText(d.subgraph_type)
        self.seed_patches = _spin(0, 512, d.seed_patches or 0)
        self.seed_patches.setSpecialValueText("random")  # 0 shows as "random": seeds drawn at random
        for label, name in (
            ("neighbours per hop", "num_neighbors"),
            ("contrastive weight", "link_prediction_weight"),
            ("graph layer", "convolution_type"),
            ("subgraph", "subgraph_type"),
            ("seed patches", "seed_patches"),
        ):
            widget = getattr(self, name)
            widget.setToolTip(f"<b>{name}</b>: {GRAPH_NOTES[name]}")
            form.addRow(label, widget)
        self.form.addRow(self.graph_box)

    def _variant_chosen(self) -> None:
        """The graph variant's options show only while it is chosen."""
        name = str(self.variant.currentData())
        self.variant.setToolTip(VARIANT_NOTES[name])
        self.graph_box.setVisible(name == "gcn")

    def _build_sizes(self, d: TrainParams) -> None:
        self.n_latent = _spin(2, 256, d.n_latent)
        self.n_hidden = _spin(8, 1024, d.n_hidden)
        self.max_epochs = _spin(1, 10000, d.max_epochs)
        self.batch_size = _spin(2, 65536, d.batch_size)
        self.classifier_lambda = _spin(0, 100, d.classifier_lambda, 0.1, decimals=2)
        self.discriminator_lambda = _spin(0, 100, d.discriminator_lambda, 0.1, decimals=2)
        self.early_stopping = QCheckBox("early stopping")
        self.early_stopping.setChecked(d.early_stopping)
        self.patience = _spin(1, 1000, d.early_stopping_patience)
        self.holdout_type, self.holdout_domain = QComboBox(), QComboBox()
        for label, widget in (
            ("n_latent", self.n_latent),
            ("n_hidden", self.n_hidden),
            ("epochs", self.max_epochs),
            ("batch size", self.batch_size),
            ("classifier lambda", self.classifier_lambda),
            ("discriminator lambda", self.discriminator_lambda),
        ):
            self.form.addRow(label, widget)
        self.form.addRow(self.early_stopping, self.patience)
        self.form.addRow("hold out type", self.holdout_type)
        self.form.addRow("... in domain", self.holdout_domain)

    def _build_buttons(self) -> None:
        buttons = QHBoxLayout()
        self.train_button, self.cancel_button = QPushButton("Train"), QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        buttons.addWidget(self.train_button)
        buttons.addWidget(self.cancel_button)
        self.layout().addLayout(buttons)
        self.loss_curve = LossCurve()
        self.layout().addWidget(self.loss_curve)
        io = QHBoxLayout()
        self.save_button, self.load_button = QPushButton("Save model..."), QPushButton("Load model...")
        io.addWidget(self.save_button)
        io.addWidget(self.load_button)
        self.layout().addLayout(io)
        cluster_box = QGroupBox("latent clusters")
        cluster_form = QFormLayout(cluster_box)
        self.cluster_method = QComboBox()
        self.cluster_method.addItems(["kmeans", "leiden"])
        self.n_clusters = _spin(2, 100, 8)
        self.cluster_button = QPushButton("Recluster")
        cluster_form.addRow("method", self.cluster_method)
        cluster_form.addRow("clusters (k-means)", self.n_clusters)
        cluster_form.addRow(self.cluster_button)
        show = QHBoxLayout()
        self.show_s, self.show_z = QPushButton("Colour by niches (s)"), QPushButton("Colour by z clusters")
        show.addWidget(self.show_s)
        show.addWidget(self.show_z)
        cluster_form.addRow(show)
        # what the cells are coloured by, with its legend, whichever dock recoloured them
        self.legend = LegendWidget()
        cluster_form.addRow(self.legend)
        self.layout().addWidget(cluster_box)

    def _on_latents(self) -> None:
        adata = self.session.adata
        for latent, button in (("s", self.show_s), ("z", self.show_z)):
            button.setEnabled(adata is not None and CLUSTER_COLUMNS[latent] in adata.obs)

    def colour_by_clusters(self, latent: str) -> None:
        """Colour the cells by the clusters of ``s`` (niches) or ``z``; the legend below says which is which."""
        self.guarded(lambda: self.bridge.recolour(CLUSTER_COLUMNS[latent]))

    def _option_combos(self) -> dict[str, QComboBox]:
        return {
            "niche_decoder": self.niche_decoder,
            "spatial_decoding": self.spatial_decoding,
            "type_aware_discriminator": self.discriminator_input,
            "spatial_encoder": self.spatial_encoder,
        }

    def _preset_chosen(self) -> None:
        """A preset sets the options it names; the user may change them afterwards."""
        name = str(self.preset.currentData())
        self.preset.setToolTip(_preset_tooltip(name))
        chosen = TrainParams(preset=name)
        for option, combo in self._option_combos().items():
            combo.setCurrentIndex(combo.findData(getattr(chosen, option)))
        self.link_prediction_weight.setValue(chosen.link_prediction_weight)
        self.num_neighbors.setText(format_num_neighbors(chosen.num_neighbors))
        self.subgraph_type.setCurrentText(chosen.subgraph_type)

    def _on_adata(self, adata) -> None:
        if adata is None:
            return
        self._on_latents()
        keys = self.session.keys
        for combo, key in ((self.holdout_type, keys.cell_type_key), (self.holdout_domain, keys.domain_key)):
            values = obs_levels(adata, key)
            fill_combo(combo, values, none_item=NONE)

    def _on_busy(self, busy: bool) -> None:
        for button in (self.train_button, self.save_button, self.load_button, self.cluster_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy and self.session.running == "training")

    def params(self) -> TrainParams:
        options = {option: combo.currentData() for option, combo in self._option_combos().items()}
        return TrainParams(
            preset=str(self.preset.currentData()),
            variant=str(self.variant.currentData()),
            num_neighbors=self.num_neighbors.text(),
            link_prediction_weight=float(self.link_prediction_weight.value()),
            convolution_type=self.convolution_type.currentText(),
            subgraph_type=self.subgraph_type.currentText(),
            seed_patches=int(self.seed_patches.value()) or None,
            n_latent=int(self.n_latent.value()),
            n_hidden=int(self.n_hidden.value()),
            niche_decoder=str(options["niche_decoder"]),
            spatial_decoding=str(options["spatial_decoding"]),
            type_aware_discriminator=bool(options["type_aware_discriminator"]),
            spatial_encoder=str(options["spatial_encoder"]),
            max_epochs=int(self.max_epochs.value()),
            batch_size=int(self.batch_size.value()),
            classifier_lambda=float(self.classifier_lambda.value()),
            discriminator_lambda=float(self.discriminator_lambda.value()),
            early_stopping=self.early_stopping.isChecked(),
            early_stopping_patience=int(self.patience.value()),
            holdout_cell_type=combo_value(self.holdout_type, NONE),
            holdout_domain=combo_value(self.holdout_domain, NONE),
        )

    def on_progress(self, report: Progress) -> None:
        if report.losses:
            self.loss_curve.add(report.step, report.losses)
            text = ", ".join(
                f"{k} {v:.4g}"
                for k, v in sorted(report.losses.items())
                if k in ("vae_loss_train", "vae_loss_validation")
            )
            self.progress.setFormat(f"epoch %v/%m  {text}")

    # ------------------------------------------------------------------ actions
    def train(self):
        """Train in a worker (then compute the latents); Cancel stops at the next minibatch."""
        try:
            params = self.params()
        except Exception as err:  # options the session refuses (e.g. neighbours per hop) are a message
            self.notify_error(describe(err))
            return None
        self.loss_curve.clear()
        return self.run_job(lambda: self.session.train_job(params, *self._clustering()))

    def cancel(self) -> None:
        """Ask training to stop at the next minibatch."""
        self.session.cancel()
        self.status.setText("cancelling at the next minibatch...")

    def _clustering(self) -> tuple[str, int]:
        return self.cluster_method.currentText(), int(self.n_clusters.value())

    def compute_latents(self):
        """``z`` and ``s`` of every cell and their clusters, offered as colours of the cells."""
        clustering = self._clustering()
        return self.run_job(lambda: self.session.latents_job(*clustering))

    def save_model(self, path: str | None = None) -> None:
        """Save the model folder (asks for it when ``path`` is None)."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Save Cellina model into folder")
            if not path:
                return
        self.guarded(lambda: (self.session.save_model(path, overwrite=True), self.notify(f"model saved to {path}")))

    def load_model(self, path: str | None = None):
        """Load a model folder onto the current tissue in a worker (genes must match), then the latents."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Load Cellina model folder")
            if not path:
                return None
        clustering = self._clustering()
        return self.run_job(lambda: self.session.load_job(path, *clustering))
