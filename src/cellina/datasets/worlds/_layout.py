"""Where cells are and what they are: positions, domains, nests, aggregates, vessels, gradients.

Types are not drawn independently per cell unless the layout says so: malignant cells gather in
nests inside the tumour, lymphocytes in aggregates outside it, and vessels are lines of
endothelial cells, so a cell's neighbours depend on where it sits beyond its domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from cellina.datasets.worlds._catalogue import (
    COARSE_TYPES,
    COMPOSITION,
    DOMAINS,
    FINE_TO_COARSE,
    FINE_TYPES,
    SUBTYPES,
    TUMOURNESS,
)
from cellina.datasets.worlds._spec import Layout, WorldSpec

_HOLES = 0.08  # share of empty grid sites, so cells do not sit on a perfect lattice
_JITTER = 0.35  # of the spacing: cells never stack yet are not on a grid
_NEST_COVER = 0.6  # share of the tumour area inside nests
_VESSEL_STEP = 3.0  # um between the points of a vessel's centre line
_VESSEL_TURN = 0.12  # radians of random turn per step
_HYPOXIA_LENGTH = 100.0  # um over which oxygen from a vessel is used up in healthy tissue
_TUMOUR_CONSUMPTION = 5.0  # extra oxygen use deep in the tumour, relative to healthy tissue
_MORPHOGEN_SHARPNESS = 4.0  # per field standard deviation around the tumour edge


@dataclass(frozen=True)
class Placement:
    """Per-cell layout of a world."""

    coords: np.ndarray  # (n, 2) um, slides side by side along x
    slide: np.ndarray  # (n,) int
    domain: np.ndarray  # (n,) int into DOMAINS
    fine: np.ndarray  # (n,) int into FINE_TYPES
    structure: np.ndarray  # (n,) float 0/1: the cell is part of a vessel
    gradient: np.ndarray  # (n,) float in [0, 1]


def _positions(n_cells: int, n_slides: int, spacing: float, gap: float, rng: np.random.Generator):
    per_slide = np.full(n_slides, n_cells // n_slides)
    per_slide[: n_cells % n_slides] += 1
    m = math.ceil(math.sqrt(per_slide.max() / (1.0 - _HOLES)))
    side = m * spacing
    coords, slide = [], []
    for s, ns in enumerate(per_slide):
        sites = rng.choice(m * m, size=ns, replace=False)
        jitter = rng.uniform(-_JITTER, _JITTER, (ns, 2))
        xy = (np.column_stack([sites % m, sites // m]) + 0.5 + jitter) * spacing
        xy[:, 0] += s * (side + gap)
        coords.append(xy)
        slide.append(np.full(ns, s))
    return np.concatenate(coords), np.concatenate(slide), side


def _bump_field(xy: np.ndarray, origin: float, side: float, layout: Layout, rng: np.random.Generator) -> np.ndarray:
    """Smooth random field whose high values are tumour: a sum of Gaussian bumps."""
    n_bumps = max(2, round(layout.tumour_fraction * side * side / (math.pi * layout.tumour_radius**2)))
    centres = rng.uniform(0.1 * side, 0.9 * side, (n_bumps, 2))
    centres[:, 0] += origin
    radius = layout.tumour_radius * rng.uniform(0.6, 1.4, n_bumps)
    height = rng.uniform(0.6, 1.4, n_bumps)
    d2 = ((xy[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return (height * np.exp(-0.5 * d2 / radius**2)).sum(axis=1)


def _near_field(xy: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """exp(-d^2 / 2 r^2) of the distance to the nearest centre (0 without centres)."""
    if centres.shape[0] == 0:
        return np.zeros(xy.shape[0])
    dist, _ = cKDTree(centres).query(xy)
    return np.exp(-0.5 * (dist / radius) ** 2)


def _centres(xy: np.ndarray, allowed: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    candidates = np.flatnonzero(allowed)
    if count < 1 or candidates.size == 0:
        return np.zeros((0, 2))
    return xy[rng.choice(candidates, size=min(count, candidates.size), replace=False)]


def _vessel_cells(xy: np.ndarray, domain: np.ndarray, area: float, layout: Layout, rng: np.random.Generator):
    """Cells within half a vessel width of random curved centre lines; lines start more often in the tumour."""
    count = round(layout.vessels * area / 1e6)
    if count == 0:
        return np.zeros(xy.shape[0], dtype=bool)
    boost = np.array([1.0, 0.5 * (1.0 + layout.vessel_tumour_boost), layout.vessel_tumour_boost])[domain]
    starts = xy[rng.choice(xy.shape[0], size=count, p=boost / boost.sum())]
    steps = max(2, int(layout.vessel_length / _VESSEL_STEP))
    heading = rng.uniform(0, 2 * math.pi, (count, 1)) + np.cumsum(rng.normal(0, _VESSEL_TURN, (count, steps)), axis=1)
    # start mid-line: the centre line runs both ways from the start point
    offset = np.cumsum(_VESSEL_STEP * np.stack([np.cos(heading), np.sin(heading)], axis=2), axis=1)
    offset -= offset[:, steps // 2 : steps // 2 + 1]
    line = (starts[:, None, :] + offset).reshape(-1, 2)
    dist, _ = cKDTree(line).query(xy)
    return dist <= 0.5 * layout.vessel_width


def _coarse_weights(domain, nest, aggregate, vessel, layout: Layout) -> np.ndarray:
    table = np.array([[COMPOSITION[d][c] for c in COARSE_TYPES] for d in DOMAINS])
    weights = table[domain]
    tumour_side = domain > 0
    mal, t_cell, b_cell = (COARSE_TYPES.index(c) for c in ("Malignant", "T_cell", "B_cell"))
    # nests: malignant cells crowd into nests and leave the stroma between them
    weights[tumour_side, mal] *= np.exp(layout.nests * (2.0 * nest[tumour_side] - 1.0))
    lymph = np.exp(2.0 * layout.aggregates * aggregate)
    weights[:, t_cell] *= lymph
    weights[:, b_cell] *= lymph
    weights[vessel] = 0.0
    weights[vessel, COARSE_TYPES.index("Endothelial")] = 1.0
    return weights / weights.sum(axis=1, keepdims=True)


def _fine_types(coarse: np.ndarray, domain: np.ndarray, subtype_shift: float, rng: np.random.Generator) -> np.ndarray:
    fine = np.empty(coarse.size, dtype=np.int64)
    draw = rng.random(coarse.size)
    tumourness = np.asarray(TUMOURNESS)[domain]
    for k, name in enumerate(COARSE_TYPES):
        members = coarse == k
        if name not in SUBTYPES:
            (only,) = (t for t, f in enumerate(FINE_TYPES) if FINE_TO_COARSE[f] == name)
            fine[members] = only
            continue
        first, second, share = SUBTYPES[name]
        logit = math.log(share / (1.0 - share)) + subtype_shift * tumourness[members]
        is_second = draw[members] < 1.0 / (1.0 + np.exp(-logit))
        fine[members] = np.where(is_second, FINE_TYPES.index(second), FINE_TYPES.index(first))
    return fine


def _gradient(kind: str, xy: np.ndarray, vessel: np.ndarray, field: np.ndarray, edge: float) -> np.ndarray:
    """Per-cell level in [0, 1]: depth inside the tumour field (morphogen), or lack of oxygen (hypoxia)."""
    spread = max(float(field.std()), 1e-12)
    morphogen = 1.0 / (1.0 + np.exp(-_MORPHOGEN_SHARPNESS * (field - edge) / spread))
    if kind == "morphogen":
        return morphogen
    if not vessel.any():
        return np.ones(xy.shape[0])
    dist, _ = cKDTree(xy[vessel]).query(xy)
    # oxygen diffuses from the nearest vessel and is used up faster where tumour cells crowd
    return 1.0 - np.exp(-dist * (1.0 + _TUMOUR_CONSUMPTION * morphogen) / _HYPOXIA_LENGTH)


def place_cells(spec: WorldSpec, rng: np.random.Generator, gap: float) -> Placement:
    """Draw positions, domains, types, vessel membership and gradient of every cell of ``spec``."""
    layout = spec.layout
    coords, slide, side = _positions(spec.n_cells, spec.n_slides, spec.spacing, gap, rng)
    n = coords.shape[0]
    domain = np.zeros(n, dtype=np.int64)
    nest, aggregate = np.zeros(n), np.zeros(n)
    vessel = np.zeros(n, dtype=bool)
    gradient = np.zeros(n)
    cell_area = spec.spacing**2 * (1.0 - _HOLES)
    for s in range(spec.n_slides):
        on = np.flatnonzero(slide == s)
        xy = coords[on]
        field = _bump_field(xy, s * (side + gap), side, layout, rng)
        cut_tumour, cut_margin = np.quantile(
            field, [1.0 - layout.tumour_fraction, 1.0 - layout.tumour_fraction - layout.margin_fraction]
        )
        dom = np.where(field >= cut_tumour, 2, np.where(field >= cut_margin, 1, 0))
        domain[on] = dom
        n_nests = round(_NEST_COVER * (dom == 2).sum() * cell_area / (math.pi * layout.nest_radius**2))
        nest[on] = _near_field(xy, _centres(xy, dom > 0, n_nests, rng), layout.nest_radius)
        n_aggregates = rng.poisson(layout.aggregate_density * side * side / 1e6) if layout.aggregates > 0 else 0
        aggregate[on] = _near_field(xy, _centres(xy, dom < 2, n_aggregates, rng), layout.aggregate_radius)
        vessel[on] = _vessel_cells(xy, dom, side * side, layout, rng)
        gradient[on] = _gradient(spec.gradient, xy, vessel[on], field, cut_tumour)
    weights = _coarse_weights(domain, nest, aggregate, vessel, layout)
    cdf = np.cumsum(weights, axis=1)
    coarse = np.minimum((rng.random(n)[:, None] > cdf).sum(axis=1), len(COARSE_TYPES) - 1)
    fine = _fine_types(coarse, domain, spec.confounds.subtype_shift, rng)
    return Placement(coords, slide, domain, fine, vessel.astype(np.float64), gradient)
