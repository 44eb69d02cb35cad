"""Fixed design of the synthetic tissue: cell types, domains, programmes and gene parameters.

Everything here is a constant or a pure function of (seed stream, ``n_genes``), so the gene
parameters of a tissue do not depend on how many cells it has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DOMAINS: tuple[str, ...] = ("healthy", "margin", "tumour")

FINE_TYPES: tuple[str, ...] = (
    "epi_normal",
    "epi_tumour",
    "fib_normal",
    "fib_caf",
    "endothelial",
    "t_cell",
    "b_cell",
    "plasma",
    "myeloid_1",
    "myeloid_2",
)

# Lineages share marker genes (malignant cells keep epithelial markers, CAFs fibroblast ones).
LINEAGES: tuple[str, ...] = (
    "Epithelial",
    "Fibroblast",
    "Endothelial",
    "T_cell",
    "B_cell",
    "Plasma_cell",
    "Myeloid",
)

FINE_TO_LINEAGE: dict[str, str] = {
    "epi_normal": "Epithelial",
    "epi_tumour": "Epithelial",
    "fib_normal": "Fibroblast",
    "fib_caf": "Fibroblast",
    "endothelial": "Endothelial",
    "t_cell": "T_cell",
    "b_cell": "B_cell",
    "plasma": "Plasma_cell",
    "myeloid_1": "Myeloid",
    "myeloid_2": "Myeloid",
}

# The annotation a user would give: malignant cells and CAFs are labelled apart from their
# normal lineage, as in most tumour atlases.
COARSE_TYPES: tuple[str, ...] = (
    "Epithelial",
    "Malignant",
    "Fibroblast",
    "CAF",
    "Endothelial",
    "T_cell",
    "B_cell",
    "Plasma_cell",
    "Myeloid",
)

FINE_TO_COARSE: dict[str, str] = {
    **FINE_TO_LINEAGE,
    "epi_tumour": "Malignant",
    "fib_caf": "CAF",
}

# The subtype mix within every coarse type is the same in every domain (Myeloid is the only
# coarse type with two subtypes), so the healthy -> tumour change of any coarse type that
# occurs in both domains is a pure niche effect. Malignant cells and CAFs are what make a
# domain "tumour"; Malignant cells do not occur in healthy tissue.
DEFAULT_COMPOSITION: dict[str, dict[str, float]] = {
    "healthy": {
        "epi_normal": 0.42,
        "epi_tumour": 0.00,
        "fib_normal": 0.16,
        "fib_caf": 0.02,
        "endothelial": 0.09,
        "t_cell": 0.07,
        "b_cell": 0.06,
        "plasma": 0.06,
        "myeloid_1": 0.072,
        "myeloid_2": 0.048,
    },
    "margin": {
        "epi_normal": 0.14,
        "epi_tumour": 0.14,
        "fib_normal": 0.08,
        "fib_caf": 0.12,
        "endothelial": 0.09,
        "t_cell": 0.15,
        "b_cell": 0.08,
        "plasma": 0.05,
        "myeloid_1": 0.09,
        "myeloid_2": 0.06,
    },
    "tumour": {
        "epi_normal": 0.02,
        "epi_tumour": 0.46,
        "fib_normal": 0.02,
        "fib_caf": 0.16,
        "endothelial": 0.08,
        "t_cell": 0.07,
        "b_cell": 0.03,
        "plasma": 0.02,
        "myeloid_1": 0.084,
        "myeloid_2": 0.056,
    },
}

TUMOUR_ASSOCIATED: tuple[str, ...] = ("epi_tumour", "fib_caf")

# log-mean elevation of the ligand genes in sender types (times a per-gene factor in 0.8-1.2)
LIGAND_SENDERS: dict[str, float] = {"fib_caf": 3.0, "myeloid_2": 2.5, "endothelial": 1.5}
# log increase of the ligand genes per unit tumour composition in these coarse types: the
# senders make more ligand in a tumour niche (part of their own "type_response"), so a
# neighbour's niche reaches a cell through the ligand signal too
LIGAND_INDUCTION: dict[str, float] = {"CAF": 1.5, "Myeloid": 1.5, "Endothelial": 1.0}

# Responsiveness of each coarse type to the shared response programmes. Every coarse type
# also has its own composition-response genes (the "type_response" programme), so niche
# responses differ between cell types in which genes move, not only in how much.
RHO_COMPOSITION: dict[str, float] = {
    "Epithelial": 0.5,
    "Malignant": 0.2,
    "Fibroblast": 0.5,
    "CAF": 0.6,
    "Endothelial": 0.4,
    "T_cell": 0.8,
    "B_cell": 0.3,
    "Plasma_cell": 0.4,
    "Myeloid": 1.0,
}
RHO_LIGAND: dict[str, float] = {
    "Epithelial": 0.2,
    "Malignant": 0.0,
    "Fibroblast": 0.3,
    "CAF": 0.0,
    "Endothelial": 0.5,
    "T_cell": 0.7,
    "B_cell": 0.6,
    "Plasma_cell": 0.4,
    "Myeloid": 1.0,
}

# Gene name prefixes, chosen not to collide with human gene symbols (e.g. LIG1, BCL2, MYC).
LINEAGE_CODES: dict[str, str] = {
    "Epithelial": "EPI",
    "Fibroblast": "FIB",
    "Endothelial": "EDT",
    "T_cell": "TCE",
    "B_cell": "BCE",
    "Plasma_cell": "PCE",
    "Myeloid": "MYE",
}
# prefixes of each coarse type's own composition-response genes
TYPE_RESPONSE_CODES: dict[str, str] = {
    "Epithelial": "REPI",
    "Malignant": "RMAL",
    "Fibroblast": "RFIB",
    "CAF": "RCAF",
    "Endothelial": "REDT",
    "T_cell": "RTCE",
    "B_cell": "RBCE",
    "Plasma_cell": "RPCE",
    "Myeloid": "RMYE",
}
FINE_CODES: dict[str, str] = {
    "epi_normal": "EPIN",
    "epi_tumour": "EPIT",
    "fib_normal": "FIBN",
    "fib_caf": "FIBC",
    "myeloid_1": "MYEA",
    "myeloid_2": "MYEB",
}
PROGRAMME_CODES: dict[str, str] = {
    "state": "STA",
    "ligand": "LGD",
    "composition_response": "CMP",
    "ligand_response": "LRS",
    "null": "NUL",
}
PROGRAMMES: tuple[str, ...] = (
    "marker",
    "state",
    "ligand",
    "composition_response",
    "ligand_response",
    "type_response",
    "null",
)
# programmes whose genes move with the niche (in some cell types)
SHARED_RESPONSE_PROGRAMMES: tuple[str, ...] = ("composition_response", "ligand_response")
RESPONSIVE_PROGRAMMES: tuple[str, ...] = (*SHARED_RESPONSE_PROGRAMMES, "type_response")

# programme sizes at 300 genes; below that they shrink (never under the minimum), above it the
# extra genes are all null
_BASE_GENES = 300
_BASE_SIZES = {
    "lineage_markers": 4,
    "fine_markers": 2,
    "state": 8,
    "ligand": 6,
    "composition_response": 15,
    "ligand_response": 15,
    "type_response": 4,  # per coarse type
}
_MIN_SIZES = {
    "lineage_markers": 2,
    "fine_markers": 1,
    "state": 3,
    "ligand": 3,
    "composition_response": 5,
    "ligand_response": 5,
    "type_response": 1,
}
MIN_N_GENES = 100
TARGET_SUM = 1e4

# effect-size ranges (natural log units)
COARSE_MARKER_RANGE = (2.0, 3.0)
FINE_MARKER_RANGE = (1.5, 2.5)
STATE_EFFECT_RANGE = (1.0, 2.0)
COMPOSITION_EFFECT_RANGE = (1.0, 2.5)
LIGAND_EFFECT_RANGE = (1.5, 3.5)
TYPE_RESPONSE_EFFECT_RANGE = (1.0, 2.5)
NEGATIVE_EFFECT_PROBABILITY = 0.25
THETA_RANGE = (2.0, 20.0)


def programme_sizes(n_genes: int) -> dict[str, int]:
    """Number of genes per programme for a tissue of ``n_genes`` genes."""
    scale = min(1.0, n_genes / _BASE_GENES)
    return {k: max(_MIN_SIZES[k], int(round(v * scale))) for k, v in _BASE_SIZES.items()}


@dataclass
class GeneParameters:
    """Per-gene truth of the generative model (see the package docstring)."""

    names: list[str]
    programme: list[str]
    baseline: np.ndarray  # (G,) log, exp sums to 1
    theta: np.ndarray  # (G,) NB inverse dispersion
    type_effects: np.ndarray  # (G, T) log-mean elevation per fine type
    state_effect: np.ndarray  # (G,)
    composition_effect: np.ndarray  # (G,) beta, shared by every coarse type (times its rho)
    type_response_effect: np.ndarray  # (G, C) each coarse type's own composition response
    ligand_effect: np.ndarray  # (G,) gamma
    programmes: dict  # programme -> gene names (markers: fine type -> names)


def _signed_uniform(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    magnitude = rng.uniform(low, high, n)
    sign = np.where(rng.random(n) < NEGATIVE_EFFECT_PROBABILITY, -1.0, 1.0)
    return sign * magnitude


def gene_parameters(n_genes: int, rng: np.random.Generator) -> GeneParameters:
    """Draw gene programmes and per-gene parameters.

    Parameters
    ----------
    n_genes
        Total number of genes (at least :data:`MIN_N_GENES`).
    rng
        Generator used for every draw.

    Returns
    -------
    GeneParameters
    """
    names, programme, groups = _programme_genes(n_genes)
    index = {g: i for i, g in enumerate(names)}
    # The draws below run in a fixed order on one generator; reordering them changes
    # every tissue drawn from a seed.
    baseline = _baseline_log_means(np.asarray(programme), rng)
    theta = np.exp(rng.uniform(math.log(THETA_RANGE[0]), math.log(THETA_RANGE[1]), n_genes))
    type_effects = _type_effects(index, groups, rng)
    state_effect, composition_effect, ligand_effect, type_response_effect = _response_effects(index, groups, rng)

    lineage_markers, fine_markers = groups["lineage_markers"], groups["fine_markers"]
    markers = {f: list(lineage_markers[FINE_TO_LINEAGE[f]]) + list(fine_markers.get(f, [])) for f in FINE_TYPES}
    programmes = {
        "markers": markers,
        "lineage_markers": lineage_markers,
        "state": groups["state"],
        "ligand": groups["ligand"],
        "composition_response": groups["composition_response"],
        "ligand_response": groups["ligand_response"],
        "type_response": groups["type_response"],
        "null": groups["null"],
    }
    return GeneParameters(
        names=names,
        programme=programme,
        baseline=baseline,
        theta=theta,
        type_effects=type_effects,
        state_effect=state_effect,
        composition_effect=composition_effect,
        type_response_effect=type_response_effect,
        ligand_effect=ligand_effect,
        programmes=programmes,
    )


def _programme_genes(n_genes: int) -> tuple[list[str], list[str], dict]:
    """Gene names in programme order, each gene's programme, and the genes of each group.

    Groups: ``lineage_markers`` and ``type_response`` (per lineage / coarse type),
    ``fine_markers`` (per fine type), ``state``, ``ligand``, ``composition_response``,
    ``ligand_response`` and ``null`` (all genes left over).
    """
    sizes = programme_sizes(n_genes)
    names: list[str] = []
    programme: list[str] = []

    def add(prefix: str, count: int, label: str) -> list[str]:
        new = [f"{prefix}{i + 1}" for i in range(count)]
        names.extend(new)
        programme.extend([label] * count)
        return new

    groups: dict = {}
    groups["lineage_markers"] = {c: add(LINEAGE_CODES[c], sizes["lineage_markers"], "marker") for c in LINEAGES}
    groups["fine_markers"] = {f: add(code, sizes["fine_markers"], "marker") for f, code in FINE_CODES.items()}
    for label in ("state", "ligand", "composition_response", "ligand_response"):
        groups[label] = add(PROGRAMME_CODES[label], sizes[label], label)
    groups["type_response"] = {
        c: add(TYPE_RESPONSE_CODES[c], sizes["type_response"], "type_response") for c in COARSE_TYPES
    }
    n_null = n_genes - len(names)
    if n_null < 1:  # guarded by the caller; kept so a change of sizes cannot go unnoticed
        raise ValueError(f"n_genes={n_genes} leaves no null genes")
    groups["null"] = add(PROGRAMME_CODES["null"], n_null, "null")
    return names, programme, groups


def _baseline_log_means(prog: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Baseline log-means whose exponentials sum to 1, given each gene's programme."""
    # A realistic spread over ~2 orders of magnitude; markers low outside their type,
    # response genes moderately high so their niche shifts are measurable.
    raw = np.clip(rng.normal(0.0, 1.0, prog.size), -2.5, 2.5)
    raw[prog == "marker"] -= 1.0
    raw[prog == "ligand"] -= 0.5
    raw[np.isin(prog, RESPONSIVE_PROGRAMMES)] += 0.5
    return raw - (np.log(np.exp(raw - raw.max()).sum()) + raw.max())


