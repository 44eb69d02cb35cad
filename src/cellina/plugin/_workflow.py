"""Qt-free steps of the plugin: preprocess, train, latents, edge and node runs, export.

Each long step is a generator that yields :class:`Progress` and *returns* its result
(the stardist-napari pattern): the docks wrap it in a napari thread worker and apply
the returned value on the main thread; :func:`run_sync` exhausts it in the caller's
thread (notebooks, tests). Steps never touch napari layers; the ``apply_*`` functions
write results into the session and run on the main thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.export import utc_now
from cellina.preprocessing import LOGNORM_LAYER
from cellina.plugin._session import (
    FOCAL,
    CellinaSession,
    PreprocessParams,
    RunResult,
    SessionError,
    TissueKeys,
    TrainParams,
    coordinates,
    graph_key,
    params_dict,
    validate_keys,
)

NICHE_KEY = "spatial_x"
NODE_OBSM_KEY = "cellina_spatial_x_cf"


@dataclass
class Progress:
    """One progress report: ``step`` of ``total`` and a message (plus losses while training)."""

    step: int
    total: int
    message: str
    losses: dict[str, float] | None = None


class TrainingCancelled(SessionError):
    """Training was cancelled before a usable model existed."""


Steps = Generator[Progress, None, Any]


def run_sync(steps: Steps, on_progress: Callable[[Progress], None] | None = None) -> Any:
    """Exhaust a step generator in this thread and return its result."""
    while True:
        try:
            report = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)


# ---------------------------------------------------------------------- preprocess
def _counts_matrix(adata: ad.AnnData, keys: TissueKeys) -> sp.csr_matrix:
    where = f"layers[{keys.counts_layer!r}]" if keys.counts_layer else "X"
    counts = adata.layers[keys.counts_layer] if keys.counts_layer else adata.X
    counts = sp.csr_matrix(counts, dtype=np.float32)
    values = counts.data
    if values.size and (values.min() < 0 or not np.all(values == np.round(values))):
        raise SessionError(
            f"{where} does not hold raw counts (negative or non-integer values); pick the counts layer"
        )
    return counts


def _streamed(work: Callable[[Callable[[float, str], None]], Any], total: int) -> Steps:
    """Run ``work(progress)`` in an inner thread and yield its progress reports as they come.

    Library functions report progress through a callback; a generator cannot yield from
    inside one, so the work runs beside it and the reports travel through a queue.
    """
    reports: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work(lambda fraction, message: reports.put(
                Progress(int(round(fraction * total)), total, message)))
        except BaseException as err:  # handed to the generator, which re-raises it
            outcome["error"] = err
        finally:
            reports.put(None)

    thread = threading.Thread(target=run, name="cellina-step", daemon=True)
    thread.start()
    try:
        while (report := reports.get()) is not None:
            yield report
    finally:
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def preprocess_steps(adata: ad.AnnData, keys: TissueKeys, params: PreprocessParams) -> Steps:
    """QC filters, highly variable genes, log-normalised layer, spatial graph and niche features.

    Works on a copy (through :func:`cellina.preprocessing.prepare_tissue`, shared with the
    command line); returns the preprocessed AnnData with raw counts in ``X`` and
    ``layers["counts"]``, log1p(CP10K) in ``layers["cellina_lognorm"]``, coordinates in
    ``obsm["spatial"]``, the graph in ``obsp["spatial_connectivities"]`` and niche features
    in ``obsm["spatial_x"]``. Cells without a cell type or domain are left out.
    """
    from cellina.preprocessing import prepare_tissue

    total = 100
    yield Progress(0, total, "checking keys and counts")
    validate_keys(adata, keys)
    if not params.bandwidth_um > 0:
        raise SessionError(f"bandwidth must be > 0 micrometres, got {params.bandwidth_um}")
    counts = _counts_matrix(adata, keys)
    xy = coordinates(adata, keys)
    keep = np.ones(adata.n_obs, dtype=bool)
    for column in (keys.cell_type_key, keys.domain_key):
        if column is not None:
            keep &= adata.obs[column].notna().to_numpy()
    subset = (lambda m: m) if keep.all() else (lambda m: m[keep])
    # a light AnnData sharing the caller's matrices: prepare_tissue makes the one copy
    base = ad.AnnData(
        X=subset(counts),
        obs=adata.obs.loc[keep].copy(),
        var=adata.var.copy(),
        obsm={"spatial": xy[keep]},
        uns={k: v for k, v in adata.uns.items() if k != "cellina"},
        layers={name: subset(layer) for name, layer in adata.layers.items() if name != keys.counts_layer},
    )
    base.layers["counts"] = base.X
    library_key = keys.batch_key if keys.batch_key and keys.batch_key in base.obs else None

    def work(progress: Callable[[float, str], None]) -> ad.AnnData:
        return prepare_tissue(
            base,
            bandwidth=params.bandwidth_um / keys.pixel_size,
            counts_layer="counts",
            max_neighbours=params.max_neighbours,
            cutoff=params.cutoff,
            spatial_key="spatial",
            library_key=library_key,
            min_counts_cell=params.min_counts_cell,
            min_counts_gene=params.min_counts_gene,
            n_top_genes=params.n_top_genes,
            target_sum=params.target_sum,
            progress=progress,
        )

    try:
        out = yield from _streamed(work, total)
    except ValueError as err:
        raise SessionError(f"preprocessing failed: {err}") from err
    out.uns.setdefault("cellina", {})["preprocess"] = params_dict(params)
    yield Progress(total, total, f"done: {out.n_obs} cells x {out.n_vars} genes")
    return out


def apply_preprocessed(session: CellinaSession, adata: ad.AnnData, params: PreprocessParams) -> None:
    """Main-thread half of preprocessing: the preprocessed tissue replaces the session's."""
    keys = TissueKeys(**{**params_dict(session.keys), "spatial_key": "spatial", "x_column": None,
                         "y_column": None, "counts_layer": "counts"})
    session.set_adata(adata, keys)
    session.preprocess_params = params


