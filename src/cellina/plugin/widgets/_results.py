"""Results dock: switch runs, overlay a gene's prediction on the focal cells, plot and tabulate changes;
with a CellinaGCN model, whom a cell attends to and the receiver x sender attention heatmap."""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from cellina.plugin.widgets._attention import AttentionBox
from cellina.plugin.widgets._bridge import LFC_LABEL, RESULT_LAYER
from cellina.plugin.widgets._common import (
    CellinaDock,
    PlotWidget,
    WrappedLabel,
    domain_levels,
    fill_combo,
    obs_levels,
    search_combo,
    set_target,
)
from cellina.plugin.widgets._legend import LegendWidget
from cellina.plugin.widgets._tissue import _spin

MODES = {LFC_LABEL: "lfc", "predicted expression": "expression", "std across draws": "std"}
#: the table's log-fold change: the focal cells' mean counterfactual over their mean factual prediction
TABLE_LFC = "log2FC, counterfactual vs factual (focal mean)"
#: colour of the warning that focal cells' niches lie outside training
WARNING_STYLE = "color: #e5a03c; font-weight: bold"
#: the plot's axes: both changes are taken against the focal cells' observed counts
OBSERVED_AXIS = "observed log2FC: target vs focal (observed)"
PREDICTED_AXIS = "predicted log2FC: counterfactual vs focal (observed)"


