"""What every Cellina dock shares: the viewer's session, a status line and running steps in workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QSize
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from cellina.plugin._state import Job, Outcome, Progress, SessionError, StepCancelled
from cellina.plugin.widgets._bridge import ViewerBridge, get_bridge


def describe(err: BaseException) -> str:
    """A notification text: our own errors speak for themselves, others get their type."""
    if isinstance(err, SessionError):
        return str(err)
    text = str(err).strip("'\"")
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class WrappedLabel(QLabel):
    """A word-wrapped label that reserves the height its text needs at its width.

    napari puts each dock in a scroll area, and scroll areas ignore height-for-width: a plain
    wrapped label counts as one line when the dock is laid out, so a dock whose content is
    taller than the window squeezes its rows and a tall widget (a plot) overlaps the lines
    below it.
    """

    def __init__(self, text: str = "", parent: QWidget | None = None):
        super().__init__(text, parent)
        self.setWordWrap(True)
        self._height = -1  # the height the text needs at the current width, measured on text and resize

    def setText(self, text: str) -> None:  # noqa: N802 (Qt's name)
        super().setText(text)
        self._reserve_height()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._reserve_height()

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        # QLabel's own hint guesses a width for wrapped text; the height at the real width is the one laid out
        hint = super().sizeHint()
        if self._height > 0:
            hint.setHeight(self._height)
        return hint

    def _reserve_height(self) -> None:
        if self.width() <= 1:
            return
        # QLabel never reports less than its minimum height, so measure without it
        self.setMinimumHeight(0)
        self._height = self.heightForWidth(self.width())
        self.setMinimumHeight(max(self._height, 0))
        self.updateGeometry()  # the layout caches heights for widths (from before the style's font, too)


class CellinaDock(QWidget):
    """Base of the Cellina docks.

    ``synchronous = True`` (class or instance) runs steps in the calling thread, which
    tests and scripts use; otherwise each step runs in a napari thread worker whose
    yields drive the progress bar and whose result is applied on the main thread.
    """

    synchronous = False

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.bridge: ViewerBridge = get_bridge(napari_viewer)
        self.viewer = self.bridge.viewer
        self.session = self.bridge.session
        self.worker = None
        self.last_error: str | None = None
        self.setLayout(QVBoxLayout())
        self.form = QFormLayout()
        self.layout().addLayout(self.form)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = WrappedLabel("")
        self._tail: list[QWidget] = [self.progress, self.status]

    def follow_adata(self, handler: Callable[[Any], None]) -> None:
        """Call ``handler(adata)`` for every new tissue of the session, and now if one is loaded."""
        self.session.events.adata.connect(handler)
        if self.session.adata is not None:
            handler(self.session.adata)

    def finish_layout(self) -> None:
        """Put the progress bar and status line at the bottom."""
        for widget in self._tail:
            self.layout().addWidget(widget)
        self.layout().addStretch(1)

    # ------------------------------------------------------------------ messages
    def notify_error(self, message: str) -> None:
        """Show a problem as a napari notification and in the dock; state is left as it was."""
        self.last_error = message
        self.status.setText(message)
        self.status.setStyleSheet("color: #e06c6c")
        show_error(message)

    def notify(self, message: str) -> None:
        """Show an informational message as a napari notification and in the dock."""
        self.status.setText(message)
        self.status.setStyleSheet("")
        show_info(message)

    def guarded(self, action: Callable[[], Any]) -> Any:
        """Run a quick main-thread action, turning errors into notifications."""
        try:
            return action()
        except Exception as err:  # every failure reaches the user, none crashes the viewer
            self.notify_error(describe(err))
            return None

    # ------------------------------------------------------------------ jobs
    def _on_progress(self, report: Progress) -> None:
        self.progress.setVisible(True)
        self.progress.setMaximum(max(report.total, 1))
        self.progress.setValue(report.step)
        self.progress.setFormat(f"%v/%m  {report.message}")
        self.on_progress(report)

    def on_progress(self, report: Progress) -> None:
        """Hook for docks that show more than the bar (e.g. a loss curve)."""

    def run_job(self, make_job: Callable[[], Job]):
        """Start the session's job (in a thread worker unless synchronous); its result is applied here.

        ``make_job`` runs on the main thread, so the session's checks surface at once.
        Whatever happens after, the job ends in exactly one of done, failed or cancelled
        (:meth:`CellinaSession.finish`), the session is no longer busy and the dock says how
        it ended. Returns the worker (None when synchronous or when nothing started).
        """
        try:
            self.session.require_idle()
            job = make_job()
            self._starting(job)
            if self.synchronous:
                outcome = self.session.execute(job, self._on_progress)
            else:
                steps = self.session.start(job)
        except Exception as err:
            self.notify_error(describe(err))
            return None
        if self.synchronous:
            self._ended(job, outcome)
            return None
        try:
            return self._start_worker(job, steps)
        except Exception as err:  # the worker could not even start
            self._ended(job, self.session.finish(job, Outcome("failed", error=err)))
            return None

    def _starting(self, job: Job) -> None:
        self.last_error = None
        self.status.setStyleSheet("")
        self.status.setText(f"{job.name}...")

    def _start_worker(self, job: Job, steps):
        from napari.qt.threading import create_worker

        def job_steps():
            return (yield from steps)

        def end(outcome: Outcome) -> None:
            if job.outcome is None:
                self._ended(job, self.session.finish(job, outcome))

        worker = create_worker(job_steps, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(end)
        # guarded steps never raise; these only catch what the worker machinery itself does
        worker.errored.connect(lambda err: end(Outcome("failed", error=err)))
        worker.aborted.connect(lambda: end(Outcome("cancelled", error=StepCancelled(f"{job.name} was stopped"))))
        worker.finished.connect(lambda: end(Outcome("cancelled", error=StepCancelled(f"{job.name} was stopped"))))
        self.worker = worker
        worker.start()
        return worker

    def _ended(self, job: Job, outcome: Outcome) -> None:
        """Say how the job ended, then start its follow-up (e.g. latents after training)."""
        self.worker = None
        self.progress.setVisible(False)
        if outcome.status == "done":
            self.notify(f"{job.name}: {outcome.message or 'done'}")
            follow_up = job.follow_up
            if follow_up is not None:
                self.run_job(follow_up)
        elif outcome.status == "cancelled":
            self.notify_error(describe(outcome.error) if outcome.error else f"{job.name} cancelled")
        else:
            self.notify_error(f"{job.name} failed: {describe(outcome.error)}")


def search_combo() -> QComboBox:
    """An editable combo box that finds its items by any part of their text (genes, columns)."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QCompleter

    combo = QComboBox()
    combo.setEditable(True)
    combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
    combo.completer().setCompletionMode(QCompleter.CompletionMode.PopupCompletion)
    combo.completer().setFilterMode(Qt.MatchFlag.MatchContains)
    return combo


