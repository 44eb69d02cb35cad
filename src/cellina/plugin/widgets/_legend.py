"""A small legend (categories) and colorbar (values) for Points layers; napari has neither."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from cellina.plugin._colours import ColourInfo

MAX_ROWS = 24


def _swatch(rgba: np.ndarray, size: int = 12) -> QPixmap:
    pixmap = QPixmap(size, size)
    r, g, b, a = (int(round(255 * float(c))) for c in rgba)
    pixmap.fill(QColor(r, g, b, a))
    return pixmap


def _gradient(cmap: str, width: int = 220, height: int = 14) -> QPixmap:
    rgba = (colormaps[cmap](np.linspace(0, 1, width)) * 255).astype(np.uint8)
    image = np.ascontiguousarray(np.repeat(rgba[None], height, axis=0))
    qimage = QImage(image.data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
    return QPixmap.fromImage(qimage.copy())


class LegendWidget(QWidget):
    """Shows a :class:`ColourInfo`: coloured swatches per category, or a colorbar with its range."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.info: ColourInfo | None = None
        self.setLayout(QVBoxLayout())
        self.layout().setContentsMargins(0, 0, 0, 0)
        self.title = QLabel("")
        self.layout().addWidget(self.title)
        self.body = QWidget()
        self.layout().addWidget(self.body)

    def labels(self) -> list[str]:
        """Texts currently shown (category names, or the range ends)."""
        return [w.text() for w in self.body.findChildren(QLabel) if w.text()]

    def show_info(self, info: ColourInfo | None) -> None:
        self.info = info
        self.body.setParent(None)
        self.body = QWidget()
        self.layout().addWidget(self.body)
        if info is None:
            self.title.setText("")
            return
        self.title.setText(f"<b>{info.name}</b>")
        if info.kind == "categorical":
            grid = QGridLayout(self.body)
            grid.setContentsMargins(0, 0, 0, 0)
            shown = info.categories[:MAX_ROWS]
            half = (len(shown) + 1) // 2 if len(shown) > 8 else len(shown)
            for i, (name, colour) in enumerate(zip(shown, info.colours)):
                swatch = QLabel()
                swatch.setPixmap(_swatch(colour))
                row, col = (i % half, 2 * (i // half)) if half else (i, 0)
                grid.addWidget(swatch, row, col)
                grid.addWidget(QLabel(name), row, col + 1, Qt.AlignmentFlag.AlignLeft)
            if len(info.categories) > MAX_ROWS:
                grid.addWidget(QLabel(f"... {len(info.categories) - MAX_ROWS} more"), half, 0, 1, 4)
            # labels sit next to their swatches; spare width goes to an empty last column
            grid.setColumnStretch(4, 1)
        else:
            box = QVBoxLayout(self.body)
            box.setContentsMargins(0, 0, 0, 0)
            bar = QLabel()
            bar.setPixmap(_gradient(info.cmap))
            box.addWidget(bar)
            ends = QHBoxLayout()
            low, high = QLabel(f"{info.vmin:.3g}"), QLabel(f"{info.vmax:.3g}")
            high.setAlignment(Qt.AlignmentFlag.AlignRight)
            ends.addWidget(low)
            ends.addWidget(high)
            box.addLayout(ends)
