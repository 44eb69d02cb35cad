"""A data-driven niche reach: which graph bandwidth makes niche features most predictive of expression.

Nobody knows how far a tissue's signals carry. For each candidate bandwidth we build the graph the
model would get (:func:`spatial_neighbors`), average the neighbours' expression (the niche features,
in a few principal components), and ask how well they predict each cell's expression beyond its type
on cells the regression never saw: a ridge regression per cell type, scored on spatially blocked
folds (tiles wider than the largest kernel's reach), so neighbouring cells never sit on both sides.
Too short a reach averages too few cells and misses far signals; too long a reach blurs near ones
into the domain average. The validation curve shows where the data stop telling reaches apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.io_keys import median_nearest_distance

from ._features import aggregate_neighbours, looks_like_raw_counts
from ._graph import KERNELS, _reach, spatial_neighbors
from ._reach_curve import NicheReachCurve
from ._validation import (
    check_int,
    check_nonempty,
    check_obs_key,
    check_test_indices,
    get_coordinates,
    get_matrix,
)

__all__ = ["niche_reach_curve", "reach_windows"]

#: default candidates, as multiples of the median distance between neighbouring cells
SPACING_MULTIPLES = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
#: ridge penalties tried (relative to the mean squared singular value), chosen by leave-one-out
RIDGE_GRID = np.array([0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0])
#: neighbour cap when covering a long kernel's reach would need more
MAX_AUTO_NEIGHBOURS = 1000
MAX_GENES = 2000
MIN_CELLS_PER_TYPE = 50
#: above this many times ``max_cells`` cells, only windows of the tissue are scanned (bounded memory)
WINDOW_FACTOR = 2


def _log_expression(adata: Any, layer: str | None) -> sp.csr_matrix:
    """float32 log expression: raw counts are log1p(normalize_total(1e4))-ed, anything else kept."""
    matrix = get_matrix(adata, layer)
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    if looks_like_raw_counts(csr):
        totals = np.asarray(csr.sum(axis=1), dtype=np.float64).ravel()
        scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
        csr = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ csr)
        np.log1p(csr.data, out=csr.data)
    return csr


def _group_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    sums = np.zeros((n_groups, values.shape[1]))
    np.add.at(sums, groups, values)
    counts = np.bincount(groups, minlength=n_groups)[:, None]
    return sums / np.maximum(counts, 1)


def _components(
    expr: sp.csr_matrix, scored: np.ndarray, groups: np.ndarray, n_features: int, n_targets: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Features: expression PCs of every cell. Targets: PCs of the scored cells' expression beyond group."""
    from sklearn.utils.extmath import randomized_svd

    rows = expr[scored]
    gene_var = np.asarray(rows.power(2).mean(axis=0)).ravel() - np.asarray(rows.mean(axis=0)).ravel() ** 2
    genes = np.sort(np.argsort(gene_var)[::-1][:MAX_GENES])
    dense = rows[:, genes].toarray().astype(np.float64)
    mean = dense.mean(axis=0)
    n_groups = int(groups.max()) + 1
    residual = dense - _group_means(dense, groups, n_groups)[groups]
    _, _, vt_expr = randomized_svd(dense - mean, n_features, random_state=seed)
    _, _, vt_res = randomized_svd(residual, n_targets, random_state=seed)
    features = np.asarray(expr[:, genes] @ vt_expr.T, dtype=np.float64) - mean @ vt_expr.T
    return features.astype(np.float32), residual @ vt_res.T


def _spatial_folds(coords: np.ndarray, slides: np.ndarray, tile: float, n_folds: int, seed: int) -> np.ndarray:
    """Fold of each cell: square tiles of side ``tile`` per slide, dealt to folds at random."""
    rng = np.random.default_rng(seed)
    while True:
        cells = np.floor((coords[:, :2] - coords[:, :2].min(axis=0)) / tile).astype(np.int64)
        keys = np.stack([slides, cells[:, 0], cells[:, 1]], axis=1)
        _, tile_of = np.unique(keys, axis=0, return_inverse=True)
        n_tiles = int(tile_of.max()) + 1
        if n_tiles >= 3 * n_folds or tile < 1e-9:
            break
        tile /= 2.0
    folds = rng.permutation(np.arange(n_tiles) % n_folds)
    return folds[tile_of.ravel()]


