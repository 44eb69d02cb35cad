"""The exact generative model of a world, shared by the generator and the truth.

Expected counts of cell v on gene g:

    mu_vg = size_v * exp(b_g + A[t(v), g] + state_v * a_g + batch[slide(v), g]
                         + sum_c R_c[g, k(v)] * (f_c(x_c(v)) - f_c,ref))

with t(v) the fine type, k(v) the coarse type, x_c(v) = (S_c(v) - low_c) / (high_c - low_c)
the scaled level that v senses through channel c, f_c the channel's dose-response and f_c,ref
its mean over healthy cells (so a healthy niche is the reference). A cell that senses nothing
(no sender in reach, or an empty donor set) has f_c - f_c,ref = 0.

What v senses is always a normalised weighted mean over senders u of a per-sender property p_c(u):
S_c(v) = sum_u w_vu p_c(u) / sum_u w_vu. In the observed tissue w_vu is the channel's kernel of
the distance; in an edge intervention every donor has weight 1 (a rewired donor has no distance),
so the same definition gives the counterfactual. The ligand property is computed from the
sender's intrinsic expected expression (no size, batch or niche), which is what a node
intervention shifts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cellina.datasets.worlds._neighbours import donor_means, kernel_means

_BLOCK_ENTRIES = 1_000_000  # cells x genes per block: bounds the memory of a mean computation


@dataclass(frozen=True)
class Cells:
    """Per-cell truth: what a cell is, where it is, and its own (non-niche) draws."""

    coords: np.ndarray
    slide: np.ndarray
    fine: np.ndarray
    state: np.ndarray
    size: np.ndarray
    structure: np.ndarray
    gradient: np.ndarray


@dataclass(frozen=True)
class Shift:
    """A node intervention: cell i's natural-log shift of genes ``cols`` is ``table[row[i]]``."""

    cols: np.ndarray
    table: np.ndarray
    row: np.ndarray
    renormalize: bool


@dataclass(frozen=True)
class ChannelModel:
    """One channel's sensing and response (see the module docstring)."""

    name: str
    sensed: str
    kernel: str
    scale: float
    reach: float
    dose: str
    half_saturation: float
    threshold: float
    width: float
    senders: np.ndarray  # (T,) 0/1: fine types whose fraction is sensed
    ligand: np.ndarray  # positions of the ligand genes
    response: np.ndarray  # (G, K)
    low: float = 0.0
    high: float = 1.0
    reference: float = 0.0

    def raw_dose(self, sensed: np.ndarray) -> np.ndarray:
        """f(x) for sensed levels S (NaN stays NaN)."""
        x = (np.asarray(sensed, dtype=np.float64) - self.low) / (self.high - self.low)
        if self.dose == "linear":
            return x
        if self.dose == "saturating":
            pos = np.where(np.isnan(x), np.nan, np.maximum(x, 0.0))
            return (1.0 + self.half_saturation) * pos / (pos + self.half_saturation)
        return 1.0 / (1.0 + np.exp(-(x - self.threshold) / self.width))

    def dose_response(self, sensed: np.ndarray) -> np.ndarray:
        """f(x) - f_ref, 0 where nothing is sensed."""
        out = self.raw_dose(sensed) - self.reference
        return np.where(np.isnan(out), 0.0, out)


