"""The training step: an AnnData of its own with held-out cells masked, then the library's train_model.

Like every step it takes explicit inputs, yields progress (one report per epoch, with the
losses) and returns a typed result (:class:`~cellina.plugin._state.Trained`); the session
swaps the training graph and the model in on the main thread.
"""

from __future__ import annotations

import threading
from typing import Any

import anndata as ad
import numpy as np

from cellina.keys import LAYERS, OBSM, OBSP, UNS
from cellina.plugin._state import Progress, SessionError, Steps, TissueKeys, Trained, TrainingCancelled, TrainParams
from cellina.plugin._steps import Report, in_thread, light_copy, require_preprocessed
from cellina.plugin._tissue import counts_layer_of


def holdout_indices(adata: ad.AnnData, keys: TissueKeys, params: TrainParams) -> np.ndarray:
    """Positions of the held-out cells (one cell type in one domain), or none."""
    if not params.holdout_cell_type and not params.holdout_domain:
        return np.zeros(0, dtype=np.int64)
    if not (params.holdout_cell_type and params.holdout_domain):
        raise SessionError("a held-out population needs both a cell type and a domain")
    types = adata.obs[keys.cell_type_key].astype(str).to_numpy()
    doms = adata.obs[keys.domain_key].astype(str).to_numpy()
    idx = np.flatnonzero((types == params.holdout_cell_type) & (doms == params.holdout_domain))
    if idx.size == 0:
        raise SessionError(
            f"no cells of type {params.holdout_cell_type!r} in domain {params.holdout_domain!r} to hold out"
        )
    return idx


def current_holdout(adata: ad.AnnData) -> np.ndarray:
    """The cells the AnnData's graph masks (``test_indices`` of its spatial graph)."""
    params = adata.uns.get("spatial_neighbors", {}).get("params", {})
    return np.sort(np.asarray(params.get("test_indices", []), dtype=np.int64).ravel())


def training_data(adata: ad.AnnData, keys: TissueKeys, test_idx: np.ndarray) -> tuple[ad.AnnData, bool]:
    """An AnnData of its own for training, whose graph and niche features leave out ``test_idx``.

    ``adata`` is never written to: when its graph already masks exactly ``test_idx``,
    training gets a light copy sharing its matrices (scvi-tools' setup writes into that
    one); otherwise :func:`cellina.preprocessing.prepare_tissue` rebuilds the graph (keeping
    the unmasked one as ``obsp["spatial_connectivities_orig"]``) and the niche features from
    the counts with the tissue's graph settings. Returns the AnnData and whether its graph
    differs from ``adata``'s.
    """
    from cellina.preprocessing import prepare_tissue

    counts_name = counts_layer_of(adata, keys)
    counts = adata.layers[counts_name] if counts_name else adata.X
    test_idx = np.sort(np.asarray(test_idx, dtype=np.int64))
    if np.array_equal(current_holdout(adata), test_idx):
        return light_copy(adata, X=counts), False
    graph = adata.uns.get("spatial_neighbors", {}).get("params", {})
    pre = adata.uns.get(UNS.ROOT, {}).get("preprocess", {})
    record = adata.uns.get(UNS.ROOT, {}).get(UNS.SPATIAL_FEATURES, {}).get(OBSM.NICHE_FEATURES, {})
    spatial_key = str(graph.get("spatial_key") or OBSM.SPATIAL)
    base = ad.AnnData(
        X=counts,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        obsm={spatial_key: adata.obsm[spatial_key]},
        layers={LAYERS.COUNTS: counts},
        uns={k: v for k, v in adata.uns.items() if k == UNS.ROOT},
    )
    try:
        out = prepare_tissue(
            base,
            bandwidth=float(graph.get("bandwidth") or pre.get("bandwidth_um", 20.0) / keys.pixel_size),
            counts_layer=LAYERS.COUNTS,
            max_neighbours=int(graph.get("n_neighbors", pre.get("max_neighbours", 50))),
            kernel=str(graph.get("kernel", "gaussian")),
            cutoff=float(graph.get("cutoff", pre.get("cutoff", 0.1))),
            spatial_key=spatial_key,
            library_key=graph.get("library_key") or None,
            test_indices=test_idx if test_idx.size else None,
            target_sum=float(record.get("target_sum") or pre.get("target_sum", 1e4)),
            # the niche features are rebuilt as they were made: with the neighbours' types, or of them alone
            composition_key=record.get("composition_key"),
            composition_only=bool(record.get("composition_key")) and len(record.get("genes", ())) == 0,
        )
    except ValueError as err:
        raise SessionError(f"could not build the training graph: {err}") from err
    # the counts and log-normalised values are the tissue's own: share them instead of keeping copies
    for name in out.layers:
        if name in adata.layers:
            out.layers[name] = adata.layers[name]
    out.X = out.layers[LAYERS.COUNTS]
    return out, True


