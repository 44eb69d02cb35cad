"""No step can wedge the plugin.

Every step (preprocess, train, latents, edge, node, export, load) is started from its dock
in a real napari thread worker with an exception injected where the library does the work
(a ValueError, a RuntimeError, which napari's worker treats as an abort and would swallow, a
KeyError, a MemoryError) or while its result is applied. Each must end in exactly one failed
outcome, show the error, clear busy so every button works again, and leave the session as
it was.
"""

from __future__ import annotations

import pytest

from cellina.plugin._session import TissueKeys
from cellina.plugin._state import DONORS, FOCAL
from cellina.plugin.widgets import EdgeWidget, ExportWidget, ModelWidget, NodeWidget, ResultsWidget, TissueWidget
from cellina.plugin.widgets._bridge import get_bridge

from .._helpers import assert_same_state, session_state

ERRORS = (ValueError, RuntimeError, KeyError, MemoryError)


def _raise(error: type[BaseException]):
    def broken(*args, **kwargs):
        raise error(f"injected {error.__name__}")

    return broken


def _inject_library(step: str, error: type[BaseException], monkeypatch) -> None:
    """Make the library call a step relies on raise ``error``."""
    import cellina.counterfactual
    import cellina.export
    import cellina.model
    import cellina.preprocessing
    from cellina.model import Cellina

    broken = _raise(error)
    where = {
        "preprocess": (cellina.preprocessing, "prepare_tissue", broken),
        "train": (cellina.model, "train_model", broken),
        "latents": (Cellina, "get_latent_representation", broken),
        "edge": (Cellina, "get_counterfactual_expression", broken),
        "node": (cellina.counterfactual, "node_counterfactual", broken),
        "export": (cellina.export, "perturbed_anndata", broken),
        "load": (Cellina, "load", classmethod(broken)),
    }
    monkeypatch.setattr(*where[step])


# the session event each step's apply emits; a view failing on it is an error while applying
APPLY_EVENTS = {
    "preprocess": "adata",
    "train": "model",
    "latents": "latents",
    "edge": "runs",
    "node": "runs",
    "export": "exported",
    "load": "model",
}


def _inject_apply(step: str, session) -> None:
    """A view that fails the first time it hears the event the step's apply emits."""
    signal = getattr(session.events, APPLY_EVENTS[step])

    def broken_view(*args):
        signal.disconnect(broken_view)
        raise RuntimeError("a view failed while the result was applied")

    signal.connect(broken_view)


