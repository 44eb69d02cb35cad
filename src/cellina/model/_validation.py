"""Input checks of the model layer: counts, obs columns, niche features, cell positions.

Every check runs before anything is written to the caller's AnnData.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData

LibrarySize = Literal["latent", "observed"] | float


def check_counts(matrix: Any, where: str, chunk_rows: int = 4096) -> None:
    """Raise if ``matrix`` holds negative or non-integer values (checked in full, in chunks)."""
    if sp.issparse(matrix):
        chunks: Iterator[np.ndarray] = iter([np.asarray(matrix.data)])
    else:
        chunks = (np.asarray(matrix[i : i + chunk_rows]) for i in range(0, matrix.shape[0], chunk_rows))
    for values in chunks:
        if values.size == 0:
            continue
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{where} holds NaN or infinite values; Cellina needs raw counts.")
        if values.min() < 0:
            raise ValueError(
                f"{where} holds negative values (min {values.min():g}); Cellina needs raw non-negative integer counts."
            )
        frac = np.abs(values - np.round(values))
        if frac.max() > 1e-6:
            bad = values.ravel()[np.argmax(frac.ravel())]
            raise ValueError(
                f"{where} holds non-integer values (e.g. {bad:g}); Cellina needs raw counts. "
                "Register the raw counts layer, e.g. setup_anndata(adata, layer='counts')."
            )


def check_obs_column(adata: AnnData, key: str, arg: str) -> pd.Series:
    """The ``obs`` column ``key`` passed as ``arg``, refusing a missing column or missing values."""
    if key not in adata.obs:
        raise ValueError(f"{arg}={key!r} is not a column of adata.obs.")
    col = adata.obs[key]
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(f"adata.obs[{key!r}] ({arg}) has {n_missing} missing values; drop or fill them first.")
    return col


def check_niche_features(adata: AnnData, key: str) -> None:
    """Refuse niche features that are missing, of the wrong shape or not finite (dense or sparse)."""
    if key not in adata.obsm:
        raise ValueError(
            f"spatial_obsm_key={key!r} is not in adata.obsm; build the niche features first with "
            "cellina.spatial.compute_spatial_features."
        )
    phi = adata.obsm[key]
    if isinstance(phi, pd.DataFrame):
        phi = phi.to_numpy()
    shape = getattr(phi, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != adata.n_obs:
        raise ValueError(
            f"adata.obsm[{key!r}] must be a cells x features matrix with {adata.n_obs} rows, got shape {shape}."
        )
    values = phi.data if sp.issparse(phi) else np.asarray(phi)
    if values.dtype.kind not in "biuf":
        raise ValueError(f"adata.obsm[{key!r}] must be numeric, got dtype {values.dtype}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"adata.obsm[{key!r}] holds NaN or infinite values.")


def as_indices(values: Any, n_obs: int, name: str, allow_empty: bool = False) -> np.ndarray:
    """Turn integer positions or a boolean mask into a 1-D int64 array, validating the range."""
    if values is None:
        return np.arange(n_obs)
    arr = np.asarray(values)
    if arr.dtype == bool:
        if arr.shape != (n_obs,):
            raise ValueError(f"{name} is a boolean mask of shape {arr.shape}; expected ({n_obs},).")
        arr = np.flatnonzero(arr)
    arr = arr.ravel()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer positions or a boolean mask, got {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty.")
    if arr.size and (arr.min() < 0 or arr.max() >= n_obs):
        raise ValueError(f"{name} holds positions outside [0, {n_obs}) (min {arr.min()}, max {arr.max()}).")
    return arr


#: where seeded posterior samples draw their noise: one generator (or seed), or a pair whose second
#: draws the noise of ``s`` apart from that of ``z`` and the library
LatentRng = np.random.Generator | int | tuple[Any, Any] | None


def latent_streams(rng: LatentRng) -> tuple[np.random.Generator, np.random.Generator | None] | None:
    """``rng`` as (the stream of ``z`` and the library, the stream of ``s`` or None: the same one)."""
    if rng is None:
        return None
    if isinstance(rng, tuple):
        if len(rng) != 2:
            raise ValueError(f"rng must be a generator, a seed or a pair of them, got a tuple of {len(rng)}.")
        return np.random.default_rng(rng[0]), np.random.default_rng(rng[1])
    return np.random.default_rng(rng), None


def check_library_size(library_size: LibrarySize) -> float | None:
    """``None`` for the cell's own library ("latent"/"observed"), else the positive total."""
    if isinstance(library_size, str):
        if library_size not in ("latent", "observed"):
            raise ValueError(f"library_size={library_size!r}: use 'latent', 'observed' or a positive number.")
        return None
    value = float(library_size)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"library_size={library_size!r} must be a positive number.")
    return value


def resolve_devices(accelerator: str, devices: Any) -> tuple[str, Any]:
    """Map a GPU device request to the CPU when no GPU exists, instead of crashing."""
    wants_gpu_ids = isinstance(devices, (list, tuple)) or (
        isinstance(devices, str) and devices != "auto" and accelerator != "cpu"
    )
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and wants_gpu_ids):
        if not torch.cuda.is_available():
            warnings.warn(
                f"accelerator={accelerator!r}, devices={devices!r} asks for a GPU but none is "
                "available; training on the CPU instead.",
                UserWarning,
                stacklevel=3,
            )
            return "cpu", "auto"
    return accelerator, devices


def library_size_prior(counts: Any, batch_codes: np.ndarray, n_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch mean and variance of the log library size, shaped ``(1, n_batch)``.

    The empirical prior of a learnt library latent, as scvi-tools builds it; cells without
    counts are left out (their log library is undefined).
    """
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    codes = np.asarray(batch_codes).ravel()
    means = np.zeros((1, max(n_batch, 1)), dtype=np.float32)
    variances = np.ones((1, max(n_batch, 1)), dtype=np.float32)
    for b in range(max(n_batch, 1)):
        logs = np.log(totals[(codes == b) & (totals > 0)])
        if logs.size:
            means[0, b] = logs.mean()
            variances[0, b] = logs.var()
    return means, variances


def check_saved_genes(dir_path: str, adata: AnnData, prefix: str) -> None:
    """Refuse an AnnData whose genes (names and order) differ from those a saved model was trained on."""
    path = os.path.join(dir_path, f"{prefix}model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved Cellina model at {path}.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    saved_genes = [str(g) for g in np.asarray(saved["var_names"])]
    genes = [str(g) for g in adata.var_names]
    if saved_genes == genes:
        return
    missing = [g for g in saved_genes if g not in set(genes)]
    extra = [g for g in genes if g not in set(saved_genes)]
    detail = (
        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
        f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        if missing or extra
        else "same genes in a different order"
    )
    raise ValueError(
        f"adata.var_names do not match the {len(saved_genes)} genes the model in {dir_path!r} was "
        f"trained on ({detail}); subset and order adata like the training data."
    )