@dataclass(frozen=True)
class WorldModel:
    """Gene truth and channels of a world; every mean of the generator and the truth comes from here."""

    baseline: np.ndarray  # (G,)
    type_effects: np.ndarray  # (G, T)
    state_effect: np.ndarray  # (G,)
    batch: np.ndarray  # (G, S)
    fine_to_coarse: np.ndarray  # (T,) int
    channels: tuple[ChannelModel, ...]
    target_sum: float

    @property
    def n_genes(self) -> int:
        return self.baseline.shape[0]

    def intrinsic_log(self, fine: np.ndarray, state: np.ndarray) -> np.ndarray:
        """log of the niche-free expected expression per unit size, cells x genes."""
        eta = self.type_effects.T[fine]
        eta += self.baseline[None, :]
        varying = np.flatnonzero(self.state_effect)
        eta[:, varying] += state[:, None] * self.state_effect[varying][None, :]
        return eta

    def ligand_level(self, channel: ChannelModel, cells: Cells, idx: np.ndarray, shift: Shift | None) -> np.ndarray:
        """Mean over the channel's ligand genes of log1p(CP10K) of each sender's intrinsic expression.

        ``shift`` multiplies a sender's expression of the shifted genes by exp(shift); with
        ``renormalize`` the profile is rescaled to its original total, so raising other genes
        dilutes the ligand.
        """
        eta = self.intrinsic_log(cells.fine[idx], cells.state[idx])
        total = np.exp(eta).sum(axis=1)
        ligand = eta[:, channel.ligand]
        if shift is not None and shift.cols.size:
            values = shift.table[shift.row[idx]]
            where = {int(g): j for j, g in enumerate(shift.cols)}
            for k, g in enumerate(channel.ligand):
                if int(g) in where:
                    ligand[:, k] += values[:, where[int(g)]]
            if shift.renormalize:
                total = total + (np.exp(eta[:, shift.cols]) * np.expm1(values)).sum(axis=1)
        return np.log1p(self.target_sum * np.exp(ligand) / total[:, None]).mean(axis=1)

    def properties(self, cells: Cells, shift: Shift | None = None) -> np.ndarray:
        """(n, C) per-sender property of every cell, one column per channel."""
        out = np.empty((cells.fine.size, len(self.channels)))
        for c, channel in enumerate(self.channels):
            if channel.sensed == "fraction":
                out[:, c] = channel.senders[cells.fine]
            elif channel.sensed == "ligand":
                step = max(1, _BLOCK_ENTRIES // self.n_genes)
                for start in range(0, cells.fine.size, step):
                    block = np.arange(start, min(start + step, cells.fine.size))
                    out[block, c] = self.ligand_level(channel, cells, block, shift)
            elif channel.sensed == "structure":
                out[:, c] = cells.structure
            else:
                out[:, c] = cells.gradient
        return out

    def sense(self, cells: Cells, receivers: np.ndarray, shift: Shift | None = None) -> np.ndarray:
        """(m, C) levels the receivers sense through each channel's kernel (NaN: nothing in reach)."""
        kernels = [(c.kernel, c.scale, c.reach) for c in self.channels]
        return kernel_means(cells.coords, cells.slide, receivers, kernels, self.properties(cells, shift))

    def sense_donors(self, cells: Cells, rows) -> np.ndarray:
        """(m, C) levels sensed when row i's donors (all cells, weights in the row) replace the niche."""
        return donor_means(rows, self.properties(cells))

    def expected(self, cells: Cells, idx: np.ndarray, sensed: np.ndarray) -> np.ndarray:
        """Expected counts (len(idx), G) of cells ``idx`` sensing ``sensed`` (one row per cell)."""
        out = np.empty((idx.size, self.n_genes))
        step = max(1, _BLOCK_ENTRIES // self.n_genes)
        for start in range(0, idx.size, step):
            sl = slice(start, start + step)
            out[sl] = self._expected_block(cells, idx[sl], sensed[sl])
        return out

    def _expected_block(self, cells: Cells, idx: np.ndarray, sensed: np.ndarray) -> np.ndarray:
        fine = cells.fine[idx]
        eta = self.intrinsic_log(fine, cells.state[idx])
        eta += self.batch.T[cells.slide[idx]]
        coarse = self.fine_to_coarse[fine]
        for c, channel in enumerate(self.channels):
            genes = np.flatnonzero(np.any(channel.response != 0, axis=1))
            dose = channel.dose_response(sensed[:, c])
            eta[:, genes] += dose[:, None] * channel.response[genes].T[coarse]
        np.exp(eta, out=eta)
        eta *= cells.size[idx, None]
        return eta

    def calibrated(self, sensed: np.ndarray, healthy: np.ndarray) -> WorldModel:
        """Set each channel's low/high (5th/95th percentile of S) and its healthy reference response."""
        channels = []
        for c, channel in enumerate(self.channels):
            level = sensed[:, c]
            seen = level[np.isfinite(level)]
            if seen.size == 0:
                raise ValueError(f"channel {channel.name!r}: no cell has a sender within {channel.reach:.0f} um")
            low, high = np.quantile(seen, [0.05, 0.95])
            if high <= low:  # a rare property: fall back to the full range
                low, high = float(seen.min()), float(seen.max())
            if high <= low:
                raise ValueError(
                    f"channel {channel.name!r} senses the same level {low} in every cell: "
                    "its senders are absent or everywhere"
                )
            scaled = replace(channel, low=float(low), high=float(high), reference=0.0)
            ref = scaled.raw_dose(level[healthy & np.isfinite(level)])
            channels.append(replace(scaled, reference=float(ref.mean()) if ref.size else 0.0))
        return replace(self, channels=tuple(channels))
