"""A range for each gene's edge change: what the model cannot settle, made visible.

The spread across donor draws describes the donors only, while a predicted niche response is mostly off by
its size: noisy niche features shrink it, and dividing the change in ``s`` by the niche's reliability restores
it on some tissues and overshoots on others. The range spans both answers, the plain and the corrected change,
and widens each end by ``width`` times a spread that adds in quadrature the per-cell spread across draws and
the model's error on the other cell types it can be checked against (:mod:`._checked`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._borrow import MAX_REFERENCE_CELLS, MIN_REFERENCE_CELLS
from ._checked import CHECKED_ERROR, checked_errors

#: how many spreads widen each end of the range
RANGE_WIDTH = 2.0


def focal_change(model: Any, adata: Any, focal: np.ndarray, donors: np.ndarray, options: dict, factual: Any):
    """The focal cells' population log2 change under pooled donors and its per-cell spread across draws (zero
    with one draw), against ``factual`` (their factual expression at library 1e4)."""
    from cellina.evaluation import log2_change_std, mean_normalized_expression, safe_log2_fold_change

    moved, std = model.get_counterfactual_expression(
        focal, donors, adata=adata, precomputed=False, library_size=1e4, return_std=True, **options
    )
    change = safe_log2_fold_change(mean_normalized_expression(moved), mean_normalized_expression(factual))
    return change, log2_change_std(moved, std)


def change_range(
    model: Any,
    adata: Any,
    focal: np.ndarray,
    donors: np.ndarray,
    options: dict,
    exclude: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    max_cells: int = MAX_REFERENCE_CELLS,
    min_cells: int = MIN_REFERENCE_CELLS,
    width: float = RANGE_WIDTH,
) -> pd.DataFrame:
    """Per gene: ``lfc`` (no correction), ``lfc_corrected`` (the full correction), ``draw_spread``,
    ``checked_error`` and the range ``low`` to ``high``.

    ``options`` are the counterfactual's (``n_neighbours``, ``n_draws``, ``seed``, ``batch_size``,
    ``exclude_indices``; ``disattenuate`` is set here). ``attrs`` records the width and the checked types.
    """
    if not (isinstance(width, int | float) and not isinstance(width, bool) and np.isfinite(width) and width >= 0):
        raise ValueError(f"width={width!r} must be a non-negative number (spreads on each side of the range).")
    factual = model.get_expression(adata=adata, indices=focal, batch_size=options.get("batch_size"), library_size=1e4)
    plain, draw_spread = focal_change(model, adata, focal, donors, {**options, "disattenuate": 0.0}, factual)
    corrected, _ = focal_change(model, adata, focal, donors, {**options, "disattenuate": 1.0}, factual)
    checked = checked_errors(
        model, adata, focal, donors, {**options, "disattenuate": 0.0}, exclude, reference, max_cells, min_cells,
        options.get("seed", 0),
    )  # fmt: skip
    spread = np.sqrt(draw_spread**2 + checked[CHECKED_ERROR].to_numpy() ** 2)
    table = pd.DataFrame(
        {
            "lfc": plain,
            "lfc_corrected": corrected,
            "draw_spread": draw_spread,
            CHECKED_ERROR: checked[CHECKED_ERROR].to_numpy(),
            "low": np.minimum(plain, corrected) - width * spread,
            "high": np.maximum(plain, corrected) + width * spread,
        },
        index=pd.Index(adata.var_names, name="gene"),
    )
    table.attrs.update(width=float(width), n_focal=int(focal.size), checked_types=checked.attrs["checked_types"])
    return table
