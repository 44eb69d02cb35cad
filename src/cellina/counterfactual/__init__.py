"""Edge counterfactuals: donor sampling and niche features of rewired neighbourhoods."""

from ._donors import sample_anchors, sample_donors
from ._pools import cluster_pool, observed_neighbour_pool, select_cells
from ._rewire import edge_counterfactual
from ._edge import (
    anchor_niche_features,
    masked_rows,
    pooled_niche_features,
    rewired_niche_features,
    spatial_features_record,
    usable_anchors,
)
from ._adata import make_counterfactual_adata

__all__ = [
    "cluster_pool",
    "edge_counterfactual",
    "observed_neighbour_pool",
    "select_cells",
    "anchor_niche_features",
    "make_counterfactual_adata",
    "masked_rows",
    "pooled_niche_features",
    "rewired_niche_features",
    "sample_anchors",
    "sample_donors",
    "spatial_features_record",
    "usable_anchors",
]
