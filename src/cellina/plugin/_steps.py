"""Pure steps of the plugin: explicit inputs in, progress out, a typed result returned.

Each step is a generator that yields :class:`~cellina.plugin._state.Progress` and *returns*
its result (the stardist-napari pattern). Steps never touch the session or napari layers
and never write to the AnnData they are given; the session applies their results on the
main thread. :func:`outcome_of` turns any step into one that ends in exactly one
:class:`~cellina.plugin._state.Outcome`, whatever it raised; :func:`run_sync` exhausts a
step in the caller's thread; :func:`in_thread` runs a blocking library call beside the
generator and yields the call's progress reports as they come.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.keys import LAYERS, OBSM, OBSP, UNS
from cellina.plugin._state import (
    EdgeJob,
    Exported,
    Latents,
    Loaded,
    NodeJob,
    Outcome,
    Preprocessed,
    PreprocessParams,
    Progress,
    RunResult,
    SessionError,
    StepCancelled,
    Steps,
    TissueKeys,
    params_dict,
)
from cellina.plugin._tissue import coordinates, counts_layer_of, source_coordinates, validate_keys

Report = Callable[[Progress], None]


# ---------------------------------------------------------------------- running steps
def run_sync(steps: Steps, on_progress: Report | None = None) -> Any:
    """Exhaust a step generator in this thread and return its result."""
    while True:
        try:
            report = next(steps)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(report)


def outcome_of(steps: Steps) -> Generator[Progress, None, Outcome]:
    """``steps`` that return an :class:`Outcome` instead of raising.

    Every exception becomes a failed outcome here, inside the worker's generator. napari's
    thread worker treats a ``RuntimeError`` leaving the generator as an abort and then
    emits neither ``errored`` nor ``finished``, so it must never leave it.
    """
    try:
        value = yield from steps
    except StepCancelled as err:
        return Outcome("cancelled", error=err)
    except Exception as err:  # every failure, RuntimeError and MemoryError included
        return Outcome("failed", error=err)
    return Outcome("done", value)


def in_thread(
    work: Callable[[Report], Any], cancel: threading.Event | None = None, name: str = "cellina-step"
) -> Steps:
    """Run ``work(report)`` in an inner thread and yield what it reports, as it comes.

    Library calls report progress through a callback; a generator cannot yield from inside
    one, so the call runs beside it and the reports travel through a queue. Closing the
    generator (a worker quit, the viewer closed) sets ``cancel`` and waits for the call.
    """
    reports: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work(reports.put)
        except BaseException as err:  # handed to the generator, which re-raises it
            outcome["error"] = err
        finally:
            reports.put(None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while (report := reports.get()) is not None:
            yield report
    finally:
        if thread.is_alive() and cancel is not None:
            cancel.set()
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def light_copy(adata: ad.AnnData, X: Any = None) -> ad.AnnData:
    """An AnnData of its own sharing ``adata``'s matrices, for a library call that registers it.

    scvi-tools' setup writes into the AnnData it is given; this one takes those writes, so
    the caller's AnnData is never written to from a worker.
    """
    return ad.AnnData(
        X=adata.X if X is None else X,
        obs=adata.obs.copy(),
        var=adata.var.copy(),
        obsm={k: adata.obsm[k] for k in adata.obsm},
        obsp={k: adata.obsp[k] for k in adata.obsp},
        layers={k: adata.layers[k] for k in adata.layers},
        uns={k: v for k, v in adata.uns.items() if not str(k).startswith("_scvi")},
    )


def require_preprocessed(adata: ad.AnnData, features: bool = True) -> None:
    """Raise unless ``adata`` has a spatial graph and, with ``features``, niche features.

    The graph variant (CellinaGCN) reads the graph only, so it passes ``features=False``.
    """
    missing = [f"obsp[{OBSP.CONNECTIVITIES!r}]"] if OBSP.CONNECTIVITIES not in adata.obsp else []
    if features and OBSM.NICHE_FEATURES not in adata.obsm:
        missing.append(f"obsm[{OBSM.NICHE_FEATURES!r}]")
    if missing:
        raise SessionError(
            f"the tissue is not preprocessed ({' and '.join(missing)} missing): "
            "run preprocessing in the tissue dock first"
        )


# ---------------------------------------------------------------------- preprocess
def _counts_matrix(adata: ad.AnnData, layer: str | None) -> sp.csr_matrix:
    where = f"layers[{layer!r}]" if layer else "X"
    counts = sp.csr_matrix(adata.layers[layer] if layer else adata.X, dtype=np.float32)
    values = counts.data
    if values.size and (values.min() < 0 or not np.all(values == np.round(values))):
        raise SessionError(f"{where} does not hold raw counts (negative or non-integer values); pick the counts layer")
    return counts


def _annotated_base(adata: ad.AnnData, keys: TissueKeys) -> ad.AnnData:
    """A light AnnData of the cells with a cell type and domain: counts, coordinates in um, annotations."""
    layer = counts_layer_of(adata, keys)
    counts = _counts_matrix(adata, layer)
    xy_um = coordinates(adata, keys) * float(keys.pixel_size)
    keep = np.ones(adata.n_obs, dtype=bool)
    for column in (keys.cell_type_key, keys.domain_key):
        if column is not None:
            keep &= adata.obs[column].notna().to_numpy()
    subset = (lambda m: m) if keep.all() else (lambda m: m[keep])
    # it shares the caller's matrices: prepare_tissue makes the one copy
    base = ad.AnnData(
        X=subset(counts),
        obs=adata.obs.loc[keep].copy(),
        var=adata.var.copy(),
        obsm={OBSM.SPATIAL: xy_um[keep]},
        uns={k: v for k, v in adata.uns.items() if k != UNS.ROOT},
        layers={name: subset(matrix) for name, matrix in adata.layers.items() if name != layer},
    )
    base.layers[LAYERS.COUNTS] = base.X
    return base


def _reach_record(curve: Any, params: PreprocessParams) -> dict[str, Any]:
    record = curve.as_record()
    record["suggestion_taken"] = bool(np.isclose(params.bandwidth_um, curve.suggested_bandwidth))
    return record


def _graph_message(adata: ad.AnnData) -> str:
    from cellina.preprocessing import graph_summary

    summary = graph_summary(adata)
    return (
        f"median {summary['median_neighbours']:g} neighbours per cell at a median {summary['median_distance']:.3g} um"
    )


def reach_steps(adata: ad.AnnData, keys: TissueKeys, cutoff: float) -> Steps:
    """Scan graph bandwidths (:func:`cellina.spatial.niche_reach_curve`) on the cells with a type and domain.

    Coordinates are taken in micrometres (the keys' pixel size), counts are log-normalised inside
    the scan, slides come from the batch key; returns the :class:`~cellina.spatial.NicheReachCurve`.
    """
    from cellina.spatial import niche_reach_curve

    total = 100
    yield Progress(0, total, "scanning graph bandwidths")
    validate_keys(adata, keys)
    if keys.cell_type_key is None:
        raise SessionError("choose the cell-type key first: the reach is judged by what varies within a cell type")
    base = _annotated_base(adata, keys)
    library_key = keys.batch_key if keys.batch_key and keys.batch_key in base.obs else None

    def work(report: Report) -> Any:
        return niche_reach_curve(
            base,
            keys.cell_type_key,
            layer=LAYERS.COUNTS,
            spatial_key=OBSM.SPATIAL,
            library_key=library_key,
            cutoff=cutoff,
            progress=lambda fraction, message: report(Progress(int(round(fraction * total)), total, message)),
        )

    try:
        curve = yield from in_thread(work)
    except ValueError as err:
        raise SessionError(str(err)) from err
    yield Progress(total, total, curve.describe())
    return curve


def preprocess_steps(adata: ad.AnnData, keys: TissueKeys, params: PreprocessParams, reach: Any = None) -> Steps:
    """QC filters, highly variable genes, log-normalised layer, spatial graph and niche features.

    Works on a copy (through :func:`cellina.preprocessing.prepare_tissue`, shared with the
    command line); returns the preprocessed AnnData with raw counts in ``X`` and
    ``layers["counts"]``, log1p(CP10K) in ``layers["cellina_lognorm"]``, coordinates in
    micrometres in ``obsm["spatial"]`` (the file's own coordinates times the pixel size, whose
    names and pixel size ``uns["cellina"]["preprocess"]["coordinates"]`` keeps), the graph in
    ``obsp["spatial_connectivities"]`` and niche features in ``obsm["spatial_x"]``, with the
    keys that read it. Cells without a cell type or domain are left out. A graph in which most
    cells have no neighbour is refused with the reason (coordinates in pixels, usually). A niche-reach
    scan (``reach``) is recorded beside the settings, saying whether its suggestion was taken.
    """
    from cellina.preprocessing import composition_arguments, prepare_tissue

    total = 100
    yield Progress(0, total, "checking keys and counts")
    validate_keys(adata, keys)
    if not params.bandwidth_um > 0:
        raise SessionError(f"bandwidth must be > 0 micrometres, got {params.bandwidth_um}")
    try:
        composition = composition_arguments(params.composition, keys.cell_type_key)
    except ValueError as err:
        raise SessionError(f"niche features: {err}") from err
    base = _annotated_base(adata, keys)
    library_key = keys.batch_key if keys.batch_key and keys.batch_key in base.obs else None

    def work(report: Report) -> ad.AnnData:
        return prepare_tissue(
            base,
            bandwidth=params.bandwidth_um,
            counts_layer=LAYERS.COUNTS,
            max_neighbours=params.max_neighbours,
            cutoff=params.cutoff,
            spatial_key=OBSM.SPATIAL,
            library_key=library_key,
            min_counts_cell=params.min_counts_cell,
            min_counts_gene=params.min_counts_gene,
            n_top_genes=params.n_top_genes,
            target_sum=params.target_sum,
            **composition,
            progress=lambda fraction, message: report(Progress(int(round(fraction * total)), total, message)),
        )

    try:
        out = yield from in_thread(work)
    except ValueError as err:
        raise SessionError(str(err)) from err
    source = source_coordinates(adata, keys)
    out.uns[UNS.ROOT] = {
        **out.uns.get(UNS.ROOT, {}),
        "preprocess": {
            **params_dict(params),
            "coordinates": {k: "" if v is None else v for k, v in source.items()},
            **({"niche_reach": _reach_record(reach, params)} if reach is not None else {}),
        },
    }
    message = f"{out.n_obs} cells x {out.n_vars} genes; {_graph_message(out)}"
    yield Progress(total, total, message)
    new_keys = replace(
        keys, spatial_key=OBSM.SPATIAL, x_column=None, y_column=None, pixel_size=1.0, counts_layer=LAYERS.COUNTS
    )
    return Preprocessed(out, new_keys, params, message)


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

        tmp = ad.AnnData(
            obsm={"x": np.asarray(x, dtype=np.float32)}, obs=pd.DataFrame(index=np.arange(len(x)).astype(str))
        )
        sc.pp.neighbors(tmp, use_rep="x", random_state=seed)
        sc.tl.leiden(tmp, random_state=seed, flavor="igraph", n_iterations=2)
        return tmp.obs["leiden"].astype(str).to_numpy()
    raise SessionError(f"unknown clustering method {method!r}; use 'kmeans' or 'leiden'")


def latent_steps(model: Any, adata: ad.AnnData, method: str = "kmeans", n_clusters: int = 8) -> Steps:
    """``z`` and ``s`` of every cell and a clustering of each (``adata`` must be registered)."""
    yield Progress(0, 4, "intrinsic latent z")
    z = model.get_latent_representation(adata, latent_key="z")
    yield Progress(1, 4, "spatial latent s")
    s = model.get_latent_representation(adata, latent_key="s")
    yield Progress(2, 4, "clustering z")
    z_cluster = cluster_labels(z, method, n_clusters)
    yield Progress(3, 4, "clustering s")
    s_cluster = cluster_labels(s, method, n_clusters)
    return Latents(z=z, s=s, z_cluster=z_cluster, s_cluster=s_cluster)


# ---------------------------------------------------------------------- counterfactuals
def edge_steps(job: EdgeJob) -> Steps:
    """Rewire the focal cells' neighbourhoods to donors and decode (mean and spread over draws)."""
    from cellina.counterfactual import NothingToCheck, type_support
    from cellina.export import utc_now

    params = job.params
    yield Progress(0, 2, "factual prediction")
    factual = job.model.get_expression(job.adata, indices=job.focal)
    yield Progress(1, 2, f"rewiring {job.focal.size} cells, {params['n_draws']} draw(s)")
    expression, std, drawn, novelty = job.model.get_counterfactual_expression(
        indices=job.focal,
        neighbour_indices=job.donors,
        adata=job.adata,
        precomputed=False,
        seed=params["seed"],
        n_neighbours=params["n_neighbours"],
        n_draws=params["n_draws"],
        return_std=True,
        return_donors=True,
        uncertainty=params.get("uncertainty", "donors"),
        connectivity_key=job.connectivity_key,
        return_novelty=True,
        disattenuate=params.get("disattenuate", False),
    )
    n_steps = 2 + bool(params.get("borrow_weight")) + bool(params.get("change_range"))
    borrowed, change_range, range_note = None, None, ""
    if params.get("borrow_weight"):
        yield Progress(2, n_steps, "the other cell types under the same donors")
        borrowed = job.model.borrowed_counterfactual_change(
            job.focal,
            job.donors,
            adata=job.adata,
            weight=params["borrow_weight"],
            disattenuate=params["disattenuate"],
            n_neighbours=params["n_neighbours"],
            n_draws=params["n_draws"],
            seed=params["seed"],
        )
    if params.get("change_range"):
        yield Progress(n_steps - 1, n_steps, "checking the model on the other cell types")
        try:
            change_range = job.model.counterfactual_change_range(
                job.focal, job.donors, adata=job.adata, n_neighbours=params["n_neighbours"],
                n_draws=params["n_draws"], seed=params["seed"],
            )  # fmt: skip
        except NothingToCheck as error:
            # a focal selection that cannot be checked keeps its run without a range, and says why beside it
            range_note = range_refusal(error)
    yield Progress(n_steps, n_steps, "done")
    return RunResult(
        name=job.name,
        kind="edge",
        indices=job.focal,
        expression=expression,
        factual=factual,
        params=params,
        std=std if params["n_draws"] > 1 else None,
        donors=np.asarray(drawn),
        created=utc_now(),
        novelty=novelty,
        support=type_support(job.model, job.adata, job.focal),
        borrowed=borrowed,
        change_range=change_range,
        range_note=range_note,
    )


def range_refusal(error: Any) -> str:
    """Why an edge run has no range (a :class:`cellina.counterfactual.NothingToCheck`), in the dock's words."""
    from cellina.counterfactual._borrow import MIN_REFERENCE_CELLS

    if error.without_types:
        return "No range: the model was trained without cell types, so no other type can check it."
    return (
        f"No range: no other cell type has {MIN_REFERENCE_CELLS} or more cells both beside the focal cells "
        "and among the donors, so the model cannot be checked against one; focus on fewer types or widen "
        "the donors."
    )


def node_steps(job: NodeJob) -> Steps:
    """Shift the senders' expression of the table's genes, rebuild the niches and decode the focal cells.

    Sender grouping, the perturbation and decoding all happen here, in the worker, through
    :func:`cellina.counterfactual.node_counterfactual`, which never writes to the AnnData.
    """
    from cellina.counterfactual import niche_novelty, node_counterfactual, node_niche_codes, type_support
    from cellina.export import utc_now

    library_size = job.params["library_size"]
    yield Progress(0, 2, "factual prediction")
    factual = job.model.get_expression(job.adata, indices=job.focal, library_size=library_size)
    yield Progress(1, 2, f"perturbing neighbours and decoding {job.focal.size} cells")
    result = node_counterfactual(
        job.model,
        job.adata,
        job.shifts,
        job.focal,
        sender_key=job.sender_key,
        region=job.region,
        layer=job.layer,
        add_shift=job.params["add_shift"],
        renormalize=True,
        library_size=library_size,
    )
    codes = node_niche_codes(job.model, job.adata, job.focal, result.spatial_x)
    novelty = niche_novelty(job.model, job.adata, job.focal, codes)
    yield Progress(2, 2, "done")
    return RunResult(
        name=job.name,
        kind="node",
        indices=job.focal,
        expression=result.expression,
        factual=factual,
        params=job.params,
        gene_shifts=job.shifts,
        created=utc_now(),
        spatial_x=result.spatial_x,
        novelty=novelty,
        support=type_support(job.model, job.adata, job.focal),
    )


# ---------------------------------------------------------------------- export and load
def export_steps(inputs: dict[str, Any], path: str) -> Steps:
    """Build the perturbed AnnData from gathered inputs and write it atomically."""
    from cellina._io import write_h5ad_atomic
    from cellina.export import perturbed_anndata

    yield Progress(0, 2, "building the perturbed AnnData")
    out = perturbed_anndata(**inputs)
    yield Progress(1, 2, f"writing {path}")
    try:
        write_h5ad_atomic(out, path)
    except (OSError, ValueError) as err:
        raise SessionError(f"could not write {str(path)!r}: {err}") from err
    yield Progress(2, 2, "done")
    return Exported(out, str(path))


def check_model_folder(path: str) -> None:
    """Raise unless ``path`` holds a saved model."""
    if not (Path(path) / "model.pt").exists():
        raise SessionError(f"{str(path)!r} is not a Cellina model folder (no model.pt inside)")


def load_steps(adata: ad.AnnData, path: str) -> Steps:
    """Read a saved model (either variant) onto a light copy of ``adata``; genes must match (the error names the folder)."""
    from cellina.model import Cellina, load_model, saved_model_class

    yield Progress(0, 1, f"reading {path}")
    check_model_folder(path)
    require_preprocessed(adata, features=saved_model_class(str(path)) is Cellina)
    try:
        model = load_model(str(path), adata=light_copy(adata))
    except ValueError as err:
        raise SessionError(f"model in {str(path)!r} does not match the data: {err}") from err
    yield Progress(1, 1, "done")
    return Loaded(model, str(path))
