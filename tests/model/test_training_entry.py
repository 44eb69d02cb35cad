"""train_model: the one training entry of the command line, the plugin and the protocol."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.model import train_model

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}


def _train(adata, **kwargs):
    options = dict(
        labels_key="coarse_type",
        domains_key="domain",
        batch_key="slide",
        max_epochs=1,
        batch_size=128,
        model_kwargs=SMALL,
        **QUIET,
    )
    options.update(kwargs)
    return train_model(adata, **options)


def test_same_inputs_and_seed_give_the_same_model(two_slide_tissue):
    held = np.flatnonzero(
        (two_slide_tissue.obs["coarse_type"] == "Myeloid") & (two_slide_tissue.obs["domain"] == "tumour")
    )
    a = _train(two_slide_tissue.copy(), heldout=held, seed=3)
    b = _train(two_slide_tissue.copy(), heldout=held, seed=3)
    np.testing.assert_array_equal(a.heldout_indices_, held)
    assert not np.isin(held, a.train_indices_).any() and not np.isin(held, a.validation_indices_).any()
    np.testing.assert_array_equal(a.get_latent_representation(), b.get_latent_representation())
    assert a.preset == "recommended" and a.module.niche_decoder == "type_gated"


def test_preset_and_options(two_slide_tissue):
    mask = np.zeros(two_slide_tissue.n_obs, bool)
    mask[:10] = True
    model = _train(two_slide_tissue.copy(), preset="published", heldout=mask, validation_size=0.0)
    assert model.preset == "published" and model.module.spatial_kl_weight == 1.0
    np.testing.assert_array_equal(model.heldout_indices_, np.arange(10))
    assert _train(two_slide_tissue.copy(), preset=None).preset is None
    with pytest.raises(ValueError, match="unknown preset"):
        _train(two_slide_tissue.copy(), preset="fastest")
