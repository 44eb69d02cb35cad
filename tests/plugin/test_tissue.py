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
