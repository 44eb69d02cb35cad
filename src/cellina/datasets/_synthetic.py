"""Synthetic tumour tissue whose counterfactual expression is known exactly.

Generative model
----------------
Geometry
    Each slide is a square of ``n * cell_area`` um^2 (one cell per grid square of side
    sqrt(cell_area), uniformly placed inside it, so cells are ~14 um apart and never stacked).
    Slides sit side by side along x with a gap far wider than any neighbourhood.
Domains
    A few irregular tumour blobs per slide (about one per ``pi * tumour_radius^2 /
    tumour_fraction`` um^2; discs with random low-order harmonics on the radius). The signed
    distance to the nearest blob edge is thresholded at its per-slide quantiles, so every slide
    has exactly ``tumour_fraction`` "tumour", ``margin_fraction`` "margin" (the band around the
    tumour) and the rest "healthy" (the reference domain).
Cell types
    Ten fine types in nine coarse types (the annotation: Malignant cells and CAFs apart from
    normal Epithelial and Fibroblast cells), drawn independently per cell from a
    domain-specific composition (``DEFAULT_COMPOSITION``). Every coarse type but Malignant
    occurs in all three domains, and the subtype mix within a coarse type (only Myeloid has
    two) is the same everywhere, so the healthy -> tumour change of a coarse type is a pure
    niche effect.
Intrinsic expression (independent of the neighbourhood)
    log m_vg = b_g + A[t(v), g] + s_v * alpha_g, with baseline log-means b_g (exp(b) sums to 1
    over genes), marker elevations A (lineage markers shared by malignant and normal
    epithelium and by CAFs and fibroblasts, plus subtype markers; the ligand genes are elevated in the sender types fib_caf, myeloid_2
    and endothelial) and a continuous state s_v ~ Beta(2, 2) scaling the "state" programme.
Niche effects (exact functions of the true graph ``obsp["cellina_true_connectivities"]``,
Gaussian kernel on the k nearest cells, weights <= cutoff dropped, no self loops)
    * composition: c_v = weighted fraction of v's neighbours whose fine type is tumour-associated
      (epi_tumour, fib_caf); adds (beta_g * rho_comp[k] + B[g, k]) * c_v with k = coarse(v):
      the shared "composition_response" genes move in every coarse type in proportion to its
      responsiveness, and each coarse type's own "type_response" genes (B, one block per type)
      move in that type only;
    * ligand: l_v = weighted mean over neighbours u of q_u = mean over ligand genes of
      log1p(CP10K of u's expected ligand expression: intrinsic, times u's own composition
      response, which raises the ligand genes of CAFs, Myeloid and Endothelial cells in a
      tumour niche, over u's intrinsic total); adds
      gamma_g * rho_lig[coarse(v)] * (l_v - l_ref) on the "ligand_response" genes. l_ref is the
      mean of l over healthy cells with neighbours, so the healthy domain is the reference.
    Cells without neighbours have c = 0 and l = l_ref. The response programmes are
    disjoint from each other and from markers, state and ligand genes; every other gene is a
    null gene whose mean is the same in every cell up to its size.
Counts
    mu_vg = size_v * exp(log m_vg + niche_vg), size_v ~ LogNormal(log(library_size_median),
    library_size_sigma); counts ~ NB(mu, theta_g) drawn as Gamma-Poisson, theta_g log-uniform in
    [2, 20]. ``library_size_median`` is the median expected total of a cell with baseline-only
    expression; markers raise real totals by ~10-30 %.

Everything needed to recompute the means is stored (``uns["cellina_truth"]``, ``var`` columns
``cellina_true_*``, ``varm["cellina_true_type_effects"]``, ``obs`` columns ``cellina_true_*``
and the true graph), and :mod:`cellina.datasets._truth` evaluates any counterfactual exactly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial import cKDTree

from cellina.datasets._counts import sample_counts
from cellina.datasets._errors import DatasetTypeError
from cellina.datasets._graph import true_graph
from cellina.datasets._inputs import check_int, check_positive
from cellina.datasets._model import TissueModel
from cellina.datasets._params import (
    COARSE_TYPES,
    DEFAULT_COMPOSITION,
    DOMAINS,
    FINE_TO_COARSE,
    FINE_TYPES,
    LIGAND_SENDERS,
    MIN_N_GENES,
    PROGRAMMES,
    RHO_COMPOSITION,
    RHO_LIGAND,
    TARGET_SUM,
    TUMOUR_ASSOCIATED,
    gene_parameters,
)

TRUTH_KEY = "cellina_truth"
GRAPH_KEY = "cellina_true_connectivities"
TYPE_EFFECTS_KEY = "cellina_true_type_effects"
TRUTH_VERSION = 2
TYPE_RESPONSE_KEY = "cellina_true_type_response_effects"
MIN_CELLS_PER_SLIDE = 20

ProgressCallback = Callable[[float, str], None]


def _check_composition(composition: Mapping | None) -> np.ndarray:
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


def _geometry(
    n_cells: int,
    n_slides: int,
    rng: np.random.Generator,
    *,
    cell_area: float,
    tumour_fraction: float,
    margin_fraction: float,
    tumour_radius: float,
    slide_gap: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    per_slide = np.full(n_slides, n_cells // n_slides)
    per_slide[: n_cells % n_slides] += 1
    spacing = math.sqrt(cell_area)
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
        # radius r * (1 + sum_k a_k cos(k theta + phi_k)), k = 2..4, expanded with the angle-addition
        # formulas so only products of cos/sin theta are needed (no trigonometry per cell)
        a_cos, a_sin = amplitude * np.cos(phase), amplitude * np.sin(phase)
        # signed distance to the nearest irregular blob edge, over a few nearest blob centres
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
            a_cos[near, 0] * cos2 - a_sin[near, 0] * sin2
            + a_cos[near, 1] * cos3 - a_sin[near, 1] * sin3
            + a_cos[near, 2] * cos4 - a_sin[near, 2] * sin4
        )
        field = (dist - radii[near] * (1.0 + wobble)).min(axis=1)
        t_tumour, t_margin = np.quantile(field, [tumour_fraction, tumour_fraction + margin_fraction])
        domain[start:stop] = np.where(field <= t_tumour, 2, np.where(field <= t_margin, 1, 0))
        xy[:, 0] += s * (side + slide_gap)
        coords[start:stop] = xy
        slide[start:stop] = s
        start = stop
    return coords, slide, domain


def _sample_counts(
    model: TissueModel,
    theta: np.ndarray,
    codes: np.ndarray,
    state: np.ndarray,
    size: np.ndarray,
    c: np.ndarray,
    l: np.ndarray,
    seed: np.random.SeedSequence,
    store_means: bool,
    progress: ProgressCallback | None,
) -> tuple[sp.csr_matrix, np.ndarray | None, np.ndarray | None]:
    n, n_genes = codes.shape[0], model.n_genes
    mean = np.empty((n, n_genes), dtype=np.float32) if store_means else None
    mean_intrinsic = np.empty((n, n_genes), dtype=np.float32) if store_means else None

    def block(sl: slice) -> np.ndarray:
        mu = model.mean_block(codes[sl], state[sl], c[sl], l[sl], size[sl])
        if store_means:
            mean[sl] = mu
            mean_intrinsic[sl] = model.mean_block(codes[sl], state[sl], None, None, size[sl])
        return mu

    report = None if progress is None else (lambda f: progress(0.35 + 0.55 * f, "sampling counts"))
    return sample_counts(n, theta, block, seed, report), mean, mean_intrinsic


def synthetic_tissue(
    n_cells: int = 2000,
    n_genes: int = 300,
    n_slides: int = 1,
    seed: int = 0,
    *,
    library_size_median: float = 500.0,
    niche_bandwidth: float = 20.0,
    niche_max_neighbours: int = 30,
    store_means: bool = True,
    progress: ProgressCallback | None = None,
    niche_cutoff: float = 0.1,
    library_size_sigma: float = 0.4,
    cell_area: float = 200.0,
    tumour_fraction: float = 0.3,
    margin_fraction: float = 0.2,
    tumour_radius: float = 250.0,
    composition: Mapping[str, Mapping[str, float]] | None = None,
) -> ad.AnnData:
    """Simulate a spatial transcriptomics tissue with exact counterfactual truth.

    See the module docstring of :mod:`cellina.datasets._synthetic` for the generative model.

    Parameters
    ----------
    n_cells
        Number of cells over all slides (at least 20 per slide).
    n_genes
        Number of genes (at least 100); genes beyond the programmes are null genes.
    n_slides
        Number of slides, ``obs["slide"]`` = "slide_0", "slide_1", ...
    seed
        Seed of every random draw; equal seeds give identical tissues.
    library_size_median
        Median of the per-cell size factor (expected total count of a baseline-only cell).
    niche_bandwidth
        Gaussian kernel length scale of the true graph, in micrometres.
    niche_max_neighbours
        k nearest cells considered by the true graph.
    store_means
        Store the exact expected counts as dense float32 layers ``cellina_true_mean`` and
        ``cellina_true_mean_intrinsic`` (2 x 4 bytes per cell and gene; turn off for huge tissues).
    progress
        Optional ``progress(fraction, message)`` callback, fraction in [0, 1].
    niche_cutoff
        Kernel weights at or below this are not edges of the true graph.
    library_size_sigma
        Log-scale standard deviation of the size factors.
    cell_area
        Tissue area per cell in um^2 (spacing sqrt(cell_area)).
    tumour_fraction, margin_fraction
        Fraction of each slide's cells in the tumour and in the margin band around it.
    tumour_radius
        Typical tumour blob radius in um; sets how many blobs a slide gets.
    composition
        Override of the per-domain fine-type weights, ``{domain: {fine_type: weight}}``.

    Returns
    -------
    anndata.AnnData
        Counts (CSR float32 with integer values) in ``X`` and ``layers["counts"]``,
        ``obsm["spatial"]`` (um), ``obs`` columns ``slide``, ``domain``, ``cell_type``,
        ``coarse_type`` and ``cellina_true_*``, the true graph in
        ``obsp["cellina_true_connectivities"]`` and the truth in ``uns["cellina_truth"]``.
    """
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
        raise ValueError(
            f"tumour_fraction + margin_fraction must be < 1, got {tumour_fraction} + {margin_fraction}"
        )
    probabilities = _check_composition(composition)
    if progress is not None and not callable(progress):
        raise DatasetTypeError(f"progress must be callable(fraction, message) or None, got {type(progress).__name__}")

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(fraction), message)

    genes_ss, geometry_ss, types_ss, cells_ss, counts_ss = np.random.SeedSequence(seed).spawn(5)

    report(0.0, "gene programmes")
    genes = gene_parameters(n_genes, np.random.default_rng(genes_ss))

    report(0.05, "tissue geometry")
    slide_gap = max(500.0, 20.0 * niche_bandwidth)
    coords, slide, domain = _geometry(
        n_cells,
        n_slides,
        np.random.default_rng(geometry_ss),
        cell_area=cell_area,
        tumour_fraction=tumour_fraction,
        margin_fraction=margin_fraction,
        tumour_radius=tumour_radius,
        slide_gap=slide_gap,
    )

    report(0.12, "cell types")
    rng = np.random.default_rng(types_ss)
    cdf = np.cumsum(probabilities, axis=1)
    codes = np.minimum((rng.random(n_cells)[:, None] > cdf[domain]).sum(axis=1), len(FINE_TYPES) - 1)
    rng = np.random.default_rng(cells_ss)
    state = rng.beta(2.0, 2.0, n_cells)
    size = library_size_median * np.exp(library_size_sigma * rng.standard_normal(n_cells))

    report(0.18, "true neighbour graph")
    graph = true_graph(coords, slide, niche_bandwidth, niche_max_neighbours, niche_cutoff)

    report(0.3, "niche signals")
    name_index = {g: i for i, g in enumerate(genes.names)}
    model = TissueModel.build(
        baseline=genes.baseline,
        type_effects=genes.type_effects,
        state_effect=genes.state_effect,
        composition_effect=genes.composition_effect,
        type_response_effect=genes.type_response_effect,
        coarse_types=COARSE_TYPES,
        ligand_effect=genes.ligand_effect,
        ligand_idx=np.array([name_index[g] for g in genes.programmes["ligand"]]),
        fine_types=FINE_TYPES,
        rho_composition=RHO_COMPOSITION,
        rho_ligand=RHO_LIGAND,
        tumour_associated=TUMOUR_ASSOCIATED,
        l_ref=0.0,
        target_sum=TARGET_SUM,
    )
    q = model.ligand_scores(codes, state, model.composition_signal(graph, codes))
    degree = np.asarray(graph.sum(axis=1)).ravel()
    _, l_raw = model.niche_signals(graph, codes, q)
    reference = (domain == 0) & (degree > 0)
    if not reference.any():
        reference = degree > 0
    l_ref = float(l_raw[reference].mean()) if reference.any() else float(q.mean())
    model = model.with_l_ref(l_ref)
    c, l = model.niche_signals(graph, codes, q)

    report(0.35, "sampling counts")
    counts, mean, mean_intrinsic = _sample_counts(
        model, genes.theta, codes, state, size, c, l, counts_ss, store_means, progress
    )

    report(0.92, "assembling AnnData")
    obs = pd.DataFrame(
        {
            "slide": pd.Categorical.from_codes(slide, categories=[f"slide_{i}" for i in range(n_slides)]),
            "domain": pd.Categorical.from_codes(domain, categories=list(DOMAINS)),
            "cell_type": pd.Categorical.from_codes(codes, categories=list(FINE_TYPES)),
            "coarse_type": pd.Categorical.from_codes(
                np.array([COARSE_TYPES.index(FINE_TO_COARSE[f]) for f in FINE_TYPES])[codes],
                categories=list(COARSE_TYPES),
            ),
            "cellina_true_size": size,
            "cellina_true_state": state,
            "cellina_true_composition": c,
            "cellina_true_ligand": l,
        },
        index=pd.Index(np.char.add("cell_", np.arange(n_cells).astype(str)), dtype=object),
    )
    var = pd.DataFrame(
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
    truth = {
        "version": TRUTH_VERSION,
        "params": {
            "seed": seed,
            "n_cells": n_cells,
            "n_genes": n_genes,
            "n_slides": n_slides,
            "library_size_median": library_size_median,
            "library_size_sigma": library_size_sigma,
            "cell_area": cell_area,
            "tumour_fraction": tumour_fraction,
            "margin_fraction": margin_fraction,
            "tumour_radius": tumour_radius,
            "slide_gap": slide_gap,
        },
        "graph": {
            "connectivities_key": GRAPH_KEY,
            "kernel": "gaussian",
            "bandwidth": niche_bandwidth,
            "max_neighbours": niche_max_neighbours,
            "cutoff": niche_cutoff,
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
    adata = ad.AnnData(
        X=counts,
        obs=obs,
        var=var,
        obsm={"spatial": coords},
        varm={TYPE_EFFECTS_KEY: genes.type_effects, TYPE_RESPONSE_KEY: genes.type_response_effect},
        obsp={GRAPH_KEY: graph},
        uns={TRUTH_KEY: truth},
    )
    adata.layers["counts"] = counts.copy()
    if store_means:
        adata.layers["cellina_true_mean"] = mean
        adata.layers["cellina_true_mean_intrinsic"] = mean_intrinsic
    report(1.0, "done")
    return adata