def _ridge_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Ridge prediction, its penalty chosen on the training rows by exact leave-one-out error."""
    u, s, vt = np.linalg.svd(train_x, full_matrices=False)
    uy = u.T @ train_y
    scale = float(np.mean(s**2)) or 1.0
    best_loss, best_lam = np.inf, RIDGE_GRID[0] * scale
    for lam in RIDGE_GRID * scale:
        shrink = s**2 / (s**2 + lam)
        fitted = u @ (shrink[:, None] * uy)
        leverage = (u**2 * shrink).sum(axis=1)
        loss = float((((train_y - fitted) / (1.0 - leverage)[:, None]) ** 2).sum())
        if loss < best_loss:
            best_loss, best_lam = loss, lam
    coef = vt.T @ ((s / (s**2 + best_lam))[:, None] * uy)
    return test_x @ coef


def _fold_errors(
    features: np.ndarray, targets: np.ndarray, types: np.ndarray, groups: np.ndarray, folds: np.ndarray, n_folds: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-fold squared error of the per-type ridge and the targets' own sum of squares."""
    centred = features - _group_means(features, groups, int(groups.max()) + 1)[groups]
    sse, sst = np.zeros(n_folds), np.zeros(n_folds)
    for t in np.unique(types):
        rows = np.flatnonzero(types == t)
        if rows.size < MIN_CELLS_PER_TYPE:
            continue
        for k in range(n_folds):
            test = rows[folds[rows] == k]
            train = rows[folds[rows] != k]
            if test.size == 0 or train.size < 2 * features.shape[1]:
                continue
            pred = _ridge_predict(centred[train], targets[train], centred[test])
            sse[k] += float(((targets[test] - pred) ** 2).sum())
            sst[k] += float((targets[test] ** 2).sum())
    return sse, sst


