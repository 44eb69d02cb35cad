"""What a model saw of the focal cells' types: a model trained on a two-slide tissue with one type's tumour cells held out."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellina.counterfactual import TypeSupport, type_support
from cellina.model import Cellina

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SETUP = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}


@pytest.fixture(scope="module")
def held_out(two_slide_tissue):
    """A model trained without the tumour cells of the most common type in the tumour."""
    adata = two_slide_tissue.copy()
    assert adata.obs["slide"].nunique() == 2
    types = adata.obs["coarse_type"].astype(str).to_numpy()
    tumour = adata.obs["domain"].to_numpy() == "tumour"
    name = str(adata.obs.loc[tumour, "coarse_type"].astype(str).value_counts().index[0])
    test = np.flatnonzero((types == name) & tumour)
    assert test.size >= 4
    rest = np.setdiff1d(np.arange(adata.n_obs), test)
    Cellina.setup_anndata(adata, **SETUP)
    torch.manual_seed(0)
    model = Cellina(adata, n_hidden=16, n_latent=4, n_layers=1)
    model.train(
        max_epochs=1,
        batch_size=128,
        datasplitter_kwargs={"external_indexing": [rest, np.array([], int), test]},
        **QUIET,
    )
    return model, name, test


def test_support_counts_the_training_cells_and_counts_of_each_focal_type(held_out):
    model, name, test = held_out
    adata = model.adata
    types = adata.obs["coarse_type"].astype(str).to_numpy()
    counts = adata.layers["counts"]
    sizes = np.asarray(counts.sum(1) if sp.issparse(counts) else counts.sum(1)).ravel()
    other = next(t for t in np.unique(types) if t != name)
    # the held-out cells themselves as focal cells, plus a few cells of another type
    others = np.flatnonzero(types == other)[: test.size // 2]
    n_other = others.size
    focal = np.concatenate([test, others])
    support = type_support(model, adata, focal)
    assert isinstance(support, TypeSupport)
    assert support.types == (name, other)
    np.testing.assert_array_equal(support.n_focal, [test.size, n_other])
    training = np.ones(adata.n_obs, dtype=bool)
    training[test] = False
    for i, t in enumerate(support.types):
        cells = training & (types == t)
        assert support.n_training[i] == cells.sum()
        assert support.median_counts[i] == pytest.approx(np.median(sizes[cells]))
        assert support.total_counts[i] == pytest.approx(sizes[cells].sum())
    # the held-out tumour cells do not count towards their type's support
    assert support.n_training[0] == (types == name).sum() - test.size
    totals = {t: sizes[training & (types == t)].sum() for t in np.unique(types)}
    ranking = sorted(totals, key=lambda t: -totals[t])
    assert list(support.rank) == [ranking.index(t) + 1 for t in support.types]
    assert support.n_types == len(totals)
    text = support.message()
    assert f"{name} ({test.size} focal cells): learnt from {support.n_training[0]:,} training cells" in text
    assert "noisier" in text
    record = support.record()
    assert record["types"] == [name, other] and record["n_training"].dtype == np.int64


def test_a_type_without_training_cells_says_so(held_out):
    model, _, test = held_out
    adata = model.adata.copy()
    trained = np.setdiff1d(np.arange(adata.n_obs), test)[:5]
    adata.obs["coarse_type"] = adata.obs["coarse_type"].astype(str)
    adata.obs.loc[adata.obs_names[trained], "coarse_type"] = "Unseen"
    # the support follows the labels the AnnData holds now: five training cells of the new label
    support = type_support(model, adata, trained)
    assert support.types == ("Unseen",) and support.n_training[0] == 5 and support.rank[0] == support.n_types
    saved = model.heldout_indices_
    try:
        model.heldout_indices_ = np.concatenate([test, trained])
        support = type_support(model, adata, trained)
    finally:
        model.heldout_indices_ = saved
    assert support.n_training[0] == 0 and np.isnan(support.median_counts[0])
    assert "has no training cells of its own" in support.message()


def test_support_refuses_bad_focal_cells_and_is_none_without_types(held_out, two_slide_tissue):
    model, _, _ = held_out
    with pytest.raises(ValueError, match="focal"):
        type_support(model, model.adata, np.array([model.adata.n_obs + 3]))
    without_counts = model.adata.copy()
    del without_counts.layers["counts"]
    with pytest.raises(KeyError, match="'counts'"):
        type_support(model, without_counts, np.arange(3))
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", layer="counts")
    untyped = Cellina(adata, n_hidden=8, n_latent=2, n_layers=1, discriminator_lambda=0.0, classifier_lambda=0.0)
    assert type_support(untyped, adata, np.arange(3)) is None
