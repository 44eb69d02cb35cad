"""Edge perturbation dock: lasso focal cells and donors, choose the donor pool, run in a worker."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
)

from cellina.plugin._state import CLUSTER_COLUMNS, DONORS, FOCAL
from cellina.plugin.widgets._bridge import LASSO_LAYERS
from cellina.plugin.widgets._common import CellinaDock, domain_levels, fill_combo, obs_levels, set_target
from cellina.plugin.widgets._tissue import _spin

POOLS = {
    "cells in the donor lasso": "lasso",
    "observed neighbours of type X in domain Y": "observed",
    "a niche cluster of s": "niche",
}
#: what the spread across draws describes (the session's ``uncertainty``)
SPREADS = {
    "donors drawn": "donors",
    "donors and model posterior": "posterior",
}
#: whether the change in s is divided by the split-half reliability of the niche codes (``disattenuate``)
NICHE_NOISE = {
    "as the model was built": None,
    "divide by its reliability": True,
    "leave as learnt": False,
}


def _multi_list() -> QListWidget:
    widget = QListWidget()
    widget.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
    widget.setMaximumHeight(90)
    return widget


def _chosen(widget: QListWidget) -> list[str]:
    return [item.text() for item in widget.selectedItems()]


def _borrow_box() -> QCheckBox:
    """The opt-in box for mixing in the other types' answer, with what it bets on."""
    from cellina.counterfactual import BORROW_WEIGHT

    box = QCheckBox("borrow the other types' answer")
    box.setToolTip(
        "Also mix the focal cells' change with the change the model predicts for the other cell types under "
        f"the same donors ({1 - BORROW_WEIGHT:.0%} own, {BORROW_WEIGHT:.0%} theirs, both divided by their "
        "reliability). A focal type's own "
        "response is learnt from its own few, noisy cells; on one held-back set of synthetic worlds the mixture "
        "met the accuracy targets more often, on a harder one no more often than the correction alone, and "
        "it bets that the focal type answers as the others do "
        "(docs/user_guide.md). The Results dock shows both columns."
    )
    return box


def _range_box() -> QCheckBox:
    """The opt-in box for a range around each gene's change, with what the range holds."""
    box = QCheckBox("a range for each gene")
    box.setToolTip(
        "Also give each gene a range: from the plain change to the change divided by the niche's reliability, "
        "widened by two spreads of the donor draws and of the model's error on the other cell types it can be "
        "checked against (their cells among the donors live in the new niches). On held-back synthetic worlds "
        "the range (judged with 5 draws) held the true change on 19 of 24 held-out types in each of two sets, "
        "against 8 and 7 for the spread across draws, but "
        "it excluded no change on only a fifth and a tenth of the responsive genes: it says how big a change may be more "
        "often than which way it goes (docs/benchmarks.md). Needs cell types, and another type with enough "
        "cells among the donors. Ticking it raises the draws to 5, as the range was judged."
    )
    return box


