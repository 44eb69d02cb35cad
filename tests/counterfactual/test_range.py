"""The range of each gene's edge change and the checked error behind it, on a two-slide tissue: every column
recomputed by hand from the model's calls and the counts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.counterfactual import (
    CHECKED_ERROR,
    RANGE_DRAWS,
    RANGE_WIDTH,
    checked_errors,
    observed_change,
    reference_cells,
)
from cellina.counterfactual._borrow import MAX_REFERENCE_CELLS, MIN_REFERENCE_CELLS
from cellina.model import Cellina

from ._helpers import change_by_hand, focal_and_donors, obs

CALL = {"n_neighbours": 10, "n_draws": 3, "seed": 3, "min_reference_cells": 15, "max_reference_cells": 20}
OPTIONS = {"n_neighbours": 10, "n_draws": 3, "seed": 3, "batch_size": None, "exclude_indices": None}


def _change(model, cells, donors, disattenuate):
    return change_by_hand(model, cells, donors, disattenuate, n_draws=3)


def test_observed_change_by_hand():
    # two cells before (libraries 4 and 6), two after; gene 2 has no count anywhere
    before = np.array([[2.0, 2.0, 0.0], [3.0, 3.0, 0.0]])
    after = np.array([[1.0, 3.0, 0.0], [4.0, 4.0, 0.0]])
    counts = sp.csr_matrix(np.vstack([before, after]))
    got = observed_change(counts, np.array([0, 1]), np.array([2, 3]))
    eps = 0.5 * 1e4 / 10.0  # half a count over the smaller group's total, on the normalised scale
    mean_before = np.array([5000.0, 5000.0, 0.0])
    mean_after = np.array([(2500.0 + 5000.0) / 2, (7500.0 + 5000.0) / 2, 0.0])
    np.testing.assert_allclose(got, np.log2((mean_after + eps) / (mean_before + eps)))
    assert got[2] == 0.0


def test_checked_errors_by_hand(cellina):
    focal, donors = focal_and_donors(cellina)
    types = obs(cellina, "coarse_type")
    counts = cellina.registered_counts()
    table = checked_errors(cellina, cellina.adata, focal, donors, OPTIONS, max_cells=20, min_cells=15, seed=3)
    groups = reference_cells(cellina, cellina.adata, focal, donors, max_cells=20, min_cells=15, seed=3)
    checked = {name: cells for name, cells in groups.items() if (types[donors] == name).sum() >= 15}
    # healthy reference cells of six types reach 15, but only Endothelial (21) and Myeloid (28) have 15 tumour cells
    assert len(groups) == 6 and set(checked) == {"Endothelial", "Myeloid"}
    assert list(table.columns) == [CHECKED_ERROR, *[f"error[{name}]" for name in checked]]
    for name, cells in checked.items():
        after = donors[types[donors] == name]
        predicted, _ = _change(cellina, cells, donors, 0.0)
        expected = observed_change(counts, cells, after) - predicted
        np.testing.assert_allclose(table[f"error[{name}]"], expected, atol=1e-5)
        assert table.attrs["checked_types"][name] == {"reference": cells.size, "donors": after.size}
    errors = table.drop(columns=CHECKED_ERROR).to_numpy()
    np.testing.assert_allclose(table[CHECKED_ERROR], np.sqrt((errors**2).mean(axis=1)))


def test_range_columns_by_hand(cellina):
    focal, donors = focal_and_donors(cellina)
    table = cellina.counterfactual_change_range(focal, donors, exclude_indices=None, **CALL)
    assert isinstance(table, pd.DataFrame) and list(table.index) == list(cellina.adata.var_names)
    assert list(table.columns) == ["lfc", "lfc_corrected", "draw_spread", CHECKED_ERROR, "low", "high"]
    plain, spread = _change(cellina, focal, donors, False)
    corrected, _ = _change(cellina, focal, donors, True)
    np.testing.assert_allclose(table["lfc"], plain, atol=1e-5)
    np.testing.assert_allclose(table["lfc_corrected"], corrected, atol=1e-5)
    np.testing.assert_allclose(table["draw_spread"], spread, rtol=1e-5)
    assert np.abs(table["lfc_corrected"] - table["lfc"]).max() > 1e-4
    checked = checked_errors(cellina, cellina.adata, focal, donors, OPTIONS, max_cells=20, min_cells=15, seed=3)
    np.testing.assert_allclose(table[CHECKED_ERROR], checked[CHECKED_ERROR], atol=1e-6)
    half = 2.0 * np.sqrt(spread**2 + checked[CHECKED_ERROR].to_numpy() ** 2)
    np.testing.assert_allclose(table["low"], np.minimum(plain, corrected) - half, atol=1e-5)
    np.testing.assert_allclose(table["high"], np.maximum(plain, corrected) + half, atol=1e-5)
    assert table.attrs["width"] == 2.0 and table.attrs["n_draws"] == 3
    assert set(table.attrs["checked_types"]) == set(checked.attrs["checked_types"])


def test_the_defaults_are_the_judged_range():
    import inspect

    defaults = inspect.signature(Cellina.counterfactual_change_range).parameters
    assert defaults["width"].default == RANGE_WIDTH == 2.0 and defaults["n_draws"].default == RANGE_DRAWS == 5
    assert defaults["max_reference_cells"].default == MAX_REFERENCE_CELLS
    assert defaults["min_reference_cells"].default == MIN_REFERENCE_CELLS


def test_width_zero_spans_the_two_answers(cellina):
    focal, donors = focal_and_donors(cellina)
    table = cellina.counterfactual_change_range(focal, donors, width=np.int64(0), **CALL)
    np.testing.assert_allclose(table["low"], np.minimum(table["lfc"], table["lfc_corrected"]))
    np.testing.assert_allclose(table["high"], np.maximum(table["lfc"], table["lfc_corrected"]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"width": -1.0}, "width=-1.0"),
        ({"width": True}, "width=True"),
        ({"min_reference_cells": 500}, "No other cell type has 500"),
        ({"reference_indices": [10**6]}, "reference_indices"),
        ({"exclude_indices": "all"}, "exclude_indices='all'"),
    ],
)
def test_bad_input_names_the_value(cellina, options, message):
    focal, donors = focal_and_donors(cellina)
    with pytest.raises(ValueError, match=message):
        cellina.counterfactual_change_range(focal, donors, **{**CALL, **options})


def test_no_checkable_type_is_refused(cellina):
    focal, donors = focal_and_donors(cellina)
    types = obs(cellina, "coarse_type")
    few = donors[types[donors] == "Myeloid"][:10]  # too few cells of any type among the donors
    calls = []
    original = cellina.get_counterfactual_expression
    try:  # refused before any counterfactual runs
        cellina.get_counterfactual_expression = lambda *a, **k: calls.append(1) or original(*a, **k)
        with pytest.raises(ValueError, match="cannot be checked"):
            cellina.counterfactual_change_range(focal, few, **CALL)
    finally:
        del cellina.get_counterfactual_expression
    assert calls == []


def test_needs_a_trained_model_with_types(two_slide_tissue):
    adata = two_slide_tissue.copy()
    Cellina.setup_anndata(adata, batch_key="slide", domains_key="domain", layer="counts")
    model = Cellina(adata, n_hidden=16, n_latent=4, n_layers=1, classifier_lambda=0.0)
    focal, donors = focal_and_donors(model)
    with pytest.raises(RuntimeError):
        model.counterfactual_change_range(focal, donors, **CALL)
    model.train(max_epochs=1, batch_size=128, enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="labels_key"):
        model.counterfactual_change_range(focal, donors, **CALL)


def test_graph_variant_gives_a_range_too(two_slide_tissue):
    import torch

    from cellina.model import CellinaGCN

    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(0)
    model = CellinaGCN(adata, n_hidden=16, n_latent=4, n_layers=1, num_neighbors=[6])
    model.train(max_epochs=1, batch_size=128, enable_progress_bar=False, enable_model_summary=False)
    focal, donors = focal_and_donors(model)
    table = model.counterfactual_change_range(focal, donors, **CALL)
    assert table.shape == (adata.n_vars, 6) and np.isfinite(table.to_numpy()).all()
    assert (table["low"] <= table[["lfc", "lfc_corrected"]].min(axis=1)).all()
    assert (table["high"] >= table[["lfc", "lfc_corrected"]].max(axis=1)).all()