def _require_preprocessed(adata: ad.AnnData) -> None:
    if NICHE_KEY not in adata.obsm or "spatial_connectivities" not in adata.obsp:
        raise SessionError(
            f"the tissue is not preprocessed (obsm[{NICHE_KEY!r}] or the spatial graph is missing): "
            "run preprocessing in the tissue dock first"
        )


# ---------------------------------------------------------------------- training
def _model_setup(adata: ad.AnnData, keys: TissueKeys, params: TrainParams | None = None) -> None:
    from cellina.model import Cellina

    use_labels = params is None or params.classifier_lambda > 0 or params.type_aware_discriminator
    use_domains = params is None or params.discriminator_lambda > 0
    Cellina.setup_anndata(
        adata,
        batch_key=keys.batch_key,
        labels_key=keys.cell_type_key if use_labels else None,
        domains_key=keys.domain_key if use_domains else None,
        spatial_obsm_key=NICHE_KEY,
        layer="counts" if "counts" in adata.layers else keys.counts_layer,
    )


def _holdout_indices(adata: ad.AnnData, keys: TissueKeys, params: TrainParams) -> np.ndarray:
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


def _current_holdout(adata: ad.AnnData) -> np.ndarray:
    params = adata.uns.get("spatial_neighbors", {}).get("params", {})
    return np.sort(np.asarray(params.get("test_indices", []), dtype=np.int64).ravel())


