"""Synthetic spatial transcriptomics tissues and worlds with exact counterfactual truth.

:func:`synthetic_tissue` simulates slides with healthy, margin and tumour domains, ten fine cell
types in nine annotated coarse types, intrinsic gene programmes and two niche effects (a composition
effect with shared and type-specific response genes, and a ligand effect) that are exact functions of each cell's
neighbourhood on a stored true graph. Because the generative model is known, the expected
expression of any cell under any rewiring of its neighbourhood
(:func:`true_counterfactual_edge`) or any shift of its neighbours' expression
(:func:`true_counterfactual_node`) is available exactly, as are the factual means
(:func:`true_mean`). The design is described in :mod:`cellina.datasets._synthetic`.

:func:`sender_receiver_tissue` is a small tissue whose receivers respond to the mean ligand level
of one sender type only, so a graph-attention model's attention is identified there (see
:mod:`cellina.datasets._sender_tissue`).

:func:`make_world` draws a world of the evaluation family (:mod:`cellina.datasets.worlds`):
niche mechanisms, reaches, layouts and confounds that differ from the tissue above and from the
model's own construction, named and split into development and evaluation worlds
(:func:`list_worlds`). :func:`truth_for` gives one truth interface over tissues and worlds.
Nothing here imports ``cellina.spatial``, ``cellina.model``, ``cellina.counterfactual`` or the
plugin: a truth must not share what it judges.
"""

from cellina.datasets._errors import DatasetTypeError, PositionError, TruthKeyError
from cellina.datasets._interface import TissueTruth, Truth, has_truth, truth_for
from cellina.datasets._params import (
    COARSE_TYPES,
    DOMAINS,
    FINE_TO_COARSE,
    FINE_TYPES,
    RESPONSIVE_PROGRAMMES,
    SHARED_RESPONSE_PROGRAMMES,
)
from cellina.datasets._sender_tissue import SENDER_TISSUE_TYPES, sender_receiver_tissue
from cellina.datasets._synthetic import GRAPH_KEY, TRUTH_KEY, synthetic_tissue
from cellina.datasets._truth import true_counterfactual_edge, true_counterfactual_node, true_mean
from cellina.datasets.worlds import (
    CONFIRMATION_WORLDS,
    DEVELOPMENT_WORLDS,
    EVALUATION_WORLDS,
    HOLDOUT_TYPES,
    LOCKED_WORLDS,
    RESERVE_WORLDS,
    SEALED_WORLDS,
    VAULT_WORLDS,
    WORLD_KEY,
    Channel,
    Confounds,
    Layout,
    WorldSpec,
    WorldTruth,
    list_worlds,
    make_world,
    world_spec,
    world_split,
)

__all__ = [
    "COARSE_TYPES",
    "DEVELOPMENT_WORLDS",
    "DOMAINS",
    "CONFIRMATION_WORLDS",
    "RESERVE_WORLDS",
    "SEALED_WORLDS",
    "VAULT_WORLDS",
    "LOCKED_WORLDS",
    "EVALUATION_WORLDS",
    "HOLDOUT_TYPES",
    "WORLD_KEY",
    "Channel",
    "Confounds",
    "Layout",
    "TissueTruth",
    "Truth",
    "WorldSpec",
    "WorldTruth",
    "has_truth",
    "list_worlds",
    "make_world",
    "truth_for",
    "world_spec",
    "world_split",
    "FINE_TO_COARSE",
    "FINE_TYPES",
    "GRAPH_KEY",
    "RESPONSIVE_PROGRAMMES",
    "SENDER_TISSUE_TYPES",
    "SHARED_RESPONSE_PROGRAMMES",
    "TRUTH_KEY",
    "DatasetTypeError",
    "PositionError",
    "TruthKeyError",
    "sender_receiver_tissue",
    "synthetic_tissue",
    "true_counterfactual_edge",
    "true_counterfactual_node",
    "true_mean",
]