def _report_and_cancel(report: Report, cancel: threading.Event, max_epochs: int):
    """A Lightning callback: one progress report per epoch, and Cancel at the next minibatch."""
    from lightning.pytorch.callbacks import Callback

    class ReportAndCancel(Callback):
        completed = 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):  # noqa: ARG002
            if cancel.is_set():
                if self.completed == 0:
                    # nothing usable exists yet: abort instead of finishing a partial epoch
                    raise TrainingCancelled("training cancelled before the first epoch finished; no model was kept")
                # a cancel overrides the minimum epochs that hold early stopping back
                trainer.fit_loop.min_epochs = 0
                trainer.should_stop = True

        def on_train_epoch_end(self, trainer, pl_module):  # noqa: ARG002
            self.completed += 1
            metrics = {
                k: float(v)
                for k, v in trainer.callback_metrics.items()
                if "loss" in k and getattr(v, "numel", lambda: 1)() == 1
            }
            report(Progress(trainer.current_epoch + 1, max_epochs, "training", metrics))

    return ReportAndCancel()


def _check_training_inputs(adata: ad.AnnData, keys: TissueKeys, params: TrainParams) -> None:
    # the graph variant reads the spatial graph only; Cellina reads the niche features
    require_preprocessed(adata, features=not params.graph)
    for what, column in (("cell-type", keys.cell_type_key), ("domain", keys.domain_key)):
        if column is None or column not in adata.obs:
            raise SessionError(f"training needs the {what} column; set it in the tissue dock")
    if params.max_epochs < 1 or params.batch_size < 2:
        raise SessionError("max epochs must be >= 1 and batch size >= 2")


def train_steps(
    adata: ad.AnnData,
    keys: TissueKeys,
    params: TrainParams,
    cancel: threading.Event | None = None,
) -> Steps:
    """Train a model (``params.variant``) from the chosen preset through :func:`cellina.model.train_model`.

    Training runs in an inner thread with one torch thread so the viewer keeps a core, and
    yields one report per epoch; ``cancel`` stops it at the next minibatch. It works on its
    own AnnData (:func:`training_data`), so a cancelled or failed run leaves ``adata`` and
    any earlier model untouched. Cancelling before the first epoch ends raises
    :class:`TrainingCancelled` (no usable model).
    """
    _check_training_inputs(adata, keys, params)
    cancel = cancel or threading.Event()
    yield Progress(0, params.max_epochs, "preparing data")
    test_idx = holdout_indices(adata, keys, params)
    data, rebuilt = training_data(adata, keys, test_idx)

    def work(report: Report) -> tuple[Any, int]:
        import torch

        from cellina.model import train_model

        callback = _report_and_cancel(report, cancel, params.max_epochs)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            model = train_model(
                data,
                labels_key=keys.cell_type_key
                if params.classifier_lambda > 0 or params.type_aware_discriminator
                else None,
                domains_key=keys.domain_key if params.discriminator_lambda > 0 else None,
                batch_key=keys.batch_key,
                layer=counts_layer_of(data, keys),
                heldout=test_idx,
                validation_size=params.validation_size,
                seed=params.seed,
                preset=params.preset,
                model=params.variant,
                model_kwargs=params.model_kwargs(),
                plan_kwargs=params.plan_kwargs(),
                max_epochs=params.max_epochs,
                batch_size=params.batch_size,
                accelerator="cpu",
                devices=1,
                early_stopping=params.early_stopping and params.validation_size > 0,
                early_stopping_patience=params.early_stopping_patience,
                early_stopping_monitor="vae_loss_validation",
                callbacks=[callback],
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        finally:
            torch.set_num_threads(previous)
        return model, callback.completed

    model, epochs = yield from in_thread(work, cancel, name="cellina-train")
    if cancel.is_set() and epochs == 0:
        raise TrainingCancelled("training cancelled before the first epoch finished; no model was kept")
    history = {k: [float(x) for x in np.ravel(v.to_numpy())] for k, v in (model.history or {}).items()}
    return Trained(
        model=model,
        data=data,
        params=params,
        history=history,
        epochs=epochs,
        cancelled=cancel.is_set(),
        holdout=test_idx,
        rebuilt=rebuilt,
    )


def swap_training_graph(adata: ad.AnnData, data: ad.AnnData) -> dict[str, dict[str, Any]]:
    """The entries of ``adata`` that take the training AnnData's graph and niche features.

    Returned as ``{"obsp": {...}, "obsm": {...}, "uns": {...}}`` (a value None removes the
    key) for the session to write on the main thread; top-level ``uns`` values are replaced,
    never edited in place.
    """
    obsp = {key: data.obsp[key] for key in (OBSP.CONNECTIVITIES, OBSP.DISTANCES)}
    obsp[OBSP.UNMASKED] = data.obsp[OBSP.UNMASKED] if OBSP.UNMASKED in data.obsp else None
    root = dict(adata.uns.get(UNS.ROOT, {}))
    record = data.uns.get(UNS.ROOT, {}).get(UNS.SPATIAL_FEATURES, {}).get(OBSM.NICHE_FEATURES)
    obsm = {}
    if OBSM.NICHE_FEATURES in data.obsm and record is not None:
        features = dict(root.get(UNS.SPATIAL_FEATURES, {}))
        features[OBSM.NICHE_FEATURES] = record
        root[UNS.SPATIAL_FEATURES] = features
        obsm[OBSM.NICHE_FEATURES] = data.obsm[OBSM.NICHE_FEATURES]
    return {"obsp": obsp, "obsm": obsm, "uns": {"spatial_neighbors": data.uns["spatial_neighbors"], UNS.ROOT: root}}
