"""How far the model's edge change is off on the cell types it can be checked against.

The focal cells' own answer cannot be checked: they are not observed in the donors' niches. Other cell
types can be: their cells among the donors live in those niches. For each other registered type with
enough reference cells (its cells where the focal cells live, as the borrowed answer takes them) and
enough cells among the donors, the model's population change of the reference cells under the donors is
compared with the observed change from those reference cells to the type's donor cells. The per-gene root
mean square of these errors over the types is a spread the model earned on data: it holds the model's
bias on the niche (a change predicted too short is off by the missing part) and what the observed change
holds besides the niche (count noise, the domains' other differences), so it is wide where either is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._borrow import MAX_REFERENCE_CELLS, MIN_REFERENCE_CELLS, population_change, reference_cells
from ._novelty import registered_cell_types

#: the column of :func:`checked_errors` that holds the per-gene root mean square over the checked types
CHECKED_ERROR = "checked_error"


class NothingToCheck(ValueError):
    """The model cannot be checked for these focal cells: no other type qualifies, or the model has no cell
    types (``without_types``)."""

    def __init__(self, message: str, without_types: bool = False):
        super().__init__(message)
        self.without_types = without_types


#: half a count over a group's total counts: the pseudo-count of the observed change, so a gene no cell of
#: a group expresses gives a finite change
HALF_COUNT = 0.5


def observed_change(counts: Any, before: np.ndarray, after: np.ndarray, scale: float = 1e4) -> np.ndarray:
    """log2 change of the mean library-normalised counts from cells ``before`` to cells ``after``, with one
    pseudo-count added to both means: half a count of the group with fewer counts in all, on the normalised
    scale. (It pulls the change of a gene seen a few times towards 0, which the predicted change, from
    expected counts, does not need.)"""
    from cellina.evaluation import mean_normalized_expression

    means, pseudo = [], []
    for cells in (before, after):
        block = counts[cells]
        means.append(mean_normalized_expression(block, scale=scale))
        pseudo.append(HALF_COUNT * scale / max(float(block.sum()), 1.0))
    eps = max(pseudo)
    return np.log2((means[1] + eps) / (means[0] + eps))


def checkable_types(
    model: Any,
    adata: Any,
    focal: np.ndarray,
    donors: np.ndarray,
    exclude: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    max_cells: int = MAX_REFERENCE_CELLS,
    min_cells: int = MIN_REFERENCE_CELLS,
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{type: (reference cells, donor cells)}`` for every type the model can be checked against: one that
    :func:`reference_cells` gives reference cells and of which at least ``min_cells`` donors (outside
    ``exclude``) are. Cheap (no model call), so callers can refuse before any counterfactual runs; raises
    :class:`NothingToCheck` when no type qualifies."""
    labels = registered_cell_types(model, adata)
    try:
        groups = reference_cells(model, adata, focal, donors, exclude, reference, max_cells, min_cells, seed)
    except ValueError as error:  # no cell types, or no other type with reference cells
        raise NothingToCheck(str(error), without_types=labels is None) from None
    usable = np.ones(adata.n_obs, dtype=bool)
    if exclude is not None:
        usable[exclude] = False
    checked = {}
    for name, cells in groups.items():
        after = donors[(labels[donors].astype(str) == name) & usable[donors]]
        if after.size >= min_cells:
            checked[name] = (cells, after)
    if not checked:
        raise NothingToCheck(
            f"No other cell type has {min_cells} or more cells among the donors and as reference cells, so the "
            "model's change cannot be checked anywhere; pass more donors (neighbour_indices) or lower "
            "min_reference_cells."
        )
    return checked


def checked_errors(
    model: Any,
    adata: Any,
    focal: np.ndarray,
    donors: np.ndarray,
    options: dict,
    exclude: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    max_cells: int = MAX_REFERENCE_CELLS,
    min_cells: int = MIN_REFERENCE_CELLS,
    seed: int = 0,
    checked: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """Per gene and checked type (:func:`checkable_types`, or ``checked`` when given): observed minus predicted
    log2 change; column :data:`CHECKED_ERROR` their root mean square over the types.

    ``options`` are the counterfactual's (``n_neighbours``, ``n_draws``, ``seed``, ``batch_size``,
    ``disattenuate``, ``exclude_indices``): the predicted change is the one :func:`population_change` gives
    with them. ``attrs`` records the reference and donor cells per checked type.
    """
    if checked is None:
        checked = checkable_types(model, adata, focal, donors, exclude, reference, max_cells, min_cells, seed)
    counts = model.registered_counts(adata)
    errors, sizes = {}, {}
    for name, (cells, after) in checked.items():
        predicted = population_change(model, adata, cells, donors, options)
        errors[f"error[{name}]"] = observed_change(counts, cells, after) - predicted
        sizes[name] = {"reference": int(cells.size), "donors": int(after.size)}
    table = pd.DataFrame(errors, index=pd.Index(adata.var_names, name="gene"))
    table.insert(0, CHECKED_ERROR, np.sqrt(np.mean(table.to_numpy() ** 2, axis=1)))
    table.attrs.update(checked_types=sizes, disattenuate=float(options.get("disattenuate", 0.0)))
    return table
