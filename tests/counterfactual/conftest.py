"""A small trained Cellina shared by the counterfactual test modules (trained once per module)."""

from __future__ import annotations

import pytest
import torch

from cellina.model import Cellina


@pytest.fixture(scope="module")
def cellina(two_slide_tissue):
    """Cellina on the two-slide tissue (slide as batch, cell types, domains), linear niche encoder decoded
    from the mean of ``s``, four epochs."""
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = Cellina(
        adata, n_hidden=16, n_latent=4, n_layers=1, spatial_encoder="linear", spatial_decoding="mean",
        spatial_kl_weight=0.0,
    )  # fmt: skip
    model.train(max_epochs=4, batch_size=128, enable_progress_bar=False, enable_model_summary=False)
    return model
