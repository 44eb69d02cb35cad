"""Tissues and helpers shared by the plugin's tests."""

from __future__ import annotations

import pytest

from ._helpers import grid_tissue


@pytest.fixture
def tissue():
    """A 12 x 10 grid of cells, 10 um apart, with counts, types, two domains and pixel columns."""
    adata, xy = grid_tissue(12, 10, 10.0, 12, 3.0, ("A", "B", "C"), ("cell_type", "domain", "x_px", "y_px"), "g", "c")
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["spatial"] = xy
    return adata


@pytest.fixture
def two_slide_section():
    """A small synthetic section on two slides (``obs["slide"]``), not yet preprocessed."""
    from cellina.datasets import synthetic_tissue

    return synthetic_tissue(n_cells=640, n_genes=100, n_slides=2, seed=1, store_means=False)


@pytest.fixture
def errors(monkeypatch):
    """Error notifications the docks showed, in order."""
    shown: list[str] = []
    import cellina.plugin.widgets._common as common

    monkeypatch.setattr(common, "show_error", shown.append)
    return shown


@pytest.fixture(scope="session")
def trained_two_slide():
    """A session on two slides with the slide as batch: preprocessed, trained one epoch, latents.

    Shared: tests must not change it (copy its AnnData, or only read).
    """
    from cellina.datasets import synthetic_tissue
    from cellina.plugin._session import CellinaSession
    from cellina.plugin._state import TissueKeys

    adata = synthetic_tissue(n_cells=640, n_genes=100, n_slides=2, seed=1, store_means=False)
    session = CellinaSession(adata, TissueKeys(batch_key="slide"))
    session.preprocess(n_top_genes=80, bandwidth_um=20, max_neighbours=15)
    session.train(max_epochs=1, batch_size=128)
    return session
