"""Do the niche features carry a held-out type's niche response? A linear diagnostic on a development world.

A ridge regression from the first 20 principal components of the niche features to log-normalised
expression is fitted on the held-out type's training cells (healthy and margin), then asked the same
question the model is asked by the leave-one-type-out protocol: the change when the control cells get
niches pooled from 50 donors of the target domain. It is scored against the world's exact change like
the model (truth Pearson, skill, slope). A slope near 1 here and far below 1 for the model means the
information is in the features and the model loses it (docs/benchmarks.md, "Why niche responses shrink").

Usage::

    python benchmarks/world_ridge.py dev_two_channels Myeloid
"""

from __future__ import annotations

import sys

import numpy as np
import scipy.sparse as sp


def _log_normalised(counts) -> np.ndarray:
    dense = np.asarray(counts.todense() if sp.issparse(counts) else counts, dtype=float)
    return np.log1p(dense / dense.sum(1, keepdims=True) * 1e4)


def _change(after: np.ndarray, before: np.ndarray) -> np.ndarray:
    """Population log2 fold change between two log-normalised predictions."""
    ea, eb = np.expm1(np.clip(after, 0, None)).mean(0), np.expm1(np.clip(before, 0, None)).mean(0)
    return np.log2((ea + 1e-6) / (eb + 1e-6))


def main(world: str, holdout: str) -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge

    from cellina.counterfactual import pooled_niche_features, sample_donors, spatial_features_record
    from cellina.datasets import list_worlds, make_world, truth_for
    from cellina.evaluation import LeaveOneOutConfig, truth_scores
    from cellina.evaluation._holdout import prepare_holdout  # the protocol's own split and graph

    if world not in list_worlds("development"):
        raise SystemExit(f"{world!r} is not a development world.")
    adata = make_world(world)
    cfg = LeaveOneOutConfig(batch_key="slide", library_key="slide", bandwidth=20.0, max_neighbours=50)
    tissue = prepare_holdout(adata, holdout, cfg)
    truth = truth_for(adata)
    donors = sample_donors(tissue.control, tissue.pool, 50, np.random.default_rng(0))
    counts = tissue.work.layers["counts"]
    phi = np.asarray(tissue.work.obsm["spatial_x"])
    phi_cf = pooled_niche_features(counts, donors, spatial_features_record(tissue.work, "spatial_x"))
    expression = _log_normalised(counts)
    cells = np.setdiff1d(np.flatnonzero(tissue.labels == holdout), tissue.target)
    pca = PCA(20, random_state=0).fit(phi[tissue.train])
    ridge = Ridge(alpha=1.0).fit(pca.transform(phi[cells]), expression[cells])
    factual, moved = ridge.predict(pca.transform(phi[tissue.control])), ridge.predict(pca.transform(phi_cf))
    before, after = truth.mean(tissue.control), truth.edge(tissue.control, donors)
    true_change = np.log2(after.mean(0) / after.sum(1).mean() + 1e-12) - np.log2(
        before.mean(0) / before.sum(1).mean() + 1e-12
    )
    scores = truth_scores(_change(moved, factual), true_change, truth.responsive(holdout), truth.null_genes())
    print(world, holdout, {k: round(float(v), 3) for k, v in scores.items() if k.startswith("truth")})


if __name__ == "__main__":
    main(*sys.argv[1:3])
