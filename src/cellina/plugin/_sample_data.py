"""napari sample data: a synthetic tumour section with exact counterfactual truth."""

from __future__ import annotations

from cellina.plugin._points import points_layer_data

SAMPLE_N_CELLS = 6000
SAMPLE_N_GENES = 300
SAMPLE_N_SLIDES = 1
SAMPLE_SEED = 0


def synthetic_tumour_section() -> list[tuple]:
    """Our synthetic tissue (one slide unless ``SAMPLE_N_SLIDES`` says more), cells coloured by cell type."""
    from cellina.datasets import synthetic_tissue

    adata = synthetic_tissue(n_cells=SAMPLE_N_CELLS, n_genes=SAMPLE_N_GENES, n_slides=SAMPLE_N_SLIDES, seed=SAMPLE_SEED)
    return [points_layer_data(adata, color_by="cell_type", name="synthetic tumour section")]
