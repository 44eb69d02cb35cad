"""The graph variant's attention in the Results dock: pick a cell, see whom it attends to; a heatmap.

A group box the Results dock holds. With a CellinaGCN model (GATv2 layers) the user picks a cell
with a click on the canvas (or types its id) and the viewer bridge draws lines from its
neighbours to it, weighted by its attention; the heatmap shows receiver group x sender group
attention relative to uniform (:meth:`CellinaSession.attention_table`). The attention is
computed once per model, in a worker, the first time it is needed. With a Cellina model the
box is disabled and its tooltip says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPushButton, QWidget

from cellina.plugin._colours import relative_norm
from cellina.plugin._state import CLUSTER_COLUMNS, UNIFORM_NOTE
from cellina.plugin.widgets._common import PlotWidget, WrappedLabel, fill_combo

#: the caption under the heatmap
CAPTION = (
    "Mean attention that cells of each receiver group (rows) pay to neighbours of each sender group "
    "(columns), relative to uniform: 1 = uniform attention (as much as any neighbour), above 1 = more. "
    "Grey: no such edges. Attention maps can differ between training seeds; compare seeds before "
    "interpreting them."
)
#: the heatmap's colour bar
COLOURBAR = "attention relative to uniform (1 = uniform)"
PICK = "Pick a cell on the canvas"


class AttentionHeatmap(PlotWidget):
    """Receiver x sender attention relative to uniform, on a diverging map centred at 1."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__((3.4, 3.2), 300, parent)
        self.table = None
        self._colourbar = None

    def show_table(self, table, title: str) -> None:
        from matplotlib import colormaps

        self.table = table
        if self._colourbar is not None:
            self._colourbar.remove()
        ax = self.axes
        ax.clear()
        values = table.to_numpy(dtype=np.float64)
        cmap = colormaps["coolwarm"].with_extremes(bad="#bbbbbb")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=relative_norm(values), aspect="auto")
        ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=60, ha="right", fontsize=6)
        ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index], fontsize=6)
        ax.set_xlabel("sender (neighbour)", fontsize=7)
        ax.set_ylabel("receiver", fontsize=7)
        ax.set_title(title, fontsize=8)
        self._colourbar = self.figure.colorbar(image, ax=ax, fraction=0.05, pad=0.03)
        self._colourbar.set_label(COLOURBAR, fontsize=6)
        self._colourbar.ax.tick_params(labelsize=6)
        self.canvas.draw_idle()
        self.setVisible(True)


