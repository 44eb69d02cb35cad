"""Tissue-graph counterfactuals: edge rewiring and node perturbation, donor pools, gene shifts.

Every face of Cellina (the API, the command line, the plugin and the evaluation protocol)
runs its counterfactuals through :func:`edge_counterfactual` and :func:`node_counterfactual`.
"""

from ._adata import make_counterfactual_adata
from ._borrow import BORROW_DISATTENUATE, BORROW_WEIGHT, borrowed_change, reference_cells
from ._checked import CHECKED_ERROR, NothingToCheck, checkable_types, checked_errors, observed_change
from ._donors import sample_anchors, sample_donors
from ._edge import (
    anchor_niche_features,
    default_anchor_graph,
    masked_rows,
    pooled_niche_features,
    rewired_neighbourhoods,
    rewired_niche_features,
    spatial_features_record,
    usable_anchors,
)
from ._node import NodeCounterfactual, node_counterfactual
from ._novelty import NicheNovelty, niche_novelty, node_niche_codes, training_reference
from ._pools import cluster_pool, observed_neighbour_pool, select_cells
from ._range import RANGE_DRAWS, RANGE_WIDTH, change_range
from ._reliability import NicheReliability, disattenuated_niche_latent, niche_reliability, split_neighbours
from ._rewire import UNCERTAINTIES, edge_counterfactual
from ._shifts import GeneShifts
from ._support import TypeSupport, type_support

__all__ = [
    "BORROW_DISATTENUATE",
    "BORROW_WEIGHT",
    "CHECKED_ERROR",
    "RANGE_DRAWS",
    "RANGE_WIDTH",
    "UNCERTAINTIES",
    "GeneShifts",
    "NicheNovelty",
    "NicheReliability",
    "NothingToCheck",
    "NodeCounterfactual",
    "TypeSupport",
    "anchor_niche_features",
    "borrowed_change",
    "change_range",
    "checkable_types",
    "checked_errors",
    "cluster_pool",
    "default_anchor_graph",
    "disattenuated_niche_latent",
    "edge_counterfactual",
    "make_counterfactual_adata",
    "masked_rows",
    "niche_novelty",
    "niche_reliability",
    "node_counterfactual",
    "node_niche_codes",
    "observed_change",
    "observed_neighbour_pool",
    "pooled_niche_features",
    "reference_cells",
    "rewired_neighbourhoods",
    "rewired_niche_features",
    "sample_anchors",
    "sample_donors",
    "select_cells",
    "spatial_features_record",
    "split_neighbours",
    "training_reference",
    "type_support",
    "usable_anchors",
]