def _neighbour_cap(coords: np.ndarray, slides: np.ndarray, reach: float, seed: int) -> int:
    """Neighbours needed to cover ``reach`` around 95 % of cells (sampled), capped."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    counts = []
    for code in np.unique(slides):
        xy = coords[slides == code]
        probe = xy if len(xy) <= 2000 else xy[rng.choice(len(xy), 2000, replace=False)]
        counts.append(np.asarray(cKDTree(xy).query_ball_point(probe, reach, return_length=True)) - 1)
    needed = int(np.ceil(np.quantile(np.concatenate(counts), 0.95)))
    return int(np.clip(needed, 1, MAX_AUTO_NEIGHBOURS))


def _candidates(bandwidths: Any, coords: np.ndarray) -> np.ndarray:
    if bandwidths is None:
        spacing = median_nearest_distance(coords)
        if not np.isfinite(spacing) or spacing <= 0:
            raise ValueError("Cannot choose candidate bandwidths: the cells have no distinct neighbours.")
        return np.array([float(f"{spacing * m:.3g}") for m in SPACING_MULTIPLES])
    values = np.asarray(bandwidths, dtype=float).ravel()
    if values.size < 2 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"`bandwidths` must hold at least two positive finite values, got {bandwidths!r}.")
    return np.unique(values)


def _check_scan(adata: Any, labels_key: str, kernel: str, cutoff: float, n_folds: Any) -> tuple[np.ndarray, int]:
    check_nonempty(adata)
    if kernel not in KERNELS:
        raise ValueError(f"Unknown kernel={kernel!r}; choose one of {KERNELS}.")
    if not (isinstance(cutoff, (int, float)) and 0.0 <= float(cutoff) < 1.0):
        raise ValueError(f"`cutoff` must be in [0, 1), got {cutoff!r}.")
    folds = check_int("n_folds", n_folds, minimum=2)
    labels = check_obs_key(adata, labels_key, "labels_key", allow_missing=True)
    return labels.astype(object).where(labels.notna(), None).to_numpy(), folds


def niche_reach_curve(
    adata: Any,
    labels_key: str,
    bandwidths: Any = None,
    *,
    kernel: str = "gaussian",
    cutoff: float = 0.1,
    max_neighbours: int | None = None,
    layer: str | None = None,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    test_indices: Any = None,
    n_folds: int = 5,
    n_features: int = 10,
    n_targets: int = 20,
    max_cells: int = 30_000,
    random_state: int = 0,
    progress: Callable[[float, str], None] | None = None,
) -> NicheReachCurve:
    """Scan graph bandwidths and suggest the niche reach the data support.

    Parameters
    ----------
    adata
        Cells with coordinates in ``obsm[spatial_key]`` and expression in ``layer`` (raw counts are
        log-normalised here; log-normalised data are used as they are).
    labels_key
        Column of ``obs`` with the cell types: the expression to explain is what varies within a type.
        Cells without a label are used as neighbours but not scored.
    bandwidths
        Candidate bandwidths in coordinate units; None: 0.5-8 times the median distance between
        neighbouring cells (nine values).
    kernel, cutoff
        As in :func:`spatial_neighbors`.
    max_neighbours
        Neighbour cap for every candidate; None: at each bandwidth, enough to cover the kernel's
        reach around 95 % of cells (at most 1,000).
    layer
        Expression layer (None: ``X``).
    spatial_key, library_key
        Coordinates, and the slide column (graphs and folds stay within a slide; the expression beyond
        a type is taken within its slide, so batch effects are not niche effects).
    test_indices
        Held-out cells: nobody's neighbour and never scored, as in the model's own graph.
    n_folds, n_features, n_targets, max_cells, random_state
        Spatially blocked folds; niche features and targets in that many principal components; at
        most ``max_cells`` cells scored (drawn at random); the seed of every draw.
    progress
        Optional ``progress(fraction, message)`` callback, called after each bandwidth.

    Returns
    -------
    NicheReachCurve
        The validation curve, ``suggested_bandwidth`` and ``suggested_max_neighbours``; ``.plot()``.

    Raises
    ------
    ValueError
        Missing keys, an unknown kernel, fewer than two candidates, or too few labelled cells.
    """
    types_all, n_folds = _check_scan(adata, labels_key, kernel, cutoff, n_folds)
    coords = get_coordinates(adata, spatial_key)
    candidates = _candidates(bandwidths, coords)
    slides = np.zeros(adata.n_obs, dtype=np.int64)
    if library_key is not None:
        slides = check_obs_key(adata, library_key, "library_key").astype("category").cat.codes.to_numpy()
    held = np.zeros(adata.n_obs, dtype=bool)
    if test_indices is not None:
        held[check_test_indices(test_indices, adata.n_obs)] = True
    eligible = _eligible(types_all, held, labels_key)
    rng = np.random.default_rng(random_state)
    # tiles wider than twice the longest kernel's reach: folds, and windows on a large tissue
    tile = 2.0 * min(_reach(float(candidates.max()), float(cutoff), kernel), 20.0 * float(candidates.max()))
    if adata.n_obs > WINDOW_FACTOR * max_cells:
        senders, eligible = reach_windows(coords, slides, eligible, max_cells, tile, rng)
        adata, coords, slides, held, types_all = (
            adata[senders],
            coords[senders],
            slides[senders],
            held[senders],
            types_all[senders],
        )
    scored = np.sort(rng.choice(eligible, min(max_cells, eligible.size), replace=False))
    types = types_all[scored].astype(str)
    _, groups = np.unique(np.stack([types, slides[scored].astype(str)], axis=1), axis=0, return_inverse=True)
    groups = groups.ravel()
    features, targets = _components(_log_expression(adata, layer), scored, groups, n_features, n_targets, random_state)
    folds = _spatial_folds(coords[scored], slides[scored], tile, n_folds, random_state)
    return _scan(
        adata, candidates, features, targets, types, groups, folds, scored,
        dict(kernel=kernel, cutoff=float(cutoff), max_neighbours=max_neighbours, spatial_key=spatial_key,
             library_key=library_key, test_indices=np.flatnonzero(held), seed=random_state, coords=coords,
             slides=slides, progress=progress),
    )  # fmt: skip


def _eligible(types: np.ndarray, held: np.ndarray, labels_key: str) -> np.ndarray:
    """Cells that can be scored: labelled, not held out, of a type with enough such cells."""
    labelled = ~held & np.array([t is not None for t in types])
    names = np.where(labelled, types.astype(str), "")
    _, inverse, counts = np.unique(names, return_inverse=True, return_counts=True)
    eligible = np.flatnonzero(labelled & (counts[inverse.ravel()] >= MIN_CELLS_PER_TYPE))
    if eligible.size < 2 * MIN_CELLS_PER_TYPE:
        raise ValueError(
            f"Too few labelled cells to scan the niche reach: {eligible.size} in types of at least "
            f"{MIN_CELLS_PER_TYPE} cells (obs[{labels_key!r}])."
        )
    return eligible


def reach_windows(
    coords: np.ndarray, slides: np.ndarray, eligible: np.ndarray, max_cells: int, tile: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Square windows of a large tissue to scan: ``(senders, scored)`` as positions.

    Tiles of side ``tile`` (at least the longest kernel's reach) are drawn at random until they
    hold ``max_cells`` eligible cells; those cells may be scored (returned as positions among the
    senders), and every cell of the same slide in a tile touching a drawn one is a sender, so a
    scored cell's neighbourhood is complete at every candidate bandwidth. Graphs and features
    are then built on the senders only: the cost is bounded by ``max_cells``, not the tissue.
    """
    xy = coords[:, :2] - coords[:, :2].min(axis=0)
    cells = np.floor(xy / tile).astype(np.int64) + 1
    side = int(cells.max()) + 2
    key = (slides.astype(np.int64) * side + cells[:, 0]) * side + cells[:, 1]
    tiles, counts = np.unique(key[eligible], return_counts=True)
    order = rng.permutation(tiles.size)
    chosen = tiles[order[: int(np.searchsorted(np.cumsum(counts[order]), max_cells)) + 1]]
    near = np.zeros(key.size, dtype=bool)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            near |= np.isin(key + dx * side + dy, chosen)
    senders = np.flatnonzero(near)
    inside = np.isin(key[eligible], chosen)
    return senders, np.searchsorted(senders, eligible[inside])


