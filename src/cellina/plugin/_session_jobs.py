"""The session's job factories: check the state, gather a step's inputs, say how to apply its result.

A mixin of :class:`~cellina.plugin._session.CellinaSession`. Each factory runs on the main
thread and raises a :class:`~cellina.plugin._state.SessionError` at once when the state does
not allow the step; the :class:`~cellina.plugin._state.Job` it returns carries the step's
generator (which never reads live session state) and an ``apply`` that the session runs on
the main thread, all or nothing, emitting the event for everything it changes. The
synchronous helpers at the end (``preprocess``, ``train``, ``run_edge``, ...) run the same
jobs in the caller's thread, for notebooks and scripts.
"""

from __future__ import annotations

import threading
from typing import Any

import anndata as ad
import numpy as np

from cellina.counterfactual import UNCERTAINTIES
from cellina.keys import LAYERS, OBSM
from cellina.plugin import _steps as steps
from cellina.plugin._attention import ReceiverEdges, attention_problem, attention_steps, attention_table, receiver_edges
from cellina.plugin._state import (
    Attention,
    EdgeJob,
    Exported,
    Job,
    Latents,
    Loaded,
    NodeJob,
    Preprocessed,
    PreprocessParams,
    RunResult,
    SessionError,
    TissueKeys,
    Trained,
    TrainParams,
    params_dict,
)
from cellina.plugin._tissue import graph_key, source_coordinates, validate_keys
from cellina.plugin._training import swap_training_graph, train_steps


