"""Scores for predicted expression changes: DEG correlations, signed precision, skill, energy distance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy import stats
from scipy.spatial.distance import cdist

from ._utils import as_matrix, as_vector, log1p_normalize


def _pair(true: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t = as_vector(true, "true")
    p = as_vector(pred, "pred")
    if t.shape != p.shape:
        raise ValueError(f"`true` and `pred` differ in length: {t.shape[0]} vs {p.shape[0]}.")
    return t, p


def top_k_degs(true_lfc: Any, k: int) -> np.ndarray:
    """Indices of the ``k`` genes with the largest ``|true_lfc|`` (ties keep gene order).

    ``k`` larger than the number of genes returns all genes; NaN changes rank last.

    Parameters
    ----------
    true_lfc
        One change per gene.
    k
        Number of genes.

    Returns
    -------
    numpy.ndarray
        Integer gene indices, largest change first.
    """
    t = as_vector(true_lfc, "true_lfc")
    if int(k) < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    score = np.abs(t)
    score = np.where(np.isfinite(score), score, -np.inf)
    return np.argsort(-score, kind="stable")[: int(k)]


def _select(true: np.ndarray, pred: np.ndarray, k: int | None, features: Sequence[int] | None):
    if features is not None:
        idx = np.asarray(features, dtype=int)
    elif k is not None:
        idx = top_k_degs(true, k)
    else:
        idx = np.arange(true.shape[0])
    return true[idx], pred[idx]


def _correlation(kind: str, t: np.ndarray, p: np.ndarray) -> float:
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    # A constant vector has no defined correlation: report NaN rather than a number.
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return float("nan")
    if kind == "pearson":
        return float(stats.pearsonr(t, p)[0])
    return float(stats.spearmanr(t, p)[0])


def pearson_top_k(true_lfc: Any, pred_lfc: Any, k: int | None = 50, features: Sequence[int] | None = None) -> float:
    """Pearson correlation between observed and predicted changes on the top-``k`` observed DEGs.

    Parameters
    ----------
    true_lfc, pred_lfc
        Observed and predicted change per gene.
    k
        Genes ranked by ``|true_lfc|``; ``None`` uses every gene. Clipped to the number of genes.
    features
        Explicit gene indices (overrides ``k``), e.g. the ``top_features`` of ``get_lfc``.

    Returns
    -------
    float
        NaN when fewer than two finite pairs remain or either side is constant.
    """
    t, p = _pair(true_lfc, pred_lfc)
    return _correlation("pearson", *_select(t, p, k, features))


def spearman_top_k(true_lfc: Any, pred_lfc: Any, k: int | None = 50, features: Sequence[int] | None = None) -> float:
    """Spearman rank correlation on the top-``k`` observed DEGs (see :func:`pearson_top_k`)."""
    t, p = _pair(true_lfc, pred_lfc)
    return _correlation("spearman", *_select(t, p, k, features))


def signed_precision_at_k(true_lfc: Any, pred_lfc: Any, k: int = 50) -> float:
    """Fraction of the top-``k`` observed DEGs that the prediction also ranks top-``k``, with the right sign.

    Let ``T`` be the ``k`` genes with the largest ``|true_lfc|`` and ``P`` the ``k`` genes with
    the largest ``|pred_lfc|`` (``k`` clipped to the number of genes). The score is
    ``|{g in T : g in P and sign(pred_lfc[g]) == sign(true_lfc[g])}| / k``.
    1 means the prediction finds every top gene and its direction; a prediction that finds the
    genes with the wrong directions scores 0.

    Parameters
    ----------
    true_lfc, pred_lfc
        Observed and predicted change per gene.
    k
        Size of both top lists.

    Returns
    -------
    float
        In [0, 1].
    """
    t, p = _pair(true_lfc, pred_lfc)
    k_eff = min(int(k), t.shape[0])
    if k_eff < 1:
        raise ValueError(f"`k` must be a positive integer, got {k!r}.")
    top_true = top_k_degs(t, k_eff)
    top_pred = set(top_k_degs(p, k_eff).tolist())
    hits = sum(1 for g in top_true if g in top_pred and np.sign(p[g]) == np.sign(t[g]))
    return hits / k_eff


def skill(pred_change: Any, true_change: Any) -> float:
    """Skill of a predicted change against the true change: ``1 - |pred - true|^2 / |true|^2``.

    1 is perfect, 0 is no better than predicting no change (a zero prediction, or one twice
    the true size), negative is worse than predicting nothing. Unlike a correlation it
    penalises the wrong size.

    Parameters
    ----------
    pred_change, true_change
        One change per gene (same genes, same units).

    Returns
    -------
    float
        NaN when the true change is identically zero.
    """
    t, p = _pair(true_change, pred_change)
    ok = np.isfinite(t) & np.isfinite(p)
    denom = float(np.sum(t[ok] ** 2))
    if denom == 0.0:
        return float("nan")
    return 1.0 - float(np.sum((p[ok] - t[ok]) ** 2)) / denom


def lfc_scores(true_lfc: Any, pred_lfc: Any, k: int = 50) -> dict[str, float]:
    """The tutorial-style scores on the top-``k`` observed DEGs.

    Parameters
    ----------
    true_lfc, pred_lfc
        Observed and predicted log2 fold change per gene.
    k
        Number of top observed DEGs.

    Returns
    -------
    dict
        ``pearson``, ``spearman``, ``signed_precision``, ``skill`` (on the same genes) and ``k``.
    """
    t, p = _pair(true_lfc, pred_lfc)
    deg = top_k_degs(t, k)
    return {
        "pearson": pearson_top_k(t, p, features=deg),
        "spearman": spearman_top_k(t, p, features=deg),
        "signed_precision": signed_precision_at_k(t, p, k),
        "skill": skill(p[deg], t[deg]),
        "k": int(deg.size),
    }


def truth_scores(
    pred_change: Any,
    true_change: Any,
    responsive: Sequence[int] | np.ndarray,
    null: Sequence[int] | np.ndarray | None = None,
    change_std: Any = None,
) -> dict[str, float]:
    """Scores against an exactly known change (synthetic tissue).

    Parameters
    ----------
    pred_change
        Predicted change per gene, measured against the predictor's own factual prediction
        for the same cells (so reconstruction bias cancels).
    true_change
        Exact change per gene, in the same units.
    responsive
        Indices (or a boolean mask) of the niche-responsive genes.
    null
        Indices (or mask) of genes with no niche effect.
    change_std
        Per-gene spread of the predicted change across draws, in the same units: with
        :func:`cellina.evaluation.log2_change_std`, how far one cell's change moves across the
        draws; adds ``truth_calibration``.

    Returns
    -------
    dict
        ``truth_pearson`` and ``truth_skill`` on the responsive genes, ``truth_slope`` the
        least-squares slope through the origin of predicted on true change there (1: the right
        size, 0.1: a tenth of it), ``truth_cosine`` the cosine between the two there (the direction
        alone, whatever the size: see :func:`rescaled_skill`); ``null_change`` the
        root-mean-square predicted change on null genes and ``null_change_true`` the same for
        the truth (non-zero only through library normalisation); ``responsive_change_true``
        the root-mean-square true change on responsive genes, for scale; ``truth_auroc`` how well
        the size of the predicted change beyond the null genes' common change (their median: what
        library normalisation does to every gene) separates responsive from null genes (0.5: not
        at all; the exact change scores 1);
        with ``change_std``, ``truth_calibration`` the share of responsive genes whose true change
        lies within two spreads of the predicted one (``|true - pred| <= 2 * std``).
    """
    t, p = _pair(true_change, pred_change)
    resp = _as_index(responsive, t.shape[0], "responsive")
    if resp.size == 0:
        raise ValueError("`responsive` selects no genes.")
    out = {
        "truth_pearson": _correlation("pearson", t[resp], p[resp]),
        "truth_skill": skill(p[resp], t[resp]),
        "truth_slope": _slope(p[resp], t[resp]),
        "truth_cosine": _cosine(p[resp], t[resp]),
        "responsive_change_true": float(np.sqrt(np.mean(t[resp] ** 2))),
    }
    if change_std is not None:
        sd = as_vector(change_std, "change_std")
        if sd.shape != p.shape:
            raise ValueError(f"change_std has {sd.shape[0]} genes, pred_change {p.shape[0]}.")
        out["truth_calibration"] = calibration(p[resp], t[resp], sd[resp])
    if null is not None:
        nul = _as_index(null, t.shape[0], "null")
        out["null_change"] = float(np.sqrt(np.mean(p[nul] ** 2))) if nul.size else float("nan")
        out["null_change_true"] = float(np.sqrt(np.mean(t[nul] ** 2))) if nul.size else float("nan")
        # library normalisation moves every gene's change by one common amount (the null genes' change,
        # alike in all of them); a gene responds by what it changes beyond that
        shift = float(np.median(p[nul])) if nul.size else 0.0
        out["truth_auroc"] = separation_auroc(np.abs(p[resp] - shift), np.abs(p[nul] - shift))
    return out


def calibration(pred_change: Any, true_change: Any, change_std: Any, width: float = 2.0) -> float:
    """Share of genes whose true change lies within ``width`` spreads of the predicted change.

    ``|true - pred| <= width * std`` per gene; NaN for no gene. A spread of zero covers only an
    exactly right prediction.
    """
    p = np.asarray(pred_change, dtype=np.float64).ravel()
    t = np.asarray(true_change, dtype=np.float64).ravel()
    sd = np.asarray(change_std, dtype=np.float64).ravel()
    if not p.shape == t.shape == sd.shape:
        raise ValueError(f"pred_change {p.shape}, true_change {t.shape} and change_std {sd.shape} must match.")
    if (sd < 0).any() or not np.isfinite(sd).all():
        raise ValueError("change_std must be finite and non-negative.")
    if p.size == 0:
        return float("nan")
    return float(np.mean(np.abs(t - p) <= width * sd))


def separation_auroc(positive: Any, negative: Any) -> float:
    """Area under the ROC curve of scores that should be larger for ``positive`` than ``negative``.

    The Mann-Whitney statistic: the chance that a random positive scores above a random negative,
    ties counting one half. NaN when either side is empty.
    """
    from scipy.stats import rankdata

    pos, neg = np.asarray(positive, dtype=np.float64).ravel(), np.asarray(negative, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def rescaled_skill(cosine: Any, slope: Any) -> np.ndarray:
    """Skill of a predicted change rescaled to ``slope``, from its cosine with the true change.

    With ``b`` the slope through the origin of predicted on true change and ``c`` their cosine,
    skill is exactly ``2 b - b^2 / c^2``: the direction fixes a parabola in the size. It peaks at
    ``b = c^2`` with skill ``c^2``, so no rescaling of a prediction scores above its squared
    cosine, and the best-scoring size is below the true one (slope ``c^2 < 1``) whenever the
    direction is not exact. At the right size (``b = 1``) skill is ``2 - 1 / c^2``. A skill of at
    least ``s`` at a slope of at least ``b`` therefore needs ``c^2 >= b^2 / (2 b - s)``.

    Parameters
    ----------
    cosine
        Cosine between predicted and true change (``truth_cosine`` of :func:`truth_scores`).
    slope
        Slope to rescale to.

    Returns
    -------
    numpy.ndarray
        The skill, broadcast over the inputs; NaN where the cosine is not positive (no positive
        rescaling helps such a prediction).
    """
    c = np.asarray(cosine, dtype=np.float64)
    b = np.asarray(slope, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(c > 0, 2.0 * b - b**2 / c**2, np.nan)


def _cosine(pred: np.ndarray, true: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(true)
    denom = float(np.sqrt(np.sum(pred[ok] ** 2) * np.sum(true[ok] ** 2)))
    return float(np.sum(pred[ok] * true[ok]) / denom) if denom > 0 else float("nan")


def _slope(pred: np.ndarray, true: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(true)
    denom = float(np.sum(true[ok] ** 2))
    return float(np.sum(pred[ok] * true[ok]) / denom) if denom > 0 else float("nan")


def _as_index(sel: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(sel)
    if arr.dtype == bool:
        if arr.shape[0] != n:
            raise ValueError(f"boolean `{name}` has length {arr.shape[0]}, expected {n}.")
        return np.flatnonzero(arr)
    arr = arr.astype(int).ravel()
    if arr.size and (arr.min() < -n or arr.max() >= n):
        raise ValueError(f"`{name}` has gene indices outside [0, {n}).")
    return arr


def _subsample(n: int, max_cells: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_cells is None or n <= max_cells:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(max_cells), replace=False))


def energy_distance(
    x: Any,
    y: Any,
    space: str = "pca",
    n_comps: int = 30,
    normalize: bool = True,
    max_cells: int | None = 1000,
    seed: int = 0,
) -> float:
    """Energy distance between two cell populations.

    ``E = 2 E|X - Y| - E|X - X'| - E|Y - Y'|`` with Euclidean distances, estimated over all
    pairs including each cell with itself (the V-statistic), so it is never negative and is
    exactly 0 for identical sets.

    Parameters
    ----------
    x, y
        Cells x genes matrices (dense or sparse), e.g. predicted and observed cells.
    space
        ``"pca"``: log1p-normalised expression projected on the first ``n_comps`` principal
        components of the pooled (subsampled) cells; ``"log"``: the log1p-normalised genes.
    n_comps
        Principal components (clipped to the data's rank bound).
    normalize
        Treat inputs as counts/expression and apply log1p(CP10K) per cell; ``False`` uses them
        as they are (already a log or latent space).
    max_cells
        Each population is subsampled to at most this many cells (``None``: all cells),
        deterministically from ``seed``, so the cost stays bounded.
    seed
        Seed for the subsample and the PCA solver.

    Returns
    -------
    float
    """
    if space not in {"pca", "log"}:
        raise ValueError(f"`space` must be 'pca' or 'log', got {space!r}.")
    a = as_matrix(x, "x")
    b = as_matrix(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`x` has {a.shape[1]} features but `y` has {b.shape[1]}.")
    rng = np.random.default_rng(seed)
    a = a[_subsample(a.shape[0], max_cells, rng)]
    b = b[_subsample(b.shape[0], max_cells, rng)]
    if normalize:
        a = log1p_normalize(a)
        b = log1p_normalize(b)
    # Only the bounded subsample is made dense.
    a = a.toarray() if sp.issparse(a) else a
    b = b.toarray() if sp.issparse(b) else b
    if space == "pca":
        pooled = np.vstack([a, b])
        n_eff = min(int(n_comps), pooled.shape[0] - 1, pooled.shape[1])
        if n_eff >= 1:
            from sklearn.decomposition import PCA

            pca = PCA(n_components=n_eff, svd_solver="auto", random_state=seed).fit(pooled)
            a = pca.transform(a)
            b = pca.transform(b)
    d_xy = cdist(a, b).mean()
    d_xx = cdist(a, a).mean()
    d_yy = cdist(b, b).mean()
    return float(max(2.0 * d_xy - d_xx - d_yy, 0.0))
