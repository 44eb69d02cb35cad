"""One call from a counts AnnData to what Cellina trains on.

Shared by the command line and the napari plugin: optional QC and gene selection, a
log-normalised layer, the spatial graph (the unmasked one kept beside the masked one
when cells are held out) and the niche features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cellina.keys import LAYERS, OBSM, OBSP

LOGNORM_LAYER = LAYERS.LOGNORM
UNMASKED_CONNECTIVITIES = OBSP.UNMASKED
#: prepare_tissue refuses a graph in which more than this fraction of the cells has no neighbour
MAX_ISOLATED_FRACTION = 0.5


def _is_count_matrix(matrix: Any) -> bool:
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    sample = values[:1_000_000]
    return bool(np.all(sample >= 0) and np.all(np.mod(sample, 1) == 0))


def _counts_of(adata: ad.AnnData, counts_layer: str) -> Any:
    """The counts: ``layers[counts_layer]``, else ``X`` when it holds counts; checked."""
    if counts_layer in adata.layers:
        counts = adata.layers[counts_layer]
    elif adata.X is not None and _is_count_matrix(adata.X):
        counts = adata.X
    else:
        raise ValueError(
            f"no counts: layers[{counts_layer!r}] is missing and adata.X does not hold non-negative integer counts"
        )
    if not _is_count_matrix(counts):
        raise ValueError(f"layers[{counts_layer!r}] must hold non-negative integer counts")
    return counts


def _filtered(out: ad.AnnData, counts_layer: str, min_counts_cell: int, min_counts_gene: int, report) -> ad.AnnData:
    if min_counts_cell > 0:
        report(0.05, "filtering cells")
        keep = np.asarray(out.layers[counts_layer].sum(axis=1)).ravel() >= min_counts_cell
        out = out[keep].copy()
    if min_counts_gene > 0:
        report(0.1, "filtering genes")
        keep = np.asarray(out.layers[counts_layer].sum(axis=0)).ravel() >= min_counts_gene
        out = out[:, keep].copy()
    if out.n_obs == 0 or out.n_vars == 0:
        raise ValueError("no cells or genes left after filtering; lower the minimum counts")
    return out


def log_normalized(counts: sp.spmatrix, target_sum: float = 1e4) -> sp.csr_matrix:
    """``log1p`` of the counts scaled to ``target_sum`` per cell (empty cells stay zero), float32 CSR."""
    lognorm = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    totals = np.asarray(lognorm.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    lognorm = sp.diags(scale.astype(np.float32)) @ lognorm
    lognorm.data = np.log1p(lognorm.data)
    return sp.csr_matrix(lognorm, dtype=np.float32)


def graph_summary(adata: ad.AnnData, connectivity_key: str = OBSP.CONNECTIVITIES) -> dict[str, float]:
    """Median neighbours per cell, fraction of cells without one, and median edge length.

    Read from ``obsp[connectivity_key]`` and the matching ``*_distances`` graph.
    """
    graph = sp.csr_matrix(adata.obsp[connectivity_key])
    degree = np.diff(graph.indptr)
    distances_key = connectivity_key.replace("connectivities", "distances")
    lengths = sp.csr_matrix(adata.obsp[distances_key]).data if distances_key in adata.obsp else np.zeros(0)
    return {
        "median_neighbours": float(np.median(degree)) if degree.size else 0.0,
        "isolated_fraction": float(np.mean(degree == 0)) if degree.size else 1.0,
        "median_distance": float(np.median(lengths)) if lengths.size else float("nan"),
    }


def _check_connected(adata: ad.AnnData, connectivity_key: str, spatial_key: str, bandwidth: float) -> dict:
    """Refuse a graph in which most cells have no neighbour (coordinates in pixels, or a tiny bandwidth)."""
    from scipy.spatial import cKDTree

    summary = graph_summary(adata, connectivity_key)
    if summary["isolated_fraction"] <= MAX_ISOLATED_FRACTION or adata.n_obs < 2:
        return summary
    from cellina.io_keys import PIXEL_SIZES_UM

    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)[:, :2]
    nearest = float(np.median(cKDTree(coords).query(coords, k=2)[0][:, 1]))
    sizes = ", ".join(f"{name} {size:g}" for name, size in list(PIXEL_SIZES_UM.items())[:3])
    raise ValueError(
        f"{summary['isolated_fraction']:.0%} of the cells have no neighbour within the bandwidth "
        f"({bandwidth:g} coordinate units), while the median distance to the nearest cell is {nearest:.3g}: "
        f"are the coordinates in pixels? Give the pixel size in micrometres ({sizes}, ...), "
        "or a larger bandwidth"
    )


#: how the neighbours' cell types enter the niche features: not at all, after the expression, alone
COMPOSITIONS = ("off", "added", "only")


def composition_arguments(composition: str, labels_key: str | None) -> dict[str, Any]:
    """:func:`prepare_tissue`'s composition arguments for one of :data:`COMPOSITIONS` and the cell-type column."""
    if composition not in COMPOSITIONS:
        raise ValueError(f"composition={composition!r}: use one of {list(COMPOSITIONS)}.")
    if composition != "off" and labels_key is None:
        raise ValueError(f"composition={composition!r} needs the cell-type column (no cell-type key is set).")
    return {
        "composition_key": None if composition == "off" else labels_key,
        "composition_only": composition == "only",
    }


