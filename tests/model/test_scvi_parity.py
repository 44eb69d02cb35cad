"""A scvi-tools user swapping SCVI for Cellina finds the same getters, types and shapes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scvi
import torch

from cellina.model import Cellina

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def pair(two_slide_tissue):
    """Cellina and SCVI trained one epoch on the same two-slide counts."""
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    cellina = Cellina(adata, **SMALL)
    cellina.train(max_epochs=1, batch_size=128, **QUIET)
    other = two_slide_tissue.copy()
    scvi.model.SCVI.setup_anndata(other, batch_key="slide", layer="counts")
    reference = scvi.model.SCVI(other, **SMALL)
    reference.train(max_epochs=1, batch_size=128, **QUIET)
    return cellina, reference


def _both(pair, method, **kwargs):
    cellina, reference = pair
    return getattr(cellina, method)(**kwargs), getattr(reference, method)(**kwargs)


def test_normalized_expression_is_a_dataframe_like_scvis(pair):
    ours, theirs = _both(pair, "get_normalized_expression")
    assert isinstance(ours, pd.DataFrame) and isinstance(theirs, pd.DataFrame)
    assert ours.shape == theirs.shape
    assert ours.index.equals(theirs.index) and ours.columns.equals(theirs.columns)
    # library_size=1 (scvi's default): frequencies summing to one per cell
    np.testing.assert_allclose(ours.sum(1), 1.0, rtol=1e-4)


@pytest.mark.parametrize("library_size", [1e4, "latent"])
def test_library_size_handling_matches_scvi(pair, two_slide_tissue, library_size):
    idx = np.arange(40)
    ours, theirs = _both(pair, "get_normalized_expression", indices=idx, library_size=library_size, return_numpy=True)
    assert type(ours) is type(theirs) is np.ndarray and ours.shape == theirs.shape == (40, two_slide_tissue.n_vars)
    if library_size == "latent":
        # observed library: expected counts add up to each cell's own total, as in SCVI
        totals = np.asarray(two_slide_tissue.layers["counts"][idx].sum(1)).ravel()
        np.testing.assert_allclose(ours.sum(1), totals, rtol=1e-3)
        np.testing.assert_allclose(theirs.sum(1), totals, rtol=1e-3)
    else:
        np.testing.assert_allclose(ours.sum(1), 1e4, rtol=1e-3)


def test_posterior_samples_are_averaged_or_stacked_as_in_scvi(pair):
    idx = np.arange(12)
    stacked, ref_stacked = _both(pair, "get_normalized_expression", indices=idx, n_samples=3, return_mean=False)
    assert isinstance(stacked, np.ndarray) and stacked.shape == ref_stacked.shape == (3, 12, stacked.shape[-1])
    # three posterior samples differ; their mean is what return_mean=True returns for the same draws
    assert not np.allclose(stacked[0], stacked[1])
    torch.manual_seed(3)
    mean = pair[0].get_normalized_expression(indices=idx, n_samples=3, return_numpy=True)
    torch.manual_seed(3)
    again = pair[0].get_normalized_expression(indices=idx, n_samples=3, return_mean=False)
    np.testing.assert_allclose(mean, again.mean(0), rtol=1e-5)
    overall, ref_overall = _both(
        pair, "get_normalized_expression", indices=idx, n_samples_overall=30, return_numpy=True
    )
    assert overall.shape == ref_overall.shape == (30, stacked.shape[-1])


def test_gene_list_and_transform_batch(pair):
    cellina, _ = pair
    genes = list(cellina.adata.var_names[:5])
    sub = cellina.get_normalized_expression(indices=np.arange(8), gene_list=genes)
    assert list(sub.columns) == genes
    as_first = cellina.get_normalized_expression(indices=np.arange(8), transform_batch="slide_0")
    as_second = cellina.get_normalized_expression(indices=np.arange(8), transform_batch="slide_1")
    assert not np.allclose(as_first.to_numpy(), as_second.to_numpy())


def test_elbo_reconstruction_and_marginal_likelihood(pair):
    cellina, reference = pair
    for model in (cellina, reference):
        elbo = model.get_elbo()
        assert np.ndim(elbo) == 0 and np.isfinite(float(elbo)) and float(elbo) < 0
        per_cell = model.get_elbo(return_mean=False)
        assert per_cell.shape == (model.adata.n_obs,)
        rec = model.get_reconstruction_error()
        assert set(rec) == {"reconstruction_loss"} and np.isfinite(float(rec["reconstruction_loss"]))
    idx = np.arange(30)
    ours, theirs = _both(pair, "get_marginal_ll", indices=idx, n_mc_samples=20, return_mean=False)
    assert type(ours) is type(theirs) is torch.Tensor and ours.shape == theirs.shape == (30,)
    assert isinstance(cellina.get_marginal_ll(indices=idx, n_mc_samples=5), float)
    # get_elbo is the ELBO (a lower bound of log p(x)); importance sampling tightens it
    elbo_cells = cellina.get_elbo(indices=idx, return_mean=False)
    assert float(ours.mean()) >= float(elbo_cells.mean()) - 0.5


def test_posterior_predictive_samples_are_counts(pair):
    cellina, _ = pair
    samples = cellina.posterior_predictive_sample(indices=np.arange(10), n_samples=2)
    dense = samples.todense() if hasattr(samples, "todense") else np.asarray(samples)
    assert dense.shape[:2] == (10, cellina.adata.n_vars)
    assert np.all(np.asarray(dense) >= 0)
