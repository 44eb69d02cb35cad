"""Node counterfactuals with a trained model: shift senders' expression, rebuild niches, decode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from cellina.keys import LAYERS, OBSM, OBSP, UNS
from cellina.spatial import expression_representation, make_neighbor_perturbation, make_perturbed_expression
from cellina.spatial._composition import CATEGORIES_FIELD, KEY_FIELD, has_composition, record_codes

from ._edge import spatial_features_record
from ._pools import select_cells
from ._shifts import GeneShifts

_GROUP_COLUMN = "cellina_sender_group"


@dataclass
class NodeCounterfactual:
    """What a node counterfactual returns.

    Attributes
    ----------
    expression
        Expected counts of the focal cells with perturbed neighbours, ``(n_focal, n_genes)``.
    spatial_x
        The perturbed niche features of every cell, ``(n_obs, n_features)``.
    groups
        Each cell's sender group, and ``perturbations`` the shifts of each group.
    record
        Provenance of the perturbation (what :func:`make_neighbor_perturbation` records).
    """

    expression: np.ndarray
    spatial_x: np.ndarray
    groups: pd.Categorical
    perturbations: dict[str, dict[str, float]]
    record: dict[str, Any] = field(default_factory=dict)


def _sender_source(model: Any, adata: Any, record: dict, layer: str | None, add_shift: bool):
    """The sender matrix the shift applies to, over every gene of ``adata``.

    Log-space shifts (``add_shift``) act on log-normalised values: ``adata.layers[layer]`` when
    named, else the model's counts through the representation recorded with the niche
    features. Count-space shifts act on the model's counts.
    """
    counts = model.registered_counts(adata)
    if not add_shift:
        return counts
    if layer is not None:
        if layer not in adata.layers:
            raise ValueError(f"layer={layer!r} is not in adata.layers (have {list(adata.layers.keys())}).")
        return adata.layers[layer]
    every_gene = {**record, "genes": [str(g) for g in adata.var_names], "gene_indices": np.arange(adata.n_vars)}
    return expression_representation(counts, every_gene)


def _graph_node_counterfactual(
    model: Any, adata: Any, focal: np.ndarray, groups: Any, perturbations: dict, layer: str | None, options: tuple
) -> NodeCounterfactual:
    """Node counterfactual of a model that reads the graph: perturb the senders' node features
    (:func:`cellina.make_perturbed_expression`, the published recipe) and predict on them."""
    renormalize, perturb_fraction, random_state, library_size, batch_size = options
    if layer is not None:
        if layer not in adata.layers:
            raise ValueError(f"layer={layer!r} is not in adata.layers (have {list(adata.layers.keys())}).")
        source = adata.layers[layer]
    else:
        source = model.node_feature_source(adata)
    # counts are multiplied by e**value, i.e. value is added to their log1p (the node features);
    # log-scale node features get the value added
    add_shift = model.node_feature_transform == "identity"
    work = ad.AnnData(
        X=source,
        obs=pd.DataFrame({_GROUP_COLUMN: groups}, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
    )
    make_perturbed_expression(
        work,
        perturbations,
        groupby=_GROUP_COLUMN,
        layer_key=LAYERS.PERTURBED_COUNTS,
        base=np.e,
        renormalize=renormalize,
        add_shift=add_shift,
        perturb_fraction=perturb_fraction,
        random_state=random_state,
    )
    perturbed = work.layers[LAYERS.PERTURBED_COUNTS]
    expression = model.predict_from_graph(
        adata, focal, node_features=perturbed, library_size=library_size, batch_size=batch_size
    )
    provenance = dict(work.uns[UNS.ROOT][UNS.PERTURBED_EXPRESSION][LAYERS.PERTURBED_COUNTS])
    return NodeCounterfactual(expression, perturbed, groups, perturbations, provenance)


def node_counterfactual(
    model: Any,
    adata: Any,
    shifts: GeneShifts,
    focal: Any,
    *,
    sender_key: str | None = None,
    region: np.ndarray | None = None,
    layer: str | None = None,
    add_shift: bool = True,
    renormalize: bool = True,
    perturb_fraction: float = 1.0,
    random_state: int = 0,
    connectivity_key: str | None = None,
    library_size: Any = "latent",
    batch_size: int | None = None,
) -> NodeCounterfactual:
    """Decode focal cells whose neighbours' expression of some genes is shifted.

    Every cell keeps its neighbours; sender cells get the table's shifts (restricted by
    ``sender_key`` groups and ``region`` where rows say so), the niche features are rebuilt on
    the graph the model's features were computed on, and the model decodes the focal cells
    with their own ``z`` and library. ``adata`` is never modified.

    For a model that reads the graph (:class:`~cellina.model.CellinaGCN`) the senders' node
    features are shifted instead, the published way (:func:`cellina.make_perturbed_expression`):
    counts are multiplied by ``e**value`` (``value`` is added to their ``log1p``, the node
    features; ``add_shift`` is then not used), log-scale node features get ``value`` added; the
    graph aggregates them on the fly. ``spatial_x`` of the result then holds the perturbed node
    feature source (cells x genes, sparse).

    Parameters
    ----------
    model
        A trained :class:`~cellina.model.Cellina`.
    adata
        Its registered AnnData.
    shifts
        The gene shifts (:class:`GeneShifts`).
    focal
        Focal cells (positions or a boolean mask).
    sender_key
        ``obs`` column whose values the rows' ``senders`` name (usually the cell type).
    region
        Boolean mask of the cells inside the focal region (rows with ``region=True``).
    layer
        Log-normalised layer to shift (log-space shifts; default: rebuilt from the model's counts).
    add_shift
        ``True``: add the values to log-normalised expression (the published node mode);
        ``False``: multiply counts by ``e**value``.
    renormalize, perturb_fraction, random_state
        As in :func:`cellina.spatial.make_neighbor_perturbation`.
    connectivity_key
        Graph of the niches (default: the one the model's niche features were computed on).
    library_size, batch_size
        As in ``model.predict_from_niche``.
    """
    if not isinstance(shifts, GeneShifts):
        raise TypeError(f"shifts must be a GeneShifts table, got {type(shifts).__name__}.")
    if len(shifts) == 0:
        raise ValueError("the gene-shift table is empty.")
    shifts.check_genes(adata.var_names)
    focal = select_cells(adata, focal, "focal")
    if focal.size == 0:
        raise ValueError("focal selects no cells.")
    if sender_key is not None and sender_key not in adata.obs:
        raise ValueError(f"sender_key={sender_key!r} is not a column of adata.obs.")
    types = adata.obs[sender_key] if sender_key is not None else None
    groups, perturbations = shifts.sender_groups(adata.n_obs, types, region)
    if not perturbations:
        raise ValueError("no cell matches the shift table's sender restrictions.")
    if getattr(model, "niche_input", "features") == "graph":
        options = (renormalize, perturb_fraction, random_state, library_size, batch_size)
        return _graph_node_counterfactual(model, adata, focal, groups, perturbations, layer, options)
    features_key = model.spatial_obsm_key
    record = dict(spatial_features_record(adata, features_key))
    graph_key = connectivity_key or str(record.get("connectivity_key") or OBSP.CONNECTIVITIES)
    if graph_key not in adata.obsp:
        raise ValueError(f"adata.obsp[{graph_key!r}] (the niche graph) is missing.")
    # A light AnnData shares the matrices and carries the sender groups (and the categories of
    # the features' composition block, if any): nothing is written to the caller's AnnData.
    obs = {_GROUP_COLUMN: groups}
    if has_composition(record):
        obs[record[KEY_FIELD]] = pd.Categorical.from_codes(record_codes(adata, record), record[CATEGORIES_FIELD])
    work = ad.AnnData(
        X=_sender_source(model, adata, record, layer, add_shift),
        obs=pd.DataFrame(obs, index=adata.obs_names),
        var=pd.DataFrame(index=adata.var_names),
        obsp={graph_key: adata.obsp[graph_key]},
        uns={UNS.ROOT: {UNS.SPATIAL_FEATURES: {features_key: record}}},
    )
    make_neighbor_perturbation(
        work,
        perturbations=perturbations,
        groupby=_GROUP_COLUMN,
        connectivity_key=graph_key,
        obsm_key_out=OBSM.PERTURBED_NICHE,
        base=np.e,
        renormalize=renormalize,
        add_shift=add_shift,
        perturb_fraction=perturb_fraction,
        random_state=random_state,
        features_key=features_key,
    )
    spatial_x = work.obsm[OBSM.PERTURBED_NICHE]
    expression = model.predict_from_niche(adata, focal, spatial_x[focal], "expression", library_size, batch_size)
    provenance = dict(work.uns[UNS.ROOT][UNS.NEIGHBOR_PERTURBATION][OBSM.PERTURBED_NICHE])
    return NodeCounterfactual(expression, spatial_x, groups, perturbations, provenance)
