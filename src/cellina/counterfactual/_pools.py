"""Donor pools: which cells a rewired neighbourhood may be drawn from."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.keys import OBSP


def _mask(adata: Any, selection: Any, name: str) -> np.ndarray:
    """A boolean mask over cells from a mask, positions or a pandas query on ``obs``."""
    if isinstance(selection, str):
        try:
            selected = adata.obs.eval(selection)
        except Exception as err:  # pandas raises many kinds for a bad expression
            raise ValueError(f"{name} query {selection!r} could not be evaluated on adata.obs: {err}") from err
        mask = np.asarray(selected, dtype=bool)
        if mask.shape != (adata.n_obs,):
            raise ValueError(f"{name} query {selection!r} must give one True/False per cell")
        return mask
    values = np.asarray(selection)
    if values.dtype == bool:
        if values.shape != (adata.n_obs,):
            raise ValueError(f"{name} mask has length {values.shape}, expected {adata.n_obs}")
        return values
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be a boolean mask, integer positions or an obs query")
    if values.size and (values.min() < 0 or values.max() >= adata.n_obs):
        raise IndexError(f"{name} positions must lie in [0, {adata.n_obs})")
    mask = np.zeros(adata.n_obs, dtype=bool)
    mask[values.astype(np.int64)] = True
    return mask


def select_cells(adata: Any, selection: Any, name: str = "selection") -> np.ndarray:
    """Positions of the cells chosen by a boolean mask, positions, or a query on ``obs``.

    Queries use pandas' ``DataFrame.eval`` syntax, e.g.
    ``"domain == 'healthy' and coarse_type == 'Myeloid'"``.
    """
    return np.flatnonzero(_mask(adata, selection, name))


def observed_neighbour_pool(
    adata: Any,
    targets: Any,
    *,
    connectivity_key: str = OBSP.CONNECTIVITIES,
    exclude: Any = None,
) -> np.ndarray:
    """Cells observed as graph neighbours of ``targets``, minus ``exclude``.

    This is the published protocol's donor pool: the neighbours that cells of type ``y``
    have in the target domain, excluding type ``y`` itself (pass ``exclude`` as the
    type's mask or query). Use the unmasked graph when the targets were held out.
    """
    if connectivity_key not in adata.obsp:
        raise KeyError(
            f"connectivity key {connectivity_key!r} not found in adata.obsp (available: {sorted(adata.obsp.keys())})"
        )
    target_rows = select_cells(adata, targets, "targets")
    if target_rows.size == 0:
        raise ValueError("targets selects no cells, so there are no observed neighbours to pool")
    graph = sp.csr_matrix(adata.obsp[connectivity_key])
    pool = np.unique(graph[target_rows].indices)
    if exclude is not None:
        pool = pool[~_mask(adata, exclude, "exclude")[pool]]
    if pool.size == 0:
        raise ValueError(f"the targets' neighbours in obsp[{connectivity_key!r}] are empty after exclusion: no donors")
    return pool


def cluster_pool(adata: Any, cluster_key: str, clusters: Any) -> np.ndarray:
    """Cells whose ``obs[cluster_key]`` (e.g. niche clusters of ``s``) is one of ``clusters``."""
    if cluster_key not in adata.obs:
        raise KeyError(f"cluster column {cluster_key!r} not found in adata.obs")
    wanted = [clusters] if np.ndim(clusters) == 0 else list(clusters)
    labels = pd.Series(adata.obs[cluster_key]).astype(str)
    unknown = sorted(set(map(str, wanted)) - set(labels.unique()))
    if unknown:
        raise ValueError(f"unknown {cluster_key} value(s): {unknown}")
    pool = np.flatnonzero(labels.isin(list(map(str, wanted))).to_numpy())
    return pool
