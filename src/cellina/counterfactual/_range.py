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

from ._borrow import MAX_REFERENCE_CELLS, MIN_REFERENCE_CELLS, population_change_and_spread
from ._checked import CHECKED_ERROR, checkable_types, checked_errors

#: how many spreads widen each end of the range
RANGE_WIDTH = 2.0
#: donor draws the range was judged with; the command line and the plugin draw at least this many for it
RANGE_DRAWS = 5


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
    The checked types are found first, so a focal selection that cannot be checked is refused before any
    counterfactual runs. ``draw_spread`` is a per-cell spread (how far one focal cell's change moves across the
    draws), not a standard error of the focal mean; the rule that judged the range used it as it is.
    """
    width = check_width(width)
    groups = checkable_types(model, adata, focal, donors, exclude, reference, max_cells, min_cells, options["seed"])
    factual = model.get_expression(adata=adata, indices=focal, batch_size=options["batch_size"], library_size=1e4)
    plain_options, corrected_options = {**options, "disattenuate": 0.0}, {**options, "disattenuate": 1.0}
    plain, draw_spread = population_change_and_spread(model, adata, focal, donors, plain_options, factual)
    corrected, _ = population_change_and_spread(model, adata, focal, donors, corrected_options, factual)
    checked = checked_errors(model, adata, focal, donors, plain_options, checked=groups)
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
    table.attrs.update(
        width=width,
        n_draws=int(options["n_draws"]),
        n_focal=int(focal.size),
        checked_types=checked.attrs["checked_types"],
    )
    return table


def check_width(width: Any) -> float:
    """Spreads on each side of the range: a non-negative number."""
    number = isinstance(width, int | float | np.integer | np.floating) and not isinstance(width, bool | np.bool_)
    if not (number and np.isfinite(width) and width >= 0):
        raise ValueError(f"width={width!r} must be a non-negative number (spreads on each side of the range).")
    return float(width)
