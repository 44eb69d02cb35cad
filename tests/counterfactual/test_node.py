"""Node counterfactuals through the library: the gene-shift table and the engine every face calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellina.counterfactual import GeneShifts, node_counterfactual
from cellina.model import Cellina
from cellina.spatial import expression_representation, make_neighbor_perturbation

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def model(two_slide_tissue):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    m = Cellina(adata, **SMALL)
    m.train(max_epochs=2, batch_size=128, **QUIET)
    return m


def test_gene_shifts_from_every_source_agree(tmp_path):
    by_mapping = GeneShifts.from_mapping({"Myeloid": {"g1": 1.0}, "T_cell": {"g2": -0.5}})
    path = tmp_path / "shifts.csv"
    by_mapping.to_csv(path)
    pd.testing.assert_frame_equal(GeneShifts.from_csv(path).table, by_mapping.table)
    grouped = tmp_path / "grouped.csv"
    pd.DataFrame({"gene": ["g1", "g2"], "value": [1.0, -0.5], "group": ["Myeloid", "T_cell"]}).to_csv(
        grouped, index=False
    )
    pd.testing.assert_frame_equal(GeneShifts.from_csv(grouped).table, by_mapping.table)
    everyone = GeneShifts.from_mapping({"g1": 2.0})
    assert everyone.table["senders"].tolist() == [()] and not everyone.uses_senders


@pytest.mark.parametrize(
    "table, message",
    [
        (pd.DataFrame({"gene": ["g1"]}), "needs columns 'gene' and 'value'"),
        (pd.DataFrame({"gene": ["g1"], "value": [np.nan]}), "'g1' is not a finite number"),
        (pd.DataFrame({"gene": ["g1"], "value": [1.0], "region": ["maybe"]}), "'region' must be true or false"),
    ],
)
def test_gene_shift_errors_name_the_row(table, message):
    with pytest.raises(ValueError, match=message):
        GeneShifts(table)


def test_sender_groups_follow_senders_and_region():
    shifts = GeneShifts.from_rows(
        [
            {"gene": "a", "value": 1.0, "senders": ("T",), "region": False},
            {"gene": "b", "value": 2.0, "senders": (), "region": True},
            {"gene": "a", "value": 0.5, "senders": (), "region": False},
        ]
    )
    types = pd.Series(["T", "B", "T", "B"], dtype="category")
    region = np.array([True, True, False, False])
    groups, perturbations = shifts.sender_groups(4, types, region)
    per_cell = [perturbations.get(str(g), {}) for g in groups]
    assert per_cell == [{"a": 1.5, "b": 2.0}, {"b": 2.0, "a": 0.5}, {"a": 1.5}, {"a": 0.5}]
    with pytest.raises(ValueError, match="no region was given"):
        shifts.sender_groups(4, types)
    with pytest.raises(ValueError, match="no sender column"):
        shifts.sender_groups(4, None, region)


def test_node_counterfactual_equals_the_published_recipe(model):
    """The engine gives what the tutorial's make_neighbor_perturbation + get_perturbed_expression give."""
    adata = model.adata
    table = {"Myeloid": pd.Series({adata.var_names[3]: 1.5, adata.var_names[7]: -1.0})}
    focal = np.flatnonzero(adata.obs["domain"] == "healthy")[:30]
    result = node_counterfactual(model, adata, GeneShifts.from_mapping(table), focal, sender_key="coarse_type")
    # the tutorial's recipe: X log-normalised (here rebuilt from the counts as the niche features were)
    recipe = adata.copy()
    record = dict(recipe.uns["cellina"]["spatial_features"]["spatial_x"])
    record.update(genes=list(recipe.var_names), gene_indices=np.arange(recipe.n_vars))
    recipe.X = expression_representation(recipe.layers["counts"], record)
    make_neighbor_perturbation(
        recipe,
        perturbations=table,
        groupby="coarse_type",
        obsm_key_out="spatial_x_cf",
        base=np.e,
        renormalize=True,
        add_shift=True,
    )
    np.testing.assert_allclose(result.spatial_x, recipe.obsm["spatial_x_cf"], rtol=1e-5, atol=1e-6)
    expected = model.get_perturbed_expression(recipe, indices=focal, spatial_obsm_key="spatial_x_cf")
    np.testing.assert_allclose(result.expression, expected, rtol=1e-5)
    # the shift moves the focal cells' niches, and the caller's AnnData gains nothing
    assert not np.allclose(result.spatial_x[focal], adata.obsm["spatial_x"][focal])
    assert "spatial_x_cf" not in adata.obsm


def test_node_counterfactual_errors(model):
    adata = model.adata
    with pytest.raises(ValueError, match="unknown gene"):
        node_counterfactual(model, adata, GeneShifts.from_mapping({"no_such_gene": 1.0}), [0, 1])
    with pytest.raises(ValueError, match="sender_key='kind'"):
        node_counterfactual(model, adata, GeneShifts.from_mapping({adata.var_names[0]: 1.0}), [0], sender_key="kind")
    with pytest.raises(ValueError, match="no cell matches"):
        node_counterfactual(
            model, adata, GeneShifts.from_mapping({"Nobody": {adata.var_names[0]: 1.0}}), [0], sender_key="coarse_type"
        )
