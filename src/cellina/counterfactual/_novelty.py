"""How far counterfactual niches lie from the niches a model saw in training.

A counterfactual decodes each focal cell with a niche code ``s`` that the model may never have
met: donors from another slide, a shift far beyond the observed range, a rewiring onto cells of
a kind that never neighbour each other. The decoder then extrapolates, and its prediction says
little. :func:`niche_novelty` measures this cheaply in the space the decoder reads: the mean
distance of a focal cell's counterfactual ``s`` to its ``k`` nearest training cells (of the same
cell type when the model knows types and has enough of them), compared with the same distance
among the training cells themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cellina.spatial import check_positions

#: default share of training cells whose own niche lies closer to the training niches than the
#: threshold a counterfactual niche must exceed to count as outside training
DEFAULT_QUANTILE = 0.99
DEFAULT_NEIGHBOURS = 15


@dataclass(frozen=True)
class NicheNovelty:
    """How far each focal cell's counterfactual niche lies from the training niches.

    Attributes
    ----------
    distance
        ``(n_focal,)`` mean Euclidean distance of the counterfactual niche code ``s`` to its
        ``n_neighbours`` nearest training codes (averaged over draws).
    percentile
        ``(n_focal,)`` share (0-100) of the reference training cells whose own distance to
        their nearest training neighbours is at most ``distance``; 100 means farther than every
        training cell.
    threshold
        ``(n_focal,)`` the ``quantile`` of the reference training cells' distances.
    outside_training
        ``(n_focal,)`` ``distance > threshold``.
    quantile, n_neighbours
        The settings used.
    grouped
        ``(n_focal,)`` whether a cell was compared with training cells of its own type (else
        with every training cell, e.g. for a type held out of training).
    """

    distance: np.ndarray
    percentile: np.ndarray
    threshold: np.ndarray
    outside_training: np.ndarray
    quantile: float
    n_neighbours: int
    grouped: np.ndarray

    @property
    def n_outside(self) -> int:
        """Focal cells whose counterfactual niche lies outside training."""
        return int(np.count_nonzero(self.outside_training))

    @property
    def share_outside(self) -> float:
        """Share of focal cells outside training (0 with no cell)."""
        n = int(self.outside_training.size)
        return self.n_outside / n if n else 0.0

    def message(self) -> str:
        """One sentence for the user: how many focal cells lie outside training and what that means."""
        n = int(self.outside_training.size)
        if self.n_outside == 0:
            return f"All {n} focal cells' counterfactual niches lie within what the model saw in training."
        pct = 100.0 * self.quantile
        return (
            f"{self.n_outside} of {n} focal cells ({100.0 * self.share_outside:.0f}%) get a counterfactual niche "
            f"outside what the model saw in training (farther from the training niches than {pct:g}% of "
            "training cells): their predictions are extrapolations; trust them less."
        )

    def record(self) -> dict[str, Any]:
        """A plain summary for provenance."""
        return {
            "n_focal": int(self.outside_training.size),
            "n_outside_training": self.n_outside,
            "share_outside_training": float(self.share_outside),
            "quantile": float(self.quantile),
            "n_neighbours": int(self.n_neighbours),
            "space": "s",
        }


def training_reference(model: Any, adata: Any) -> np.ndarray:
    """Positions of the cells the model trained on: every cell but the held-out ones it recorded."""
    held = getattr(model, "heldout_indices_", None)
    keep = np.ones(adata.n_obs, dtype=bool)
    if held is not None and len(held) and adata.n_obs == model.adata.n_obs:
        keep[np.asarray(held, dtype=np.int64)] = False
    return np.flatnonzero(keep)


def registered_column(model: Any, adata: Any, setup_key: str) -> np.ndarray | None:
    """Every cell's value (as text) of the obs column the model registered as ``setup_key`` (e.g.
    ``"labels_key"``), or None when the model registered none or ``adata`` lacks it."""
    try:
        key = model.adata_manager.registry["setup_args"].get(setup_key)
    except (AttributeError, KeyError, TypeError):
        return None
    if key is None or key not in adata.obs:
        return None
    return adata.obs[key].astype(str).to_numpy()


def registered_cell_types(model: Any, adata: Any) -> np.ndarray | None:
    """The registered cell type of every cell, or None when the model has none."""
    return registered_column(model, adata, "labels_key")


def _as_codes(codes: Any, n_focal: int) -> np.ndarray:
    values = np.asarray(codes, dtype=np.float64)
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or values.shape[1] != n_focal or values.shape[0] < 1:
        raise ValueError(
            f"codes must be (n_focal, dim) or (n_draws, n_focal, dim) with n_focal={n_focal}, got {np.shape(codes)}."
        )
    if not np.isfinite(values).all():
        raise ValueError("codes hold NaN or infinite values.")
    return values


def _reference_distances(ref: np.ndarray, k: int) -> tuple[Any, np.ndarray]:
    """A neighbour index on ``ref`` and each reference code's mean distance to its ``k`` nearest others."""
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k).fit(ref)
    dist, _ = index.kneighbors(ref, n_neighbors=k + 1)
    # column 0 is the code itself (distance 0)
    return index, np.sort(dist[:, 1:].mean(axis=1))


