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

from collections.abc import Callable, Mapping

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellina.datasets._counts import sample_counts
from cellina.datasets._graph import true_graph
from cellina.datasets._model import TissueModel
from cellina.datasets._params import (
    COARSE_TYPES,
    FINE_TYPES,
    RHO_COMPOSITION,
    RHO_LIGAND,
    TARGET_SUM,
    TUMOUR_ASSOCIATED,
    GeneParameters,
    gene_parameters,
)
from cellina.datasets._tissue_geometry import tissue_geometry
from cellina.datasets._tissue_settings import MIN_CELLS_PER_SLIDE, check_settings
from cellina.datasets._tissue_store import (
    GRAPH_KEY,
    TRUTH_KEY,
    TRUTH_VERSION,
    TYPE_EFFECTS_KEY,
    TYPE_RESPONSE_KEY,
    TissueCells,
    write_tissue,
)

# The keys live with the writer; they are re-exported here, where readers have always found them.
__all__ = [
    "GRAPH_KEY",
    "MIN_CELLS_PER_SLIDE",
    "TRUTH_KEY",
    "TRUTH_VERSION",
    "TYPE_EFFECTS_KEY",
    "TYPE_RESPONSE_KEY",
    "synthetic_tissue",
]

ProgressCallback = Callable[[float, str], None]


def _cell_types(probabilities: np.ndarray, domain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fine-type code of every cell, drawn from its domain's composition."""
    cdf = np.cumsum(probabilities, axis=1)
    return np.minimum((rng.random(domain.size)[:, None] > cdf[domain]).sum(axis=1), len(FINE_TYPES) - 1)


def _niche_model(
    genes: GeneParameters, graph: sp.csr_matrix, codes: np.ndarray, state: np.ndarray, domain: np.ndarray
) -> tuple[TissueModel, np.ndarray, np.ndarray, float]:
    """The tissue's model with its ligand reference, and each cell's niche signals ``c`` and ``l``."""
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
    # l_ref: the mean ligand signal of healthy cells with neighbours, so healthy is the reference
    _, l_raw = model.niche_signals(graph, codes, q)
    reference = (domain == 0) & (degree > 0)
    if not reference.any():
        reference = degree > 0
    l_ref = float(l_raw[reference].mean()) if reference.any() else float(q.mean())
    model = model.with_l_ref(l_ref)
    c, l = model.niche_signals(graph, codes, q)
    return model, c, l, l_ref


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
    settings = check_settings(
        n_cells=n_cells,
        n_genes=n_genes,
        n_slides=n_slides,
        seed=seed,
        library_size_median=library_size_median,
        niche_bandwidth=niche_bandwidth,
        niche_max_neighbours=niche_max_neighbours,
        progress=progress,
        niche_cutoff=niche_cutoff,
        library_size_sigma=library_size_sigma,
        cell_area=cell_area,
        tumour_fraction=tumour_fraction,
        margin_fraction=margin_fraction,
        tumour_radius=tumour_radius,
        composition=composition,
    )

    def report(fraction: float, message: str) -> None:
        if progress is not None:
            progress(float(fraction), message)

    # One independent stream per stage, so changing one stage never reshuffles the others.
    genes_ss, geometry_ss, types_ss, cells_ss, counts_ss = np.random.SeedSequence(settings.seed).spawn(5)

    report(0.0, "gene programmes")
    genes = gene_parameters(settings.n_genes, np.random.default_rng(genes_ss))

    report(0.05, "tissue geometry")
    coords, slide, domain = tissue_geometry(settings, np.random.default_rng(geometry_ss))

    report(0.12, "cell types")
    codes = _cell_types(settings.probabilities, domain, np.random.default_rng(types_ss))
    rng = np.random.default_rng(cells_ss)
    state = rng.beta(2.0, 2.0, settings.n_cells)
    size = settings.library_size_median * np.exp(settings.library_size_sigma * rng.standard_normal(settings.n_cells))

    report(0.18, "true neighbour graph")
    graph = true_graph(coords, slide, settings.niche_bandwidth, settings.niche_max_neighbours, settings.niche_cutoff)

    report(0.3, "niche signals")
    model, c, l, l_ref = _niche_model(genes, graph, codes, state, domain)

    report(0.35, "sampling counts")
    counts, mean, mean_intrinsic = _sample_counts(
        model, genes.theta, codes, state, size, c, l, counts_ss, store_means, progress
    )

    report(0.92, "assembling AnnData")
    cells = TissueCells(coords, slide, domain, codes, size, state, composition=c, ligand=l)
    means = (mean, mean_intrinsic) if store_means else None
    adata = write_tissue(settings, genes, cells, graph, l_ref, counts, means)
    report(1.0, "done")
    return adata
