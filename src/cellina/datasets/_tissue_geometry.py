"""Where the cells of a synthetic tissue sit, and which domain each one is in.

Each slide is a grid of ``cell_area`` squares with one cell jittered inside each chosen square
(so cells are never stacked); irregular tumour blobs are thresholded into tumour, margin and
healthy domains at per-slide quantiles, so every slide has exactly the requested fractions.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from cellina.datasets._tissue_settings import TissueSettings


def tissue_geometry(settings: TissueSettings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (um), slide code and domain code (0 healthy, 1 margin, 2 tumour) per cell."""
    n_cells, n_slides = settings.n_cells, settings.n_slides
    tumour_fraction, margin_fraction = settings.tumour_fraction, settings.margin_fraction
    tumour_radius, slide_gap = settings.tumour_radius, settings.slide_gap
    per_slide = np.full(n_slides, n_cells // n_slides)
    per_slide[: n_cells % n_slides] += 1
    spacing = math.sqrt(settings.cell_area)
    m = math.ceil(math.sqrt(per_slide.max()))
    side = m * spacing
    coords = np.empty((n_cells, 2))
    slide = np.empty(n_cells, dtype=np.int64)
    domain = np.empty(n_cells, dtype=np.int64)
    start = 0
    for s, ns in enumerate(per_slide):
        stop = start + ns
        sites = rng.choice(m * m, size=ns, replace=False)
        xy = (np.column_stack([sites % m, sites // m]) + rng.random((ns, 2))) * spacing
        n_blobs = max(1, round(tumour_fraction * side * side / (math.pi * tumour_radius**2)))
        centres = rng.uniform(0.15 * side, 0.85 * side, (n_blobs, 2))
        radii = tumour_radius * rng.uniform(0.6, 1.4, n_blobs)
        amplitude = rng.uniform(0.0, 0.15, (n_blobs, 3))
        phase = rng.uniform(0.0, 2 * math.pi, (n_blobs, 3))
        field = _blob_distance(xy, centres, radii, amplitude, phase)
        t_tumour, t_margin = np.quantile(field, [tumour_fraction, tumour_fraction + margin_fraction])
        domain[start:stop] = np.where(field <= t_tumour, 2, np.where(field <= t_margin, 1, 0))
        xy[:, 0] += s * (side + slide_gap)
        coords[start:stop] = xy
        slide[start:stop] = s
        start = stop
    return coords, slide, domain


def _blob_distance(
    xy: np.ndarray, centres: np.ndarray, radii: np.ndarray, amplitude: np.ndarray, phase: np.ndarray
) -> np.ndarray:
    """Signed distance of every point to the nearest irregular blob edge (negative inside)."""
    ns, n_blobs = xy.shape[0], centres.shape[0]
    # radius r * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..4, expanded with the angle-addition
    # formulas so only products of cos/sin theta are needed (no trigonometry per cell)
    a_cos, a_sin = amplitude * np.cos(phase), amplitude * np.sin(phase)
    # only the few nearest blob centres are considered: a far blob's edge is never the nearest
    n_near = min(4, n_blobs)
    _, near = cKDTree(centres).query(xy, k=n_near)
    near = np.asarray(near).reshape(ns, n_near)
    dx = xy[:, 0, None] - centres[near, 0]
    dy = xy[:, 1, None] - centres[near, 1]
    dist = np.hypot(dx, dy)
    safe = np.where(dist > 0, dist, 1.0)
    cos1, sin1 = np.where(dist > 0, dx / safe, 1.0), dy / safe
    cos2, sin2 = cos1 * cos1 - sin1 * sin1, 2.0 * cos1 * sin1
    cos3, sin3 = cos2 * cos1 - sin2 * sin1, sin2 * cos1 + cos2 * sin1
    cos4, sin4 = cos2 * cos2 - sin2 * sin2, 2.0 * cos2 * sin2
    wobble = (
        a_cos[near, 0] * cos2
        - a_sin[near, 0] * sin2
        + a_cos[near, 1] * cos3
        - a_sin[near, 1] * sin3
        + a_cos[near, 2] * cos4
        - a_sin[near, 2] * sin4
    )
    return (dist - radii[near] * (1.0 + wobble)).min(axis=1)
