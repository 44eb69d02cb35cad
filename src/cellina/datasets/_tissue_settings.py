"""The checked arguments of :func:`cellina.datasets.synthetic_tissue`.

Every argument is checked before anything is drawn, so a bad call fails fast with a message
naming the argument.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from cellina.datasets._errors import DatasetTypeError
from cellina.datasets._inputs import check_int, check_positive
from cellina.datasets._params import (
    DEFAULT_COMPOSITION,
    DOMAINS,
    FINE_TYPES,
    MIN_N_GENES,
)

MIN_CELLS_PER_SLIDE = 20


@dataclass(frozen=True)
class TissueSettings:
    """Checked, normalised arguments of a synthetic tissue."""

    n_cells: int
    n_genes: int
    n_slides: int
    seed: int
    library_size_median: float
    library_size_sigma: float
    niche_bandwidth: float
    niche_max_neighbours: int
    niche_cutoff: float
    cell_area: float
    tumour_fraction: float
    margin_fraction: float
    tumour_radius: float
    probabilities: np.ndarray  # (domains, fine types): composition, each row sums to 1

    @property
    def slide_gap(self) -> float:
        """Gap between slides along x (um), far wider than any neighbourhood."""
        return max(500.0, 20.0 * self.niche_bandwidth)


def check_composition(composition: Mapping | None) -> np.ndarray:
    """(domains, fine types) probabilities from ``{domain: {fine type: weight}}`` (None: default)."""
    if composition is None:
        composition = DEFAULT_COMPOSITION
    if not isinstance(composition, Mapping):
        raise DatasetTypeError(
            f"composition must be a mapping domain -> {{fine type: weight}}, got {type(composition).__name__}"
        )
    unknown = sorted(set(map(str, composition)) - set(DOMAINS))
    if unknown:
        raise ValueError(f"composition has unknown domain(s) {unknown}; known: {list(DOMAINS)}")
    missing = [d for d in DOMAINS if d not in composition]
    if missing:
        raise ValueError(f"composition lacks domain(s) {missing}")
    table = np.zeros((len(DOMAINS), len(FINE_TYPES)))
    for i, domain in enumerate(DOMAINS):
        weights = composition[domain]
        bad = sorted(set(map(str, weights)) - set(FINE_TYPES))
        if bad:
            raise ValueError(f"composition[{domain!r}] has unknown cell type(s) {bad}; known: {list(FINE_TYPES)}")
        for fine, w in weights.items():
            w = float(w)
            if not math.isfinite(w) or w < 0:
                raise ValueError(f"composition[{domain!r}][{fine!r}] must be a finite weight >= 0, got {w!r}")
            table[i, FINE_TYPES.index(fine)] = w
        if table[i].sum() <= 0:
            raise ValueError(f"composition[{domain!r}] has no positive weight")
    return table / table.sum(axis=1, keepdims=True)


def check_settings(
    *,
    n_cells: object,
    n_genes: object,
    n_slides: object,
    seed: object,
    library_size_median: object,
    niche_bandwidth: object,
    niche_max_neighbours: object,
    progress: Callable[[float, str], None] | None,
    niche_cutoff: object,
    library_size_sigma: object,
    cell_area: object,
    tumour_fraction: object,
    margin_fraction: object,
    tumour_radius: object,
    composition: Mapping | None,
) -> TissueSettings:
    """Check every argument of a synthetic tissue; ``progress`` is checked, not kept."""
    n_cells = check_int(n_cells, "n_cells", 1)
    n_genes = check_int(n_genes, "n_genes", 1)
    n_slides = check_int(n_slides, "n_slides", 1)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    if n_genes < MIN_N_GENES:
        raise ValueError(f"n_genes={n_genes} is too small for the gene programmes; need at least {MIN_N_GENES}")
    if n_cells < MIN_CELLS_PER_SLIDE * n_slides:
        raise ValueError(
            f"n_cells={n_cells} is too small for n_slides={n_slides}; need at least "
            f"{MIN_CELLS_PER_SLIDE} cells per slide"
        )
    library_size_median = check_positive(library_size_median, "library_size_median")
    niche_bandwidth = check_positive(niche_bandwidth, "niche_bandwidth")
    niche_max_neighbours = check_int(niche_max_neighbours, "niche_max_neighbours", 1)
    niche_cutoff = float(niche_cutoff)
    if not 0.0 <= niche_cutoff < 1.0:
        raise ValueError(f"niche_cutoff must be in [0, 1), got {niche_cutoff!r}")
    library_size_sigma = float(library_size_sigma)
    if not math.isfinite(library_size_sigma) or library_size_sigma < 0:
        raise ValueError(f"library_size_sigma must be finite and >= 0, got {library_size_sigma!r}")
    cell_area = check_positive(cell_area, "cell_area")
    tumour_radius = check_positive(tumour_radius, "tumour_radius")
    tumour_fraction = check_positive(tumour_fraction, "tumour_fraction")
    margin_fraction = check_positive(margin_fraction, "margin_fraction")
    if tumour_fraction + margin_fraction >= 1.0:
        raise ValueError(f"tumour_fraction + margin_fraction must be < 1, got {tumour_fraction} + {margin_fraction}")
    probabilities = check_composition(composition)
    if progress is not None and not callable(progress):
        raise DatasetTypeError(f"progress must be callable(fraction, message) or None, got {type(progress).__name__}")
    return TissueSettings(
        n_cells=n_cells,
        n_genes=n_genes,
        n_slides=n_slides,
        seed=seed,
        library_size_median=library_size_median,
        library_size_sigma=library_size_sigma,
        niche_bandwidth=niche_bandwidth,
        niche_max_neighbours=niche_max_neighbours,
        niche_cutoff=niche_cutoff,
        cell_area=cell_area,
        tumour_fraction=tumour_fraction,
        margin_fraction=margin_fraction,
        tumour_radius=tumour_radius,
        probabilities=probabilities,
    )