def _subsample(positions: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if positions.size <= limit:
        return positions
    return np.sort(np.random.default_rng(seed).choice(positions, size=limit, replace=False))


def niche_novelty(
    model: Any,
    adata: Any,
    focal: Any,
    codes: Any,
    *,
    reference: Any = None,
    n_neighbours: int = DEFAULT_NEIGHBOURS,
    quantile: float = DEFAULT_QUANTILE,
    by_type: bool = True,
    max_reference: int = 20_000,
    seed: int = 0,
    batch_size: int | None = None,
) -> NicheNovelty:
    """Score how far focal cells' counterfactual niche codes lie from the training niches.

    For each focal cell, the mean distance of its counterfactual ``s`` (every draw, then
    averaged) to its ``n_neighbours`` nearest reference codes is compared with the same
    distance among the reference cells themselves (each against the others). A cell lies
    *outside training* when its distance exceeds the ``quantile`` (default 0.99) of the
    reference distances: farther from what the model saw than 99% of the cells it saw.

    Parameters
    ----------
    model
        A trained :class:`~cellina.model.Cellina` or :class:`~cellina.model.CellinaGCN`.
    adata
        Its registered AnnData.
    focal
        ``(n_focal,)`` positions of the focal cells (rows of ``codes``).
    codes
        Counterfactual niche codes ``(n_focal, dim_s)`` or ``(n_draws, n_focal, dim_s)``, e.g.
        from :func:`edge_counterfactual` (``return_novelty`` does all of this) or
        :func:`node_niche_codes`.
    reference
        Positions of the training cells to compare with (default: every cell but those the
        model held out of training).
    n_neighbours
        Nearest reference codes averaged over.
    quantile
        Share of reference cells that must lie closer for a focal cell to count as outside.
    by_type
        Compare each focal cell with reference cells of its own registered type when there are
        more than ``n_neighbours`` of them (else with every reference cell).
    max_reference
        At most this many reference cells are encoded (a seeded random subset beyond).
    seed, batch_size
        Seed of that subset; minibatch size for encoding.

    Returns
    -------
    NicheNovelty

    Raises
    ------
    ValueError
        Bad shapes, a quantile outside (0, 1), or fewer than ``n_neighbours + 1`` reference cells.
    """
    focal = check_positions(np.asarray(focal), adata.n_obs, "focal")
    values = _as_codes(codes, focal.size)
    k = int(n_neighbours)
    if k < 1:
        raise ValueError(f"n_neighbours={n_neighbours} must be >= 1.")
    if not 0.0 < float(quantile) < 1.0:
        raise ValueError(f"quantile={quantile} must lie strictly between 0 and 1.")
    ref = (
        training_reference(model, adata) if reference is None else check_positions(reference, adata.n_obs, "reference")
    )
    ref = _subsample(ref, int(max_reference), seed)
    if ref.size < k + 1:
        raise ValueError(f"niche novelty needs more than n_neighbours={k} reference cells, got {ref.size}.")
    ref_codes = np.asarray(model.get_latent_representation(adata, indices=ref, latent_key="s", batch_size=batch_size))
    if ref_codes.shape[1] != values.shape[2]:
        raise ValueError(f"codes have dimension {values.shape[2]}, the model's s has {ref_codes.shape[1]}.")
    types = registered_cell_types(model, adata) if by_type else None
    focal_groups = types[focal] if types is not None else np.full(focal.size, "")
    distance, percentile, threshold = (np.empty(focal.size) for _ in range(3))
    grouped = np.zeros(focal.size, dtype=bool)
    for group in np.unique(focal_groups):
        rows = np.flatnonzero(focal_groups == group)
        same = types[ref] == group if types is not None else np.zeros(ref.size, dtype=bool)
        own = int(same.sum()) > k
        index, ref_dist = _reference_distances(ref_codes[same] if own else ref_codes, k)
        queries = values[:, rows].reshape(-1, values.shape[2])
        dist, _ = index.kneighbors(queries, n_neighbors=k)
        distance[rows] = dist.mean(axis=1).reshape(values.shape[0], rows.size).mean(axis=0)
        percentile[rows] = 100.0 * np.searchsorted(ref_dist, distance[rows], side="right") / ref_dist.size
        threshold[rows] = np.quantile(ref_dist, float(quantile))
        grouped[rows] = own
    return NicheNovelty(
        distance=distance.astype(np.float32),
        percentile=percentile.astype(np.float32),
        threshold=threshold.astype(np.float32),
        outside_training=distance > threshold,
        quantile=float(quantile),
        n_neighbours=k,
        grouped=grouped,
    )


def node_niche_codes(model: Any, adata: Any, focal: Any, spatial_x: Any, batch_size: int | None = None) -> np.ndarray:
    """The niche codes ``s`` of focal cells under a node counterfactual's perturbed niche inputs.

    ``spatial_x`` is :attr:`NodeCounterfactual.spatial_x`: perturbed niche features of every
    cell (feature models) or the perturbed node features (graph models).
    """
    focal = check_positions(np.asarray(focal), adata.n_obs, "focal")
    if getattr(model, "niche_input", "features") == "graph":
        return model.predict_from_graph(adata, focal, node_features=spatial_x, output="s", batch_size=batch_size)
    return model.predict_from_niche(adata, focal, spatial_x[focal], "s", batch_size=batch_size)