def _type_effects(index: dict[str, int], groups: dict, rng: np.random.Generator) -> np.ndarray:
    """(G, fine types) log-mean elevations: lineage and subtype markers, ligands in senders."""
    type_effects = np.zeros((len(index), len(FINE_TYPES)))
    for lineage, genes in groups["lineage_markers"].items():
        rows = [index[g] for g in genes]
        value = rng.uniform(*COARSE_MARKER_RANGE, len(rows))
        for t, fine in enumerate(FINE_TYPES):
            if FINE_TO_LINEAGE[fine] == lineage:
                type_effects[rows, t] = value
    for fine, genes in groups["fine_markers"].items():
        rows = [index[g] for g in genes]
        type_effects[rows, FINE_TYPES.index(fine)] = rng.uniform(*FINE_MARKER_RANGE, len(rows))
    lig_rows = [index[g] for g in groups["ligand"]]
    for fine, elevation in LIGAND_SENDERS.items():
        type_effects[lig_rows, FINE_TYPES.index(fine)] = elevation * rng.uniform(0.8, 1.2, len(lig_rows))
    return type_effects


def _response_effects(
    index: dict[str, int], groups: dict, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """State, composition (beta), ligand (gamma) and per-coarse-type response effects."""
    n_genes = len(index)
    state = groups["state"]
    state_effect = np.zeros(n_genes)
    state_effect[[index[g] for g in state]] = rng.uniform(*STATE_EFFECT_RANGE, len(state))
    composition = groups["composition_response"]
    composition_effect = np.zeros(n_genes)
    composition_effect[[index[g] for g in composition]] = _signed_uniform(
        rng, len(composition), *COMPOSITION_EFFECT_RANGE
    )
    ligand_response = groups["ligand_response"]
    ligand_effect = np.zeros(n_genes)
    ligand_effect[[index[g] for g in ligand_response]] = _signed_uniform(
        rng, len(ligand_response), *LIGAND_EFFECT_RANGE
    )
    type_response_effect = np.zeros((n_genes, len(COARSE_TYPES)))
    for k, coarse in enumerate(COARSE_TYPES):
        rows = [index[g] for g in groups["type_response"][coarse]]
        type_response_effect[rows, k] = _signed_uniform(rng, len(rows), *TYPE_RESPONSE_EFFECT_RANGE)
    # the senders make more ligand in a tumour niche (their own composition response)
    lig_rows = [index[g] for g in groups["ligand"]]
    for coarse, induction in LIGAND_INDUCTION.items():
        type_response_effect[lig_rows, COARSE_TYPES.index(coarse)] = induction
    return state_effect, composition_effect, ligand_effect, type_response_effect
