"""How a synthetic tissue and its truth are written into an AnnData.

Layout of the truth (read back by :mod:`cellina.datasets._truth`):

* ``uns["cellina_truth"]``: version, the tissue's parameters, the true graph's kernel, the
  type and domain catalogues, the composition, the niche constants, ``l_ref`` and the gene
  programmes;
* ``obsp["cellina_true_connectivities"]``: the true graph;
* ``var``: ``cellina_programme`` and ``cellina_true_*`` per-gene parameters; ``varm``: the
  type effects and the per-coarse-type response effects;
* ``obs``: ``slide``, ``domain``, ``cell_type``, ``coarse_type`` and ``cellina_true_*`` (size,
  state, composition and ligand signals); ``obsm["spatial"]`` (um).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.datasets._params import (
    COARSE_TYPES,
    DOMAINS,
    FINE_TO_COARSE,
    FINE_TYPES,
    LIGAND_SENDERS,
    PROGRAMMES,
    RHO_COMPOSITION,
    RHO_LIGAND,
    TARGET_SUM,
    TUMOUR_ASSOCIATED,
    GeneParameters,
)
from cellina.datasets._tissue_settings import TissueSettings

TRUTH_KEY = "cellina_truth"
GRAPH_KEY = "cellina_true_connectivities"
TYPE_EFFECTS_KEY = "cellina_true_type_effects"
TRUTH_VERSION = 2
TYPE_RESPONSE_KEY = "cellina_true_type_response_effects"


@dataclass
class TissueCells:
    """Per-cell draws and niche signals of a tissue."""

    coords: np.ndarray  # (n, 2) um
    slide: np.ndarray  # slide code
    domain: np.ndarray  # index into DOMAINS
    codes: np.ndarray  # fine type, index into FINE_TYPES
    size: np.ndarray  # size factor
    state: np.ndarray  # continuous state in [0, 1]
    composition: np.ndarray  # c: weighted tumour-associated fraction of the neighbours
    ligand: np.ndarray  # l: weighted mean ligand score of the neighbours


def _obs(cells: TissueCells, n_slides: int) -> pd.DataFrame:
    coarse_of_fine = np.array([COARSE_TYPES.index(FINE_TO_COARSE[f]) for f in FINE_TYPES])
    return pd.DataFrame(
        {
            "slide": pd.Categorical.from_codes(cells.slide, categories=[f"slide_{i}" for i in range(n_slides)]),
            "domain": pd.Categorical.from_codes(cells.domain, categories=list(DOMAINS)),
            "cell_type": pd.Categorical.from_codes(cells.codes, categories=list(FINE_TYPES)),
            "coarse_type": pd.Categorical.from_codes(coarse_of_fine[cells.codes], categories=list(COARSE_TYPES)),
            "cellina_true_size": cells.size,
            "cellina_true_state": cells.state,
            "cellina_true_composition": cells.composition,
            "cellina_true_ligand": cells.ligand,
        },
        index=pd.Index(np.char.add("cell_", np.arange(cells.codes.size).astype(str)), dtype=object),
    )


def _var(genes: GeneParameters) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cellina_programme": pd.Categorical(genes.programme, categories=list(PROGRAMMES)),
            "cellina_true_baseline": genes.baseline,
            "cellina_true_theta": genes.theta,
            "cellina_true_state_effect": genes.state_effect,
            "cellina_true_composition_effect": genes.composition_effect,
            "cellina_true_ligand_effect": genes.ligand_effect,
        },
        index=pd.Index(genes.names, dtype=object),
    )


def _truth(settings: TissueSettings, genes: GeneParameters, l_ref: float) -> dict:
    probabilities = settings.probabilities
    return {
        "version": TRUTH_VERSION,
        "params": {
            "seed": settings.seed,
            "n_cells": settings.n_cells,
            "n_genes": settings.n_genes,
            "n_slides": settings.n_slides,
            "library_size_median": settings.library_size_median,
            "library_size_sigma": settings.library_size_sigma,
            "cell_area": settings.cell_area,
            "tumour_fraction": settings.tumour_fraction,
            "margin_fraction": settings.margin_fraction,
            "tumour_radius": settings.tumour_radius,
            "slide_gap": settings.slide_gap,
        },
        "graph": {
            "connectivities_key": GRAPH_KEY,
            "kernel": "gaussian",
            "bandwidth": settings.niche_bandwidth,
            "max_neighbours": settings.niche_max_neighbours,
            "cutoff": settings.niche_cutoff,
        },
        "fine_types": list(FINE_TYPES),
        "coarse_types": list(COARSE_TYPES),
        "domains": list(DOMAINS),
        "fine_to_coarse": dict(FINE_TO_COARSE),
        "composition": {
            d: {f: float(probabilities[i, j]) for j, f in enumerate(FINE_TYPES)} for i, d in enumerate(DOMAINS)
        },
        "tumour_associated": list(TUMOUR_ASSOCIATED),
        "ligand_senders": dict(LIGAND_SENDERS),
        "rho_composition": dict(RHO_COMPOSITION),
        "rho_ligand": dict(RHO_LIGAND),
        "l_ref": l_ref,
        "target_sum": TARGET_SUM,
        "type_effects_key": TYPE_EFFECTS_KEY,
        "type_response_key": TYPE_RESPONSE_KEY,
        "programmes": genes.programmes,
    }


def write_tissue(
    settings: TissueSettings,
    genes: GeneParameters,
    cells: TissueCells,
    graph: sp.csr_matrix,
    l_ref: float,
    counts: sp.csr_matrix,
    means: tuple[np.ndarray, np.ndarray] | None,
) -> ad.AnnData:
    """The tissue as AnnData: counts in ``X`` and ``layers["counts"]``, the truth alongside.

    ``means`` (expected counts with and without the niche) become the dense layers
    ``cellina_true_mean`` and ``cellina_true_mean_intrinsic``; None stores neither.
    """
    adata = ad.AnnData(
        X=counts,
        obs=_obs(cells, settings.n_slides),
        var=_var(genes),
        obsm={"spatial": cells.coords},
        varm={TYPE_EFFECTS_KEY: genes.type_effects, TYPE_RESPONSE_KEY: genes.type_response_effect},
        obsp={GRAPH_KEY: graph},
        uns={TRUTH_KEY: _truth(settings, genes, l_ref)},
    )
    adata.layers["counts"] = counts.copy()
    if means is not None:
        adata.layers["cellina_true_mean"], adata.layers["cellina_true_mean_intrinsic"] = means
    return adata