class EdgeWidget(CellinaDock):
    """Rewire the focal cells' neighbourhoods to donor cells and decode their expression."""

    def __init__(self, napari_viewer: Any):
        super().__init__(napari_viewer)
        draw = QHBoxLayout()
        self.draw_focal, self.draw_donors = QPushButton("Draw focal"), QPushButton("Draw donors")
        self.clear_button = QPushButton("Clear")
        for button in (self.draw_focal, self.draw_donors, self.clear_button):
            draw.addWidget(button)
        self.layout().addLayout(draw)
        self.counts = QLabel("focal: 0 cells | donors: 0 cells")
        self.layout().addWidget(self.counts)

        refine = QGroupBox("refine selection")
        refine_form = QFormLayout(refine)
        self.refine_target = QComboBox()
        self.refine_target.addItems([FOCAL, DONORS])
        self.refine_types, self.refine_domains = _multi_list(), _multi_list()
        self.refine_button = QPushButton("Apply filter")
        refine_form.addRow("selection", self.refine_target)
        refine_form.addRow("cell types", self.refine_types)
        refine_form.addRow("domains", self.refine_domains)
        refine_form.addRow(self.refine_button)
        self.layout().addWidget(refine)

        pool = QGroupBox("donor pool")
        pool_form = QFormLayout(pool)
        self.pool = QComboBox()
        self.pool.addItems(list(POOLS))
        self.pool_type, self.pool_domain, self.pool_niche = QComboBox(), QComboBox(), QComboBox()
        pool_form.addRow("donors", self.pool)
        pool_form.addRow("type X", self.pool_type)
        pool_form.addRow("domain Y", self.pool_domain)
        pool_form.addRow("niche cluster", self.pool_niche)
        self.layout().addWidget(pool)

        self.layout().addLayout(self._run_form())
        self.run_button = QPushButton("Run edge perturbation")
        self.layout().addWidget(self.run_button)
        self.finish_layout()

        self.draw_focal.clicked.connect(lambda: self.guarded(lambda: self.bridge.lasso_layer(FOCAL)))
        self.draw_donors.clicked.connect(lambda: self.guarded(lambda: self.bridge.lasso_layer(DONORS)))
        self.clear_button.clicked.connect(self.clear_lassos)
        self.refine_button.clicked.connect(self.refine)
        self.pool.currentTextChanged.connect(self._pool_mode)
        self.borrow.toggled.connect(self._borrow_mode)
        self.run_button.clicked.connect(self.run)
        self.session.events.selection.connect(self._on_selection)
        self.session.events.latents.connect(self._on_latents)
        self.session.events.busy.connect(lambda busy: self.run_button.setEnabled(not busy))
        self.follow_adata(self._on_adata)
        self._pool_mode(self.pool.currentText())

    def _run_form(self) -> QFormLayout:
        """Donors per cell, draws, spread, niche noise, the other types' options and the seed."""
        self.n_neighbours = _spin(1, 10000, 50)
        self.n_draws = _spin(1, 1000, 1)
        self.seed = _spin(0, 2**31 - 1, 0)
        self.spread = QComboBox()
        self.spread.addItems(list(SPREADS))
        self.spread.setToolTip("what ± describes with several draws; the prediction is the same")
        run_form = QFormLayout()
        run_form.addRow("donors per cell", self.n_neighbours)
        run_form.addRow("draws", self.n_draws)
        run_form.addRow("spread over", self.spread)
        self.niche_noise = QComboBox()
        self.niche_noise.addItems(list(NICHE_NOISE))
        self.niche_noise.setToolTip(
            "A niche read from a few neighbours is noisy, and a response learnt from noisy niches comes out "
            "too small. 'divide by its reliability' scales each change in s up by the share of the focal "
            "type's niche spread that is not noise (split-half estimate); it overshoots where cells answer "
            "exactly the neighbours the graph lists (docs/benchmarks.md)."
        )
        run_form.addRow("niche noise", self.niche_noise)
        self.borrow = _borrow_box()
        run_form.addRow("other types", self.borrow)
        self.change_range = _range_box()
        self.change_range.toggled.connect(self._draws_for_range)
        run_form.addRow("range", self.change_range)
        run_form.addRow("seed", self.seed)
        return run_form

    def _draws_for_range(self, ticked: bool) -> None:
        # the range was judged with RANGE_DRAWS draws; the session draws at least that many, and the box shows it
        from cellina.counterfactual import RANGE_DRAWS

        if ticked and self.n_draws.value() < RANGE_DRAWS:
            self.n_draws.setValue(RANGE_DRAWS)

    def _on_adata(self, adata) -> None:
        if adata is None:
            return
        keys = self.session.keys
        for widgets, values in (
            ((self.refine_types, self.pool_type), obs_levels(adata, keys.cell_type_key)),
            ((self.refine_domains, self.pool_domain), domain_levels(adata, keys.domain_key)),
        ):
            widgets[0].clear()
            widgets[0].addItems(values)
            fill_combo(widgets[1], values)
        # donors come from the tissue the focal cells are moved into: a diseased domain by default
        set_target(self.pool_domain, domain_levels(adata, keys.domain_key))
        self._on_latents()
        self._on_selection("")

    def _on_latents(self) -> None:
        adata = self.session.adata
        clusters = []
        if adata is not None and CLUSTER_COLUMNS["s"] in adata.obs:
            clusters = list(adata.obs[CLUSTER_COLUMNS["s"]].cat.categories)
        fill_combo(self.pool_niche, clusters)

    def _on_selection(self, _name: str) -> None:
        counts = self.session.selection_counts()
        self.counts.setText(f"focal: {counts.get(FOCAL, 0)} cells | donors: {counts.get(DONORS, 0)} cells")

    def _pool_mode(self, text: str) -> None:
        mode = POOLS.get(text, "lasso")
        self.pool_type.setEnabled(mode == "observed")
        self.pool_domain.setEnabled(mode == "observed")
        self.pool_niche.setEnabled(mode == "niche")

    def _borrow_mode(self, on: bool) -> None:
        # the mixture was confirmed with the full reliability correction, so borrowing brings it along
        if on:
            self.niche_noise.setCurrentText("divide by its reliability")
        self.niche_noise.setEnabled(not on)

    def refine(self) -> None:
        """Restrict the chosen selection to the ticked cell types and domains."""
        name = self.refine_target.currentText()
        types, domains = _chosen(self.refine_types), _chosen(self.refine_domains)
        self.guarded(lambda: self.session.refine_selection(name, types, domains))

    def clear_lassos(self) -> None:
        """Remove both lassos and their selections."""
        for name in (FOCAL, DONORS):
            layer = self.bridge.find_layer(LASSO_LAYERS[name])
            if layer is not None:
                layer.data = []
            self.session.clear_selection(name)

    def job_params(self) -> dict[str, Any]:
        return {
            "pool": POOLS[self.pool.currentText()],
            "observed_cell_type": self.pool_type.currentText() or None,
            "observed_domain": self.pool_domain.currentText() or None,
            "niche_cluster": self.pool_niche.currentText() or None,
            "n_neighbours": int(self.n_neighbours.value()),
            "n_draws": int(self.n_draws.value()),
            "seed": int(self.seed.value()),
            "uncertainty": SPREADS[self.spread.currentText()],
            "disattenuate": NICHE_NOISE[self.niche_noise.currentText()],
            "borrow": self.borrow.isChecked(),
            "change_range": self.change_range.isChecked(),
        }

    def run(self):
        """Check focal cells and donors now, then rewire and decode in a worker."""
        params = self.job_params()
        return self.run_job(lambda: self.session.edge_job(**params))
