"""``make_world``: draw a world from its specification and store its exact truth."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import anndata as ad
import numpy as np

from cellina.datasets._counts import sample_counts
from cellina.datasets._errors import DatasetTypeError
from cellina.datasets.worlds._catalogue import TUMOURNESS
from cellina.datasets.worlds._genes import draw_panel
from cellina.datasets.worlds._layout import place_cells
from cellina.datasets.worlds._mechanism import Cells
from cellina.datasets.worlds._registry import world_spec
from cellina.datasets.worlds._spec import WorldSpec
from cellina.datasets.worlds._store import build_model, write_world

_STATE_BASE = 0.35  # mean of the cell-state programme in healthy tissue
_STATE_CONCENTRATION = 6.0  # Beta(a, b) with a + b = this


def _resolve(spec_or_name: WorldSpec | str, overrides: dict) -> WorldSpec:
    if isinstance(spec_or_name, str):
        spec = world_spec(spec_or_name)
    elif isinstance(spec_or_name, WorldSpec):
        spec = spec_or_name
    else:
        raise DatasetTypeError(
            f"spec_or_name must be a WorldSpec or a registered world name, got {type(spec_or_name).__name__}"
        )
    changes = {k: v for k, v in overrides.items() if v is not None}
    # replace() re-runs the validation, so an override is checked like any other field
    return dataclasses.replace(spec, **changes) if changes else spec


def _cell_draws(spec: WorldSpec, domain: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Cell state and library size; both differ between domains only through the confounds."""
    tumourness = np.asarray(TUMOURNESS)[domain]
    mean = np.clip(_STATE_BASE + spec.confounds.state_shift * tumourness, 0.05, 0.95)
    state = rng.beta(mean * _STATE_CONCENTRATION, (1.0 - mean) * _STATE_CONCENTRATION)
    size = spec.depth * np.exp(spec.depth_sigma * rng.standard_normal(domain.size))
    size *= spec.confounds.size_ratio**tumourness
    return state, size


def make_world(
    spec_or_name: WorldSpec | str,
    *,
    seed: int | None = None,
    n_cells: int | None = None,
    n_genes: int | None = None,
    n_slides: int | None = None,
    depth: float | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ad.AnnData:
    """Generate a world of the family, with exact counterfactual truth.

    Parameters
    ----------
    spec_or_name
        A :class:`WorldSpec`, or the name of a registered world (see :func:`list_worlds`).
    seed, n_cells, n_genes, n_slides, depth
        Override the specification's value (None keeps it); the same specification and seed
        always give the same world.
    progress
        Optional ``progress(fraction, message)`` callback.

    Returns
    -------
    anndata.AnnData
        Counts (CSR float32, integer values) in ``X`` and ``layers["counts"]``,
        ``obsm["spatial"]`` (um, (x, y)), ``obs`` columns ``slide``, ``domain`` (healthy,
        margin, tumour), ``cell_type`` (fine), ``coarse_type``, and the truth described in
        :mod:`cellina.datasets.worlds._store`; evaluate it with :func:`cellina.datasets.truth_for`.
    """
    if progress is not None and not callable(progress):
        raise DatasetTypeError(f"progress must be callable(fraction, message) or None, got {type(progress).__name__}")

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(fraction), message)

    spec = _resolve(
        spec_or_name, {"seed": seed, "n_cells": n_cells, "n_genes": n_genes, "n_slides": n_slides, "depth": depth}
    )
    genes_ss, layout_ss, cells_ss, counts_ss = np.random.SeedSequence(spec.seed).spawn(4)
    report(0.0, "gene panel")
    panel = draw_panel(spec, np.random.default_rng(genes_ss))
    report(0.05, "layout")
    gap = 2.0 * max(c.reach for c in spec.channels) + 100.0  # no niche reaches across slides
    placement = place_cells(spec, np.random.default_rng(layout_ss), gap)
    state, size = _cell_draws(spec, placement.domain, np.random.default_rng(cells_ss))
    cells = Cells(
        placement.coords, placement.slide, placement.fine, state, size, placement.structure, placement.gradient
    )
    report(0.2, "niche signals")
    model = build_model(spec, panel)
    everyone = np.arange(cells.fine.size)
    sensed = model.sense(cells, everyone)
    model = model.calibrated(sensed, placement.domain == 0)
    report(0.4, "sampling counts")
    counts = sample_counts(
        everyone.size,
        panel.theta,
        lambda rows: model.expected(cells, everyone[rows], sensed[rows]),
        counts_ss,
        lambda f: report(0.4 + 0.5 * f, "sampling counts"),
    )
    report(0.95, "assembling AnnData")
    adata = write_world(spec, panel, cells, placement.domain, model, sensed, counts)
    report(1.0, "done")
    return adata
