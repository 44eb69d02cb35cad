"""Spatial graph, niche features and neighbour perturbation (no Qt, no napari)."""

from ._composition import n_niche_features, record_codes
from ._draws import distinct_draws
from ._features import (
    TRANSFORMS,
    aggregate_neighbours,
    compute_spatial_features,
    detect_representation,
    expression_representation,
    representation_matrix,
)
from ._graph import KERNELS, spatial_neighbors
from ._perturb import _node_perturbation as _node_perturbation
from ._perturb import make_neighbor_perturbation, make_perturbed_expression
from ._reach import niche_reach_curve
from ._reach_curve import NicheReachCurve
from ._validation import CellinaKeyError, CellinaTypeError, check_positions

__all__ = [
    "KERNELS",
    "NicheReachCurve",
    "TRANSFORMS",
    "CellinaKeyError",
    "CellinaTypeError",
    "aggregate_neighbours",
    "check_positions",
    "compute_spatial_features",
    "detect_representation",
    "distinct_draws",
    "expression_representation",
    "make_neighbor_perturbation",
    "make_perturbed_expression",
    "n_niche_features",
    "niche_reach_curve",
    "record_codes",
    "representation_matrix",
    "spatial_neighbors",
]
