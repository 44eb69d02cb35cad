"""Import path used by the published Cellina tutorial.

``from cellina._spatial_utils import spatial_neighbors, compute_spatial_features``
keeps working; the implementations live in :mod:`cellina.spatial`.
"""

from cellina.spatial import (
    compute_spatial_features,
    make_neighbor_perturbation,
    make_perturbed_expression,
    spatial_neighbors,
)

__all__ = [
    "compute_spatial_features",
    "make_neighbor_perturbation",
    "make_perturbed_expression",
    "spatial_neighbors",
]
