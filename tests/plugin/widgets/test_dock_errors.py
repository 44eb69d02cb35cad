"""Problems become notifications that name the culprit, and leave the session as it was."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._state import FOCAL

from .._helpers import assert_same_state, quadrant, session_state
from ._viewers import preprocess_and_train, sample_viewer


@pytest.fixture(scope="module")
def trained():
    with sample_viewer(synchronous=True) as (viewer, docks):
        preprocess_and_train(docks, epochs=1)
        yield viewer, docks


@pytest.fixture
def docks(trained, errors):
    """The trained docks with no lasso and an empty shift table."""
    viewer, w = trained
    w["edge"].clear_lassos()
    w["edge"].session.clear_gene_shifts()
    return viewer, w


def _far_triangle(points):
    far = points.max(axis=0) + 1000
    return np.array([far, far + [0, 10], far + 10])


def test_a_run_needs_a_model(errors):
    with sample_viewer(synchronous=True) as (_, w):
        w["edge"].run()
        assert "no model" in errors[-1]


def test_a_missing_counts_layer_is_named_and_the_tissue_kept(docks, errors):
    _, w = docks
    session = w["tissue"].session
    before = session_state(session)
    w["tissue"].counts.addItem("no_such_layer")
    w["tissue"].counts.setCurrentText("no_such_layer")
    w["tissue"].preprocess()
    w["tissue"].counts.setCurrentText("counts")
    assert "no_such_layer" in errors[-1]
    assert_same_state(session, before)


def test_no_focal_cells(docks, errors):
    _, w = docks
    w["edge"].run()
    assert "no focal cells" in errors[-1]


def test_a_focal_lasso_that_catches_nobody(docks, errors):
    viewer, w = docks
    w["edge"].draw_focal.click()
    viewer.layers["focal lasso"].add(_far_triangle(w["edge"].session.display_coordinates()), shape_type="polygon")
    w["edge"].run()
    assert "no focal cells" in errors[-1]


def test_an_empty_donor_lasso(docks, errors):
    viewer, w = docks
    points = w["edge"].session.display_coordinates()
    w["edge"].draw_focal.click()
    viewer.layers["focal lasso"].add(quadrant(points, "low"), shape_type="polygon")
    w["edge"].draw_donors.click()
    viewer.layers["donor lasso"].add(_far_triangle(points), shape_type="polygon")
    w["edge"].run()
    assert "donor pool" in errors[-1] and "empty" in errors[-1]
    assert w["edge"].session.runs == {}


def test_an_unknown_gene_is_refused(docks, errors):
    _, w = docks
    w["node"].gene.setCurrentText("NOT_A_GENE")
    w["node"].add_shift()
    assert "NOT_A_GENE" in errors[-1] and len(w["node"].session.gene_shifts) == 0


def test_an_empty_shift_table_cannot_run(docks, errors):
    _, w = docks
    w["node"].session.set_selection(FOCAL, np.arange(10))
    w["node"].run()
    assert "gene-shift table is empty" in errors[-1]


def test_a_model_trained_on_other_genes_is_refused_by_folder(docks, errors, tmp_path):
    from cellina.plugin._session import CellinaSession

    _, w = docks
    session = w["model"].session
    model = session.model
    other = CellinaSession(session.adata[:, 5:].copy(), session.keys)
    other.train(max_epochs=1, batch_size=256)
    folder = tmp_path / "other_model"
    other.save_model(str(folder))
    before = session_state(session)
    w["model"].load_model(str(folder))
    assert "does not match" in errors[-1] and str(folder) in errors[-1]
    assert session.model is model
    assert_same_state(session, before)


def test_a_folder_without_a_model_is_refused(docks, errors, tmp_path):
    _, w = docks
    model = w["model"].session.model
    w["model"].load_model(str(tmp_path))
    assert "not a Cellina model folder" in errors[-1]
    assert w["model"].session.model is model
