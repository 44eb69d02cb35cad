"""Reference predictors that use no spatial model."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ._utils import as_matrix, as_vector, column_mean, log1p_normalize


def _log_mean(x: Any, target_sum: float) -> np.ndarray:
    return column_mean(log1p_normalize(x, target_sum))


def mean_shift_delta(
    source_reference: Any,
    target_reference: Any,
    source_groups: Any = None,
    target_groups: Any = None,
    target_sum: float = 1e4,
) -> np.ndarray:
    """The average log-expression shift between two domains observed in reference cells.

    Expression is log1p of counts scaled to ``target_sum`` per cell. Without groups the shift
    is ``mean(target_reference) - mean(source_reference)`` over all reference cells. With
    groups (the cell types other than the held-out one), the shift is computed per group
    present in both domains and then averaged with equal weight per group, so an abundant
    type does not dominate (the usual "mean shift across other cell types" in leave-one-type-out
    perturbation benchmarks).

    Parameters
    ----------
    source_reference, target_reference
        Cells x genes counts of the reference cells in the source and the target domain.
    source_groups, target_groups
        Optional group label per reference cell (both or neither).
    target_sum
        Per-cell normalisation total.

    Returns
    -------
    numpy.ndarray
        One shift per gene, natural-log units.
    """
    src = as_matrix(source_reference, "source_reference")
    tgt = as_matrix(target_reference, "target_reference")
    if src.shape[1] != tgt.shape[1]:
        raise ValueError(f"`source_reference` has {src.shape[1]} genes but `target_reference` has {tgt.shape[1]}.")
    if (source_groups is None) != (target_groups is None):
        raise ValueError("give both `source_groups` and `target_groups`, or neither.")
    if source_groups is None:
        return _log_mean(tgt, target_sum) - _log_mean(src, target_sum)
    gs = np.asarray(source_groups).astype(str).ravel()
    gt = np.asarray(target_groups).astype(str).ravel()
    if gs.shape[0] != src.shape[0]:
        raise ValueError(f"`source_groups` has {gs.shape[0]} labels for {src.shape[0]} cells.")
    if gt.shape[0] != tgt.shape[0]:
        raise ValueError(f"`target_groups` has {gt.shape[0]} labels for {tgt.shape[0]} cells.")
    shared = sorted(set(gs) & set(gt))
    if not shared:
        raise ValueError("no group is present in both the source and the target reference cells.")
    deltas = [_log_mean(tgt[gt == g], target_sum) - _log_mean(src[gs == g], target_sum) for g in shared]
    return np.mean(deltas, axis=0)


def mean_shift_baseline(
    control: Any,
    source_reference: Any = None,
    target_reference: Any = None,
    source_groups: Any = None,
    target_groups: Any = None,
    delta: Any = None,
    target_sum: float = 1e4,
) -> np.ndarray:
    """Predict the counterfactual of control cells as their own expression plus the mean shift.

    Each control cell's log1p(CP``target_sum``) expression is moved by the per-gene shift of
    :func:`mean_shift_delta` (computed from the reference cells, or given as ``delta``) and
    mapped back with ``expm1`` (negative values clipped to 0). The result is on the normalised
    scale, which :func:`cellina.evaluation.get_lfc` re-normalises like any prediction.

    Parameters
    ----------
    control
        Cells x genes counts of the control cells (the held-out type in the source domain).
    source_reference, target_reference, source_groups, target_groups, target_sum
        See :func:`mean_shift_delta`.
    delta
        Precomputed per-gene shift (natural-log units); replaces the reference cells.

    Returns
    -------
    numpy.ndarray
        Control cells x genes predicted expression (dense: one row per control cell only).
    """
    ctrl = as_matrix(control, "control")
    if delta is None:
        if source_reference is None or target_reference is None:
            raise ValueError("give `source_reference` and `target_reference`, or `delta`.")
        delta = mean_shift_delta(source_reference, target_reference, source_groups, target_groups, target_sum)
    d = as_vector(delta, "delta")
    if d.shape[0] != ctrl.shape[1]:
        raise ValueError(f"`delta` has {d.shape[0]} genes but `control` has {ctrl.shape[1]}.")
    logc = log1p_normalize(ctrl, target_sum)
    logc = logc.toarray() if sp.issparse(logc) else logc
    return np.clip(np.expm1(logc + d[None, :]), 0.0, None)