class PlotWidget(QWidget):
    """A matplotlib figure in a widget (one axes), for the docks' small plots."""

    def __init__(self, size: tuple[float, float], min_height: int, parent: QWidget | None = None):
        super().__init__(parent)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=size, dpi=90, tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.axes = self.figure.add_subplot(111)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.canvas)
        self.setMinimumHeight(min_height)


def fill_combo(combo: QComboBox, items, keep: bool = True, none_item: str | None = None) -> None:
    """Replace a combo box's items, keeping the current choice when it is still offered."""
    current = combo.currentText()
    combo.blockSignals(True)
    combo.clear()
    if none_item is not None:
        combo.addItem(none_item)
    combo.addItems([str(i) for i in items])
    if keep and current and combo.findText(current) >= 0:
        combo.setCurrentIndex(combo.findText(current))
    combo.blockSignals(False)


def combo_value(combo: QComboBox, none_item: str = "(none)") -> str | None:
    """A combo box's text, or None for the empty or "(none)" choice."""
    text = combo.currentText()
    return None if text in ("", none_item) else text


def obs_levels(adata, key: str | None) -> list[str]:
    """Sorted distinct values of an obs column (as text); fast for categoricals of 500k cells."""
    import numpy as np
    import pandas as pd

    if adata is None or not key or key not in adata.obs:
        return []
    series = adata.obs[key]
    if isinstance(series.dtype, pd.CategoricalDtype):
        codes = series.cat.codes.to_numpy()
        present = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories)) > 0
        return sorted(str(c) for c in series.cat.categories[present])
    return sorted(str(v) for v in pd.unique(series.dropna()))


def domain_levels(adata, key: str | None) -> list[str]:
    """A domain column's values, healthy/reference names first (``232_REF`` before ``232_CRC``)."""
    from cellina.plugin._tissue import reference_first

    return reference_first(obs_levels(adata, key))


def set_target(combo: QComboBox, levels: list[str], avoid: str | None = None) -> None:
    """Point a domain box at the likeliest target of a contrast that is not ``avoid`` (a diseased name first)."""
    from cellina.plugin._tissue import target_first

    others = [v for v in target_first(levels) if v != avoid]
    if others:
        combo.setCurrentText(others[0])
