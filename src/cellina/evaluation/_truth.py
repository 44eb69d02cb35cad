"""Exact counterfactual truth of :mod:`cellina.datasets` tissues, as the protocol scores against it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._lfc import mean_normalized_expression, safe_log2_fold_change

PROGRAMME_COLUMN = "cellina_programme"


def population_lfc(pred: Any, factual: Any) -> np.ndarray:
    """log2 ratio of the mean library-normalised expression of two predictions for the same cells."""
    return safe_log2_fold_change(mean_normalized_expression(pred), mean_normalized_expression(factual))


def resolve_truth(adata: Any, truth: bool | str) -> bool:
    """Whether to score against the exact truth: ``"auto"`` when ``adata`` has one, or as told."""
    from cellina.datasets import has_truth

    has = has_truth(adata)
    if truth == "auto":
        return has
    if truth is True and not has:
        raise ValueError(
            "truth=True needs a tissue from cellina.datasets.synthetic_tissue or a world from "
            f"cellina.datasets.make_world (adata.uns has no exact truth or adata.var[{PROGRAMME_COLUMN!r}] is missing)."
        )
    if truth not in (True, False):
        raise ValueError(f"`truth` must be 'auto', True or False, got {truth!r}.")
    return bool(truth)


def responsive_genes(adata: Any, cell_type: str) -> np.ndarray:
    """Boolean mask of the genes that move with the niche in ``cell_type`` on a synthetic tissue or world.

    On a :func:`cellina.datasets.synthetic_tissue` tissue these are the shared response programmes
    (``composition_response``, ``ligand_response``) and the genes of the cell type's own
    composition response (its ``type_response`` block and, in ligand senders, the ligand genes);
    on a :func:`cellina.datasets.make_world` world, the genes any channel moves in that type.

    Parameters
    ----------
    adata
        A tissue or world from :mod:`cellina.datasets`.
    cell_type
        A coarse type of that tissue (another label selects only the shared programmes of a tissue).

    Returns
    -------
    numpy.ndarray
        ``(n_vars,)`` booleans.
    """
    from cellina.datasets import has_truth, truth_for

    if not has_truth(adata):
        raise ValueError(
            f"adata.var has no {PROGRAMME_COLUMN!r}: only cellina.datasets tissues and worlds "
            "know their responsive genes."
        )
    return truth_for(adata).responsive(cell_type)


class ExactTruth:
    """The exact factual and counterfactual means of the control cells, and the genes to score on."""

    def __init__(self, adata: Any, control: np.ndarray, holdout: str) -> None:
        from cellina.datasets import truth_for

        self.truth = truth_for(adata)
        self.control = control
        self.factual = self.truth.mean(control)
        self.responsive = self.truth.responsive(holdout)
        self.null = self.truth.null_genes()
        self.counterfactual: dict[str, np.ndarray] = {}
        self.changes: dict[str, np.ndarray] = {}

    def _set(self, perturbation: str, counterfactual: np.ndarray) -> None:
        self.counterfactual[perturbation] = counterfactual
        self.changes[perturbation] = population_lfc(counterfactual, self.factual)

    def set_node(self, table: Mapping[str, Mapping[str, float]], groupby: str, renormalize: bool = True) -> None:
        """The exact change when each sender type's genes are shifted by ``table``."""
        self._set("node", self.truth.node(self.control, table, groupby=groupby, renormalize=renormalize))

    def set_edge(self, donors: Sequence | np.ndarray) -> None:
        """The exact change when each control cell gets exactly these donors (equal weights).

        ``donors`` is ``(n_control, k)``, or ``(n_draws, n_control, k)`` for a prediction averaged
        over draws: the exact counterfactual is then the mean over the same draws.
        """
        donors = np.asarray(donors)
        if donors.ndim == 2:
            donors = donors[None]
        counterfactual = sum(self.truth.edge(self.control, draw) for draw in donors) / donors.shape[0]
        self._set("edge", counterfactual)
