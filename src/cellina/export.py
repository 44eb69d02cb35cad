"""The perturbed AnnData that every face exports: results, selections, latents, provenance.

The command line and the napari plugin both write through :func:`perturbed_anndata`, so
a perturbed .h5ad has one layout whichever face wrote it:

* ``layers["cellina_counterfactual"]``, ``layers["cellina_factual"]`` and, with several
  donor draws, ``layers["cellina_counterfactual_std"]``: the focal cells' expected counts
  under the current run and their standard deviation across its draws, per cell and gene (of
  the donors, or of the donors and the model's posterior: the run's ``uncertainty`` parameter)
  (sparse; other cells are empty rows);
* ``obs["cellina_counterfactual_cells"]`` marks the current run's focal cells and, when the run
  measured how far its counterfactual niches lie from training, ``obs["cellina_niche_novelty"]``
  (percentile among the training niches, NaN off the focal cells) and
  ``obs["cellina_outside_training"]`` flag each focal cell; named
  selections (the plugin's lassos) become boolean ``obs`` columns, latents go to ``obsm``;
* ``uns["cellina"]["provenance"]``: ``current_run``, every run's record (perturbation,
  parameters, seed, focal and donor indices, gene shifts, time), the model's identity
  (class, preset, parameters, SHA-256 of its weights, where it came from), package versions,
  the export time and the annotation keys used; ``n_outside_training``: how many of the
  current run's focal cells got a niche outside training (the warning the plugin shows; -1 when
  not measured), each run's record its ``novelty`` summary and, when the model knows cell types,
  its ``support``: the training cells and counts of the focal cells' types.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.keys import LAYERS, OBS, UNS

#: layers and the obs column an export writes (the current run's focal cells)
COUNTERFACTUAL_LAYER = LAYERS.COUNTERFACTUAL
FACTUAL_LAYER = LAYERS.FACTUAL
STD_LAYER = LAYERS.COUNTERFACTUAL_STD
FOCAL_COLUMN = OBS.COUNTERFACTUAL_CELLS

_VERSIONED_PACKAGES = ("napari-cellina", "scvi-tools", "torch", "anndata", "scanpy", "numpy", "scipy", "napari")


def utc_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a result (``"not installed"`` when absent)."""
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _plain(value: Any) -> bool:
    """Whether an init parameter is recorded: a scalar, None, or a list of them (e.g. the graph variant's
    ``num_neighbors``); mappings and objects are left out."""
    scalar = (int, float, str, bool, type(None))
    return isinstance(value, scalar) or (isinstance(value, (list, tuple)) and all(isinstance(v, scalar) for v in value))


def model_identity(model: Any, source: str = "") -> dict[str, Any]:
    """Class, variant, preset (``""``: none), plain init parameters (as text), a SHA-256 of the weights and where
    the model came from."""
    if model is None:
        return {}
    digest = hashlib.sha256()
    for key, tensor in sorted(model.module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    init = getattr(model, "init_params_", None) or {}
    scalars = {k: v for k, v in init.get("non_kwargs", init).items() if _plain(v)}
    return {
        "class": type(model).__name__,
        # the variant name every face uses: "gcn" for models that read the spatial graph
        "variant": "gcn" if getattr(model, "niche_input", "features") == "graph" else "cellina",
        "preset": str(getattr(model, "preset", None) or ""),
        "weights_sha256": digest.hexdigest(),
        "source": source,
        "init_params": {k: str(v) for k, v in scalars.items()},
    }


def to_h5ad_value(value: Any) -> Any:
    """Convert ``value`` into something AnnData can store in ``uns`` (no None, no tuples, no objects)."""
    if isinstance(value, Mapping):
        return {str(k): to_h5ad_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, pd.Series):
        return {"index": value.index.astype(str).to_numpy(), "values": value.to_numpy()}
    if isinstance(value, pd.DataFrame):
        return {str(c): to_h5ad_value(value[c].to_numpy()) for c in value.columns}
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return np.array([",".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v) for v in value])
        return value
    if isinstance(value, (list, tuple)):
        if len(value) and all(isinstance(v, (Mapping, np.ndarray, list, tuple)) for v in value):
            return {str(i): to_h5ad_value(v) for i, v in enumerate(value)}
        return to_h5ad_value(np.asarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def rows_as_sparse(n_obs: int, rows: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """An ``n_obs x genes`` CSR matrix holding ``values`` on ``rows`` and nothing elsewhere."""
    placed = sp.csr_matrix(np.asarray(values, dtype=np.float32))
    selector = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, np.arange(len(rows)))), shape=(n_obs, len(rows))
    )
    return sp.csr_matrix(selector @ placed)


