"""Disentanglement probes: how much a latent says about a label, overall and within groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def latent_probe_scores(
    latent: np.ndarray,
    labels: Sequence[Any],
    test_size: float = 0.3,
    seed: int = 0,
    max_cells: int | None = 20000,
) -> dict[str, float]:
    """Balanced accuracy of a logistic regression predicting ``labels`` from ``latent``.

    Fitted on a stratified random part of the cells and scored on the rest, so the number
    says how much label information the representation carries, not how well it is memorised.

    Parameters
    ----------
    latent
        Cells x dimensions representation.
    labels
        One label per cell.
    test_size
        Fraction of cells held out for scoring.
    seed
        Seed of the split and the subsample.
    max_cells
        Deterministic subsample for speed (``None``: all cells).

    Returns
    -------
    dict
        ``balanced_accuracy`` and ``chance`` (1 / number of classes).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(latent, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"`latent` has {x.shape[0]} cells but `labels` has {y.shape[0]}.")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"`labels` needs at least two classes, got {classes.tolist()}.")
    rng = np.random.default_rng(seed)
    if max_cells is not None and x.shape[0] > max_cells:
        keep = np.sort(rng.choice(x.shape[0], size=max_cells, replace=False))
        x, y = x[keep], y[keep]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x_tr), y_tr)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_te, clf.predict(scaler.transform(x_te)))),
        "chance": 1.0 / classes.size,
    }


def within_group_probe_scores(
    latent: np.ndarray,
    labels: Sequence,
    groups: Sequence,
    *,
    min_cells_per_class: int = 10,
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`latent_probe_scores` within each group (e.g. domain within each cell type), cell-weighted.

    A representation that keeps cell identity also predicts the domain wherever a type lives in
    one domain only (malignant cells in the tumour); scoring within each type asks only whether
    it carries the domain beyond identity. Groups whose labels have fewer than two classes with
    ``min_cells_per_class`` cells are skipped (their cells are left out of the average).

    Returns
    -------
    dict
        ``balanced_accuracy`` and ``chance``, both averaged over the scored groups weighted by
        their number of cells, and ``n_groups``.
    """
    x = np.asarray(latent, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    g = np.asarray(groups).astype(str)
    if not (x.shape[0] == y.shape[0] == g.shape[0]):
        raise ValueError(
            f"`latent`, `labels` and `groups` must have one row per cell; got {x.shape[0]}, {y.shape[0]} "
            f"and {g.shape[0]}."
        )
    scores, chances, weights = [], [], []
    for group in np.unique(g):
        members = g == group
        classes, counts = np.unique(y[members], return_counts=True)
        kept = np.isin(y, classes[counts >= min_cells_per_class]) & members
        if np.unique(y[kept]).size < 2:
            continue
        out = latent_probe_scores(x[kept], y[kept], **kwargs)
        scores.append(out["balanced_accuracy"])
        chances.append(out["chance"])
        weights.append(int(kept.sum()))
    if not weights:
        raise ValueError("no group has two label classes with enough cells to probe.")
    return {
        "balanced_accuracy": float(np.average(scores, weights=weights)),
        "chance": float(np.average(chances, weights=weights)),
        "n_groups": len(weights),
    }


def niche_probe_score(
    latent: np.ndarray, niche: np.ndarray, labels: Sequence[Any], n_components: int = 5, seed: int = 0
) -> float:
    """How much of the niche, beyond the cell type, a latent carries: a cross-validated partial R^2.

    The niche is summarised by the first ``n_components`` principal components of the niche
    features; a ridge regression predicts them from the cell-type one-hot alone and from the
    one-hot plus ``latent`` (standardised), each scored on held-out cells (R^2 over all
    components, weighted by their variance). The score is the share of the variance the type
    leaves unexplained that the latent explains: 0 means the latent says nothing about the niche
    that the type does not, 1 that it knows the rest exactly; for ``z`` anything above 0 is niche
    information the decoder can use instead of ``s`` (a leak), which shrinks counterfactuals.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(latent, dtype=np.float64)
    y = np.asarray(niche, dtype=np.float64)
    types = np.asarray(labels).astype(str)
    if not x.shape[0] == y.shape[0] == types.shape[0]:
        raise ValueError(f"latent ({x.shape[0]}), niche ({y.shape[0]}) and labels ({types.shape[0]}) differ in cells.")
    onehot = (types[:, None] == np.unique(types)[None, :]).astype(np.float64)
    parts = train_test_split(np.arange(x.shape[0]), test_size=0.3, random_state=seed, stratify=types)
    train, test = parts
    pca = PCA(n_components=min(n_components, y.shape[1]), random_state=seed).fit(y[train])
    target = pca.transform(y)
    scaled = StandardScaler().fit(x[train]).transform(x)

    def r2(features: np.ndarray) -> float:
        fit = Ridge(alpha=1.0).fit(features[train], target[train])
        resid = ((target[test] - fit.predict(features[test])) ** 2).sum()
        return 1.0 - resid / ((target[test] - target[train].mean(0)) ** 2).sum()

    by_type = r2(onehot)
    return float((r2(np.hstack([onehot, scaled])) - by_type) / max(1.0 - by_type, 1e-12))


def disentanglement_scores(
    z: np.ndarray,
    s: np.ndarray | None,
    labels: np.ndarray,
    domains: np.ndarray,
    seed: int,
    niche: np.ndarray | None = None,
) -> dict[str, float]:
    """The protocol's probes of the intrinsic latent ``z`` and, when given, the niche latent ``s``.

    The domain is probed within each cell type (identity, e.g. malignant cells living in the
    tumour, is not a leak) and pooled; the cell type from ``z``. With the cells' niche features
    (``niche``), also how much of the niche beyond the type each latent carries
    (:func:`niche_probe_score`: ``niche_from_z``, the leak, and ``niche_from_s``).
    """
    from_z = within_group_probe_scores(z, domains, labels, seed=seed)
    out = {"domain_from_z": from_z["balanced_accuracy"]}
    if s is not None:
        out["domain_from_s"] = within_group_probe_scores(s, domains, labels, seed=seed)["balanced_accuracy"]
    out["celltype_from_z"] = latent_probe_scores(z, labels, seed=seed)["balanced_accuracy"]
    out["domain_chance"] = from_z["chance"]
    out["domain_from_z_pooled"] = latent_probe_scores(z, domains, seed=seed)["balanced_accuracy"]
    if niche is not None:
        out["niche_from_z"] = niche_probe_score(z, niche, labels, seed=seed)
        if s is not None:
            out["niche_from_s"] = niche_probe_score(s, niche, labels, seed=seed)
    return out
