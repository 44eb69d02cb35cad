"""Import path used by the published Cellina tutorial and test suite.

``from cellina._spatial_utils import spatial_neighbors, compute_spatial_features``
(and the other names below, including the published private helper
``_node_perturbation``) keeps working; the implementations live in
:mod:`cellina.spatial` and :mod:`cellina.counterfactual`.
"""

from cellina.counterfactual import make_counterfactual_adata
from cellina.spatial import (
    _node_perturbation,
    compute_spatial_features,
    make_neighbor_perturbation,
    make_perturbed_expression,
    spatial_neighbors,
)

__all__ = [
    "_node_perturbation",
    "compute_spatial_features",
    "make_counterfactual_adata",
    "make_neighbor_perturbation",
    "make_perturbed_expression",
    "spatial_neighbors",
]