def run_record(
    kind: str,
    parameters: Mapping[str, Any],
    *,
    focal: np.ndarray,
    seed: int | None = None,
    donors: np.ndarray | None = None,
    gene_shifts: Any = None,
    created: str | None = None,
    novelty: Any = None,
    support: Any = None,
) -> dict[str, Any]:
    """Provenance of one run: perturbation type, parameters, seed, cells, donors, shifts, time and,
    given a :class:`~cellina.counterfactual.NicheNovelty`, how many focal cells lie outside training,
    given a :class:`~cellina.counterfactual.TypeSupport`, the training cells and counts of their types."""
    record = {
        "perturbation": kind,
        "parameters": dict(parameters),
        "seed": seed,
        "focal_indices": np.asarray(focal, dtype=np.int64),
        "donor_indices": None if donors is None else np.asarray(donors, dtype=np.int64),
        "gene_shifts": gene_shifts,
        "created": created or utc_now(),
        "novelty": None if novelty is None else {**novelty.record(), "message": novelty.message()},
        "support": None if support is None else {**support.record(), "message": support.message()},
    }
    return to_h5ad_value(record)


@dataclass(frozen=True)
class CurrentRun:
    """The arrays of the run whose expression goes into the layers (``novelty``: a
    :class:`~cellina.counterfactual.NicheNovelty` of its focal cells, or None)."""

    name: str
    focal: np.ndarray
    counterfactual: np.ndarray
    factual: np.ndarray | None = None
    std: np.ndarray | None = None
    novelty: Any = None


def _check_current(adata: ad.AnnData, run: CurrentRun) -> np.ndarray:
    focal = np.asarray(run.focal)
    if focal.dtype == bool:
        focal = np.flatnonzero(focal)
    if focal.ndim != 1 or focal.size == 0:
        raise ValueError(f"run {run.name!r}: focal must be a non-empty 1-D array of cell indices")
    if focal.min() < 0 or focal.max() >= adata.n_obs:
        raise IndexError(
            f"run {run.name!r}: focal indices must lie in [0, {adata.n_obs}), got {focal.min()}..{focal.max()}"
        )
    for label, values in (("counterfactual", run.counterfactual), ("factual", run.factual), ("std", run.std)):
        if values is not None and np.shape(values) != (focal.size, adata.n_vars):
            raise ValueError(
                f"run {run.name!r}: {label} has shape {np.shape(values)}, expected (n_focal, n_genes) = "
                f"{(focal.size, adata.n_vars)}"
            )
    if run.novelty is not None and np.shape(run.novelty.percentile) != (focal.size,):
        raise ValueError(
            f"run {run.name!r}: novelty covers {np.shape(run.novelty.percentile)} cells, expected ({focal.size},)"
        )
    return focal


#: prefix of the columns and entries scvi-tools adds when it registers an AnnData
_REGISTRY_PREFIX = "_scvi"
#: obs columns earlier versions of the plugin's reader added only to colour the cells
_INTERNAL_COLUMNS = ("cellina_all",)


