"""Model dock: hyper-parameters, Train / Cancel in a worker with a live loss curve, Save / Load, latents."""

from __future__ import annotations

import threading
from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QWidget,
)

from cellina.plugin._session import TrainParams
from cellina.plugin._workflow import Progress, apply_trained, latent_steps, load_model, train_steps
from cellina.plugin.widgets._common import CellinaDock, combo_value, fill_combo, obs_levels
from cellina.plugin.widgets._tissue import _spin

NONE = "(none)"


class LossCurve(QWidget):
    """A small matplotlib plot of the training losses, redrawn once per epoch."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(3.2, 2.0), dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        self.series: dict[str, list[tuple[int, float]]] = {}
        box = QHBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.canvas)
        self.setMinimumHeight(160)
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


class ModelWidget(CellinaDock):
    """Train or load a Cellina model; show ``z`` and ``s`` clusters as layers."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        d = TrainParams()
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
        self.niche_decoder = _choice(
            {"type-gated (recommended)": "type_gated", "factorised": "factorised", "concat (published)": "concat"},
            d.niche_decoder,
            "concat: one decoder on [z; s], as published. factorised: a decoder on z plus a low-rank niche "
            "response whose genes depend on the cell's state. type-gated: factorised plus a niche map of each "
            "cell type's own, chosen by the classifier on z (needs classifier lambda > 0); the most accurate "
            "for held-out cell types.",
        )
        self.form.addRow("niche decoder", self.niche_decoder)
        self.spatial_decoding = _choice(
            {"posterior mean (recommended)": "mean", "sample (published)": "sample"},
            d.spatial_decoding,
            "What the decoder learns from during training. sample: a draw of the niche latent s, as "
            "published. posterior mean: the mean of s, which is also what predictions decode, so predicted "
            "niche responses are not shrunk by the posterior noise of s.",
        )
        self.form.addRow("niche code", self.spatial_decoding)
        self.discriminator_input = _choice(
            {"z and cell type (recommended)": True, "z only (published)": False},
            d.type_aware_discriminator,
            "What the domain discriminator sees. z only: as published; the adversary then also fights "
            "the cell type wherever a type lives in one domain. z and cell type: the discriminator is told "
            "the type, so the adversary removes only what z knows about the domain beyond it - the niche "
            "signal that would otherwise make predicted niche responses too small.",
        )
        self.form.addRow("discriminator sees", self.discriminator_input)
        self.form.addRow("n_latent", self.n_latent)
        self.form.addRow("n_hidden", self.n_hidden)
        self.form.addRow("epochs", self.max_epochs)
        self.form.addRow("batch size", self.batch_size)
        self.form.addRow("classifier lambda", self.classifier_lambda)
        self.form.addRow("discriminator lambda", self.discriminator_lambda)
        self.form.addRow(self.early_stopping, self.patience)
        self.form.addRow("hold out type", self.holdout_type)
        self.form.addRow("... in domain", self.holdout_domain)
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
        self.layout().addWidget(cluster_box)
        self.finish_layout()
        self._cancel = threading.Event()

        self.train_button.clicked.connect(self.train)
        self.cancel_button.clicked.connect(self.cancel)
        self.save_button.clicked.connect(lambda: self.save_model())
        self.load_button.clicked.connect(lambda: self.load_model())
        self.cluster_button.clicked.connect(self.compute_latents)
        self.session.events.adata.connect(self._on_adata)
        self.session.events.busy.connect(self._on_busy)
        if self.session.adata is not None:
            self._on_adata(self.session.adata)

    def _on_adata(self, adata) -> None:
        if adata is None:
            return
        keys = self.session.keys
        for combo, key in ((self.holdout_type, keys.cell_type_key), (self.holdout_domain, keys.domain_key)):
            values = obs_levels(adata, key)
            fill_combo(combo, values, none_item=NONE)

    def _on_busy(self, busy: bool) -> None:
        for button in (self.train_button, self.save_button, self.load_button, self.cluster_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy and self._training)

    _training = False

    def params(self) -> TrainParams:
        return TrainParams(
            n_latent=int(self.n_latent.value()),
            n_hidden=int(self.n_hidden.value()),
            niche_decoder=str(self.niche_decoder.currentData()),
            spatial_decoding=str(self.spatial_decoding.currentData()),
            type_aware_discriminator=bool(self.discriminator_input.currentData()),
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
            text = ", ".join(f"{k} {v:.4g}" for k, v in sorted(report.losses.items()) if k in
                             ("vae_loss_train", "vae_loss_validation"))
            self.progress.setFormat(f"epoch %v/%m  {text}")

    # ------------------------------------------------------------------ actions
    def train(self):
        """Train in a worker; Cancel stops at the next minibatch."""
        params = self.params()
        self._cancel = threading.Event()
        cancel = self._cancel
        self.loss_curve.clear()

        def make():
            adata = self.session.require_adata()
            return train_steps(adata, self.session.keys, params, cancel)

        def apply(result):
            self._training = False
            apply_trained(self.session, result, params)
            if result["cancelled"]:
                self.notify(f"training cancelled after {result['epochs']} epoch(s); that model is kept")
            self.compute_latents()

        def failed(err):
            self._training = False

        self._training = True
        worker = self.run_steps(make, apply, "training", on_error=failed)
        if worker is None:
            self._training = False
        else:
            self.cancel_button.setEnabled(True)
        return worker

    def cancel(self) -> None:
        """Ask training to stop at the next minibatch."""
        self._cancel.set()
        self.status.setText("cancelling at the next minibatch...")

    def compute_latents(self):
        """``z`` and ``s`` of every cell and their clusters, shown as layers."""
        method = self.cluster_method.currentText()
        n_clusters = int(self.n_clusters.value())

        def make():
            return latent_steps(self.session.require_model(), self.session.require_adata(), method, n_clusters)

        return self.run_steps(make, self.session.set_latents, "latents and clusters")

    def save_model(self, path: str | None = None) -> None:
        """Save the model folder (asks for it when ``path`` is None)."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Save Cellina model into folder")
            if not path:
                return
        self.guarded(lambda: (self.session.save_model(path, overwrite=True), self.notify(f"model saved to {path}")))

    def load_model(self, path: str | None = None) -> None:
        """Load a model folder onto the current tissue; genes must match."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Load Cellina model folder")
            if not path:
                return

        def load():
            model = load_model(self.session.require_adata(), self.session.keys, path)
            self.session.set_model(model, source=str(path))
            self.notify(f"model loaded from {path}")
            self.compute_latents()

        self.guarded(load)
