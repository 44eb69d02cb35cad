"""The gene panel of a world: programmes, baselines, dispersions, type, state, niche and batch effects.

Programmes (disjoint): lineage and subtype ``marker`` genes, the cell-``state`` programme, each
ligand channel's ``ligand`` genes, each channel's ``response`` genes, and ``null`` background
genes with no effect of any kind. Two intrinsic programmes deliberately reach into the response
genes, so that what differs between domains on a response gene is not only the niche: second
subtypes shift some response genes, and so does the cell state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cellina.datasets.worlds._catalogue import COARSE_TYPES, FINE_TYPES, LINEAGES, SUBTYPES
from cellina.datasets.worlds._spec import Channel, WorldSpec

_LINEAGE_MARKERS = 3
_SUBTYPE_MARKERS = 2
_MALIGNANT_MARKERS = 3
_STATE_GENES = 8
_LIGAND_GENES = 4
_MIN_NULL = 20
_NEGATIVE = 0.3  # share of response genes that go down
_CONFOUNDED = 0.2  # share of response genes that subtypes and state also move (intrinsically)


@dataclass(frozen=True)
class Panel:
    """Per-gene truth of a world (G genes, T fine types, K coarse types, S slides)."""

    names: list[str]
    programme: list[str]
    channel: list[str]  # the channel of a ligand or response gene, "" otherwise
    baseline: np.ndarray  # (G,) log, exp sums to 1
    theta: np.ndarray  # (G,) negative-binomial inverse dispersion
    type_effects: np.ndarray  # (G, T)
    state_effect: np.ndarray  # (G,)
    ligand: dict[str, np.ndarray]  # channel -> gene positions
    response: dict[str, np.ndarray]  # channel -> (G, K) log effect at full dose
    batch: np.ndarray  # (G, S) log
    programmes: dict


def panel_size(spec: WorldSpec) -> int:
    """Smallest panel that holds the programmes of ``spec`` and leaves some null genes."""
    subtyped = 2 * len(SUBTYPES)
    ligands = sum(_LIGAND_GENES for c in spec.channels if c.sensed == "ligand")
    responses = sum(c.n_genes for c in spec.channels)
    return (
        len(LINEAGES) * _LINEAGE_MARKERS
        + subtyped * _SUBTYPE_MARKERS
        + _MALIGNANT_MARKERS
        + _STATE_GENES
        + ligands
        + responses
        + _MIN_NULL
    )


def _signed(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    return np.where(rng.random(n) < _NEGATIVE, -1.0, 1.0) * rng.uniform(low, high, n)


def _response(channel: Channel, rows: np.ndarray, n_genes: int, rng: np.random.Generator) -> np.ndarray:
    """(G, K) effects: shared genes move in every responder by its factor, specific genes in one."""
    effect = np.zeros((n_genes, len(COARSE_TYPES)))
    types = [COARSE_TYPES.index(t) for t in channel.responders]
    factor = np.array(list(channel.responders.values()))
    n_specific = min(round(channel.specificity * rows.size), rows.size - 1)
    order = rng.permutation(rows)
    size = _signed(rng, rows.size, *channel.effect)
    owners = rng.permutation(len(types))
    for j, gene in enumerate(order):
        if j < n_specific:
            k = owners[j % len(types)]
            effect[gene, types[k]] = size[j] * factor[k]
        else:
            effect[gene, types] = size[j] * factor
    return effect


def _names(spec: WorldSpec) -> tuple[list[str], list[str], list[str], dict]:
    names, programme, channel = [], [], []
    groups: dict = {"markers": {}, "state": [], "ligand": {}, "response": {}, "null": []}

    def add(prefix: str, count: int, label: str, owner: str = "") -> list[str]:
        new = [f"{prefix}_{i + 1}" for i in range(count)]
        names.extend(new)
        programme.extend([label] * count)
        channel.extend([owner] * count)
        return new

    for lineage in LINEAGES:
        groups["markers"][lineage] = add(f"mk_{lineage}", _LINEAGE_MARKERS, "marker")
    for first, second, _ in SUBTYPES.values():
        for fine in (first, second):
            groups["markers"][fine] = add(f"mk_{fine}", _SUBTYPE_MARKERS, "marker")
    groups["markers"]["malignant"] = add("mk_malignant", _MALIGNANT_MARKERS, "marker")
    groups["state"] = add("state", _STATE_GENES, "state")
    for c in spec.channels:
        if c.sensed == "ligand":
            groups["ligand"][c.name] = add(f"lig_{c.name}", _LIGAND_GENES, "ligand", c.name)
    for c in spec.channels:
        groups["response"][c.name] = add(f"rsp_{c.name}", c.n_genes, "response", c.name)
    groups["null"] = add("bg", spec.n_genes - len(names), "null")
    return names, programme, channel, groups


def _type_effects(groups: dict, index: dict, spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    effects = np.zeros((len(index), len(FINE_TYPES)))
    for key, genes in groups["markers"].items():
        rows = [index[g] for g in genes]
        owners = LINEAGES.get(key, (key,))
        low, high = (2.0, 3.0) if key in LINEAGES or key == "malignant" else (1.5, 2.5)
        value = rng.uniform(low, high, len(rows))
        for fine in owners:
            effects[rows, FINE_TYPES.index(fine)] = value
    for c in spec.channels:
        if c.sensed == "ligand":
            rows = [index[g] for g in groups["ligand"][c.name]]
            for fine in c.sender_types:
                effects[rows, FINE_TYPES.index(fine)] = rng.uniform(2.5, 3.5, len(rows))
    # second subtypes also differ on some response genes: a subtype mix that changes between
    # domains then moves response genes without any niche effect
    response_rows = np.array([index[g] for genes in groups["response"].values() for g in genes])
    for _, second, _ in SUBTYPES.values():
        rows = rng.choice(response_rows, size=max(1, round(_CONFOUNDED * response_rows.size)), replace=False)
        effects[rows, FINE_TYPES.index(second)] += rng.normal(0.0, 0.7, rows.size)
    return effects


def draw_panel(spec: WorldSpec, rng: np.random.Generator) -> Panel:
    """Draw the gene panel of ``spec`` (raises if ``spec.n_genes`` is below :func:`panel_size`)."""
    need = panel_size(spec)
    if spec.n_genes < need:
        raise ValueError(f"n_genes={spec.n_genes} is too small for world {spec.name!r}: its programmes need {need}")
    names, programme, channel, groups = _names(spec)
    index = {g: i for i, g in enumerate(names)}
    prog = np.asarray(programme)
    n = len(names)
    raw = np.clip(rng.normal(0.0, 1.0, n), -2.5, 2.5)
    # markers are low outside their type, response genes high enough for their shifts to be measurable
    raw += np.select([prog == "marker", prog == "ligand", prog == "response"], [-1.0, -0.5, 1.0], 0.0)
    baseline = raw - (np.log(np.exp(raw - raw.max()).sum()) + raw.max())
    low, high = spec.dispersion
    theta = np.exp(rng.uniform(math.log(low), math.log(high), n))
    type_effects = _type_effects(groups, index, spec, rng)
    state_effect = np.zeros(n)
    state_effect[prog == "state"] = rng.uniform(1.0, 2.0, int((prog == "state").sum()))
    response_rows = np.flatnonzero(prog == "response")
    confounded = rng.choice(response_rows, size=max(1, round(_CONFOUNDED * response_rows.size)), replace=False)
    state_effect[confounded] = rng.normal(0.0, 0.7, confounded.size)
    response = {
        c.name: _response(c, np.array([index[g] for g in groups["response"][c.name]]), n, rng) for c in spec.channels
    }
    ligand = {name: np.array([index[g] for g in genes]) for name, genes in groups["ligand"].items()}
    batch = rng.normal(0.0, spec.batch_sd, (n, spec.n_slides))
    return Panel(
        names, programme, channel, baseline, theta, type_effects, state_effect, ligand, response, batch, groups
    )
