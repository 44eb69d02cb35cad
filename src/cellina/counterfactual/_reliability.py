"""Errors in variables: the share of a cell type's spread in ``s`` that is noise of its niche, and a
counterfactual change in ``s`` scaled back by it.

A cell's niche is read from a few neighbours, each a noisy sample of its surroundings, so the niche
code ``s`` the model learns from is a noisy stand-in for the niche a cell lives in. A response fitted
on a noisy regressor comes out shrunk by the regressor's reliability (the share of its variance that
is not noise), while a counterfactual's rewired niche of many pooled donors is nearly noise-free: the
predicted change is too small by that factor. The noise is estimated by splitting every cell's
neighbours at random into two halves and encoding each half's niche apart; the variance of the two
codes' difference, scaled by how the kernel weights divide between the halves, estimates the noise of
the whole niche. Reliability is taken within a cell type (the model answers a niche differently per
type) and along the direction in which the counterfactual moves ``s``. For the graph variant the
kernel weights stand in for its learnt attention, and the halves split every hop's edges.

Every difference between a cell's neighbours counts as noise here. That holds where a tissue's cells
answer a smoother niche than the graph's (a gradient, a structure's proximity, a type's share over a
wider reach); where they answer exactly the neighbours the graph lists, it overstates the noise and
the corrected change overshoots (docs/benchmarks.md, "Why niche responses shrink").
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.spatial._composition import record_codes

from ._edge import anchor_niche_features, spatial_features_record
from ._novelty import registered_cell_types, training_reference

#: the smallest reliability a change is divided by: the correction is at most five-fold
MIN_RELIABILITY = 0.2
#: cells of one type the statistics are estimated on (a seeded random subset beyond it)
MAX_CELLS_PER_TYPE = 4000
#: below this many training cells, a type is read with the statistics of all cells
MIN_CELLS_PER_TYPE = 50
#: seed of the split of neighbours and of the subsets, so a model gives the same correction every call
SPLIT_SEED = 0
#: key of the statistics over every training cell
ALL_CELLS = None


def split_neighbours(graph: Any, rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Each edge of ``graph`` into one of two halves at random, and every cell's noise factor.

    A weighted mean of independent neighbours has noise variance proportional to
    ``sum w^2 / (sum w)^2``; the factor is that of the whole neighbourhood over the sum of the two
    halves', so ``factor * var(half_a - half_b)`` estimates the noise of the whole niche. It is NaN
    where a half is empty.
    """
    full = sp.csr_matrix(graph, dtype=np.float64)
    first = rng.random(full.nnz) < 0.5
    halves = []
    for keep in (first, ~first):
        half = full.copy()
        half.data = np.where(keep, half.data, 0.0)
        half.eliminate_zeros()
        halves.append(half)

    def concentration(matrix: sp.csr_matrix) -> np.ndarray:
        total = np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()
        squares = np.asarray(matrix.multiply(matrix).sum(axis=1), dtype=np.float64).ravel()
        return np.divide(squares, total**2, out=np.full_like(total, np.nan), where=total > 0)

    factor = concentration(full) / (concentration(halves[0]) + concentration(halves[1]))
    return halves[0], halves[1], factor


def _niche_graph(model: Any, adata: Any) -> Any:
    """The graph the model's niches are read from."""
    if getattr(model, "niche_input", "features") == "graph":
        return adata.obsp[model.graph_key]
    record = spatial_features_record(adata, model.spatial_obsm_key)
    return adata.obsp[record["connectivity_key"]]


def _subset_rng(key: str | None) -> np.random.Generator:
    return np.random.default_rng([SPLIT_SEED, zlib.crc32(b"" if key is None else str(key).encode())])


def _niche_codes(
    model: Any, adata: Any, cells: np.ndarray, graph: sp.csr_matrix | None, batch_size: int | None
) -> np.ndarray:
    """Posterior means of ``s`` for ``cells`` with the niche ``graph`` gives them (None: their own)."""
    if graph is None:
        return np.asarray(model.predict_from_niche(adata, cells, None, output="s", batch_size=batch_size))
    if getattr(model, "niche_input", "features") == "graph":
        return np.asarray(model.predict_from_graph(adata, cells, graph, output="s", batch_size=batch_size))
    record = spatial_features_record(adata, model.spatial_obsm_key)
    counts = model.registered_counts(adata)
    features = anchor_niche_features(counts, graph, cells, cells, record, None, record_codes(adata, record))
    return np.asarray(model.predict_from_niche(adata, cells, features, output="s", batch_size=batch_size))


