"""The borrowed answer: the focal cells' own change mixed with the other types' change under the same
donors, on a two-slide tissue with both variants; every column recomputed by hand from the model's calls."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cellina.counterfactual import BORROW_DISATTENUATE, BORROW_WEIGHT, reference_cells
from cellina.model import Cellina, CellinaGCN

from ._helpers import change_by_hand, focal_and_donors, obs

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SETUP = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}
SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 1}
CALL = {"n_neighbours": 10, "n_draws": 2, "seed": 3, "min_reference_cells": 15, "max_reference_cells": 20}


def _by_hand(model, cells, donors, disattenuate):
    return change_by_hand(model, cells, donors, disattenuate, n_draws=2)[0]


def test_the_defaults_are_the_confirmed_rule():
    import inspect

    assert (BORROW_WEIGHT, BORROW_DISATTENUATE) == (0.3, 1.0)
    defaults = inspect.signature(Cellina.borrowed_counterfactual_change).parameters
    assert defaults["weight"].default == BORROW_WEIGHT and defaults["disattenuate"].default == BORROW_DISATTENUATE


def test_reference_cells_are_other_types_of_the_focal_domain(cellina):
    focal, donors = focal_and_donors(cellina)
    types, domains = obs(cellina, "coarse_type"), obs(cellina, "domain")
    exclude = np.flatnonzero((types == "Myeloid") & (domains == "healthy"))[:40]
    groups = reference_cells(cellina, cellina.adata, focal, donors, exclude, max_cells=20, min_cells=15)
    # healthy cells per type: Fibroblast 40, Endothelial 33, T cell 19, B cell 21, Plasma 21, Myeloid 47 (40
    # excluded leaves 7), CAF 6; Epithelial is the focal type
    assert set(groups) == {"Fibroblast", "Endothelial", "T_cell", "B_cell", "Plasma_cell"}
    for name, cells in groups.items():
        assert cells.size == min(20, int(((types == name) & (domains == "healthy")).sum()))
        assert (types[cells] == name).all() and (domains[cells] == "healthy").all()
        assert not np.isin(cells, np.concatenate([focal, donors, exclude])).any()
        assert (np.diff(cells) > 0).all()


def test_reference_indices_narrow_the_candidates(cellina):
    focal, donors = focal_and_donors(cellina)
    types = obs(cellina, "coarse_type")
    given = np.flatnonzero(np.isin(types, ["Myeloid", "Epithelial"]))
    groups = reference_cells(cellina, cellina.adata, focal, donors, reference=given, min_cells=15)
    assert list(groups) == ["Myeloid"]  # focal type left out, donors (tumour cells) left out
    assert not np.isin(groups["Myeloid"], donors).any()


def test_columns_recomputed_by_hand(cellina):
    focal, donors = focal_and_donors(cellina)
    table = cellina.borrowed_counterfactual_change(focal, donors, weight=0.4, disattenuate=0.5, **CALL)
    assert isinstance(table, pd.DataFrame) and list(table.index) == list(cellina.adata.var_names)
    groups = reference_cells(cellina, cellina.adata, focal, donors, min_cells=15, max_cells=20, seed=3)
    assert table.attrs["reference_cells"] == {name: int(cells.size) for name, cells in groups.items()}
    assert table.attrs["weight"] == 0.4 and table.attrs["disattenuate"] == 0.5
    own = _by_hand(cellina, focal, donors, 0.5)
    others = np.mean([_by_hand(cellina, cells, donors, 0.5) for cells in groups.values()], axis=0)
    np.testing.assert_allclose(table["own_lfc"], own, atol=1e-5)
    np.testing.assert_allclose(table["others_lfc"], others, atol=1e-5)
    np.testing.assert_allclose(table["borrowed_lfc"], 0.6 * own + 0.4 * others, atol=1e-5)
    # the other types answer differently from the focal type on this model, so the mixture moves
    assert np.abs(table["borrowed_lfc"] - table["own_lfc"]).max() > 1e-3


def test_weight_zero_is_the_own_change_and_the_correction_changes_it(cellina):
    focal, donors = focal_and_donors(cellina)
    plain = cellina.borrowed_counterfactual_change(focal, donors, weight=0.0, disattenuate=False, **CALL)
    np.testing.assert_allclose(plain["borrowed_lfc"], plain["own_lfc"])
    np.testing.assert_allclose(plain["own_lfc"], _by_hand(cellina, focal, donors, False), atol=1e-5)
    corrected = cellina.borrowed_counterfactual_change(focal, donors, weight=0.0, **CALL)
    assert corrected.attrs["disattenuate"] == 1.0
    assert np.abs(corrected["own_lfc"] - plain["own_lfc"]).max() > 1e-4


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"weight": 1.5}, "weight=1.5"),
        ({"weight": True}, "weight=True"),
        ({"weight": "half"}, "weight='half'"),
        ({"disattenuate": 2}, "disattenuate=2"),
        ({"min_reference_cells": 500}, "No other cell type has 500"),
        ({"reference_indices": [10**6]}, "reference_indices"),
    ],
)
def test_bad_input_names_the_value(cellina, options, message):
    focal, donors = focal_and_donors(cellina)
    with pytest.raises(ValueError, match=message):
        cellina.borrowed_counterfactual_change(focal, donors, **{**CALL, **options})


def test_needs_cell_types(two_slide_tissue):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", domains_key="domain", layer="counts")
    model = Cellina(adata, **SMALL, discriminator_lambda=1.0, classifier_lambda=0.0)
    model.train(max_epochs=1, batch_size=128, **QUIET)
    focal, donors = focal_and_donors(model)
    with pytest.raises(ValueError, match="labels_key"):
        model.borrowed_counterfactual_change(focal, donors, **CALL)


def test_graph_variant_borrows_too(two_slide_tissue):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    torch.manual_seed(0)
    model = CellinaGCN(adata, **SMALL, num_neighbors=[6])
    model.train(max_epochs=1, batch_size=128, **QUIET)
    focal, donors = focal_and_donors(model)
    table = model.borrowed_counterfactual_change(focal, donors, **CALL)
    assert table.shape == (adata.n_vars, 3) and np.isfinite(table.to_numpy()).all()
    np.testing.assert_allclose(table["borrowed_lfc"], 0.7 * table["own_lfc"] + 0.3 * table["others_lfc"], atol=1e-6)
