"""Synthetic spatial transcriptomics tissue with exact counterfactual truth.

:func:`synthetic_tissue` simulates slides with healthy, margin and tumour domains, ten fine cell
types in nine annotated coarse types, intrinsic gene programmes and two niche effects (a composition
effect with shared and type-specific response genes, and a ligand effect) that are exact functions of each cell's
neighbourhood on a stored true graph. Because the generative model is known, the expected
expression of any cell under any rewiring of its neighbourhood
(:func:`true_counterfactual_edge`) or any shift of its neighbours' expression
(:func:`true_counterfactual_node`) is available exactly, as are the factual means
(:func:`true_mean`). The design is described in :mod:`cellina.datasets._synthetic`.
"""

from cellina.datasets._errors import DatasetTypeError, PositionError, TruthKeyError
from cellina.datasets._params import (
    COARSE_TYPES,
    DOMAINS,
    FINE_TO_COARSE,
    FINE_TYPES,
    RESPONSIVE_PROGRAMMES,
    SHARED_RESPONSE_PROGRAMMES,
)
from cellina.datasets._synthetic import GRAPH_KEY, TRUTH_KEY, synthetic_tissue
from cellina.datasets._truth import true_counterfactual_edge, true_counterfactual_node, true_mean

__all__ = [
    "COARSE_TYPES",
    "DOMAINS",
    "FINE_TO_COARSE",
    "FINE_TYPES",
    "GRAPH_KEY",
    "RESPONSIVE_PROGRAMMES",
    "SHARED_RESPONSE_PROGRAMMES",
    "TRUTH_KEY",
    "DatasetTypeError",
    "PositionError",
    "TruthKeyError",
    "synthetic_tissue",
    "true_counterfactual_edge",
    "true_counterfactual_node",
    "true_mean",
]