def training_data(adata: ad.AnnData, keys: TissueKeys, test_idx: np.ndarray) -> tuple[ad.AnnData, bool]:
    """An AnnData of its own for training, whose graph and niche features leave out ``test_idx``.

    The session's AnnData is never written to: when its graph already masks exactly
    ``test_idx``, training gets a light AnnData sharing its matrices (scvi-tools' setup
    writes into that one); otherwise :func:`cellina.preprocessing.prepare_tissue` rebuilds
    the graph (keeping the unmasked one as ``obsp["spatial_connectivities_orig"]``) and the
    niche features from the counts with the session's graph settings. Returns the AnnData
    and whether its graph differs from the session's (see :func:`apply_trained`).
    """
    from cellina.preprocessing import prepare_tissue

    counts_name = "counts" if "counts" in adata.layers else keys.counts_layer
    counts = adata.layers[counts_name] if counts_name else adata.X
    test_idx = np.sort(np.asarray(test_idx, dtype=np.int64))
    if np.array_equal(_current_holdout(adata), test_idx):
        light = ad.AnnData(
            X=counts, obs=adata.obs.copy(), var=adata.var.copy(),
            obsm={k: adata.obsm[k] for k in adata.obsm}, obsp={k: adata.obsp[k] for k in adata.obsp},
            layers={k: adata.layers[k] for k in adata.layers},
            uns={k: v for k, v in adata.uns.items() if not str(k).startswith("_scvi")},
        )
        return light, False
    graph = adata.uns.get("spatial_neighbors", {}).get("params", {})
    pre = adata.uns.get("cellina", {}).get("preprocess", {})
    record = adata.uns.get("cellina", {}).get("spatial_features", {}).get(NICHE_KEY, {})
    spatial_key = str(graph.get("spatial_key") or "spatial")
    base = ad.AnnData(
        X=counts, obs=adata.obs.copy(), var=adata.var.copy(),
        obsm={spatial_key: adata.obsm[spatial_key]}, layers={"counts": counts},
        uns={k: v for k, v in adata.uns.items() if k == "cellina"},
    )
    try:
        out = prepare_tissue(
            base,
            bandwidth=float(graph.get("bandwidth") or pre.get("bandwidth_um", 20.0) / keys.pixel_size),
            counts_layer="counts",
            max_neighbours=int(graph.get("n_neighbors", pre.get("max_neighbours", 50))),
            kernel=str(graph.get("kernel", "gaussian")),
            cutoff=float(graph.get("cutoff", pre.get("cutoff", 0.1))),
            spatial_key=spatial_key,
            library_key=graph.get("library_key") or None,
            test_indices=test_idx if test_idx.size else None,
            target_sum=float(record.get("target_sum") or pre.get("target_sum", 1e4)),
        )
    except ValueError as err:
        raise SessionError(f"could not build the training graph: {err}") from err
    # the counts and log-normalised values are the session's own: share them instead of keeping copies
    for name in out.layers:
        if name in adata.layers:
            out.layers[name] = adata.layers[name]
    out.X = out.layers["counts"]
    return out, True


def _make_callback(reports: queue.Queue, cancel: threading.Event, max_epochs: int):
    from lightning.pytorch.callbacks import Callback

    class _ReportAndCancel(Callback):
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
                k: float(v) for k, v in trainer.callback_metrics.items()
                if "loss" in k and getattr(v, "numel", lambda: 1)() == 1
            }
            reports.put(Progress(trainer.current_epoch + 1, max_epochs, "training", metrics))

    return _ReportAndCancel()


