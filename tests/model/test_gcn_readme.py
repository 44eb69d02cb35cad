"""The published README's CellinaGCN calls, as written, on a CI-sized two-slide tissue.

Only the data differ from the README: a synthetic tissue (two of its genes renamed VEGFA and MYC,
the README's genes) instead of the colorectal cancer section, and a short training.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellina.datasets import synthetic_tissue


@pytest.fixture(scope="module")
def readme_model():
    from cellina import CellinaGCN
    from cellina._spatial_utils import spatial_neighbors

    adata = synthetic_tissue(n_cells=600, n_genes=100, n_slides=2, seed=4, store_means=False)
    names = list(adata.var_names)
    names[0], names[1] = "VEGFA", "MYC"
    adata.var_names = names
    # the graph variant needs no compute_spatial_features: the graph is enough
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=15, library_key="slide")
    CellinaGCN.setup_anndata(
        adata,
        batch_key="slide",
        labels_key="coarse_type",
        domains_key="domain",
        spatial_connectivities_key="spatial_connectivities",
    )
    torch.manual_seed(0)
    gcn_model = CellinaGCN(adata, n_latent=4, n_hidden=16, convolution_type="gat", num_neighbors=[6, 3])
    gcn_model.train(max_epochs=1, batch_size=128, enable_progress_bar=False)
    return gcn_model, adata


def test_readme_node_perturbation_recipe_runs_as_written(readme_model):
    gcn_model, adata = readme_model
    counts_before = adata.X.copy()
    factual = gcn_model.get_expression()

    from cellina import make_perturbed_expression

    make_perturbed_expression(
        adata, {"VEGFA": 2.0, "MYC": -1.5}, layer_key="counts_cf", add_shift=False
    )  # values are logFCs
    expr_cf = gcn_model.get_perturbed_expression(adata, cf_layer="counts_cf")

    assert expr_cf.shape == (adata.n_obs, adata.n_vars) and np.all(np.isfinite(expr_cf))
    assert (adata.X != counts_before).nnz == 0  # the counts the model reads are untouched
    assert np.abs(expr_cf - factual).max() > 1e-4  # the perturbed neighbours change the prediction
    # the graph aggregates the perturbed counts on the fly: the same as the node engine
    from cellina.counterfactual import GeneShifts, node_counterfactual

    shifts = GeneShifts.from_rows([{"gene": "VEGFA", "value": 2.0}, {"gene": "MYC", "value": -1.5}])
    result = node_counterfactual(gcn_model, adata, shifts, np.arange(adata.n_obs))
    np.testing.assert_allclose(result.expression, expr_cf, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.spatial_x.toarray(), adata.layers["counts_cf"].toarray(), rtol=1e-6)


def test_readme_edge_call_is_shared_with_cellina(readme_model):
    gcn_model, adata = readme_model
    ref_idx = np.flatnonzero(adata.obs["domain"] == "healthy")[:30]
    donor_idx = np.flatnonzero(adata.obs["domain"] == "tumour")

    expr_cf = gcn_model.get_counterfactual_expression(
        indices=ref_idx,  # focal cells (source domain)
        neighbour_indices=donor_idx,  # donor pool (target domain)
    )

    assert expr_cf.shape == (30, adata.n_vars) and np.all(np.isfinite(expr_cf))
