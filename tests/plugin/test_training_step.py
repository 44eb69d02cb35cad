"""The training step: presets, the library's train_model, held-out masking, cancel and failure.

Every test that trains does so on two slides with the slide as batch.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from cellina.plugin._session import CellinaSession
from cellina.plugin._state import SessionError, TissueKeys, TrainingCancelled, TrainParams
from cellina.plugin._steps import run_sync
from cellina.plugin._training import train_steps

HELD = dict(holdout_cell_type="myeloid_1", holdout_domain="tumour")


@pytest.fixture(scope="module")
def preprocessed():
    """A two-slide section, preprocessed with the slide as batch (each test copies it)."""
    from cellina.datasets import synthetic_tissue

    adata = synthetic_tissue(n_cells=640, n_genes=100, n_slides=2, seed=1, store_means=False)
    session = CellinaSession(adata, TissueKeys(batch_key="slide"))
    session.preprocess(n_top_genes=80, bandwidth_um=20, max_neighbours=15)
    return session.adata, session.keys


@pytest.fixture
def session(preprocessed):
    adata, keys = preprocessed
    return CellinaSession(adata.copy(), keys)


def _held(adata) -> np.ndarray:
    return np.flatnonzero(((adata.obs["cell_type"] == "myeloid_1") & (adata.obs["domain"] == "tumour")).to_numpy())


def _graph_state(adata):
    return (
        adata.obsp["spatial_connectivities"].copy(),
        adata.obsm["spatial_x"].copy(),
        sorted(adata.obsp.keys()),
        sorted(adata.obs.columns),
    )


def _same_graph_state(adata, state):
    W, phi, obsp_keys, obs_columns = state
    return (
        (adata.obsp["spatial_connectivities"] != W).nnz == 0
        and np.array_equal(adata.obsm["spatial_x"], phi)
        and sorted(adata.obsp.keys()) == obsp_keys
        and sorted(adata.obs.columns) == obs_columns
    )


# ---------------------------------------------------------------------- presets
def test_train_params_take_their_model_options_from_the_preset():
    from cellina.model.presets import PUBLISHED, RECOMMENDED

    recommended, published = TrainParams(), TrainParams(preset="published")
    assert recommended.preset == "recommended"
    for option in ("niche_decoder", "spatial_decoding", "type_aware_discriminator"):
        assert getattr(recommended, option) == RECOMMENDED.model[option]
        assert getattr(published, option) == PUBLISHED.model[option]


def test_an_option_given_overrides_the_preset():
    params = TrainParams(preset="published", niche_decoder="factorised")
    assert params.niche_decoder == "factorised" and params.model_kwargs()["niche_decoder"] == "factorised"


def test_an_unknown_preset_is_named():
    with pytest.raises(SessionError, match="unknown preset 'best'"):
        TrainParams(preset="best")


def test_training_goes_through_the_library_s_train_model_with_the_preset(session, monkeypatch):
    import cellina.model

    calls = []

    def spy(adata, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr(cellina.model, "train_model", spy)
    with pytest.raises(RuntimeError, match="stop here"):
        run_sync(train_steps(session.adata, session.keys, TrainParams(preset="published", max_epochs=3)))
    (kwargs,) = calls
    assert kwargs["preset"] == "published" and kwargs["batch_key"] == "slide"
    assert kwargs["model_kwargs"]["niche_decoder"] == "concat" and kwargs["max_epochs"] == 3


def test_the_model_records_its_preset(session):
    session.train(preset="published", max_epochs=1, batch_size=128)
    assert session.model.preset == "published" and session.model.module.niche_decoder == "concat"
    assert session.train_params.preset == "published"


# ---------------------------------------------------------------------- held-out cells
def test_held_out_cells_are_nobody_s_neighbour_after_training(session):
    session.train(max_epochs=1, batch_size=128, **HELD)
    adata, held = session.adata, _held(session.adata)
    W = adata.obsp["spatial_connectivities"]
    assert held.size > 0 and W[held].nnz == 0 and W[:, held].nnz == 0
    assert np.abs(adata.obsm["spatial_x"][held]).sum() == 0
    np.testing.assert_array_equal(adata.uns["spatial_neighbors"]["params"]["test_indices"], held)


def test_the_unmasked_graph_is_kept_beside_the_training_graph(session):
    full = session.adata.obsp["spatial_connectivities"].copy()
    session.train(max_epochs=1, batch_size=128, **HELD)
    assert (session.adata.obsp["spatial_connectivities_orig"] != full).nnz == 0
    assert session.adata.obsp["spatial_connectivities_orig"][_held(session.adata)].nnz > 0


def test_training_registers_the_tissue_on_the_main_thread_not_in_its_worker(session):
    adata = session.adata
    session.train(max_epochs=1, batch_size=128, **HELD)
    assert session.adata is adata and session.model.adata is not adata


def test_training_the_graph_swap_is_announced(session):
    seen = []
    session.events.data.connect(seen.append)
    session.train(max_epochs=1, batch_size=128, **HELD)
    assert seen and "obsp/spatial_connectivities" in seen[0] and "obsm/spatial_x" in seen[0]


def test_a_later_training_without_held_out_cells_gets_everyone_back(session):
    full = session.adata.obsp["spatial_connectivities"].copy()
    session.train(max_epochs=1, batch_size=128, **HELD)
    session.train(max_epochs=1, batch_size=128)
    adata = session.adata
    assert (adata.obsp["spatial_connectivities"] != full).nnz == 0
    assert "spatial_connectivities_orig" not in adata.obsp
    assert np.abs(adata.obsm["spatial_x"][_held(adata)]).sum() > 0


def test_niche_features_with_the_neighbours_types_are_rebuilt_as_made(two_slide_section):
    session = CellinaSession(two_slide_section, TissueKeys(batch_key="slide"))
    session.preprocess(n_top_genes=80, bandwidth_um=20, max_neighbours=15, composition="added")
    adata = session.adata
    n_types = adata.obs["cell_type"].nunique()
    assert adata.obsm["spatial_x"].shape[1] == adata.n_vars + n_types
    assert adata.uns["cellina"]["preprocess"]["composition"] == "added"
    session.train(max_epochs=1, batch_size=128, **HELD)
    adata, held = session.adata, _held(session.adata)
    phi = adata.obsm["spatial_x"]
    assert phi.shape[1] == adata.n_vars + n_types and session.model.module.n_spatial == phi.shape[1]
    # the held-out cells are in nobody's type shares: their column sums only what others see of them
    held_type = list(adata.uns["cellina"]["spatial_features"]["spatial_x"]["composition_categories"]).index("myeloid_1")
    W = adata.obsp["spatial_connectivities"].toarray()
    is_myeloid_1 = (adata.obs["cell_type"] == "myeloid_1").to_numpy().astype(float)
    is_myeloid_1[held] = 0.0
    deg = W.sum(1)
    expected = np.divide(W @ is_myeloid_1, deg, out=np.zeros_like(deg), where=deg > 0)
    np.testing.assert_allclose(phi[:, adata.n_vars + held_type], expected, atol=1e-5)


def test_cell_types_in_the_niche_need_a_cell_type_key(two_slide_section):
    session = CellinaSession(two_slide_section, TissueKeys(batch_key="slide", cell_type_key=None))
    with pytest.raises(SessionError, match="needs the cell-type column"):
        session.preprocess(n_top_genes=80, bandwidth_um=20, composition="only")


# ---------------------------------------------------------------------- cancel and failure
@pytest.fixture
def trained(session):
    session.train(max_epochs=1, batch_size=128)
    return session


def test_cancelling_a_held_out_training_leaves_the_tissue_and_model_alone(trained):
    model, adata = trained.model, trained.adata
    state = _graph_state(adata)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrainingCancelled):
        run_sync(train_steps(adata, trained.keys, TrainParams(max_epochs=2, batch_size=128, **HELD), cancel))
    assert _same_graph_state(adata, state) and trained.model is model


def test_a_failed_held_out_training_leaves_the_tissue_and_model_alone(trained, monkeypatch):
    from cellina.model import Cellina

    model, adata = trained.model, trained.adata
    state = _graph_state(adata)
    s_before = model.get_latent_representation(adata, latent_key="s")

    def broken(self, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Cellina, "train", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_sync(train_steps(adata, trained.keys, TrainParams(max_epochs=2, batch_size=128, **HELD)))
    assert _same_graph_state(adata, state) and trained.model is model
    np.testing.assert_array_equal(model.get_latent_representation(adata, latent_key="s"), s_before)