@dataclass(frozen=True)
class NicheReliability:
    """Per cell type (and over all training cells, key ``None``), the covariance of ``s`` and of its noise.

    Attributes
    ----------
    covariances
        Type -> ``(total, noise)``, both ``(n_latent_spatial, n_latent_spatial)``.
    n_cells
        Type -> training cells the two were estimated on.
    """

    covariances: dict[str | None, tuple[np.ndarray, np.ndarray]]
    n_cells: dict[str | None, int]

    def to_record(self) -> dict[str, Any]:
        """Plain arrays and names, for saving with a model (``None``, all cells, as ``""``)."""
        keys = list(self.covariances)
        return {
            "types": ["" if key is None else str(key) for key in keys],
            "total": np.stack([self.covariances[key][0] for key in keys]),
            "noise": np.stack([self.covariances[key][1] for key in keys]),
            "n_cells": np.array([self.n_cells.get(key, 0) for key in keys], dtype=np.int64),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> NicheReliability:
        """The statistics :meth:`to_record` wrote."""
        keys = [None if name == "" else str(name) for name in record["types"]]
        pairs = {key: (np.asarray(record["total"][i]), np.asarray(record["noise"][i])) for i, key in enumerate(keys)}
        return cls(pairs, {key: int(record["n_cells"][i]) for i, key in enumerate(keys)})

    def along(self, cell_type: str | None, direction: np.ndarray) -> float:
        """The reliability of ``s`` along ``direction`` for ``cell_type`` (the statistics of all
        cells for a type without its own), within ``[MIN_RELIABILITY, 1]``; 1 for no direction."""
        total, noise = self.covariances.get(cell_type, self.covariances[ALL_CELLS])
        direction = np.asarray(direction, dtype=np.float64)
        spread = float(direction @ total @ direction)
        if not np.isfinite(spread) or spread <= 0:
            return 1.0
        return float(np.clip(1.0 - float(direction @ noise @ direction) / spread, MIN_RELIABILITY, 1.0))


def niche_reliability(
    model: Any, adata: Any, cell_types: Sequence[str] | None = None, batch_size: int | None = None
) -> NicheReliability:
    """Estimate the noise of the niche code ``s`` over the model's training cells by split neighbours.

    Parameters
    ----------
    model
        A trained :class:`~cellina.model.Cellina` or :class:`~cellina.model.CellinaGCN`.
    adata
        Its registered AnnData (never modified).
    cell_types
        Types to estimate apart (registered labels; each on at most :data:`MAX_CELLS_PER_TYPE` of
        its training cells); the statistics over all training cells are always made. ``None``: every
        registered type among the training cells; ``()``: all cells only.
    batch_size
        Minibatch size of the encoder.

    Returns
    -------
    NicheReliability
    """
    half_a, half_b, factor = split_neighbours(_niche_graph(model, adata), np.random.default_rng(SPLIT_SEED))
    cells = training_reference(model, adata)
    cells = cells[np.isfinite(factor[cells])]
    if cells.size < 2:
        raise ValueError("fewer than two training cells have neighbours in both halves of their niche.")
    labels = registered_cell_types(model, adata)
    groups: dict[str | None, np.ndarray] = {ALL_CELLS: cells}
    if cell_types is None:
        cell_types = () if labels is None else np.unique(labels[cells]).tolist()
    for cell_type in cell_types:
        members = cells[labels[cells] == cell_type] if labels is not None else np.empty(0, dtype=np.int64)
        if members.size >= MIN_CELLS_PER_TYPE:
            groups[cell_type] = members
    # each type's subset from its own stream, so it does not depend on which other types are estimated
    groups = {
        key: np.sort(_subset_rng(key).choice(members, MAX_CELLS_PER_TYPE, replace=False))
        if members.size > MAX_CELLS_PER_TYPE
        else members
        for key, members in groups.items()
    }
    union = np.unique(np.concatenate(list(groups.values())))
    whole = _niche_codes(model, adata, union, None, batch_size)
    noise = _niche_codes(model, adata, union, half_a, batch_size) - _niche_codes(
        model, adata, union, half_b, batch_size
    )
    noise *= np.sqrt(factor[union])[:, None]
    covariances, n_cells = {}, {}
    for key, members in groups.items():
        rows = np.searchsorted(union, members)
        covariances[key] = (np.atleast_2d(np.cov(whole[rows].T)), np.atleast_2d(np.cov(noise[rows].T)))
        n_cells[key] = int(members.size)
    return NicheReliability(covariances, n_cells)


def disattenuated_niche_latent(
    factual: np.ndarray,
    counterfactual: np.ndarray,
    cell_types: np.ndarray | None,
    reliability: NicheReliability,
    strength: float = 1.0,
) -> np.ndarray:
    """``s`` moved from the factual code by the counterfactual change divided by its reliability.

    The direction is the mean change of each type's focal cells; every focal cell of the type is
    scaled by the reliability along it, raised to ``strength`` (1: the full correction, 0: none;
    in between, part of it on a log scale).

    Parameters
    ----------
    factual, counterfactual
        ``(n_focal, n_latent_spatial)`` codes of the focal cells' own and rewired niches.
    cell_types
        Each focal cell's registered type (``None``: all read with the statistics of all cells).
    reliability
        From :func:`niche_reliability`.
    strength
        The exponent of the reliability, in ``[0, 1]``.
    """
    strength = check_strength(strength, "strength")
    factual = np.asarray(factual, dtype=np.float64)
    change = np.asarray(counterfactual, dtype=np.float64) - factual
    keys = np.full(len(factual), "", dtype=object) if cell_types is None else np.asarray(cell_types, dtype=object)
    out = np.array(factual)
    for key in dict.fromkeys(keys.tolist()):
        rows = np.flatnonzero(keys == key)
        group = None if cell_types is None else key
        out[rows] += change[rows] / reliability.along(group, change[rows].mean(axis=0)) ** strength
    return out.astype(np.float32)


def check_strength(value: Any, name: str = "disattenuate") -> float:
    """How much of the correction to apply: True is 1 (all of it), False 0, a number in ``[0, 1]`` itself."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating) and np.isfinite(value) and 0 <= value <= 1:
        return float(value)
    raise ValueError(f"{name}={value!r} must be True, False or a number from 0 to 1 (the share of the correction).")


def focal_cell_types(model: Any, adata: Any, focal: np.ndarray) -> np.ndarray | None:
    """The registered type of each focal cell, or None when the model has none."""
    labels = registered_cell_types(model, adata)
    return None if labels is None else labels[np.asarray(focal, dtype=np.int64)]
