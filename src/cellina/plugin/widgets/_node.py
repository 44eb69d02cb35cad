"""Node perturbation dock: a gene-shift table (picker, knockout, contrast fill) and Run in a worker."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

from cellina.plugin._state import KNOCKOUT_LFC
from cellina.plugin.widgets._common import (
    CellinaDock,
    WrappedLabel,
    combo_value,
    domain_levels,
    fill_combo,
    obs_levels,
    search_combo,
    set_target,
)
from cellina.plugin.widgets._edge import _chosen, _multi_list
from cellina.plugin.widgets._tissue import _spin

NONE = "(none)"


class NodeWidget(CellinaDock):
    """Shift genes in the focal cells' neighbours and decode the focal cells' expression."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        self.gene = search_combo()
        self.value = _spin(-50, 50, 1.0, 0.25, decimals=3)
        self.knockout = QPushButton("Knockout")
        value_row = QHBoxLayout()
        value_row.addWidget(self.value)
        value_row.addWidget(self.knockout)
        self.senders = _multi_list()
        self.region = QCheckBox("only neighbours inside the focal lasso")
        self.add_button = QPushButton("Add shift")
        self.form.addRow("gene", self.gene)
        self.form.addRow("shift (ln fold change)", value_row)
        self.form.addRow("sender types", self.senders)
        self.form.addRow(self.region)
        self.form.addRow(self.add_button)

        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["gene", "shift (ln FC)", "senders", "region"])
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(140)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.layout().addWidget(self.table)
        rows = QHBoxLayout()
        self.remove_button, self.clear_button = QPushButton("Remove row"), QPushButton("Clear table")
        rows.addWidget(self.remove_button)
        rows.addWidget(self.clear_button)
        self.layout().addLayout(rows)

        contrast = QGroupBox("fill from contrast (pseudobulk per cell type)")
        contrast_form = QFormLayout(contrast)
        self.control_domain, self.target_domain, self.holdout = QComboBox(), QComboBox(), QComboBox()
        self.n_genes = _spin(1, 5000, 20)
        self.fill_button = QPushButton("Fill from contrast")
        self.direction = WrappedLabel("")
        contrast_form.addRow("control domain", self.control_domain)
        contrast_form.addRow("target domain", self.target_domain)
        contrast_form.addRow(self.direction)
        contrast_form.addRow("top genes per type", self.n_genes)
        contrast_form.addRow("held-out type (global shift)", self.holdout)
        contrast_form.addRow(self.fill_button)
        self.layout().addWidget(contrast)
        self.run_button = QPushButton("Run node perturbation")
        self.layout().addWidget(self.run_button)
        self.finish_layout()

        self.knockout.clicked.connect(lambda: self.value.setValue(KNOCKOUT_LFC))
        self.add_button.clicked.connect(self.add_shift)
        self.remove_button.clicked.connect(self.remove_selected)
        self.clear_button.clicked.connect(self.session.clear_gene_shifts)
        self.fill_button.clicked.connect(self.fill_from_contrast)
        self.run_button.clicked.connect(self.run)
        self.control_domain.currentTextChanged.connect(lambda _t: self._show_direction())
        self.target_domain.currentTextChanged.connect(lambda _t: self._show_direction())
        self.session.events.gene_shifts.connect(self._on_table)
        self.session.events.busy.connect(lambda busy: self.run_button.setEnabled(not busy))
        self.follow_adata(self._on_adata)

    def _on_adata(self, adata) -> None:
        if adata is None:
            return
        fill_combo(self.gene, list(adata.var_names))
        keys = self.session.keys
        types = obs_levels(adata, keys.cell_type_key)
        domains = domain_levels(adata, keys.domain_key)
        self.senders.clear()
        self.senders.addItems(types)
        # healthy/reference first: the control defaults to it, the target to a diseased domain
        fill_combo(self.control_domain, domains, keep=False)
        fill_combo(self.target_domain, domains, keep=False)
        set_target(self.target_domain, domains, avoid=self.control_domain.currentText())
        fill_combo(self.holdout, types, none_item=NONE)
        self._show_direction()
        self._on_table()

    def _show_direction(self) -> None:
        control, target = self.control_domain.currentText(), self.target_domain.currentText()
        self.direction.setText(
            f"control <b>{control}</b> -> target <b>{target}</b>: each shift is the target's log-fold "
            "change over the control"
            if control and target
            else ""
        )

    def _on_table(self) -> None:
        table = self.session.gene_shifts.table
        self.table.setRowCount(len(table))
        for i, row in enumerate(table.itertuples(index=False)):
            cells = (row.gene, f"{row.value:.3g}", ",".join(row.senders) or "all", "lasso" if row.region else "all")
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))

    def add_shift(self) -> None:
        """Add the picked gene with its value and restrictions (unknown genes are refused)."""
        gene = self.gene.currentText().strip()
        self.guarded(
            lambda: self.session.add_gene_shift(
                gene, self.value.value(), _chosen(self.senders), self.region.isChecked()
            )
        )

    def remove_selected(self) -> None:
        rows = sorted({index.row() for index in self.table.selectedIndexes()}, reverse=True)
        for row in rows:
            self.guarded(lambda r=row: self.session.remove_gene_shift(r))

    def fill_from_contrast(self) -> None:
        """The tutorial's shifts: top observed pseudobulk log-fold changes per sender type."""
        control, target = self.control_domain.currentText(), self.target_domain.currentText()
        n_genes = int(self.n_genes.value())
        shifts = self.guarded(
            lambda: self.session.fill_from_contrast(control, target, n_genes, combo_value(self.holdout, NONE))
        )
        if shifts is not None:
            types = shifts.table["senders"].map(tuple).nunique()
            self.notify(
                f"filled {len(shifts)} shifts, the top {n_genes} genes of {types} sender types: "
                f"control {control} -> target {target}"
            )

    def run(self):
        """Check the table and focal cells now, then perturb and decode in a worker."""
        return self.run_job(self.session.node_job)