def _drop_bookkeeping(adata: ad.AnnData) -> None:
    """Remove scvi-tools' registration columns and entries and our own colouring column:
    an export carries the user's data and our results only."""
    internal = [c for c in adata.obs.columns if str(c).startswith(_REGISTRY_PREFIX) or c in _INTERNAL_COLUMNS]
    if internal:
        adata.obs = adata.obs.drop(columns=internal)
    for key in [k for k in adata.uns if str(k).startswith(_REGISTRY_PREFIX)]:
        del adata.uns[key]


def _write_novelty(out: ad.AnnData, focal: np.ndarray, novelty: Any) -> None:
    """Each focal cell's niche novelty percentile and outside-training flag (NaN / False elsewhere)."""
    percentile = np.full(out.n_obs, np.nan, dtype=np.float32)
    percentile[focal] = novelty.percentile
    outside = np.zeros(out.n_obs, dtype=bool)
    outside[focal] = novelty.outside_training
    out.obs[OBS.NICHE_NOVELTY] = percentile
    out.obs[OBS.OUTSIDE_TRAINING] = outside


def perturbed_anndata(
    adata: ad.AnnData,
    *,
    runs: Mapping[str, Mapping[str, Any]],
    current: CurrentRun | None = None,
    model: Any = None,
    model_source: str = "",
    selections: Mapping[str, np.ndarray] | None = None,
    latents: Mapping[str, np.ndarray] | None = None,
    keys: Mapping[str, Any] | None = None,
) -> ad.AnnData:
    """Return a copy of ``adata`` carrying results and provenance in the layout described above.

    ``runs`` maps run names to :func:`run_record` outputs; ``current`` holds the arrays of
    the run shown in the layers (it must be one of ``runs``). Everything is validated
    before anything is built, and the caller's AnnData is never modified. scvi-tools'
    registration columns (``obs["_scvi_*"]``) and entries (``uns["_scvi_*"]``), and the colouring
    column older readers added (``obs["cellina_all"]``), are left out.
    """
    focal = None
    if current is not None:
        if current.name not in runs:
            raise ValueError(f"current run {current.name!r} has no record in runs ({sorted(runs)})")
        focal = _check_current(adata, current)
    for name, mask in (selections or {}).items():
        if np.shape(mask) != (adata.n_obs,):
            raise ValueError(f"selection {name!r} must be a boolean mask of length n_obs={adata.n_obs}")
    for name, values in (latents or {}).items():
        if np.shape(values)[0] != adata.n_obs:
            raise ValueError(f"latent {name!r} must have one row per cell ({adata.n_obs})")

    out = adata.copy()
    _drop_bookkeeping(out)
    if current is not None:
        layers = {
            COUNTERFACTUAL_LAYER: current.counterfactual,
            FACTUAL_LAYER: current.factual,
            STD_LAYER: current.std,
        }
        for name, values in layers.items():
            if values is not None:
                out.layers[name] = rows_as_sparse(adata.n_obs, focal, values)
        is_focal = np.zeros(adata.n_obs, dtype=bool)
        is_focal[focal] = True
        out.obs[FOCAL_COLUMN] = is_focal
        if current.novelty is not None:
            _write_novelty(out, focal, current.novelty)
    for name, mask in (selections or {}).items():
        out.obs[name] = np.asarray(mask, dtype=bool)
    for name, values in (latents or {}).items():
        out.obsm[name] = np.asarray(values)
    cellina_uns = dict(out.uns.get(UNS.ROOT, {}))
    cellina_uns[UNS.PROVENANCE] = to_h5ad_value(
        {
            "current_run": current.name if current is not None else "",
            "n_outside_training": -1 if current is None or current.novelty is None else current.novelty.n_outside,
            "runs": {name: to_h5ad_value(record) for name, record in runs.items()},
            "model": model_identity(model, model_source),
            "versions": package_versions(),
            "time": utc_now(),
            "keys": {k: ("" if v is None else v) for k, v in (keys or {}).items()},
        }
    )
    out.uns[UNS.ROOT] = cellina_uns
    return out
