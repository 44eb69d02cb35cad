"""The perturbed AnnData layout and its provenance survive an .h5ad round trip."""

from __future__ import annotations

from importlib import metadata

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina._io import write_h5ad_atomic
from cellina.export import CurrentRun, perturbed_anndata, run_record


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
    shifts = pd.DataFrame({"gene": ["g1"], "value": [1.5], "senders": [("t_cell", "b_cell")]})
    record = run_record(
        "edge", {"n_neighbours": 2, "unused": None}, focal=focal, seed=5, donors=donors, gene_shifts=shifts
    )
    out = perturbed_anndata(
        adata,
        runs={"edge 1": record},
        current=CurrentRun("edge 1", focal, cf, fact),
        selections={"cellina_donors": np.arange(20) < 10},
        latents={"cellina_z": np.ones((20, 2))},
        keys={"cell_type_key": "cell_type", "batch_key": None},
    )
    back = ad.read_h5ad(write_h5ad_atomic(out, tmp_path / "perturbed.h5ad"))
    np.testing.assert_allclose(back.layers["cellina_counterfactual"][focal].toarray(), cf)
    np.testing.assert_allclose(back.layers["cellina_factual"][focal].toarray(), fact)
    assert back.layers["cellina_counterfactual"].nnz == cf.size  # other cells stay empty
    assert "cellina_counterfactual_std" not in back.layers
    np.testing.assert_array_equal(np.flatnonzero(back.obs["cellina_counterfactual_cells"]), focal)
    assert back.obs["cellina_donors"].sum() == 10
    assert back.obsm["cellina_z"].shape == (20, 2)
    provenance = back.uns["cellina"]["provenance"]
    assert provenance["current_run"] == "edge 1"
    run = provenance["runs"]["edge 1"]
    assert run["perturbation"] == "edge" and run["seed"] == 5
    np.testing.assert_array_equal(run["donor_indices"], donors)
    np.testing.assert_array_equal(run["focal_indices"], focal)
    assert list(run["gene_shifts"]["senders"]) == ["t_cell,b_cell"]
    assert "unused" not in run["parameters"]
    assert provenance["versions"]["anndata"] == metadata.version("anndata")
    assert provenance["time"].endswith("+00:00")
    assert provenance["keys"] == {"cell_type_key": "cell_type", "batch_key": ""}


def test_caller_adata_untouched(adata):
    before = adata.copy()
    record = run_record("edge", {}, focal=[0])
    perturbed_anndata(adata, runs={"r": record}, current=CurrentRun("r", np.array([0]), np.ones((1, 5))))
    assert list(adata.layers) == [] and list(adata.obs.columns) == [] and "cellina" not in adata.uns
    np.testing.assert_array_equal(adata.X, before.X)


def test_export_without_runs_keeps_selections(adata):
    out = perturbed_anndata(adata, runs={}, selections={"cellina_focal": np.arange(20) < 3})
    assert out.obs["cellina_focal"].sum() == 3
    assert "cellina_counterfactual" not in out.layers
    assert out.uns["cellina"]["provenance"]["current_run"] == ""


@pytest.mark.parametrize(
    ("focal", "values", "match"),
    [
        (np.array([], dtype=int), np.ones((0, 5)), "non-empty"),
        (np.array([25]), np.ones((1, 5)), r"\[0, 20\)"),
        (np.array([0, 1]), np.ones((3, 5)), r"counterfactual has shape \(3, 5\)"),
    ],
)
def test_bad_current_run_is_named(adata, focal, values, match):
    with pytest.raises((ValueError, IndexError), match=match):
        perturbed_anndata(adata, runs={"edge 1": {}}, current=CurrentRun("edge 1", focal, values))


def test_current_run_needs_a_record(adata):
    with pytest.raises(ValueError, match="'edge 9'"):
        perturbed_anndata(adata, runs={}, current=CurrentRun("edge 9", np.array([0]), np.ones((1, 5))))


def test_bad_selection_is_named(adata):
    with pytest.raises(ValueError, match="cellina_focal_lasso"):
        perturbed_anndata(adata, runs={}, selections={"cellina_focal_lasso": np.ones(3, bool)})


def test_registration_columns_are_left_out(adata):
    adata.obs["_scvi_batch"] = 0
    adata.obs["slide"] = "s1"
    adata.obs["cellina_all"] = "cell"  # what older readers added to colour the cells
    adata.uns["_scvi_uuid"] = "abc"
    out = perturbed_anndata(adata, runs={})
    assert list(out.obs.columns) == ["slide"] and "_scvi_uuid" not in out.uns


def test_the_model_preset_is_recorded():
    from cellina.export import model_identity

    class Module:
        def state_dict(self):
            return {}

    class Model:
        module = Module()
        preset = "recommended"

    assert model_identity(Model())["preset"] == "recommended"