def train_steps(
    adata: ad.AnnData,
    keys: TissueKeys,
    params: TrainParams,
    cancel: threading.Event | None = None,
) -> Steps:
    """Register the data, build a Cellina model and train it, yielding one report per epoch.

    Training runs in an inner thread with one torch thread so the viewer keeps a core;
    ``cancel`` stops it at the next minibatch. It works on its own AnnData
    (:func:`training_data`), so a cancelled or failed run leaves ``adata`` and any earlier
    model untouched. Returns ``{"model", "history", "cancelled", "epochs", "holdout",
    "data", "rebuilt"}``; :func:`apply_trained` swaps the training graph into the session.
    Cancelling before the first epoch ends raises :class:`TrainingCancelled` (no usable model).
    """
    import torch

    from cellina.model import Cellina, auto_kl_warmup_epochs, holdout_split

    _require_preprocessed(adata)
    for what, column in (("cell-type", keys.cell_type_key), ("domain", keys.domain_key)):
        if column is None or column not in adata.obs:
            raise SessionError(f"training needs the {what} column; set it in the tissue dock")
    if params.max_epochs < 1 or params.batch_size < 2:
        raise SessionError("max epochs must be >= 1 and batch size >= 2")
    cancel = cancel or threading.Event()
    yield Progress(0, params.max_epochs, "preparing data")
    test_idx = _holdout_indices(adata, keys, params)
    data, rebuilt = training_data(adata, keys, test_idx)
    _model_setup(data, keys, params)
    model = Cellina(
        data,
        n_hidden=params.n_hidden,
        n_latent=params.n_latent,
        n_layers=params.n_layers,
        classifier_lambda=params.classifier_lambda,
        discriminator_lambda=params.discriminator_lambda,
        niche_decoder=params.niche_decoder,
        spatial_decoding=params.spatial_decoding,
        type_aware_discriminator=params.type_aware_discriminator,
    )
    train_idx, val_idx, _ = holdout_split(adata.n_obs, test_idx, params.validation_size, params.seed)
    reports: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    # Early stopping may not fire while the KL weight is still rising (the validation loss
    # then grows by construction); it watches the run only once the warm-up is over.
    min_epochs = min(auto_kl_warmup_epochs(params.max_epochs), params.max_epochs) if params.early_stopping else 0

    def work() -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            torch.manual_seed(params.seed)
            model.train(
                max_epochs=params.max_epochs,
                batch_size=params.batch_size,
                accelerator="cpu",
                devices=1,
                early_stopping=params.early_stopping and val_idx.size > 0,
                early_stopping_patience=params.early_stopping_patience,
                early_stopping_monitor="vae_loss_validation",
                check_val_every_n_epoch=1 if val_idx.size > 0 else None,
                datasplitter_kwargs={"external_indexing": [train_idx, val_idx, test_idx]},
                plan_kwargs={"lr": params.lr, "normalize_losses": params.normalize_losses},
                callbacks=[_make_callback(reports, cancel, params.max_epochs)],
                min_epochs=min_epochs,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        except BaseException as err:  # handed to the generator, which re-raises it
            outcome["error"] = err
        finally:
            torch.set_num_threads(previous)
            reports.put(None)

    thread = threading.Thread(target=work, name="cellina-train", daemon=True)
    thread.start()
    epochs = 0
    try:
        while True:
            report = reports.get()
            if report is None:
                break
            epochs = report.step
            yield report
    finally:
        # a worker that is quit (viewer closed) closes this generator: stop the trainer too,
        # so no training thread outlives its worker
        if thread.is_alive():
            cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if cancel.is_set() and epochs == 0:
        raise TrainingCancelled("training cancelled before the first epoch finished; no model was kept")
    history = {k: [float(x) for x in np.ravel(v.to_numpy())] for k, v in (model.history or {}).items()}
    return {"model": model, "history": history, "cancelled": cancel.is_set(), "epochs": epochs,
            "holdout": test_idx, "data": data, "rebuilt": rebuilt}


def apply_trained(session: CellinaSession, result: dict[str, Any], params: TrainParams) -> None:
    """Main-thread half of training: swap the training graph into the session, attach the model.

    Only a finished training gets here, so the session's graph and niche features change
    together with its model, never under an earlier one.
    """
    from cellina.preprocessing import UNMASKED_CONNECTIVITIES

    adata = session.require_adata()
    data = result["data"]
    if data.n_obs != adata.n_obs or not np.array_equal(data.obs_names, adata.obs_names):
        raise SessionError("the tissue changed while the model was training; train again on the new tissue")
    if result["rebuilt"]:
        for key in ("spatial_connectivities", "spatial_distances"):
            adata.obsp[key] = data.obsp[key]
        if UNMASKED_CONNECTIVITIES in data.obsp:
            adata.obsp[UNMASKED_CONNECTIVITIES] = data.obsp[UNMASKED_CONNECTIVITIES]
        else:
            adata.obsp.pop(UNMASKED_CONNECTIVITIES, None)
        adata.obsm[NICHE_KEY] = data.obsm[NICHE_KEY]
        adata.uns["spatial_neighbors"] = data.uns["spatial_neighbors"]
        features = data.uns["cellina"]["spatial_features"]
        adata.uns.setdefault("cellina", {}).setdefault("spatial_features", {})[NICHE_KEY] = features[NICHE_KEY]
    model = result["model"]
    # register the session's AnnData here, on the main thread, rather than lazily in a worker
    model._validate_anndata(adata)
    session.train_params = params
    source = f"trained {result['epochs']} epochs" + (" (cancelled)" if result["cancelled"] else "")
    session.set_model(model, source=source, history=result["history"])


def load_model(adata: ad.AnnData, keys: TissueKeys, path: str) -> Any:
    """Load a saved model onto the session's data; genes must match (error names the folder)."""
    from pathlib import Path

    from cellina.model import Cellina

    _require_preprocessed(adata)
    if not (Path(path) / "model.pt").exists():
        raise SessionError(f"{str(path)!r} is not a Cellina model folder (no model.pt inside)")
    try:
        return Cellina.load(str(path), adata=adata)
    except ValueError as err:
        raise SessionError(f"model in {str(path)!r} does not match the data: {err}") from err


# ---------------------------------------------------------------------- latents
def cluster_labels(x: np.ndarray, method: str = "kmeans", n_clusters: int = 8, seed: int = 0) -> np.ndarray:
    """Cluster a latent space: k-means (scikit-learn) or Leiden (scanpy, igraph flavour)."""
    if method == "kmeans":
        from sklearn.cluster import MiniBatchKMeans

        k = int(min(n_clusters, len(x)))
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
        return model.fit_predict(np.asarray(x, dtype=np.float32)).astype(str)
    if method == "leiden":
        import scanpy as sc

        tmp = ad.AnnData(obsm={"x": np.asarray(x, dtype=np.float32)},
                         obs=pd.DataFrame(index=np.arange(len(x)).astype(str)))
        sc.pp.neighbors(tmp, use_rep="x", random_state=seed)
        sc.tl.leiden(tmp, random_state=seed, flavor="igraph", n_iterations=2)
        return tmp.obs["leiden"].astype(str).to_numpy()
    raise SessionError(f"unknown clustering method {method!r}; use 'kmeans' or 'leiden'")


def latent_steps(model: Any, adata: ad.AnnData, method: str = "kmeans", n_clusters: int = 8) -> Steps:
    """``z`` and ``s`` of every cell and a clustering of each."""
    yield Progress(0, 4, "intrinsic latent z")
    z = model.get_latent_representation(adata, latent_key="z")
    yield Progress(1, 4, "spatial latent s")
    s = model.get_latent_representation(adata, latent_key="s")
    yield Progress(2, 4, "clustering z")
    z_cluster = cluster_labels(z, method, n_clusters)
    yield Progress(3, 4, "clustering s")
    s_cluster = cluster_labels(s, method, n_clusters)
    return {"z": z, "s": s, "z_cluster": z_cluster, "s_cluster": s_cluster}


# ---------------------------------------------------------------------- edge perturbation
def prepare_edge(
    session: CellinaSession,
    pool: str = "lasso",
    observed_cell_type: str | None = None,
    observed_domain: str | None = None,
    niche_cluster: str | None = None,
    n_neighbours: int = 50,
    n_draws: int = 1,
    seed: int = 0,
    name: str | None = None,
) -> dict[str, Any]:
    """Check the session's state for an edge run (main thread) and gather its inputs."""
    model = session.require_model()
    adata = session.require_adata()
    focal = session.selection_indices(FOCAL) if FOCAL in session.selections else None
    if focal is None or focal.size == 0:
        raise SessionError("no focal cells: draw a focal lasso (or relax its cell-type/domain filter)")
    donors = session.donor_pool(pool, observed_cell_type, observed_domain, niche_cluster)
    if np.setdiff1d(donors, focal).size == 0:
        raise SessionError("the donor pool holds only focal cells; a cell cannot be its own donor")
    if int(n_neighbours) < 1 or int(n_draws) < 1:
        raise SessionError("donors per cell and number of draws must be >= 1")
    params = {"pool": pool, "observed_cell_type": observed_cell_type, "observed_domain": observed_domain,
              "niche_cluster": niche_cluster, "n_neighbours": int(n_neighbours), "n_draws": int(n_draws),
              "seed": int(seed), "n_donor_pool": int(donors.size)}
    return {"model": model, "adata": adata, "focal": focal, "donors": donors, "params": params,
            "name": name or session.next_run_name("edge")}


def edge_steps(model: Any, adata: ad.AnnData, focal: np.ndarray, donors: np.ndarray,
               params: dict[str, Any], name: str) -> Steps:
    """Rewire the focal cells' neighbourhoods to donors and decode (mean and spread over draws)."""
    yield Progress(0, 2, "factual prediction")
    factual = model.get_expression(adata, indices=focal)
    yield Progress(1, 2, f"rewiring {focal.size} cells, {params['n_draws']} draw(s)")
    expression, std, drawn = model.get_counterfactual_expression(
        indices=focal,
        neighbour_indices=donors,
        adata=adata,
        precomputed=False,
        seed=params["seed"],
        n_neighbours=params["n_neighbours"],
        n_draws=params["n_draws"],
        return_std=True,
        return_donors=True,
        connectivity_key=graph_key(adata),
    )
    yield Progress(2, 2, "done")
    return RunResult(name=name, kind="edge", indices=focal, expression=expression, factual=factual,
                     params=params, std=std if params["n_draws"] > 1 else None,
                     donors=np.asarray(drawn), created=utc_now())


# ---------------------------------------------------------------------- node perturbation
def group_senders(
    types: pd.Series | None, region: np.ndarray | None, table: pd.DataFrame
) -> tuple[pd.Categorical, dict[str, dict[str, float]]]:
    """Per-cell group labels and ``{group: {gene: shift}}`` realising the table's restrictions.

    Which rows apply to a cell depends only on its cell type and on whether it lies in
    the lasso ``region``, so the rows are resolved once per (type, in-region) pair and
    cells take their pair's group by one integer lookup: no per-cell string work.
    ``types`` is the cell-type column (needed when a row restricts senders).
    """
    rows = list(table.itertuples(index=False))
    if types is not None:
        series = types if isinstance(types.dtype, pd.CategoricalDtype) else types.astype("category")
        categories = [str(c) for c in series.cat.categories]
        type_code = series.cat.codes.to_numpy().astype(np.int64) + 1  # 0 = no cell type
        n = len(series)
    else:
        if any(len(row.senders) for row in rows):
            raise SessionError("restricting senders needs the cell-type key")
        categories, n = [], None
    if region is not None:
        n = len(region)
    if n is None:
        raise SessionError("sender grouping needs the cell types or the lasso region")
    if types is None:
        type_code = np.zeros(n, dtype=np.int64)
    in_region = np.zeros(n, dtype=np.int64) if region is None else np.asarray(region, dtype=np.int64)
    n_keys = 2 * (len(categories) + 1)
    key = type_code * 2 + in_region
    present = np.flatnonzero(np.bincount(key, minlength=n_keys))
    names = np.array([None, *categories], dtype=object)
    applies = np.ones((present.size, len(rows)), dtype=bool)
    for j, row in enumerate(rows):
        if len(row.senders):
            applies[:, j] &= np.isin(names[present // 2].astype(str), list(row.senders)) & (present // 2 > 0)
        if row.region:
            if region is None:
                raise SessionError(f"the shift of {row.gene!r} is restricted to the lasso region, but no focal lasso is drawn")
            applies[:, j] &= (present % 2).astype(bool)
    patterns, pattern_of_key = np.unique(applies, axis=0, return_inverse=True)
    lookup = np.zeros(n_keys, dtype=np.int64)
    lookup[present] = np.asarray(pattern_of_key).ravel()
    perturbations: dict[str, dict[str, float]] = {}
    for g, pattern in enumerate(patterns):
        if pattern.any():
            shifts: dict[str, float] = {}
            for row, on in zip(rows, pattern):
                if on:
                    shifts[str(row.gene)] = shifts.get(str(row.gene), 0.0) + float(row.value)
            perturbations[f"g{g}"] = shifts
    groups = pd.Categorical.from_codes(lookup[key], categories=[f"g{g}" for g in range(len(patterns))])
    return groups, perturbations


def _sender_inputs(session: CellinaSession, table: pd.DataFrame) -> tuple[pd.Series | None, np.ndarray | None]:
    """The cell-type column and lasso region the table needs (cheap: references and one copy)."""
    adata = session.require_adata()
    key = session.keys.cell_type_key
    types = adata.obs[key] if key is not None and key in adata.obs else None
    region = session.selections[FOCAL].base.copy() if FOCAL in session.selections else None
    if region is None and bool(table["region"].astype(bool).any()):
        gene = table.loc[table["region"].astype(bool), "gene"].iloc[0]
        raise SessionError(f"the shift of {gene!r} is restricted to the lasso region, but no focal lasso is drawn")
    if types is None and any(len(s) for s in table["senders"]):
        raise SessionError("restricting senders needs the cell-type key")
    return types, region


def sender_groups(session: CellinaSession, table: pd.DataFrame) -> tuple[pd.Categorical, dict[str, dict[str, float]]]:
    """:func:`group_senders` for the session's cell types and focal lasso region."""
    return group_senders(*_sender_inputs(session, table), table)


def prepare_node(session: CellinaSession, name: str | None = None, library_size: Any = "latent") -> dict[str, Any]:
    """Check the session's state for a node run (main thread, cheap checks only) and gather its inputs."""
    model = session.require_model()
    adata = session.require_adata()
    focal = session.selection_indices(FOCAL) if FOCAL in session.selections else None
    if focal is None or focal.size == 0:
        raise SessionError("no focal cells: draw a focal lasso (or relax its cell-type/domain filter)")
    table = session.gene_shifts.copy()
    if table.empty:
        raise SessionError("the gene-shift table is empty: add genes or fill it from a contrast")
    unknown = sorted(set(table["gene"]) - set(adata.var_names))
    if unknown:
        raise SessionError(f"unknown gene(s) in the shift table: {unknown}")
    types, region = _sender_inputs(session, table)
    return {"model": model, "adata": adata, "focal": focal, "types": types, "region": region,
            "table": table, "params": {"library_size": library_size, "add_shift": True},
            "name": name or session.next_run_name("node")}


def node_steps(model: Any, adata: ad.AnnData, focal: np.ndarray, types: pd.Series | None,
               region: np.ndarray | None, table: pd.DataFrame, params: dict[str, Any], name: str) -> Steps:
    """Group the senders, shift the neighbours' expression of the table's genes, rebuild phi and decode."""
    from cellina.spatial import make_neighbor_perturbation

    yield Progress(0, 4, "grouping sender cells")
    groups, perturbations = group_senders(types, region, table)
    if not perturbations:
        raise SessionError("no cell matches the shift table's sender restrictions")
    yield Progress(1, 4, "factual prediction")
    factual = model.get_expression(adata, indices=focal, library_size=params["library_size"])
    yield Progress(2, 4, "perturbing neighbours")
    # A light AnnData shares the matrices and carries the sender groups, so the session's
    # AnnData only gains the output obsm key written below.
    work = ad.AnnData(X=adata.layers[LOGNORM_LAYER], obs=pd.DataFrame({"cellina_sender_group": groups},
                      index=adata.obs_names), var=pd.DataFrame(index=adata.var_names),
                      obsp={k: adata.obsp[k] for k in adata.obsp},
                      uns={"cellina": dict(adata.uns.get("cellina", {}))})
    make_neighbor_perturbation(
        work,
        perturbations=perturbations,
        groupby="cellina_sender_group",
        connectivity_key="spatial_connectivities",
        obsm_key_out=NODE_OBSM_KEY,
        base=np.e,
        renormalize=True,
        add_shift=True,
    )
    adata.obsm[NODE_OBSM_KEY] = work.obsm[NODE_OBSM_KEY]
    yield Progress(3, 4, f"decoding {focal.size} cells")
    expression = model.get_perturbed_expression(
        adata, indices=focal, spatial_obsm_key=NODE_OBSM_KEY, library_size=params["library_size"]
    )
    yield Progress(4, 4, "done")
    return RunResult(name=name, kind="node", indices=focal, expression=expression, factual=factual,
                     params=params, gene_shifts=table, created=utc_now())


def contrast_shift_table(adata: ad.AnnData, keys: TissueKeys, control_domain: str, target_domain: str,
                         n_genes: int = 20, holdout: str | None = None) -> pd.DataFrame:
    """Gene-shift table from observed pseudobulk log-fold changes between two domains, per sender type."""
    from cellina.evaluation import global_pseudobulk_lfc, perturbation_table, pseudobulk_lfc

    if keys.cell_type_key is None or keys.domain_key is None:
        raise SessionError("filling from a contrast needs the cell-type and domain keys")
    layer = "counts" if "counts" in adata.layers else keys.counts_layer
    try:
        lfc = pseudobulk_lfc(adata, keys.cell_type_key, keys.domain_key, control_domain, target_domain, layer=layer)
        global_lfc = None
        if holdout:
            global_lfc = global_pseudobulk_lfc(adata, keys.domain_key, control_domain, target_domain,
                                               labels_key=keys.cell_type_key, exclude=holdout, layer=layer)
        per_type = perturbation_table(lfc, n_genes=n_genes, holdout=holdout or None, global_lfc=global_lfc)
    except ValueError as err:
        raise SessionError(str(err)) from err
    rows = []
    for cell_type, shifts in per_type.items():
        for gene, value in shifts.items():
            rows.append({"gene": str(gene), "value": float(value), "senders": (cell_type,), "region": False})
    if not rows:
        raise SessionError(f"no cell type is present in both {control_domain!r} and {target_domain!r}")
    return pd.DataFrame(rows, columns=["gene", "value", "senders", "region"])


# ---------------------------------------------------------------------- export
def export_inputs(session: CellinaSession) -> dict[str, Any]:
    """What an export needs, gathered on the main thread so a worker never reads live session state."""
    from cellina.export import CurrentRun, run_record

    adata = session.require_adata()
    runs = {
        run.name: run_record(
            run.kind,
            {k: ("" if v is None else v) for k, v in run.params.items()},
            focal=run.indices,
            seed=int(run.params.get("seed", 0)),
            donors=run.donors,
            gene_shifts=run.gene_shifts,
            created=run.created,
        )
        for run in session.runs.values()
    }
    current = session.runs.get(session.current_run) if session.current_run else None
    return {
        "adata": adata,
        "runs": runs,
        "current": None if current is None
        else CurrentRun(current.name, current.indices, current.expression, current.factual, current.std),
        "model": session.model,
        "model_source": session.model_source or "",
        "selections": {f"cellina_{name}": selection.mask.copy() for name, selection in session.selections.items()},
        "keys": params_dict(session.keys),
    }


def build_export(session: CellinaSession) -> ad.AnnData:
    """The perturbed AnnData: the current run's layers, selections, latents and provenance."""
    from cellina.export import perturbed_anndata

    return perturbed_anndata(**export_inputs(session))


def _write(out: ad.AnnData, path: str) -> None:
    from cellina._io import write_h5ad_atomic

    try:
        write_h5ad_atomic(out, path)
    except (OSError, ValueError) as err:
        raise SessionError(f"could not write {str(path)!r}: {err}") from err


def export_steps(inputs: dict[str, Any], path: str) -> Steps:
    """Build the perturbed AnnData from :func:`export_inputs` and write it atomically; returns it."""
    from cellina.export import perturbed_anndata

    yield Progress(0, 2, "building the perturbed AnnData")
    out = perturbed_anndata(**inputs)
    yield Progress(1, 2, f"writing {path}")
    _write(out, path)
    yield Progress(2, 2, "done")
    return out


def export(session: CellinaSession, path: str) -> ad.AnnData:
    """Write :func:`build_export` to ``path`` atomically and return it."""
    return run_sync(export_steps(export_inputs(session), path))


# ---------------------------------------------------------------------- results
def top_changed_genes(adata: ad.AnnData, run: RunResult, n: int = 20) -> pd.DataFrame:
    """Genes whose mean predicted expression changes most against the factual prediction.

    Population log2 fold change of the focal cells' mean CP10K-normalised counterfactual
    over their factual prediction (the model's own reference, so the change is the niche's).
    """
    from cellina.evaluation import mean_normalized_expression, safe_log2_fold_change

    lfc = safe_log2_fold_change(mean_normalized_expression(run.expression), mean_normalized_expression(run.factual))
    order = np.argsort(-np.abs(lfc), kind="stable")[: int(n)]
    return pd.DataFrame({"gene": adata.var_names[order].astype(str), "log2fc": lfc[order].astype(float),
                         "factual": run.factual[:, order].mean(axis=0), "counterfactual": run.expression[:, order].mean(axis=0)})


def observed_vs_predicted(session: CellinaSession, run: RunResult, target_cell_type: str,
                          target_domain: str, n_deg: int = 50) -> dict[str, Any]:
    """The tutorial's figure data: observed (target vs focal) and predicted (counterfactual vs focal) log2FC.

    Returns ``true_lfc``, ``pred_lfc``, ``deg`` (top genes by |observed|), ``pearson`` on
    them and ``n_target``.
    """
    from cellina.evaluation import get_lfc, pearson_top_k

    adata = session.require_adata()
    keys = session.keys
    if keys.cell_type_key is None or keys.domain_key is None:
        raise SessionError("the observed-versus-predicted plot needs the cell-type and domain keys")
    types = adata.obs[keys.cell_type_key].astype(str).to_numpy()
    doms = adata.obs[keys.domain_key].astype(str).to_numpy()
    target = np.flatnonzero((types == str(target_cell_type)) & (doms == str(target_domain)))
    if target.size == 0:
        raise SessionError(f"no cells of type {target_cell_type!r} in domain {target_domain!r} to compare with")
    counts = adata.layers["counts"] if "counts" in adata.layers else adata.X
    true_lfc, pred_lfc, deg = get_lfc(counts[run.indices], counts[target], run.expression, n_deg=n_deg)
    pearson = pearson_top_k(true_lfc, pred_lfc, features=deg) if len(deg) > 2 else float("nan")
    return {"true_lfc": true_lfc, "pred_lfc": pred_lfc, "deg": deg, "pearson": pearson, "n_target": int(target.size)}
