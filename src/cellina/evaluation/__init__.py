"""Evaluation of tissue-graph counterfactuals.

Log-fold changes as in the published tutorial (:func:`get_lfc`), pseudobulk shifts per cell
type, DEG scores (Pearson / Spearman on the top-k genes, signed precision@k), truth-based
scores (Pearson and skill on niche-responsive genes, change on null genes), the energy
distance between populations, the mean-shift baseline and the leave-one-out protocol runner.

Importing this package needs only numpy, scipy and pandas; the runner loads the model
(and torch) when it is called.
"""

from ._baselines import mean_shift_baseline, mean_shift_delta
from ._config import LeaveOneOutConfig
from ._lfc import (
    get_lfc,
    global_pseudobulk_lfc,
    mean_normalized_expression,
    normalize_counts,
    perturbation_table,
    pseudobulk,
    pseudobulk_lfc,
    safe_log2_fold_change,
)
from ._metrics import (
    energy_distance,
    lfc_scores,
    pearson_top_k,
    signed_precision_at_k,
    skill,
    spearman_top_k,
    top_k_degs,
    truth_scores,
)
from ._probes import latent_probe_scores, within_group_probe_scores
from ._protocol import LeaveOneOutResult, leave_one_out
from ._truth import responsive_genes

__all__ = [
    "LeaveOneOutConfig",
    "LeaveOneOutResult",
    "energy_distance",
    "get_lfc",
    "global_pseudobulk_lfc",
    "latent_probe_scores",
    "leave_one_out",
    "responsive_genes",
    "within_group_probe_scores",
    "lfc_scores",
    "mean_normalized_expression",
    "mean_shift_baseline",
    "mean_shift_delta",
    "normalize_counts",
    "pearson_top_k",
    "perturbation_table",
    "pseudobulk",
    "pseudobulk_lfc",
    "safe_log2_fold_change",
    "signed_precision_at_k",
    "skill",
    "spearman_top_k",
    "top_k_degs",
    "truth_scores",
]
