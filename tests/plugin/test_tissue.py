"""Reading a tissue through its keys: coordinates in micrometres, and keys that do not fit."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._session import CellinaSession
from cellina.plugin._state import SessionError, TissueKeys


def test_coordinates_from_obs_columns_with_pixel_size(tissue):
    keys = TissueKeys(spatial_key=None, x_column="x_px", y_column="y_px", pixel_size=0.5)
    session = CellinaSession(tissue, keys)
    np.testing.assert_allclose(session.coordinates_um(), tissue.obsm["spatial"])


def test_display_coordinates_are_row_column(tissue):
    session = CellinaSession(tissue, TissueKeys(spatial_key=None, x_column="x_px", y_column="y_px", pixel_size=0.5))
    np.testing.assert_allclose(session.display_coordinates(), tissue.obsm["spatial"][:, ::-1])


BAD_KEYS = [
    (TissueKeys(spatial_key="xy"), "'xy'"),
    (TissueKeys(spatial_key=None, x_column="x_px", y_column="nope"), "'nope'"),
    (TissueKeys(cell_type_key="celltype"), "'celltype'"),
    (TissueKeys(domain_key="region"), "'region'"),
    (TissueKeys(counts_layer="raw"), "'raw'"),
    (TissueKeys(pixel_size=0.0), "pixel size"),
]


@pytest.mark.parametrize(("keys", "culprit"), BAD_KEYS)
def test_bad_keys_are_named_and_leave_the_session_alone(tissue, keys, culprit):
    session = CellinaSession(tissue)
    before = session.keys
    with pytest.raises(SessionError, match=culprit):
        session.set_keys(keys)
    assert session.keys is before


@pytest.mark.parametrize(("keys", "culprit"), BAD_KEYS)
def test_a_session_refuses_keys_that_do_not_fit(tissue, keys, culprit):
    with pytest.raises(SessionError, match=culprit):
        CellinaSession(tissue, keys)


def test_two_columns_are_enough_to_read_coordinates(tissue):
    keys = TissueKeys(x_column="x_px", y_column="y_px", pixel_size=0.5)
    assert keys.spatial_key is None and keys.counts_layer is None
    session = CellinaSession(tissue, keys)
    np.testing.assert_allclose(session.coordinates_um(), tissue.obsm["spatial"])


def test_counts_left_unset_come_from_the_counts_layer_or_x(tissue):
    from cellina.plugin._state import COUNTS_IN_X
    from cellina.plugin._tissue import counts_layer_of

    assert counts_layer_of(tissue, TissueKeys()) == "counts"
    assert counts_layer_of(tissue, TissueKeys(counts_layer=COUNTS_IN_X)) is None
    del tissue.layers["counts"]
    assert counts_layer_of(tissue, TissueKeys()) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x_column": "x_px"}, "give both x_column and y_column, not only x_column"),
        ({"spatial_key": "X_spatial", "x_column": "x_px", "y_column": "y_px"}, "either as obsm\\['X_spatial'\\]"),
    ],
)
def test_coordinates_given_twice_or_by_half_are_refused(kwargs, message):
    with pytest.raises(SessionError, match=message):
        TissueKeys(**kwargs)


def test_a_missing_key_names_the_column_that_looks_right():
    from tests.plugin._helpers import cosmx_style

    adata, _ = cosmx_style(n_cells=320)
    with pytest.raises(SessionError, match="cell-type column 'cell_type' not found in obs; 'ist' looks like one"):
        CellinaSession(adata, TissueKeys(x_column="CenterX_global_px", y_column="CenterY_global_px"))
    session = CellinaSession(
        adata,
        TissueKeys(x_column="CenterX_global_px", y_column="CenterY_global_px", cell_type_key="ist", domain_key="typ"),
    )
    assert session.keys.counts_layer is None


def test_guessed_keys_list_what_was_guessed():
    from cellina.plugin._tissue import guess_keys
    from tests.plugin._helpers import cosmx_style

    adata, _ = cosmx_style(n_cells=320)
    keys = guess_keys(adata)
    assert (keys.cell_type_key, keys.domain_key, keys.batch_key, keys.counts_layer) == ("ist", "typ", "sid", None)
    assert set(keys.guessed) == {"x_column", "y_column", "cell_type_key", "domain_key", "batch_key"}


@pytest.mark.parametrize(
    ("levels", "reference", "target"),
    [
        (["232_CRC", "232_REF", "232_TVA"], "232_REF", "232_CRC"),
        (["healthy", "margin", "tumour"], "healthy", "tumour"),
        (["Tumor core", "Normal adjacent"], "Normal adjacent", "Tumor core"),
        (["a", "b"], "a", "a"),
    ],
)
def test_contrasts_default_to_reference_then_diseased_domain(levels, reference, target):
    from cellina.plugin._tissue import reference_first, target_first

    assert reference_first(levels)[0] == reference
    assert target_first(levels)[0] == target
    assert sorted(reference_first(levels)) == sorted(levels)
