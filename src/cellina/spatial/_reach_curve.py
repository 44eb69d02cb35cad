"""The result of a niche-reach scan: a validation curve over graph bandwidths and the suggested reach."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["NicheReachCurve"]


@dataclass(frozen=True)
class NicheReachCurve:
    """How much of each cell's expression beyond its type its niche features explain, per reach.

    Attributes
    ----------
    bandwidths
        Candidate kernel bandwidths, in coordinate units (micrometres after preprocessing).
    score
        Cross-validated share of the within-type expression variance (top principal components of
        the expression beyond each cell type and slide) that a per-type ridge regression on the
        niche features predicts, pooled over spatially blocked folds. Counting noise keeps it small
        in absolute terms (often well under 1 %); its shape across bandwidths is what matters.
    score_se
        Standard error of ``score`` across folds.
    fold_scores
        ``n_folds x n_bandwidths`` scores of each held-out fold.
    median_neighbours
        Median number of neighbours a cell gets at each bandwidth.
    max_neighbours
        The neighbour cap used at each bandwidth (enough to cover the kernel's reach unless capped).
    best_bandwidth
        The bandwidth with the highest score.
    suggested_bandwidth
        The smallest bandwidth whose score is within one paired standard error of the best: the
        reach the data cannot tell apart from the best, with the fewest neighbours.
    suggested_max_neighbours
        A neighbour cap for the suggested bandwidth (its 95th-percentile neighbour count).
    kernel, cutoff
        The graph's kernel and weight cutoff, as :func:`~cellina.spatial.spatial_neighbors` takes them.
    n_cells
        Cells scored (labelled, not held out; at most ``max_cells``).
    signal
        Whether the best score exceeds twice its standard error. Without signal the niche features
        explain nothing measurable at any reach (no niche effect, or too few cells to see one), and
        the suggestion means nothing: keep a default.
    """

    bandwidths: np.ndarray
    score: np.ndarray
    score_se: np.ndarray
    fold_scores: np.ndarray
    median_neighbours: np.ndarray
    max_neighbours: np.ndarray
    best_bandwidth: float
    suggested_bandwidth: float
    suggested_max_neighbours: int
    kernel: str
    cutoff: float
    n_cells: int
    signal: bool
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per bandwidth: score, its standard error and the neighbour counts."""
        return pd.DataFrame(
            {
                "bandwidth": self.bandwidths,
                "score": self.score,
                "score_se": self.score_se,
                "median_neighbours": self.median_neighbours,
                "max_neighbours": self.max_neighbours,
                "suggested": self.bandwidths == self.suggested_bandwidth,
            }
        )

    def as_record(self) -> dict[str, Any]:
        """Plain values for ``adata.uns`` or provenance (h5ad-writable)."""
        return {
            "bandwidths": np.asarray(self.bandwidths, dtype=float),
            "score": np.asarray(self.score, dtype=float),
            "score_se": np.asarray(self.score_se, dtype=float),
            "median_neighbours": np.asarray(self.median_neighbours, dtype=float),
            "best_bandwidth": float(self.best_bandwidth),
            "suggested_bandwidth": float(self.suggested_bandwidth),
            "suggested_max_neighbours": int(self.suggested_max_neighbours),
            "kernel": self.kernel,
            "cutoff": float(self.cutoff),
            "n_cells": int(self.n_cells),
            "signal": bool(self.signal),
        }

    def describe(self) -> str:
        """One sentence for a status line."""
        i = int(np.flatnonzero(self.bandwidths == self.suggested_bandwidth)[0])
        if not self.signal:
            return (
                f"no reach stands out: niche features explain nothing measurable beyond the cell types at "
                f"bandwidths {self.bandwidths.min():.3g}-{self.bandwidths.max():.3g} ({self.n_cells} cells); "
                "keep the default"
            )
        return (
            f"suggested bandwidth {self.suggested_bandwidth:.3g} ({self.kernel}, ~{self.median_neighbours[i]:.0f} "
            f"neighbours, max neighbours {self.suggested_max_neighbours}); best score at "
            f"{self.best_bandwidth:.3g}; niche features explain {100 * self.score[i]:.2f} % of the "
            f"within-type variance there ({self.n_cells} cells)"
        )

    def plot(self, ax: Any = None, unit: str = "um") -> Any:
        """The validation curve with +-1 standard error and the suggested and best bandwidths marked
        (without signal, a note instead of the marks)."""
        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(4.5, 3), layout="constrained")
        pct = 100 * np.asarray(self.score)
        se = 100 * np.asarray(self.score_se)
        ax.fill_between(self.bandwidths, pct - se, pct + se, color="#8fb3d9", alpha=0.4, linewidth=0)
        ax.plot(self.bandwidths, pct, "o-", color="#2a6bb0", markersize=3)
        if self.signal:
            ax.axvline(self.suggested_bandwidth, color="#e0a030", linestyle="--", label="suggested")
            if self.best_bandwidth != self.suggested_bandwidth:
                ax.axvline(self.best_bandwidth, color="#999999", linestyle=":", label="best")
        else:
            ax.text(0.5, 0.9, "no reach stands out", transform=ax.transAxes, ha="center", color="#e0a030")
        ax.set_xscale("log")
        from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

        ticks = np.asarray(self.bandwidths)[::2]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(lambda value, _pos: f"{value:.3g}")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"bandwidth ({unit})")
        ax.set_ylabel("explained (%)")
        if self.signal:
            ax.legend(fontsize="small", frameon=False)
        return ax