def _graph_and_features(
    out: ad.AnnData, graph_args: dict[str, Any], feature_args: dict[str, Any], test_indices: Any, report
) -> str:
    from cellina.spatial import compute_spatial_features, spatial_neighbors

    report(0.5, "building the spatial graph")
    if test_indices is not None:
        out.obsp[UNMASKED_CONNECTIVITIES] = spatial_neighbors(out, inplace=False, **graph_args)
    spatial_neighbors(out, test_indices=test_indices, **graph_args)
    summary = _check_connected(
        out,
        OBSP.CONNECTIVITIES if test_indices is None else UNMASKED_CONNECTIVITIES,
        graph_args["spatial_key"],
        graph_args["bandwidth"],
    )
    report(0.8, "computing niche features")
    compute_spatial_features(out, layer=LOGNORM_LAYER, **feature_args)
    return (
        f"done: median {summary['median_neighbours']:g} neighbours per cell, median distance "
        f"{summary['median_distance']:.3g}"
    )


def prepare_tissue(
    adata: ad.AnnData,
    *,
    bandwidth: float,
    counts_layer: str = LAYERS.COUNTS,
    max_neighbours: int = 50,
    kernel: str = "gaussian",
    cutoff: float = 0.1,
    spatial_key: str = OBSM.SPATIAL,
    library_key: str | None = None,
    test_indices: Sequence[int] | np.ndarray | None = None,
    min_counts_cell: int = 0,
    min_counts_gene: int = 0,
    n_top_genes: int | None = None,
    target_sum: float = 1e4,
    composition_key: str | None = None,
    composition_only: bool = False,
    progress: Callable[[float, str], None] | None = None,
) -> ad.AnnData:
    """Return a prepared copy of ``adata``; the caller's object is not modified.

    Steps: counts into ``layers[counts_layer]`` (taken from ``X`` if the layer is
    missing and ``X`` holds counts); optional filtering of cells and genes by total
    counts; optional selection of ``n_top_genes`` highly variable genes (seurat_v3 on
    counts); ``layers["cellina_lognorm"]`` = log1p of counts normalised to
    ``target_sum``; the kernel graph (``bandwidth`` in coordinate units); when
    ``test_indices`` are given, the unmasked graph is kept as
    ``obsp["spatial_connectivities_orig"]`` and the training graph leaves those cells
    out; niche features in ``obsm["spatial_x"]``: the neighbours' log-normalised expression,
    followed, with ``composition_key`` (an ``obs`` column, usually the cell types), by the
    share of each of its categories among the neighbours, or that share alone with
    ``composition_only`` (see :func:`cellina.spatial.compute_spatial_features`). The last
    progress message gives the median number of neighbours and edge length.

    ``test_indices`` refer to positions in the returned AnnData; with filtering on they
    would shift, so they are refused together. A graph in which more than half of the
    cells have no neighbour is refused, with the typical nearest-cell distance: the
    coordinates are then usually in pixels.
    """
    import scanpy as sc

    report = progress or (lambda fraction, message: None)
    if adata.n_obs == 0:
        raise ValueError("the AnnData has no cells")
    counts = _counts_of(adata, counts_layer)
    if test_indices is not None and (min_counts_cell > 0 or min_counts_gene > 0):
        raise ValueError("test_indices cannot be combined with cell or gene filtering (positions would shift)")
    if composition_key is not None and composition_key not in adata.obs:
        from cellina.spatial import CellinaKeyError

        raise CellinaKeyError(
            f"composition_key={composition_key!r} is not a column of adata.obs (have {list(adata.obs.columns)})."
        )
    if composition_only and composition_key is None:
        raise ValueError("composition_only=True needs a composition_key (the adata.obs column of cell types).")

    report(0.0, "copying")
    out = adata.copy()
    out.layers[counts_layer] = sp.csr_matrix(counts, dtype=np.float32)
    out = _filtered(out, counts_layer, min_counts_cell, min_counts_gene, report)
    if n_top_genes is not None and n_top_genes < out.n_vars:
        report(0.2, "selecting variable genes")
        sc.pp.highly_variable_genes(out, layer=counts_layer, flavor="seurat_v3", n_top_genes=n_top_genes, subset=True)

    report(0.35, "normalising")
    out.layers[LOGNORM_LAYER] = log_normalized(out.layers[counts_layer], target_sum)
    graph_args = dict(
        bandwidth=bandwidth,
        cutoff=cutoff,
        max_neighbours=max_neighbours,
        kernel=kernel,
        spatial_key=spatial_key,
        library_key=library_key,
    )
    feature_args = {"composition_key": composition_key, **({"genes": []} if composition_only else {})}
    report(1.0, _graph_and_features(out, graph_args, feature_args, test_indices, report))
    return out