def _scan(
    adata: Any,
    candidates: np.ndarray,
    features: np.ndarray,
    targets: np.ndarray,
    types: np.ndarray,
    groups: np.ndarray,
    folds: np.ndarray,
    scored: np.ndarray,
    graph: dict[str, Any],
) -> NicheReachCurve:
    n_folds = int(folds.max()) + 1
    fold_scores = np.zeros((n_folds, candidates.size))
    pooled = np.zeros(candidates.size)
    medians, caps, p95 = (np.zeros(candidates.size) for _ in range(3))
    for j, bandwidth in enumerate(candidates):
        cap = graph["max_neighbours"]
        if cap is None:
            reach = _reach(float(bandwidth), graph["cutoff"], graph["kernel"])
            cap = _neighbour_cap(graph["coords"], graph["slides"], reach, graph["seed"])
        cap = check_int("max_neighbours", cap, minimum=1)
        conn = spatial_neighbors(
            adata, float(bandwidth), cutoff=graph["cutoff"], max_neighbours=cap, kernel=graph["kernel"],
            spatial_key=graph["spatial_key"], library_key=graph["library_key"],
            test_indices=graph["test_indices"] if graph["test_indices"].size else None, inplace=False,
        )  # fmt: skip
        degree = np.diff(conn.indptr)[scored]
        medians[j], caps[j], p95[j] = np.median(degree), cap, np.quantile(degree, 0.95)
        niche = aggregate_neighbours(conn[scored], features).astype(np.float64)
        sse, sst = _fold_errors(niche, targets, types, groups, folds, n_folds)
        fold_scores[:, j] = 1.0 - sse / np.maximum(sst, 1e-300)
        pooled[j] = 1.0 - sse.sum() / max(sst.sum(), 1e-300)
        if graph["progress"] is not None:
            graph["progress"]((j + 1) / candidates.size, f"bandwidth {bandwidth:.3g}: {100 * pooled[j]:.2f} %")
    se = fold_scores.std(axis=0, ddof=1) / np.sqrt(n_folds)
    best = int(np.argmax(pooled))
    # one-standard-error rule on paired fold differences: the same folds score every bandwidth
    diff_se = (fold_scores[:, [best]] - fold_scores).std(axis=0, ddof=1) / np.sqrt(n_folds)
    chosen = int(np.flatnonzero(pooled >= pooled[best] - diff_se)[0])
    return NicheReachCurve(
        bandwidths=candidates,
        score=pooled,
        score_se=se,
        fold_scores=fold_scores,
        median_neighbours=medians,
        max_neighbours=caps.astype(int),
        best_bandwidth=float(candidates[best]),
        suggested_bandwidth=float(candidates[chosen]),
        suggested_max_neighbours=int(max(1, np.ceil(p95[chosen]))),
        kernel=graph["kernel"],
        cutoff=graph["cutoff"],
        n_cells=int(scored.size),
        signal=bool(pooled[best] > 2.0 * se[best]),
        settings={"n_folds": n_folds, "n_features": features.shape[1], "n_targets": targets.shape[1]},
    )