class LfcPlot(PlotWidget):
    """Observed-versus-predicted log-fold-change scatter, as in the published tutorial's figure."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__((3.4, 3.0), 240, parent)
        self.data: dict[str, Any] | None = None

    def show_data(self, data: dict[str, Any], gene_names, title: str) -> None:
        self.data = data
        ax = self.axes
        ax.clear()
        t, p, deg = data["true_lfc"], data["pred_lfc"], np.asarray(data["deg"])
        rest = np.setdiff1d(np.arange(len(t)), deg)
        ax.scatter(t[rest], p[rest], s=6, color="lightgray", linewidths=0)
        up, down = deg[t[deg] >= 0], deg[t[deg] < 0]
        ax.scatter(t[up], p[up], s=16, color="#d62728", label="up in target")
        ax.scatter(t[down], p[down], s=16, color="#1f77b4", label="down in target")
        for i in deg[:8]:
            ax.annotate(str(gene_names[i]), (t[i], p[i]), fontsize=6)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(OBSERVED_AXIS, fontsize=7)
        ax.set_ylabel(PREDICTED_AXIS, fontsize=7)
        ax.set_title(f"{title} (Pearson r = {data['pearson']:.2f})", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False, loc="upper left")
        self.canvas.draw_idle()
        self.setVisible(True)


class ResultsWidget(CellinaDock):
    """Choose a run and gene; overlay predictions; compare with an observed target population."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.run_choice = QComboBox()
        self.gene = search_combo()
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.show_button = QPushButton("Show on focal cells")
        self.form.addRow("run", self.run_choice)
        self.form.addRow("gene", self.gene)
        self.form.addRow("display", self.mode)
        self.form.addRow(self.show_button)
        self.legend = LegendWidget()
        self.layout().addWidget(self.legend)

        compare = QGroupBox("compare with an observed target population")
        compare_form = QFormLayout(compare)
        self.target_type, self.target_domain = QComboBox(), QComboBox()
        self.n_deg = _spin(2, 5000, 50)
        self.plot_button = QPushButton("Plot observed vs predicted")
        compare_form.addRow("target type", self.target_type)
        compare_form.addRow("target domain", self.target_domain)
        compare_form.addRow("top genes", self.n_deg)
        compare_form.addRow(self.plot_button)
        self.layout().addWidget(compare)
        self.plot = LfcPlot()
        self.plot.setVisible(False)
        self.layout().addWidget(self.plot)
        self.draws_label = WrappedLabel("")
        self.warning = WrappedLabel("")
        self.warning.setStyleSheet(WARNING_STYLE)
        self.warning.setVisible(False)
        self.layout().addWidget(self.warning)
        self.layout().addWidget(self.draws_label)
        self.warned: set[tuple[str, str]] = set()
        self.top_table = QTableWidget(0, 2)
        self.top_table.setHorizontalHeaderLabels(["gene", TABLE_LFC])
        self.top_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.top_table.setMinimumHeight(160)
        self.top_table.horizontalHeader().setStretchLastSection(True)
        self.layout().addWidget(self.top_table)
        self.attention = AttentionBox(self)
        self.layout().addWidget(self.attention)
        self.finish_layout()

        self.run_choice.activated.connect(
            lambda _i: self.guarded(lambda: self.session.set_current_run(self.run_choice.currentText()))
        )
        self.show_button.clicked.connect(self.show_result)
        self.mode.activated.connect(lambda _i: self.show_result())
        self.gene.activated.connect(lambda _i: self.show_result())
        self.plot_button.clicked.connect(self.plot_comparison)
        self.top_table.cellClicked.connect(self._pick_gene)
        self.bridge.result_colouring.connect(self.legend.show_info)
        self.session.events.runs.connect(self._on_runs)
        self.session.events.current_run.connect(self._on_current)
        self.follow_adata(self._on_adata)

    def _on_adata(self, adata) -> None:
        if adata is None:
            return
        fill_combo(self.gene, list(adata.var_names))
        keys = self.session.keys
        domains = domain_levels(adata, keys.domain_key)
        fill_combo(self.target_type, obs_levels(adata, keys.cell_type_key))
        fill_combo(self.target_domain, domains)
        set_target(self.target_domain, domains)
        self._on_runs()

    def _on_runs(self) -> None:
        fill_combo(self.run_choice, list(self.session.runs))
        if not self.session.runs:
            self.top_table.setRowCount(0)
            self.plot.setVisible(False)
            self.draws_label.setText("")
            self.warning.setVisible(False)

    def _on_current(self, name: str) -> None:
        if name not in self.session.runs:
            return
        self.run_choice.setCurrentText(name)
        table = self.session.top_changed_genes(name, n=20)
        borrowed, ranged = "borrowed_log2fc" in table, "low" in table
        # a run that borrowed or has a range shows more than one column of changes, so they get short names
        if borrowed:
            headers = ["gene", "own log2FC", "other types", "borrowed"]
        else:
            headers = ["gene", "log2FC (focal mean)" if ranged else TABLE_LFC]
        headers += ["range"] if ranged else []
        self.top_table.setColumnCount(len(headers))
        self.top_table.setHorizontalHeaderLabels(headers)
        self.top_table.setRowCount(len(table))
        for i, row in enumerate(table.itertuples(index=False)):
            self.top_table.setItem(i, 0, QTableWidgetItem(row.gene))
            # the spread across draws beside the change it qualifies (none for a single draw)
            spread = "" if np.isnan(row.std) else f"  ± {row.std:.3f}"
            self.top_table.setItem(i, 1, QTableWidgetItem(f"{row.log2fc:+.3f}{spread}"))
            if borrowed:
                self.top_table.setItem(i, 2, QTableWidgetItem(f"{row.others_log2fc:+.3f}"))
                self.top_table.setItem(i, 3, QTableWidgetItem(f"{row.borrowed_log2fc:+.3f}"))
            if ranged:
                self.top_table.setItem(i, len(headers) - 1, QTableWidgetItem(f"{row.low:+.2f} to {row.high:+.2f}"))
        self.top_table.resizeColumnsToContents()
        self._show_trust(name)
        if len(table):
            # a new run opens on its most changed gene; the user picks others from the table
            self.gene.setCurrentText(table["gene"].iloc[0])
        if self.bridge.find_layer(RESULT_LAYER) is not None or len(self.session.runs) == 1:
            self.show_result()

    def _show_trust(self, name: str) -> None:
        """The number of draws and, when focal cells' niches lie outside training, a warning
        (in the dock, and once per run as a napari notification)."""
        run = self.session.runs[name]
        draws, warning = self.session.trust_summary(name)
        self.draws_label.setText(draws)
        self.warning.setText(f"⚠ {warning}" if warning else "")
        self.warning.setVisible(bool(warning))
        if warning and (name, run.created) not in self.warned:
            self.warned.add((name, run.created))
            show_warning(f"{name}: {warning}")

    def _pick_gene(self, row: int, _column: int) -> None:
        item = self.top_table.item(row, 0)
        if item is not None:
            self.gene.setCurrentText(item.text())
            self.show_result()

    def show_result(self) -> None:
        """Colour the focal cells by the chosen gene's prediction (layer updated in place)."""
        mode = MODES[self.mode.currentText()]
        self.guarded(lambda: self.bridge.show_result(self.gene.currentText().strip(), mode))

    def plot_comparison(self) -> None:
        """Observed (target vs focal) against predicted (counterfactual vs focal) log2FC."""

        def plot():
            run = self.session.require_run()
            data = self.session.observed_vs_predicted(
                self.target_type.currentText(), self.target_domain.currentText(), int(self.n_deg.value())
            )
            self.plot.show_data(data, np.asarray(self.session.adata.var_names), run.name)
            return data

        return self.guarded(plot)
