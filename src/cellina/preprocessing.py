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

LOGNORM_LAYER = "cellina_lognorm"
UNMASKED_CONNECTIVITIES = "spatial_connectivities_orig"


def _is_count_matrix(matrix: Any) -> bool:
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix)
    sample = values[: 1_000_000]
    return bool(np.all(sample >= 0) and np.all(np.mod(sample, 1) == 0))


def prepare_tissue(
    adata: ad.AnnData,
    *,
    bandwidth: float,
    counts_layer: str = "counts",
    max_neighbours: int = 50,
    kernel: str = "gaussian",
    cutoff: float = 0.1,
    spatial_key: str = "spatial",
    library_key: str | None = None,
    test_indices: Sequence[int] | np.ndarray | None = None,
    min_counts_cell: int = 0,
    min_counts_gene: int = 0,
    n_top_genes: int | None = None,
    target_sum: float = 1e4,
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
    out; niche features in ``obsm["spatial_x"]``.

    ``test_indices`` refer to positions in the returned AnnData; with filtering on they
    would shift, so they are refused together.
    """
    import scanpy as sc

    from cellina.spatial import compute_spatial_features, spatial_neighbors

    report = progress or (lambda fraction, message: None)
    if adata.n_obs == 0:
        raise ValueError("the AnnData has no cells")
    if counts_layer in adata.layers:
        counts = adata.layers[counts_layer]
    elif adata.X is not None and _is_count_matrix(adata.X):
        counts = adata.X
    else:
        raise ValueError(
            f"no counts: layers[{counts_layer!r}] is missing and adata.X does not hold "
            "non-negative integer counts"
        )
    if not _is_count_matrix(counts):
        raise ValueError(f"layers[{counts_layer!r}] must hold non-negative integer counts")
    if test_indices is not None and (min_counts_cell > 0 or min_counts_gene > 0):
        raise ValueError("test_indices cannot be combined with cell or gene filtering (positions would shift)")

    report(0.0, "copying")
    out = adata.copy()
    out.layers[counts_layer] = sp.csr_matrix(counts, dtype=np.float32)
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
    if n_top_genes is not None and n_top_genes < out.n_vars:
        report(0.2, "selecting variable genes")
        sc.pp.highly_variable_genes(out, layer=counts_layer, flavor="seurat_v3", n_top_genes=n_top_genes, subset=True)

    report(0.35, "normalising")
    lognorm = out.layers[counts_layer].copy()
    totals = np.asarray(lognorm.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    lognorm = sp.diags(scale.astype(np.float32)) @ lognorm
    lognorm.data = np.log1p(lognorm.data)
    out.layers[LOGNORM_LAYER] = sp.csr_matrix(lognorm, dtype=np.float32)

    report(0.5, "building the spatial graph")
    graph_args = dict(
        bandwidth=bandwidth,
        cutoff=cutoff,
        max_neighbours=max_neighbours,
        kernel=kernel,
        spatial_key=spatial_key,
        library_key=library_key,
    )
    if test_indices is not None:
        out.obsp[UNMASKED_CONNECTIVITIES] = spatial_neighbors(out, inplace=False, **graph_args)
    spatial_neighbors(out, test_indices=test_indices, **graph_args)
    report(0.8, "computing niche features")
    compute_spatial_features(out, layer=LOGNORM_LAYER)
    report(1.0, "done")
    return out
