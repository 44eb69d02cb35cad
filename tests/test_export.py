"""Counterfactual results and provenance attached to an AnnData survive an .h5ad round trip."""

from __future__ import annotations

from importlib import metadata

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina._io import write_h5ad_atomic
from cellina.export import attach_counterfactual, provenance_record


@pytest.fixture
def adata() -> ad.AnnData:
    rng = np.random.default_rng(0)
    data = ad.AnnData(rng.poisson(2.0, size=(20, 5)).astype(np.float32))
    data.var_names = [f"g{i}" for i in range(5)]
    return data


def test_round_trip_keeps_results_and_provenance(adata, tmp_path):
    focal = np.array([3, 7, 11])
    cf = np.arange(15, dtype=np.float32).reshape(3, 5) + 1
    fact = cf / 2
    donors = np.array([[1, 2], [4, 5], [8, 9]])
    record = provenance_record(
        "edge",
        {"n_neighbours": 2, "donors": donors, "shifts": pd.Series({"g1": 1.5}), "unused": None},
        seed=5,
    )
    out = attach_counterfactual(
        adata, focal, cf, factual=fact, provenance=record, selections={"cellina_donor": np.arange(20) < 10}
    )
    path = write_h5ad_atomic(out, tmp_path / "perturbed.h5ad")
    back = ad.read_h5ad(path)
    np.testing.assert_allclose(back.layers["cellina_cf"][focal].toarray(), cf)
    np.testing.assert_allclose(back.layers["cellina_cf_factual"][focal].toarray(), fact)
    assert back.layers["cellina_cf"].nnz == cf.size  # other cells stay empty
    assert back.obs["cellina_cf_focal"].sum() == 3 and back.obs["cellina_cf_focal"].iloc[7]
    assert back.obs["cellina_donor"].sum() == 10
    run = back.uns["cellina"]["runs"]["cellina_cf"]
    assert run["kind"] == "edge" and run["seed"] == 5
    np.testing.assert_array_equal(run["parameters"]["donors"], donors)
    assert list(run["parameters"]["shifts"]["index"]) == ["g1"]
    assert "unused" not in run["parameters"]
    assert run["versions"]["anndata"] == metadata.version("anndata")
    assert run["created_utc"].endswith("+00:00")


def test_caller_adata_untouched(adata):
    before = adata.copy()
    attach_counterfactual(adata, [0], np.ones((1, 5)), provenance={"kind": "edge"})
    assert list(adata.layers) == [] and list(adata.obs.columns) == []
    np.testing.assert_array_equal(adata.X, before.X)


def test_second_run_is_kept_beside_the_first(adata):
    first = attach_counterfactual(adata, [0], np.ones((1, 5)), provenance={"kind": "edge"}, key="run_a")
    both = attach_counterfactual(first, [1], np.ones((1, 5)), provenance={"kind": "node"}, key="run_b")
    assert set(both.uns["cellina"]["runs"]) == {"run_a", "run_b"}
    assert {"run_a", "run_b"} <= set(both.layers)


@pytest.mark.parametrize(
    ("focal", "values", "match"),
    [
        ([], np.ones((0, 5)), "non-empty"),
        ([25], np.ones((1, 5)), r"\[0, 20\)"),
        ([0, 1], np.ones((3, 5)), r"cellina_cf has shape \(3, 5\)"),
    ],
)
def test_bad_input_is_named(adata, focal, values, match):
    with pytest.raises((ValueError, IndexError), match=match):
        attach_counterfactual(adata, focal, values, provenance={"kind": "edge"})


def test_bad_selection_is_named(adata):
    with pytest.raises(ValueError, match="cellina_focal_lasso"):
        attach_counterfactual(
            adata, [0], np.ones((1, 5)), provenance={}, selections={"cellina_focal_lasso": np.ones(3, bool)}
        )
