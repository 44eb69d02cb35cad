"""Attach counterfactual results and their provenance to an AnnData for export.

Shared by the command line and the napari plugin, so a perturbed .h5ad looks the
same whichever face wrote it.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

_VERSIONED_PACKAGES = ("napari-cellina", "scvi-tools", "torch", "anndata", "scanpy", "numpy", "scipy")


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape a result (``"not installed"`` when absent)."""
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def to_h5ad_value(value: Any) -> Any:
    """Convert ``value`` into something AnnData can store in ``uns`` (no None, no tuples, no objects)."""
    if isinstance(value, Mapping):
        return {str(k): to_h5ad_value(v) for k, v in value.items() if v is not None}
    if isinstance(value, pd.Series):
        return {"index": value.index.astype(str).to_numpy(), "values": value.to_numpy()}
    if isinstance(value, np.ndarray):
        return value.astype(str) if value.dtype == object else value
    if isinstance(value, (list, tuple)):
        if len(value) and all(isinstance(v, (Mapping, np.ndarray, list, tuple)) for v in value):
            return {str(i): to_h5ad_value(v) for i, v in enumerate(value)}
        array = np.asarray(value)
        return array.astype(str) if array.dtype == object else array
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def provenance_record(
    kind: str,
    parameters: Mapping[str, Any],
    *,
    model: Any = None,
    model_path: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Who made a result, how and when: kind, parameters, seed, model identity, versions, UTC time."""
    record: dict[str, Any] = {
        "kind": kind,
        "parameters": dict(parameters),
        "seed": seed,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
    }
    if model is not None:
        identity = {"class": type(model).__name__, "path": model_path}
        init_params = getattr(model, "init_params_", None)
        if isinstance(init_params, Mapping):
            identity["init_params"] = {
                k: v for k, v in init_params.get("non_kwargs", init_params).items() if isinstance(v, (int, float, str, bool))
            }
        history = getattr(model, "history", None)
        if isinstance(history, Mapping) and "vae_loss_validation" in history:
            identity["final_vae_loss_validation"] = float(np.asarray(history["vae_loss_validation"]).ravel()[-1])
        record["model"] = identity
    return to_h5ad_value(record)


def _rows_as_sparse(n_obs: int, rows: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """An n_obs x genes CSR matrix holding ``values`` on ``rows`` and nothing elsewhere."""
    values = np.asarray(values, dtype=np.float32)
    placed = sp.csr_matrix(values)
    selector = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, np.arange(len(rows)))), shape=(n_obs, len(rows))
    )
    return (selector @ placed).tocsr()


def attach_counterfactual(
    adata: ad.AnnData,
    focal: Sequence[int] | np.ndarray,
    counterfactual: np.ndarray,
    *,
    provenance: Mapping[str, Any],
    factual: np.ndarray | None = None,
    std: np.ndarray | None = None,
    key: str = "cellina_cf",
    selections: Mapping[str, np.ndarray] | None = None,
    latents: Mapping[str, np.ndarray] | None = None,
) -> ad.AnnData:
    """Return a copy of ``adata`` carrying one counterfactual run.

    Layers ``key`` (counterfactual), ``f"{key}_factual"`` and ``f"{key}_std"`` hold the focal
    cells' expected counts (sparse: other cells are empty rows); ``obs[f"{key}_focal"]`` marks
    the focal cells; ``selections`` become boolean obs columns; ``latents`` go to ``obsm``;
    ``uns["cellina"]["runs"][key]`` holds the provenance. The caller's AnnData is not touched.
    """
    focal = np.asarray(focal)
    if focal.dtype == bool:
        focal = np.flatnonzero(focal)
    if focal.ndim != 1 or len(focal) == 0:
        raise ValueError("focal must be a non-empty 1-D array of cell indices")
    if focal.min() < 0 or focal.max() >= adata.n_obs:
        raise IndexError(f"focal indices must lie in [0, {adata.n_obs}), got {focal.min()}..{focal.max()}")
    arrays = {key: counterfactual, f"{key}_factual": factual, f"{key}_std": std}
    for name, values in arrays.items():
        if values is not None and np.shape(values) != (len(focal), adata.n_vars):
            raise ValueError(
                f"{name} has shape {np.shape(values)}, expected (n_focal, n_genes) = {(len(focal), adata.n_vars)}"
            )
    for name, mask in (selections or {}).items():
        if np.shape(mask) != (adata.n_obs,):
            raise ValueError(f"selection {name!r} must be a boolean mask of length n_obs={adata.n_obs}")
    for name, values in (latents or {}).items():
        if np.shape(values)[0] != adata.n_obs:
            raise ValueError(f"latent {name!r} must have one row per cell ({adata.n_obs})")

    out = adata.copy()
    for name, values in arrays.items():
        if values is not None:
            out.layers[name] = _rows_as_sparse(adata.n_obs, focal, values)
    is_focal = np.zeros(adata.n_obs, dtype=bool)
    is_focal[focal] = True
    out.obs[f"{key}_focal"] = is_focal
    for name, mask in (selections or {}).items():
        out.obs[name] = np.asarray(mask, dtype=bool)
    for name, values in (latents or {}).items():
        out.obsm[name] = np.asarray(values)
    cellina_uns = dict(out.uns.get("cellina", {}))
    runs = dict(cellina_uns.get("runs", {}))
    runs[key] = to_h5ad_value(provenance)
    cellina_uns["runs"] = runs
    out.uns["cellina"] = cellina_uns
    return out
