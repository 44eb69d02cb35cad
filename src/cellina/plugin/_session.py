"""One evented state object shared by every Cellina dock (and usable from a notebook).

The session holds the AnnData, the model, the named cell selections, the gene-shift
table and the counterfactual runs. Docks observe its signals instead of finding each
other. Long work comes as a :class:`~cellina.plugin._state.Job` from a job factory
(``preprocess_job``, ``train_job``, ...): its steps run anywhere (a thread worker, or here
with :meth:`CellinaSession.run`), and :meth:`CellinaSession.finish` applies the result on
the main thread, all or nothing, emitting the event for everything it changed. A notebook
calls the same steps synchronously (``preprocess``, ``train``, ``run_edge``, ...). Nothing
here imports Qt or napari.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from psygnal import EmitLoopError, Signal, SignalGroup

from cellina.counterfactual import GeneShifts
from cellina.keys import OBSM
from cellina.plugin._results import observed_vs_predicted, top_changed_genes, trust_summary
from cellina.plugin._session_cells import CellsMixin
from cellina.plugin._session_jobs import JobsMixin
from cellina.plugin._state import (
    CLUSTER_COLUMNS,
    DONORS,
    FOCAL,
    KNOCKOUT_LFC,
    Attention,
    Job,
    Latents,
    Outcome,
    PreprocessParams,
    Progress,
    RunResult,
    SessionError,
    StepCancelled,
    Steps,
    TissueKeys,
    TrainParams,
)
from cellina.plugin._steps import outcome_of, run_sync
from cellina.plugin._tissue import coordinates, guess_keys, validate_keys

__all__ = [
    "DONORS",
    "FOCAL",
    "KNOCKOUT_LFC",
    "CellinaSession",
    "PreprocessParams",
    "SessionError",
    "SessionEvents",
    "TissueKeys",
    "TrainParams",
]

log = logging.getLogger(__name__)
# state a failed apply puts back; dicts are copied, everything else is kept by reference
_STATE = (
    "adata",
    "keys",
    "model",
    "model_source",
    "preprocess_params",
    "train_params",
    "history",
    "selections",
    "gene_shifts",
    "runs",
    "current_run",
    "last_export",
    "attention",
    "reach_curve",
    "_display",
)


class SessionEvents(SignalGroup):
    """Signals of :class:`CellinaSession`; each carries what changed."""

    adata = Signal(object)
    keys = Signal(object)
    model = Signal(object)
    latents = Signal()
    #: the graph model's attention was computed (or dropped, with a new model or tissue)
    attention = Signal()
    #: a niche-reach scan finished: its :class:`~cellina.spatial.NicheReachCurve`
    reach = Signal(object)
    #: AnnData entries written in place, as ``"obsm/spatial_x"``-style names
    data = Signal(tuple)
    selection = Signal(str)
    gene_shifts = Signal()
    runs = Signal()
    current_run = Signal(str)
    exported = Signal(str)
    busy = Signal(bool)
    #: once per job: its name and its :class:`~cellina.plugin._state.Outcome`
    step = Signal(str, object)


class _Snapshot:
    """The session's state and its AnnData's mappings, to put back when an apply fails.

    Apply functions replace AnnData entries rather than editing them in place, so
    references are enough: nothing large is copied.
    """

    def __init__(self, session: CellinaSession):
        self.attrs = {name: _shallow(getattr(session, name)) for name in _STATE}
        adata = session.adata
        self.parts = (
            None
            if adata is None
            else (adata.obs.copy(deep=False), dict(adata.obsm), dict(adata.obsp), dict(adata.uns), dict(adata.layers))
        )

    def restore(self, session: CellinaSession) -> None:
        for name, value in self.attrs.items():
            setattr(session, name, value)
        adata = self.attrs["adata"]
        if self.parts is None or adata is None:
            return
        obs, *mappings = self.parts
        adata.obs = obs
        for target, saved in zip((adata.obsm, adata.obsp, adata.uns, adata.layers), mappings, strict=True):
            for key in [k for k in target.keys() if k not in saved]:
                del target[key]
            for key, value in saved.items():
                if key not in target or target[key] is not value:
                    target[key] = value


def _shallow(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


class CellinaSession(CellsMixin, JobsMixin):
    """State of one Cellina analysis: data, model, selections, gene shifts and runs.

    Parameters
    ----------
    adata
        Cells x genes AnnData; may be set later with :meth:`set_adata`.
    keys
        Where annotations live (:class:`TissueKeys`).

    Examples
    --------
    >>> session = CellinaSession(adata)
    >>> session.preprocess(bandwidth_um=20)
    >>> session.train(max_epochs=20)
    >>> session.select_polygons("focal", [polygon_yx])
    >>> session.run_edge(pool="observed", observed_cell_type="Myeloid", observed_domain="tumour")
    >>> session.export("perturbed.h5ad")
    """

    def __init__(self, adata: ad.AnnData | None = None, keys: TissueKeys | None = None):
        self.events = SessionEvents()
        self.adata: ad.AnnData | None = None
        self.keys = keys or TissueKeys()
        self.model: Any = None
        self.model_source: str | None = None
        self.preprocess_params: PreprocessParams | None = None
        #: the last niche-reach scan of this tissue (:meth:`reach_job`), or None
        self.reach_curve: Any = None
        self.train_params: TrainParams | None = None
        self.history: dict[str, list[float]] = {}
        self.selections: dict = {}
        self.gene_shifts = GeneShifts.from_rows([])
        self.runs: dict[str, RunResult] = {}
        self.current_run: str | None = None
        self.last_export: str | None = None
        #: the graph model's attention, computed once per model (:meth:`attention_job`)
        self.attention: Attention | None = None
        self._busy = False
        self._job: Job | None = None
        self._display: np.ndarray | None = None
        # what an apply emitted, so a failed one can announce what it put back
        self._fired: list[tuple[str, tuple]] | None = None
        self.events.all.connect(self._record)
        if adata is not None:
            self.set_adata(adata, keys)

    # ------------------------------------------------------------------ data
    @property
    def busy(self) -> bool:
        """True while a step works on the session's data."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = bool(value)
        self.events.busy.emit(self._busy)

    @property
    def running(self) -> str | None:
        """The name of the step that is running, if any."""
        return self._job.name if self._job is not None else None

    def require_idle(self) -> None:
        """A :class:`SessionError` while a step is running."""
        if self._busy:
            raise SessionError("another Cellina step is still running; wait for it or cancel it")

    def require_adata(self) -> ad.AnnData:
        """The session's AnnData, or a :class:`SessionError` when none is loaded."""
        if self.adata is None:
            raise SessionError("no tissue loaded: open an .h5ad file or the sample tissue first")
        return self.adata

    def require_model(self) -> Any:
        """The trained or loaded model, or a :class:`SessionError`."""
        if self.model is None:
            raise SessionError("no model: train one or load a model folder first")
        return self.model

    def set_adata(self, adata: ad.AnnData, keys: TissueKeys | None = None, reach_curve: Any = None) -> None:
        """Replace the tissue; the model, selections and runs belong to the old one and are dropped.

        ``reach_curve``: a niche-reach scan of these same cells (a preprocessed copy keeps its scan).
        """
        if not isinstance(adata, ad.AnnData):
            raise SessionError(f"expected an AnnData, got {type(adata).__name__}")
        if adata.n_obs == 0:
            raise SessionError("the AnnData has no cells")
        if keys is None:
            # the previous tissue's keys carry over only when they fit the new one
            try:
                validate_keys(adata, self.keys)
                keys = self.keys
            except SessionError:
                keys = guess_keys(adata)
        validate_keys(adata, keys)
        self.adata = adata
        self.keys = keys
        self._display = None
        self.model = None
        self.model_source = None
        self.attention = None
        self.reach_curve = reach_curve
        self.history = {}
        self.selections = {}
        self.gene_shifts = GeneShifts.from_rows([])
        self.runs = {}
        self.current_run = None
        self.events.adata.emit(adata)
        self.events.model.emit(None)
        self.events.runs.emit()

    def set_keys(self, keys: TissueKeys) -> None:
        """Change where annotations are read from (validated against the AnnData first)."""
        validate_keys(self.require_adata(), keys)
        self.keys = keys
        self._display = None
        self.events.keys.emit(keys)

    def coordinates_um(self) -> np.ndarray:
        """Cell centres (x, y) in micrometres."""
        return coordinates(self.require_adata(), self.keys) * float(self.keys.pixel_size)

    def display_coordinates(self) -> np.ndarray:
        """Cell centres in napari's (row, column) = (y, x) order, in micrometres (read-only).

        Cached until the tissue or its keys change, because every lasso stroke needs them.
        """
        if self._display is None:
            display = np.ascontiguousarray(self.coordinates_um()[:, ::-1])
            display.flags.writeable = False
            self._display = display
        return self._display

    def obs_values(self, key: str) -> pd.Series:
        """An obs column, with an error naming it when absent."""
        adata = self.require_adata()
        if key not in adata.obs:
            raise SessionError(f"obs column {key!r} not found (available: {list(adata.obs.columns)[:12]})")
        return adata.obs[key]

    # ------------------------------------------------------------------ model and latents
    def set_model(self, model: Any, source: str | None = None, history: dict | None = None) -> None:
        """Attach a trained or loaded model; runs made with another model are dropped."""
        self.model = model
        self.model_source = source
        self.attention = None
        self.history = dict(history or {})
        self.runs = {}
        self.current_run = None
        self.events.model.emit(model)
        self.events.runs.emit()

    def set_latents(self, latents: Latents) -> None:
        """Store ``z``/``s`` in obsm and their clusters in obs (``cellina_z_cluster``, ...)."""
        adata = self.require_adata()
        for name in ("z", "s"):
            if len(getattr(latents, name)) != adata.n_obs:
                raise SessionError(f"latent {name!r} has {len(getattr(latents, name))} rows, not {adata.n_obs}")
        adata.obsm[OBSM.Z] = np.asarray(latents.z, dtype=np.float32)
        adata.obsm[OBSM.S] = np.asarray(latents.s, dtype=np.float32)
        for name, column in CLUSTER_COLUMNS.items():
            labels = np.asarray(getattr(latents, f"{name}_cluster")).astype(str)
            order = sorted(set(labels), key=lambda v: (len(v), v))
            adata.obs[column] = pd.Categorical(labels, categories=order)
        self.events.latents.emit()

    # ------------------------------------------------------------------ runs
    def add_run(self, result: RunResult) -> None:
        """Keep a run and make it the current one."""
        self.runs[result.name] = result
        self.current_run = result.name
        self.events.runs.emit()
        self.events.current_run.emit(result.name)

    def set_current_run(self, name: str) -> None:
        """Switch the displayed run."""
        if name not in self.runs:
            raise SessionError(f"no run named {name!r} (runs: {list(self.runs)})")
        self.current_run = name
        self.events.current_run.emit(name)

    def next_run_name(self, kind: str) -> str:
        """``edge 1``, ``node 2``, ...: a name not used yet."""
        i = 1
        while f"{kind} {i}" in self.runs:
            i += 1
        return f"{kind} {i}"

    def require_run(self, name: str | None = None) -> RunResult:
        """A run by name (default: the current one), or a :class:`SessionError`."""
        name = self.current_run if name is None else name
        if name is None:
            raise SessionError("no counterfactual run yet: run an edge or node perturbation first")
        if name not in self.runs:
            raise SessionError(f"no run named {name!r} (runs: {list(self.runs)})")
        return self.runs[name]

    def top_changed_genes(self, name: str | None = None, n: int = 20) -> pd.DataFrame:
        """Genes whose mean predicted expression changes most in a run (see :func:`top_changed_genes`)."""
        return top_changed_genes(self.require_adata().var_names, self.require_run(name), n)

    def trust_summary(self, name: str | None = None) -> tuple[str, str]:
        """How much to trust a run: its draws line and the outside-training warning (see :func:`trust_summary`)."""
        return trust_summary(self.require_run(name))

    def observed_vs_predicted(
        self, target_cell_type: str, target_domain: str, n_deg: int = 50, name: str | None = None
    ) -> dict[str, Any]:
        """Observed (target vs focal) against predicted (counterfactual vs focal) log2 fold changes."""
        return observed_vs_predicted(
            self.require_adata(),
            self.keys.cell_type_key,
            self.keys.domain_key,
            self.require_run(name),
            target_cell_type,
            target_domain,
            n_deg,
        )

    # ------------------------------------------------------------------ running jobs
    def start(self, job: Job) -> Steps:
        """Mark the session busy with ``job`` and return its steps, guarded.

        The returned generator yields progress and returns an :class:`Outcome`; it never
        raises an Exception. Exhaust it anywhere, then hand the outcome to :meth:`finish`.
        """
        self.require_idle()
        self._job = job
        self.busy = True
        return outcome_of(job.steps)

    def finish(self, job: Job, outcome: Outcome) -> Outcome:
        """End ``job`` exactly once: apply a result (all or nothing), clear busy, emit ``step``.

        Main thread only. A result whose apply raises becomes a failed outcome and the
        session is put back as it was, with its events emitted again for what was restored.
        """
        if job.outcome is not None:
            return job.outcome
        if outcome.status == "done":
            try:
                outcome = Outcome("done", outcome.value, message=self._apply(job, outcome.value) or "")
            except EmitLoopError as err:  # a view observing the apply failed: report its own error
                outcome = Outcome("failed", error=err.__cause__ or err)
            except Exception as err:
                outcome = Outcome("failed", error=err)
        job.outcome = outcome
        if self._job is job:
            self._job = None
            self._busy = False
            self._emit_quietly("busy", False)
        self._emit_quietly("step", job.name, outcome)
        return outcome

    def execute(self, job: Job, on_progress: Callable[[Progress], None] | None = None) -> Outcome:
        """Run ``job`` in this thread and return how it ended (its follow-up is not run)."""
        steps = self.start(job)
        try:
            outcome = run_sync(steps, on_progress)
        except BaseException as err:  # only a progress callback can raise here
            steps.close()
            self.finish(job, Outcome("failed", error=err))
            raise
        return self.finish(job, outcome)

    def run(self, job: Job, on_progress: Callable[[Progress], None] | None = None) -> Any:
        """Run ``job`` and its follow-ups here and now; return its result or raise its error."""
        outcome = self.execute(job, on_progress)
        if outcome.status != "done":
            raise outcome.error if outcome.error is not None else StepCancelled(f"{job.name} cancelled")
        follow_up = job.follow_up() if job.follow_up is not None else None
        if follow_up is not None:
            self.run(follow_up, on_progress)
        return outcome.value

    def cancel(self) -> None:
        """Ask the running step to stop where it can (training: at the next minibatch)."""
        if self._job is not None:
            self._job.cancel.set()

    def _apply(self, job: Job, value: Any) -> str:
        snapshot = _Snapshot(self)
        self._fired = []
        try:
            return job.apply(value)
        except Exception:
            fired, self._fired = self._fired, None
            snapshot.restore(self)
            self._announce(fired)
            raise
        finally:
            self._fired = None

    def _record(self, info: Any) -> None:
        if self._fired is not None and info.signal.name not in ("busy", "step"):
            self._fired.append((info.signal.name, tuple(info.args)))

    def _announce(self, fired: list[tuple[str, tuple]]) -> None:
        """Emit again, with the restored state, every signal a failed apply emitted."""
        current = {
            "adata": (self.adata,),
            "keys": (self.keys,),
            "model": (self.model,),
            "current_run": (self.current_run or "",),
        }
        seen = set()
        for name, args in fired:
            key = name if name in current else (name, args)
            if key not in seen:
                seen.add(key)
                self._emit_quietly(name, *current.get(name, args))

    def _emit_quietly(self, name: str, *args: Any) -> None:
        try:
            getattr(self.events, name).emit(*args)
        except Exception:  # a broken view must not stop the session from settling
            log.exception("a Cellina view failed on the %r event", name)
