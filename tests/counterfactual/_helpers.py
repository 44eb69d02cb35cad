"""Shared by the population-change test modules (borrowed answer, range): the small tissue's focal cells and
donors, and a population change recomputed by hand from the model's own calls."""

from __future__ import annotations

import numpy as np

from cellina.evaluation import log2_change_std, mean_normalized_expression, safe_log2_fold_change


def obs(model, key):
    return model.adata.obs[key].astype(str).to_numpy()


def focal_and_donors(model):
    """Up to 60 healthy Epithelial cells, and every tumour cell as a donor."""
    types, domains = obs(model, "coarse_type"), obs(model, "domain")
    focal = np.flatnonzero((types == "Epithelial") & (domains == "healthy"))[:60]
    return focal, np.flatnonzero(domains == "tumour")


def change_by_hand(model, cells, donors, disattenuate, n_draws):
    """The population log2 change of ``cells`` under pooled donors (10 per cell, seed 3) and the per-cell spread
    across the draws."""
    factual = model.get_expression(indices=cells, library_size=1e4)
    moved, std = model.get_counterfactual_expression(
        cells, donors, precomputed=False, n_neighbours=10, n_draws=n_draws, seed=3, library_size=1e4,
        disattenuate=disattenuate, return_std=True,
    )  # fmt: skip
    change = safe_log2_fold_change(mean_normalized_expression(moved), mean_normalized_expression(factual))
    return change, log2_change_std(moved, std)
