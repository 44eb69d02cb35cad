"""Evaluation of tissue-graph counterfactuals.

Log-fold changes as in the published tutorial (:func:`get_lfc`), pseudobulk shifts per cell
type, DEG scores (Pearson / Spearman on the top-k genes, signed precision@k), truth-based
scores (Pearson and skill on niche-responsive genes, change on null genes), the energy
distance between populations, the mean-shift baseline and the leave-one-out protocol runner.

Names load on first use, so importing the package (or one of its modules, as the
counterfactual layer does for pseudobulk shifts) pulls in nothing else: the runner loads the
model (and torch) when it is called.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_NAMES: dict[str, str] = {
    "mean_shift_baseline": "_baselines",
    "mean_shift_delta": "_baselines",
    "LeaveOneOutConfig": "_config",
    "get_lfc": "_lfc",
    "global_pseudobulk_lfc": "_lfc",
    "log2_change_std": "_lfc",
    "mean_normalized_expression": "_lfc",
    "normalize_counts": "_lfc",
    "perturbation_table": "_lfc",
    "pseudobulk": "_lfc",
    "pseudobulk_lfc": "_lfc",
    "safe_log2_fold_change": "_lfc",
    "calibration": "_metrics",
    "energy_distance": "_metrics",
    "lfc_scores": "_metrics",
    "pearson_top_k": "_metrics",
    "rescaled_skill": "_metrics",
    "signed_precision_at_k": "_metrics",
    "skill": "_metrics",
    "spearman_top_k": "_metrics",
    "top_k_degs": "_metrics",
    "truth_scores": "_metrics",
    "separation_auroc": "_metrics",
    "latent_probe_scores": "_probes",
    "within_group_probe_scores": "_probes",
    "niche_probe_score": "_probes",
    "LeaveOneOutResult": "_protocol",
    "leave_one_out": "_protocol",
    "responsive_genes": "_truth",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module 'cellina.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