class AttentionBox(QGroupBox):
    """Pick a cell to see its attention; the receiver x sender heatmap (CellinaGCN models only)."""

    def __init__(self, dock: Any):
        super().__init__("attention (CellinaGCN)")
        self.dock, self.session, self.bridge = dock, dock.session, dock.bridge
        self._then: list[Callable[[], Any]] = []
        self.receiver: int | None = None
        form = QFormLayout(self)
        self.layer = QComboBox()
        self.layer.setToolTip("which GATv2 layer's attention to show (the last is the one that makes s)")
        self.pick_button = QPushButton(PICK)
        self.pick_button.setCheckable(True)
        self.cell = QLineEdit()
        self.cell.setPlaceholderText("cell id (obs name)")
        self.show_button = QPushButton("Show")
        row = QHBoxLayout()
        row.addWidget(self.cell)
        row.addWidget(self.show_button)
        self.receiver_label = WrappedLabel("")
        self.groupby = QComboBox()
        self.groupby.setToolTip("the obs column whose groups are the heatmap's rows and columns")
        self.heatmap_button = QPushButton("Heatmap: receiver x sender")
        self.heatmap = AttentionHeatmap()
        self.heatmap.setVisible(False)
        self.caption = WrappedLabel(CAPTION)
        self.caption.setStyleSheet("font-size: 10px")
        form.addRow("GATv2 layer", self.layer)
        form.addRow(self.pick_button)
        form.addRow("or cell", row)
        form.addRow(self.receiver_label)
        form.addRow("group by", self.groupby)
        form.addRow(self.heatmap_button)
        form.addRow(self.heatmap)
        form.addRow(self.caption)
        self._controls = (self.layer, self.pick_button, self.cell, self.show_button, self.groupby, self.heatmap_button)

        self.pick_button.toggled.connect(self._pick_toggled)
        self.show_button.clicked.connect(lambda: self.show_cell(self.cell.text()))
        self.cell.returnPressed.connect(lambda: self.show_cell(self.cell.text()))
        self.heatmap_button.clicked.connect(lambda: self.draw_heatmap())
        self.layer.activated.connect(lambda _i: self._redraw())
        self.groupby.activated.connect(lambda _i: self.draw_heatmap())
        self.session.events.model.connect(lambda _m: self._on_model())
        self.session.events.attention.connect(self._on_attention)
        self.session.events.step.connect(self._on_step)
        self.session.events.latents.connect(self._fill_groups)
        self.session.events.adata.connect(lambda _a: self._fill_groups())
        self._fill_groups()
        self._on_model()

    # ------------------------------------------------------------------ state
    def _on_model(self) -> None:
        """Enabled for a model with attention; otherwise disabled, with the reason as tooltip."""
        problem = self.session.attention_problem()
        self.pick_button.setChecked(False)
        self.receiver, self._then = None, []
        for widget in self._controls:
            widget.setEnabled(problem is None)
        self.setToolTip(problem or "")
        self.receiver_label.setText(problem or "click Pick, then a cell: lines from its neighbours show its attention")
        self.heatmap.setVisible(False)
        self.layer.clear()

    def _fill_groups(self, *_args: Any) -> None:
        adata, keys = self.session.adata, self.session.keys
        if adata is None:
            return
        wanted = [keys.cell_type_key, keys.domain_key, *CLUSTER_COLUMNS.values()]
        fill_combo(self.groupby, [c for c in dict.fromkeys(w for w in wanted if w) if c in adata.obs])

    def _on_attention(self) -> None:
        n = len(self.session.attention.layers)
        fill_combo(self.layer, [f"layer {i + 1} of {n}" for i in range(n)], keep=False)
        self.layer.setCurrentIndex(n - 1)
        then, self._then = self._then, []
        for action in then:
            action()

    def _on_step(self, name: str, outcome: Any) -> None:
        # what waited for an attention job that failed or was cancelled is dropped, not run later
        if name == "attention" and outcome.status != "done":
            self._then = []

    def with_attention(self, action: Callable[[], Any]) -> None:
        """Run ``action`` once the model's attention is kept (computing it in a worker the first time)."""
        if self.session.attention_ready:
            self.dock.guarded(action)
            return
        self._then.append(lambda: self.dock.guarded(action))
        if self.session.running != "attention":
            self.dock.run_job(self.session.attention_job)

    def layer_choice(self) -> int:
        index = self.layer.currentIndex()
        return -1 if index < 0 else index

    # ------------------------------------------------------------------ actions
    def _pick_toggled(self, on: bool) -> None:
        self.pick_button.setText("Picking: click a cell (click here to stop)" if on else PICK)
        self.bridge.pick_cells(self._picked if on else None)
        if on and self.viewer_layer_is_drawing():
            self.bridge.viewer.layers.selection.active = self.bridge.cells_layer
        if on:
            self.with_attention(lambda: None)

    def viewer_layer_is_drawing(self) -> bool:
        """Whether the active layer would draw on a click (a lasso), which picking must not do."""
        active = self.bridge.viewer.layers.selection.active if self.bridge.viewer is not None else None
        return active is not None and getattr(active, "mode", "pan_zoom") != "pan_zoom"

    def _picked(self, cell: int) -> None:
        self.cell.setText(str(self.session.adata.obs_names[cell]))
        self.show_cell(cell)

    def show_cell(self, cell: Any) -> None:
        """Draw the attention ``cell`` (position or obs name) pays its neighbours."""

        def show():
            index = self.session.cell_index(cell)
            edges = self.bridge.show_attention(index, self.layer_choice())
            self.receiver = index
            self.receiver_label.setText(self._describe(edges))

        self.with_attention(show)

    def _describe(self, edges) -> str:
        names = self.session.adata.obs_names
        name = names[edges.receiver]
        if edges.senders.size == 0:
            return f"{name} has no neighbours in the graph (layer {edges.layer + 1} of {edges.n_layers})"
        top = int(np.argmax(edges.weights))
        return (
            f"{name} attends to {edges.senders.size} neighbours (layer {edges.layer + 1} of {edges.n_layers}); "
            f"most to {names[edges.senders[top]]}: {edges.weights[top]:.2f} "
            f"({edges.relative[top]:.1f} x uniform). Line width: weight; colour: {UNIFORM_NOTE.split(';')[0]}."
        )

    def _redraw(self) -> None:
        if self.receiver is not None:
            self.show_cell(self.receiver)
        if self.heatmap.isVisible():
            self.draw_heatmap()

    def draw_heatmap(self) -> None:
        """Receiver x sender attention relative to uniform, grouped by the chosen column."""

        def draw():
            key = self.groupby.currentText() or None
            layer = self.layer_choice()
            table = self.session.attention_table(key, layer)
            n = len(self.session.attention.layers)
            self.heatmap.show_table(table, f"attention by {key or 'cell type'}, layer {layer % n + 1} of {n}")
            return table

        self.with_attention(draw)
