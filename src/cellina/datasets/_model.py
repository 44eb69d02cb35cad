"""The exact generative model of the synthetic tissue, shared by the generator and the truth functions.

Keeping a single implementation of the means is what makes the stored layers, ``true_mean`` and
the counterfactual functions agree to float precision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from cellina.datasets._params import FINE_TO_COARSE

# ~8 MB float64 blocks stay in the allocator's reusable heap instead of new mappings
_BLOCK_ENTRIES = 1_000_000


@dataclass(frozen=True)
class TissueModel:
    """Per-gene and per-type truth needed to evaluate expected counts for any neighbourhood."""

    baseline: np.ndarray  # (G,)
    type_effects: np.ndarray  # (G, T)
    state_effect: np.ndarray  # (G,)
    composition_effects: np.ndarray  # (G, T) log effect per unit composition, per fine type
    ligand_effect: np.ndarray  # (G,)
    ligand_idx: np.ndarray  # (L,) int
    fine_types: tuple[str, ...]
    rho_ligand: np.ndarray  # (T,)
    tumour_associated: np.ndarray  # (T,) float 0/1
    l_ref: float
    target_sum: float

    @classmethod
    def build(
        cls,
        *,
        baseline: np.ndarray,
        type_effects: np.ndarray,
        state_effect: np.ndarray,
        composition_effect: np.ndarray,
        ligand_effect: np.ndarray,
        ligand_idx: np.ndarray,
        fine_types: Sequence[str],
        rho_composition: Mapping[str, float],
        rho_ligand: Mapping[str, float],
        tumour_associated: Sequence[str],
        l_ref: float,
        target_sum: float,
        fine_to_coarse: Mapping[str, str] = FINE_TO_COARSE,
        type_response_effect: np.ndarray | None = None,
        coarse_types: Sequence[str] | None = None,
    ) -> TissueModel:
        """Assemble the model; ``type_response_effect`` (G, coarse types) adds each coarse type's own response."""
        fine_types = tuple(str(f) for f in fine_types)
        assoc = set(str(t) for t in tumour_associated)
        shared = np.asarray(composition_effect, dtype=np.float64)
        rho = np.array([float(rho_composition[fine_to_coarse[f]]) for f in fine_types])
        effects = shared[:, None] * rho[None, :]
        if type_response_effect is not None:
            if coarse_types is None:
                raise ValueError("type_response_effect needs coarse_types to name its columns")
            column = {str(c): k for k, c in enumerate(coarse_types)}
            own = np.asarray(type_response_effect, dtype=np.float64)
            effects = effects + own[:, [column[fine_to_coarse[f]] for f in fine_types]]
        return cls(
            baseline=np.asarray(baseline, dtype=np.float64),
            type_effects=np.asarray(type_effects, dtype=np.float64),
            state_effect=np.asarray(state_effect, dtype=np.float64),
            composition_effects=effects,
            ligand_effect=np.asarray(ligand_effect, dtype=np.float64),
            ligand_idx=np.asarray(ligand_idx, dtype=np.int64),
            fine_types=fine_types,
            rho_ligand=np.array([float(rho_ligand[fine_to_coarse[f]]) for f in fine_types]),
            tumour_associated=np.array([1.0 if f in assoc else 0.0 for f in fine_types]),
            l_ref=float(l_ref),
            target_sum=float(target_sum),
        )

    @property
    def n_genes(self) -> int:
        return self.baseline.shape[0]

    def with_l_ref(self, l_ref: float) -> TissueModel:
        return TissueModel(**{**self.__dict__, "l_ref": float(l_ref)})

    # ----------------------------------------------------------------- intrinsic expression
    def intrinsic_log_mean(self, codes: np.ndarray, state: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """log of the intrinsic (niche-free) expected count per unit size, cells x genes (or ``cols``)."""
        if cols is None:
            base, types, alpha = self.baseline, self.type_effects, self.state_effect
        else:
            base, types, alpha = self.baseline[cols], self.type_effects[cols], self.state_effect[cols]
        # one cells x genes allocation, updated in place: fresh large arrays are costly to fault in
        eta = types.T[codes]
        eta += base[None, :]
        varying = np.flatnonzero(alpha)
        if varying.size:
            eta[:, varying] += state[:, None] * alpha[varying][None, :]
        return eta

    def intrinsic_total(self, codes: np.ndarray, state: np.ndarray) -> np.ndarray:
        """Sum over genes of exp(intrinsic log-mean): the per-cell normaliser of CP10K values."""
        # Only state genes depend on the cell beyond its type, so the total is a per-type constant
        # plus a correction over a handful of genes: no cells x genes pass is needed.
        per_type = np.exp(self.baseline[:, None] + self.type_effects).sum(axis=0)
        state_cols = np.flatnonzero(self.state_effect)
        total = per_type[codes]
        if state_cols.size:
            fixed = self.baseline[state_cols][None, :] + self.type_effects[state_cols].T[codes]
            varying = fixed + state[:, None] * self.state_effect[state_cols][None, :]
            total = total + (np.exp(varying) - np.exp(fixed)).sum(axis=1)
        return total

    def ligand_scores(
        self,
        codes: np.ndarray,
        state: np.ndarray,
        composition: np.ndarray | None = None,
        shift_cols: np.ndarray | None = None,
        shift: np.ndarray | None = None,
        renormalize: bool = False,
    ) -> np.ndarray:
        """q_u = mean over ligand genes of log1p(CP10K expected ligand expression).

        The ligand expression includes the cell's own composition response (``composition``,
        its c; senders make more ligand in a tumour niche) and is normalised by the cell's
        intrinsic total. ``shift`` (cells x len(shift_cols), natural log) multiplies the
        normalised expression of genes ``shift_cols``; with ``renormalize`` the shifted
        profile is rescaled to the original total, as normalise-to-total would do.
        """
        total = self.intrinsic_total(codes, state)
        lig = self.intrinsic_log_mean(codes, state, self.ligand_idx)
        if composition is not None:
            lig += composition[:, None] * self.composition_effects[self.ligand_idx].T[codes]
        if shift is not None and shift_cols is not None and len(shift_cols):
            pos = {int(g): j for j, g in enumerate(self.ligand_idx)}
            for j, g in enumerate(shift_cols):
                if int(g) in pos:
                    lig[:, pos[int(g)]] += shift[:, j]
            if renormalize:
                shifted = self.intrinsic_log_mean(codes, state, np.asarray(shift_cols))
                total = total + (np.exp(shifted) * np.expm1(shift)).sum(axis=1)
        cp10k = self.target_sum * np.exp(lig) / total[:, None]
        return np.log1p(cp10k).mean(axis=1)

    # ----------------------------------------------------------------------- niche signals
    def composition_signal(self, rows: sp.csr_matrix, codes_cols: np.ndarray) -> np.ndarray:
        """Composition c of the cells whose neighbourhoods are the rows of ``rows`` (0 without neighbours)."""
        c, _ = self.niche_signals(rows, codes_cols, np.zeros(codes_cols.shape[0]))
        return c

    def niche_signals(
        self, rows: sp.csr_matrix, codes_cols: np.ndarray, q_cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Composition c and ligand signal l for the cells whose neighbourhoods are the rows of ``rows``.

        ``rows`` has weights in columns that index ``codes_cols`` / ``q_cols`` (the neighbours'
        fine-type codes and ligand scores). Rows with no positive weight get c = 0, l = l_ref.
        """
        rows = sp.csr_matrix(rows, dtype=np.float64)
        degree = np.asarray(rows.sum(axis=1)).ravel()
        assoc = self.tumour_associated[codes_cols]
        has = degree > 0
        safe = np.where(has, degree, 1.0)
        c = np.where(has, (rows @ assoc) / safe, 0.0)
        l = np.where(has, (rows @ q_cols) / safe, self.l_ref)
        return c, l

    def add_niche_log_effect(self, eta: np.ndarray, codes: np.ndarray, c: np.ndarray, l: np.ndarray) -> None:
        """Add the niche effects to log-means ``eta`` (cells x all genes) in place."""
        # composition and ligand programmes are disjoint, so each column receives one term
        comp = np.flatnonzero(np.any(self.composition_effects != 0, axis=1))
        eta[:, comp] += c[:, None] * self.composition_effects[comp].T[codes]
        lig = np.flatnonzero(self.ligand_effect)
        eta[:, lig] += (self.rho_ligand[codes] * (l - self.l_ref))[:, None] * self.ligand_effect[lig][None, :]

    def expected_counts(
        self,
        codes: np.ndarray,
        state: np.ndarray,
        size: np.ndarray,
        c: np.ndarray | None = None,
        l: np.ndarray | None = None,
        out_dtype: type = np.float64,
    ) -> np.ndarray:
        """size * exp(intrinsic log-mean [+ niche effect]); the niche is skipped when c is None."""
        n = codes.shape[0]
        out = np.empty((n, self.n_genes), dtype=out_dtype)
        step = max(1, _BLOCK_ENTRIES // self.n_genes)
        for start in range(0, n, step):
            sl = slice(start, min(n, start + step))
            c_sl = None if c is None else c[sl]
            l_sl = None if l is None else l[sl]
            out[sl] = self.mean_block(codes[sl], state[sl], c_sl, l_sl, size[sl])
        return out

    def mean_block(
        self,
        codes: np.ndarray,
        state: np.ndarray,
        c: np.ndarray | None,
        l: np.ndarray | None,
        size: np.ndarray,
    ) -> np.ndarray:
        """Expected counts of a block of cells; the niche is skipped when ``c`` is None."""
        eta = self.intrinsic_log_mean(codes, state)
        if c is not None:
            self.add_niche_log_effect(eta, codes, c, l)
        np.exp(eta, out=eta)
        eta *= size[:, None]
        return eta