@pytest.fixture(scope="session")
def saved_model(trained_two_slide, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "saved"
    trained_two_slide.save_model(str(folder))
    return str(folder)


@pytest.fixture
def docks(make_napari_viewer, trained_two_slide, monkeypatch):
    """All six docks, asynchronous, on a copy of a trained two-slide tissue with lassos and a shift."""
    viewer = make_napari_viewer()
    w = {
        "tissue": TissueWidget(viewer),
        "model": ModelWidget(viewer),
        "edge": EdgeWidget(viewer),
        "node": NodeWidget(viewer),
        "results": ResultsWidget(viewer),
        "export": ExportWidget(viewer),
    }
    adata = trained_two_slide.adata.copy()
    for key in [k for k in adata.uns if str(k).startswith("_scvi")]:
        del adata.uns[key]
    adata.obs = adata.obs[[c for c in adata.obs.columns if not str(c).startswith("_scvi")]]
    layer = viewer.add_points(adata.obsm["spatial"][:, ::-1], name="section", metadata={"adata": adata})
    bridge = get_bridge(viewer)
    bridge.adopt_layer(layer, TissueKeys(batch_key="slide"))
    session = bridge.session
    model = trained_two_slide.model
    model.register_anndata(adata)
    session.set_model(model, source="trained for the test")
    types = adata.obs["cell_type"].astype(str).to_numpy()
    session.set_selection(FOCAL, (types == "myeloid_1") & (adata.obs["domain"] == "healthy").to_numpy())
    session.set_selection(DONORS, (adata.obs["domain"] == "tumour").to_numpy())
    session.add_gene_shift(str(adata.var_names[0]), -10.0)
    w["model"].max_epochs.setValue(1)
    w["model"].batch_size.setValue(128)
    w["model"].holdout_type.setCurrentText("myeloid_1")
    w["model"].holdout_domain.setCurrentText("tumour")
    assert not any(dock.synchronous for dock in w.values())
    return viewer, w


def _start(step: str, w, folder, saved_model):
    starts = {
        "preprocess": lambda: w["tissue"].preprocess_button.click(),
        "train": lambda: w["model"].train_button.click(),
        "latents": lambda: w["model"].cluster_button.click(),
        "edge": lambda: w["edge"].run_button.click(),
        "node": lambda: w["node"].run_button.click(),
        "export": lambda: w["export"].export(str(folder / "out.h5ad")),
        "load": lambda: w["model"].load_model(saved_model),
    }
    starts[step]()


def _buttons(w):
    return [
        w["tissue"].preprocess_button,
        w["model"].train_button,
        w["model"].save_button,
        w["model"].load_button,
        w["model"].cluster_button,
        w["edge"].run_button,
        w["node"].run_button,
        w["export"].export_button,
    ]


def _run_failing(step, w, qtbot, tmp_path, saved_model):
    session = w["tissue"].session
    ends = []
    session.events.step.connect(lambda name, outcome: ends.append((name, outcome.status)))
    before = session_state(session)
    _start(step, w, tmp_path, saved_model)
    qtbot.waitUntil(lambda: bool(ends) and not session.busy, timeout=60_000)
    qtbot.wait(50)  # a second end, if any, would arrive now
    return ends, before


STEPS = list(APPLY_EVENTS)


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("step", STEPS)
def test_a_step_that_raises_fails_once_and_frees_the_plugin(
    step, error, docks, qtbot, errors, tmp_path, saved_model, monkeypatch
):
    viewer, w = docks
    _inject_library(step, error, monkeypatch)
    ends, before = _run_failing(step, w, qtbot, tmp_path, saved_model)
    assert len(ends) == 1 and ends[0][1] == "failed"
    assert "failed" in errors[-1] and f"injected {error.__name__}" in errors[-1]
    assert all(button.isEnabled() for button in _buttons(w)) and not w["model"].cancel_button.isEnabled()
    assert_same_state(w["tissue"].session, {**before, "busy": False})


@pytest.mark.parametrize("step", STEPS)
def test_an_error_while_applying_fails_once_and_puts_the_session_back(
    step, docks, qtbot, errors, tmp_path, saved_model
):
    viewer, w = docks
    session = w["tissue"].session
    _inject_apply(step, session)
    ends, before = _run_failing(step, w, qtbot, tmp_path, saved_model)
    assert len(ends) == 1 and ends[0][1] == "failed"
    assert errors[-1].endswith("failed: RuntimeError: a view failed while the result was applied")
    assert all(button.isEnabled() for button in _buttons(w))
    assert_same_state(session, {**before, "busy": False})
    # the views followed the session back
    assert len(w["tissue"].bridge.cells_layer.data) == session.adata.n_obs


@pytest.mark.filterwarnings("ignore:RuntimeError in aborted thread")
def test_napari_s_worker_swallows_a_runtime_error_which_is_why_steps_never_raise(qtbot):
    """Documents the thread worker's behaviour the steps are guarded against."""
    from napari.qt.threading import create_worker
    from qtpy.QtCore import QThreadPool

    def steps():
        yield 1
        raise RuntimeError("a torch error")

    worker = create_worker(steps, _start_thread=False, _ignore_errors=True)
    signals = []
    for name in ("started", "yielded", "errored", "returned", "finished"):
        getattr(worker, name).connect(lambda *args, name=name: signals.append(name))
    worker.start()
    assert QThreadPool.globalInstance().waitForDone(10_000)
    qtbot.waitUntil(lambda: "yielded" in signals, timeout=10_000)
    qtbot.wait(100)
    # it started and yielded, then ended without a word: neither errored nor finished
    assert signals == ["started", "yielded"]