class JobsMixin:
    """Job factories of :class:`~cellina.plugin._session.CellinaSession`."""

    adata: Any
    keys: TissueKeys
    events: Any
    model: Any

    def _same_inputs(self, adata: ad.AnnData, model: Any = None, what: str = "the step") -> None:
        """Refuse to apply a result computed on a tissue (or model) the session no longer holds."""
        if self.adata is not adata or (model is not None and self.model is not model):
            raise SessionError(f"the tissue or model changed while {what} ran; run it again")

    # ------------------------------------------------------------------ tissue and model
    def preprocess_job(self, params: PreprocessParams | None = None, keys: TissueKeys | None = None) -> Job:
        """Preprocess the tissue read through ``keys`` (default: the session's); the result replaces it."""
        adata = self.require_adata()
        keys = keys or self.keys
        validate_keys(adata, keys)
        params = params or PreprocessParams()

        curve = self.reach_curve

        def apply(result: Preprocessed) -> str:
            self._same_inputs(adata, what="preprocessing")
            # the scan judged these cells; it stays with the preprocessed copy of them
            self.set_adata(result.adata, result.keys, reach_curve=curve)
            self.preprocess_params = result.params
            return result.message

        return Job("preprocessing", steps.preprocess_steps(adata, keys, params, reach=curve), apply)

    def reach_job(self, keys: TissueKeys | None = None, params: PreprocessParams | None = None) -> Job:
        """Scan graph bandwidths on the tissue read through ``keys``: the niche reach the data support.

        The result (:class:`~cellina.spatial.NicheReachCurve`) becomes ``reach_curve`` and is
        announced by ``events.reach``; the preprocessing settings are left to the caller.
        """
        adata = self.require_adata()
        keys = keys or self.keys
        validate_keys(adata, keys)
        params = params or PreprocessParams()

        def apply(curve: Any) -> str:
            self._same_inputs(adata, what="the niche-reach scan")
            self.reach_curve = curve
            self.events.reach.emit(curve)
            return curve.describe()

        return Job("niche reach", steps.reach_steps(adata, keys, params.cutoff), apply)

    def train_job(self, params: TrainParams | None = None, method: str = "kmeans", n_clusters: int = 8) -> Job:
        """Train a model; on success the training graph and the model replace the session's.

        Its follow-up computes the latents and clusters them (``method``, ``n_clusters``).
        """
        adata = self.require_adata()
        params = params or TrainParams()
        cancel = threading.Event()
        return Job(
            "training",
            train_steps(adata, self.keys, params, cancel),
            lambda r: self._apply_trained(adata, r),
            follow_up=lambda: self.latents_job(method, n_clusters),
            cancel=cancel,
        )

    def _apply_trained(self, adata: ad.AnnData, result: Trained) -> str:
        self._same_inputs(adata, what="training")
        changed = []
        if result.rebuilt:
            for where, entries in swap_training_graph(adata, result.data).items():
                mapping = getattr(adata, where)
                for key, value in entries.items():
                    if value is None:
                        mapping.pop(key, None)
                    else:
                        mapping[key] = value
                    changed.append(f"{where}/{key}")
        # the session's AnnData is registered here, on the main thread, never in a worker
        result.model.register_anndata(adata)
        self.train_params = result.params
        source = f"trained {result.epochs} epochs" + (" (cancelled)" if result.cancelled else "")
        self.set_model(result.model, source=source, history=result.history)
        if changed:
            self.events.data.emit(tuple(changed))
        if result.cancelled:
            return f"training cancelled after {result.epochs} epoch(s); that model is kept"
        return f"{source}, preset {result.params.preset!r}"

    def load_job(self, path: str, method: str = "kmeans", n_clusters: int = 8) -> Job:
        """Load a model folder onto the tissue (genes must match); its follow-up computes the latents."""
        adata = self.require_adata()
        # the graph is needed by both variants; the step checks the niche features once it knows which
        steps.require_preprocessed(adata, features=False)
        steps.check_model_folder(path)

        def apply(loaded: Loaded) -> str:
            self._same_inputs(adata, what="loading")
            loaded.model.register_anndata(adata)
            self.set_model(loaded.model, source=loaded.path)
            return f"model loaded from {loaded.path}"

        return Job(
            "loading the model",
            steps.load_steps(adata, str(path)),
            apply,
            follow_up=lambda: self.latents_job(method, n_clusters),
        )

    def latents_job(self, method: str = "kmeans", n_clusters: int = 8) -> Job:
        """``z`` and ``s`` of every cell and their clusters (obs columns, colour-by choices)."""
        model, adata = self.require_model(), self.require_adata()

        def apply(latents: Latents) -> str:
            self._same_inputs(adata, model, "clustering")
            self.set_latents(latents)
            return f"{len(set(latents.s_cluster))} niche clusters (s), {len(set(latents.z_cluster))} of z"

        return Job("latents and clusters", steps.latent_steps(model, adata, method, n_clusters), apply)

    # ------------------------------------------------------------------ attention (graph variant)
    def attention_problem(self) -> str | None:
        """Why the session's model has no attention to show (None: it has, e.g. a CellinaGCN with GATv2)."""
        return attention_problem(self.model)

    def attention_job(self) -> Job:
        """Every GATv2 layer's attention on the tissue's graph, kept for the model (computed once per model)."""
        model, adata = self.require_model(), self.require_adata()
        problem = attention_problem(model)
        if problem is not None:
            raise SessionError(problem)

        def apply(attention: Attention) -> str:
            self._same_inputs(adata, model, "the attention")
            self.attention = attention
            self.events.attention.emit()
            return f"attention of {adata.n_obs} cells in {len(attention.layers)} GATv2 layer(s)"

        return Job("attention", attention_steps(model, adata), apply)

    @property
    def attention_ready(self) -> bool:
        """Whether the kept attention belongs to the session's model and tissue."""
        kept = self.attention
        return kept is not None and kept.model is self.model and kept.adata is self.adata

    def attention_layers(self) -> tuple:
        """The kept attention, one cells x cells CSR per layer (computed now, synchronously, if needed)."""
        if not self.attention_ready:
            self.run(self.attention_job())
        return self.attention.layers

    def cell_index(self, cell: Any) -> int:
        """A cell's position from its position or its obs name, with an error naming it when unknown."""
        adata = self.require_adata()
        if isinstance(cell, (int, np.integer)):
            if not 0 <= int(cell) < adata.n_obs:
                raise SessionError(f"cell {int(cell)} is out of range: the tissue has {adata.n_obs} cells")
            return int(cell)
        name = str(cell).strip()
        if name not in adata.obs_names:
            raise SessionError(f"cell {name!r} is not in the tissue's obs_names")
        return int(adata.obs_names.get_loc(name))

    def attention_edges(self, cell: Any, layer: int = -1) -> ReceiverEdges:
        """The neighbours ``cell`` attends to in ``layer`` (default: the last) and their weights (sum 1)."""
        return receiver_edges(self.attention_layers(), self.cell_index(cell), layer)

    def attention_table(self, groupby: str | None = None, layer: int = -1):
        """Receiver group x sender group attention relative to uniform (1: uniform), grouped by
        ``groupby`` (default: the cell-type column)."""
        key = groupby or self.keys.cell_type_key
        if not key:
            raise SessionError("the attention table needs a group column: set the cell-type column in the tissue dock")
        return attention_table(self.attention_layers(), self.obs_values(key), layer)

    # ------------------------------------------------------------------ counterfactuals
    def edge_job(
        self,
        pool: str = "lasso",
        observed_cell_type: str | None = None,
        observed_domain: str | None = None,
        niche_cluster: str | None = None,
        n_neighbours: int = 50,
        n_draws: int = 1,
        seed: int = 0,
        name: str | None = None,
        uncertainty: str = "donors",
        disattenuate: bool | None = None,
        borrow: bool = False,
        change_range: bool = False,
    ) -> Job:
        """Rewire the focal cells' neighbourhoods to donors from ``pool`` and decode them; with several
        draws the spread describes the donors drawn, or (``uncertainty="posterior"``) the donors and
        the model's posterior. ``disattenuate``: divide the change in ``s`` by its reliability (None: the
        model's setting). ``borrow``: also mix the focal cells' population change with the other types'
        under the same donors (opt-in; needs the correction, see docs/user_guide.md). ``change_range``: also
        give each gene a range (:meth:`Cellina.counterfactual_change_range`; a run whose focal cells cannot be
        checked against another type says why instead); the run then draws at least ``RANGE_DRAWS`` times, as
        the range was judged, so its change and its range come from the same draws."""
        from cellina.counterfactual import RANGE_DRAWS

        model, adata = self.require_model(), self.require_adata()
        focal = self.focal_indices()
        donors = self.donor_pool(pool, observed_cell_type, observed_domain, niche_cluster)
        if np.setdiff1d(donors, focal).size == 0:
            raise SessionError("the donor pool holds only focal cells; a cell cannot be its own donor")
        if int(n_neighbours) < 1 or int(n_draws) < 1:
            raise SessionError("donors per cell and number of draws must be >= 1")
        if uncertainty not in UNCERTAINTIES:
            raise SessionError(f"uncertainty={uncertainty!r}: use one of {list(UNCERTAINTIES)}")
        try:
            corrected = model.disattenuation(disattenuate)
        except ValueError as error:
            raise SessionError(str(error)) from None
        weight = self._borrow_weight(model, adata, focal, donors, corrected) if borrow else 0.0
        params = {
            "pool": pool,
            "observed_cell_type": observed_cell_type,
            "observed_domain": observed_domain,
            "niche_cluster": niche_cluster,
            "n_neighbours": int(n_neighbours),
            "n_draws": max(int(n_draws), RANGE_DRAWS) if change_range else int(n_draws),
            "uncertainty": uncertainty,
            "disattenuate": corrected,
            "borrow_weight": weight,
            "change_range": bool(change_range),
            "seed": int(seed),
            "n_donor_pool": int(donors.size),
            "preset": model.preset,
        }
        job = EdgeJob(
            model=model,
            adata=adata,
            focal=focal,
            donors=donors,
            params=params,
            name=name or self.next_run_name("edge"),
            connectivity_key=graph_key(adata),
        )
        return Job("edge perturbation", steps.edge_steps(job), lambda run: self._apply_run(adata, model, run))

    @staticmethod
    def _borrow_weight(model: Any, adata: Any, focal: np.ndarray, donors: np.ndarray, corrected: Any) -> float:
        """The share of the other types' change an edge run borrows, once the run can borrow."""
        from cellina.counterfactual import BORROW_WEIGHT, reference_cells
        from cellina.counterfactual._borrow import MIN_REFERENCE_CELLS

        if corrected is not True and corrected != 1.0:
            raise SessionError(
                "borrowing the other types' answer was confirmed with the full reliability correction: "
                "set niche noise to 'divide by its reliability'"
            )
        try:
            reference_cells(model, adata, focal, donors)
        except ValueError:
            raise SessionError(
                f"nothing to borrow from: no other cell type has {MIN_REFERENCE_CELLS} or more cells outside the "
                "focal cells and the "
                "donors (in the focal cells' domains); narrow the focal selection to fewer types"
            ) from None
        return BORROW_WEIGHT

    def node_job(self, name: str | None = None, library_size: Any = "latent") -> Job:
        """Shift the gene-shift table's genes in the focal cells' neighbours and decode the focal cells."""
        model, adata = self.require_model(), self.require_adata()
        focal = self.focal_indices()
        shifts = self.gene_shifts
        if len(shifts) == 0:
            raise SessionError("the gene-shift table is empty: add genes or fill it from a contrast")
        try:
            shifts.check_genes(adata.var_names)
        except ValueError as err:
            raise SessionError(str(err)) from err
        sender_key, region = self.sender_inputs(shifts)
        job = NodeJob(
            model=model,
            adata=adata,
            focal=focal,
            shifts=shifts,
            sender_key=sender_key,
            region=region,
            params={"library_size": library_size, "add_shift": True, "preset": model.preset},
            name=name or self.next_run_name("node"),
            layer=LAYERS.LOGNORM if LAYERS.LOGNORM in adata.layers else None,
        )
        return Job("node perturbation", steps.node_steps(job), lambda run: self._apply_run(adata, model, run))

    def _apply_run(self, adata: ad.AnnData, model: Any, run: RunResult) -> str:
        self._same_inputs(adata, model, run.name)
        if run.spatial_x is not None:
            adata.obsm[OBSM.PLUGIN_PERTURBED_NICHE] = run.spatial_x
            self.events.data.emit((f"obsm/{OBSM.PLUGIN_PERTURBED_NICHE}",))
        self.add_run(run)
        return f"{run.name} on {run.indices.size} focal cells"

    # ------------------------------------------------------------------ export
    def export_inputs(self) -> dict[str, Any]:
        """What an export needs, gathered on the main thread so a worker never reads live session state."""
        from cellina.export import CurrentRun, run_record

        adata = self.require_adata()
        runs = {
            run.name: run_record(
                run.kind,
                {
                    k: ("" if v is None else v)
                    for k, v in {**run.params, **run.borrowed_record(), **run.range_record()}.items()
                },
                focal=run.indices,
                seed=int(run.params.get("seed", 0)),
                donors=run.donors,
                gene_shifts=None if run.gene_shifts is None else run.gene_shifts.table,
                created=run.created,
                novelty=run.novelty,
                support=run.support,
            )
            for run in self.runs.values()
        }
        current = self.runs.get(self.current_run) if self.current_run else None
        return {
            "adata": adata,
            "runs": runs,
            "current": None
            if current is None
            else CurrentRun(
                current.name, current.indices, current.expression, current.factual, current.std, current.novelty
            ),
            "model": self.model,
            "model_source": self.model_source or "",
            "selections": {f"cellina_{name}": sel.mask.copy() for name, sel in self.selections.items()},
            "keys": {**params_dict(self.keys), **source_coordinates(adata, self.keys)},
        }

    def build_export(self) -> ad.AnnData:
        """The perturbed AnnData: the current run's layers, selections, latents and provenance."""
        from cellina.export import perturbed_anndata

        return perturbed_anndata(**self.export_inputs())

    def export_job(self, path: str) -> Job:
        """Build the perturbed AnnData and write it to ``path`` atomically."""

        def apply(exported: Exported) -> str:
            self.last_export = exported.path
            self.events.exported.emit(exported.path)
            return f"wrote {exported.adata.n_obs} cells x {exported.adata.n_vars} genes to {exported.path}"

        return Job("export", steps.export_steps(self.export_inputs(), str(path)), apply)

    # ------------------------------------------------------------------ scripting
    def preprocess(self, **params: Any) -> ad.AnnData:
        """Run preprocessing synchronously (see :class:`PreprocessParams` for the arguments)."""
        return self.run(self.preprocess_job(PreprocessParams(**params))).adata

    def scan_reach(self, **params: Any) -> Any:
        """Scan graph bandwidths synchronously; returns the :class:`~cellina.spatial.NicheReachCurve`."""
        return self.run(self.reach_job(params=PreprocessParams(**params)))

    def train(self, **params: Any) -> Any:
        """Train a model synchronously (see :class:`TrainParams`), then compute latents and clusters."""
        self.run(self.train_job(TrainParams(**params)))
        return self.model

    def load_model(self, path: str) -> Any:
        """Load a model folder (its genes must match the data's), then compute latents."""
        return self.run(self.load_job(path)).model

    def save_model(self, path: str, overwrite: bool = False) -> None:
        """Save the model folder (scvi-tools layout)."""
        self.require_model().save(str(path), overwrite=overwrite, save_anndata=False)
        self.model_source = str(path)

    def compute_latents(self, method: str = "kmeans", n_clusters: int = 8) -> Latents:
        """``z`` and ``s`` of every cell and their clusters."""
        return self.run(self.latents_job(method, n_clusters))

    def run_edge(self, **params: Any) -> RunResult:
        """Edge perturbation of the focal selection (see :meth:`edge_job`)."""
        return self.run(self.edge_job(**params))

    def run_node(self, **params: Any) -> RunResult:
        """Node perturbation of the focal selection with the gene-shift table (see :meth:`node_job`)."""
        return self.run(self.node_job(**params))

    def export(self, path: str) -> ad.AnnData:
        """Write the perturbed AnnData (atomic) and return what was written."""
        return self.run(self.export_job(path)).adata
