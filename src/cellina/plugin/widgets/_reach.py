"""The Tissue dock's niche-reach panel: scan graph bandwidths, show the validation curve, take the suggestion."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QPushButton, QVBoxLayout, QWidget

from cellina.plugin.widgets._common import PlotWidget, WrappedLabel

WARNING_STYLE = "color: #e0a030"


class ReachPanel(QWidget):
    """A button that asks the data for a bandwidth, and the validation curve it answers with.

    The curve stays hidden until a scan has run. With signal, the dock takes the suggested
    bandwidth and neighbour cap into its boxes (the user can still change them); without, the
    boxes keep their values and the note says why.
    """

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.button = QPushButton("Suggest bandwidth from data")
        self.button.setToolTip(
            "Scan bandwidths from half to eight cell spacings: how much of each cell's expression beyond "
            "its type do its neighbours' averages predict, on tissue tiles held out of the fit?"
        )
        self.plot = PlotWidget(size=(3.6, 2.0), min_height=150)
        self.plot.setVisible(False)
        self.note = WrappedLabel("")
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.button)
        box.addWidget(self.plot)
        box.addWidget(self.note)

    def show_curve(self, curve: Any) -> None:
        """Draw ``curve`` (a :class:`~cellina.spatial.NicheReachCurve`) and say what it suggests."""
        self.plot.axes.clear()
        curve.plot(self.plot.axes)
        self.plot.canvas.draw_idle()
        self.plot.setVisible(True)
        self.note.setText(curve.describe())
        self.note.setStyleSheet("" if curve.signal else WARNING_STYLE)

    def clear(self) -> None:
        """Hide the curve and its note (a new tissue has not been scanned)."""
        self.plot.setVisible(False)
        self.note.setText("")
        self.note.setStyleSheet("")
