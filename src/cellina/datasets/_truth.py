"""Exact factual and counterfactual expected counts of a tissue made by ``synthetic_tissue``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.datasets._errors import DatasetTypeError, TruthKeyError
from cellina.datasets._inputs import as_str_list, donor_rows, positions, shift_rows, shift_table
from cellina.datasets._model import TissueModel
from cellina.datasets._synthetic import GRAPH_KEY, TRUTH_KEY, TYPE_EFFECTS_KEY

_VAR_COLUMNS = (
    "cellina_true_baseline",
    "cellina_true_state_effect",
    "cellina_true_composition_effect",
    "cellina_true_ligand_effect",
)
_OBS_COLUMNS = ("cell_type", "cellina_true_size", "cellina_true_state")


@dataclass(frozen=True)
class _Tissue:
    model: TissueModel
    codes: np.ndarray
    state: np.ndarray
    size: np.ndarray
    graph: sp.csr_matrix
    composition: np.ndarray  # every cell's c on the true graph (it depends on types, never on expression)


def _load(adata: Any) -> _Tissue:
    """Read the stored truth, checking that ``adata`` is a whole tissue from ``synthetic_tissue``."""
    uns = getattr(adata, "uns", None)
    if uns is None or not hasattr(adata, "obs"):
        raise DatasetTypeError(f"expected an AnnData, got {type(adata).__name__}")
    if TRUTH_KEY not in uns:
        raise TruthKeyError(
            f"adata.uns has no {TRUTH_KEY!r}: exact truth exists only for tissues made by "
            "cellina.datasets.synthetic_tissue"
        )
    truth = uns[TRUTH_KEY]
    params = truth["params"]
    if adata.n_obs != int(params["n_cells"]) or adata.n_vars != int(params["n_genes"]):
        raise ValueError(
            f"adata has {adata.n_obs} cells x {adata.n_vars} genes but uns[{TRUTH_KEY!r}] describes "
            f"{int(params['n_cells'])} x {int(params['n_genes'])}: the truth needs the whole generated "
            "tissue (neighbourhoods reach outside any subset), not a subset"
        )
    for key in _VAR_COLUMNS:
        if key not in adata.var:
            raise TruthKeyError(f"adata.var has no column {key!r} needed for the exact truth")
    for key in _OBS_COLUMNS:
        if key not in adata.obs:
            raise TruthKeyError(f"adata.obs has no column {key!r} needed for the exact truth")
    effects_key = str(truth.get("type_effects_key", TYPE_EFFECTS_KEY))
    if effects_key not in adata.varm:
        raise TruthKeyError(f"adata.varm has no {effects_key!r} needed for the exact truth")
    # tissues of truth version 1 have no type-specific responses
    response_key = truth.get("type_response_key")
    if response_key is not None and str(response_key) not in adata.varm:
        raise TruthKeyError(f"adata.varm has no {str(response_key)!r} needed for the exact truth")
    graph_key = str(truth["graph"]["connectivities_key"]) if "graph" in truth else GRAPH_KEY
    if graph_key not in adata.obsp:
        raise TruthKeyError(f"adata.obsp has no {graph_key!r} (the true graph) needed for the exact truth")

    fine_types = as_str_list(truth["fine_types"])
    cell_type = pd.Categorical(adata.obs["cell_type"].astype(str), categories=fine_types)
    codes = np.asarray(cell_type.codes, dtype=np.int64)
    if (codes < 0).any():
        bad = sorted(set(adata.obs["cell_type"].astype(str)[codes < 0]))
        raise ValueError(f"adata.obs['cell_type'] has values {bad} that are not among the truth's types {fine_types}")
    names = list(map(str, adata.var_names))
    index = {g: i for i, g in enumerate(names)}
    ligand = as_str_list(truth["programmes"]["ligand"])
    missing = [g for g in ligand if g not in index]
    if missing:
        raise TruthKeyError(f"ligand genes {missing} of uns[{TRUTH_KEY!r}] are not in adata.var_names")
    var = adata.var
    model = TissueModel.build(
        baseline=var["cellina_true_baseline"].to_numpy(np.float64),
        type_effects=np.asarray(adata.varm[effects_key], dtype=np.float64),
        state_effect=var["cellina_true_state_effect"].to_numpy(np.float64),
        composition_effect=var["cellina_true_composition_effect"].to_numpy(np.float64),
        ligand_effect=var["cellina_true_ligand_effect"].to_numpy(np.float64),
        ligand_idx=np.array([index[g] for g in ligand]),
        fine_types=fine_types,
        rho_composition={str(k): float(v) for k, v in truth["rho_composition"].items()},
        rho_ligand={str(k): float(v) for k, v in truth["rho_ligand"].items()},
        tumour_associated=as_str_list(truth["tumour_associated"]),
        l_ref=float(truth["l_ref"]),
        target_sum=float(truth["target_sum"]),
        fine_to_coarse={str(k): str(v) for k, v in truth["fine_to_coarse"].items()},
        type_response_effect=None if response_key is None else np.asarray(adata.varm[str(response_key)], np.float64),
        coarse_types=as_str_list(truth["coarse_types"]),
    )
    graph = sp.csr_matrix(adata.obsp[graph_key])
    return _Tissue(
        model=model,
        codes=codes,
        state=adata.obs["cellina_true_state"].to_numpy(np.float64),
        size=adata.obs["cellina_true_size"].to_numpy(np.float64),
        graph=graph,
        composition=model.composition_signal(graph, codes),
    )


def _neighbour_rows(tissue: _Tissue, rows: sp.csr_matrix, shift=None) -> tuple[np.ndarray, np.ndarray]:
    """c and l for neighbourhood rows over all cells, scoring only the cells that are used."""
    used = np.unique(rows.indices)
    local = sp.csr_matrix(
        (rows.data, np.searchsorted(used, rows.indices), rows.indptr), shape=(rows.shape[0], used.size)
    )
    if shift is None:
        q = tissue.model.ligand_scores(tissue.codes[used], tissue.state[used], tissue.composition[used])
    else:
        q = shift(used)
    return tissue.model.niche_signals(local, tissue.codes[used], q)


def true_mean(adata: Any, indices: Any = None, *, niche: bool = True) -> np.ndarray:
    """Exact expected counts of the observed (factual) tissue, recomputed from the stored truth.

    Parameters
    ----------
    adata
        A whole tissue made by :func:`synthetic_tissue` (possibly read back from .h5ad).
    indices
        Positions (or a boolean mask) of the cells to return; all cells when None.
    niche
        Include the niche effects (``layers["cellina_true_mean"]``) or not
        (``layers["cellina_true_mean_intrinsic"]``).

    Returns
    -------
    numpy.ndarray
        float64, cells x genes.
    """
    tissue = _load(adata)
    n = tissue.codes.shape[0]
    idx = np.arange(n) if indices is None else positions(indices, n, "indices")
    codes, state, size = tissue.codes[idx], tissue.state[idx], tissue.size[idx]
    if not niche:
        return tissue.model.expected_counts(codes, state, size)
    c, l = _neighbour_rows(tissue, tissue.graph[idx])
    return tissue.model.expected_counts(codes, state, size, c, l)


def true_counterfactual_edge(
    adata: Any,
    focal: Any,
    donors: Any,
    *,
    weights: Any = None,
    niche: bool = True,
) -> np.ndarray:
    """Exact expected counts of focal cells whose neighbourhood is replaced by donor cells.

    Each focal cell keeps its own type, state and size; its composition and ligand signals are
    recomputed from the donors as weighted means (weights default to 1 per donor). A donor listed
    twice counts twice. A focal cell whose donor set is empty (or all-zero weights) has no
    neighbours: c = 0 and l = l_ref.

    Parameters
    ----------
    adata
        A whole tissue made by :func:`synthetic_tissue`.
    focal
        Positions (or boolean mask) of the focal cells.
    donors
        Either a 1-D index array, a shared pool that is every focal cell's whole new
        neighbourhood; or one index array per focal cell (a 2-D array or a sequence of arrays),
        e.g. the exact donors a model drew; or a sparse len(focal) x n_obs matrix of weights
        (row i = focal cell i's new neighbourhood).
    weights
        Edge weights, same shape as ``donors``; uniform when None (not allowed with sparse donors).
    niche
        When False, return the niche-free (intrinsic) means, i.e. an empty neighbourhood.

    Returns
    -------
    numpy.ndarray
        float64, len(focal) x genes.
    """
    tissue = _load(adata)
    n = tissue.codes.shape[0]
    idx = positions(focal, n, "focal")
    rows, pool, pool_weights = donor_rows(donors, weights, idx.size, n)
    codes, state, size = tissue.codes[idx], tissue.state[idx], tissue.size[idx]
    if not niche:
        return tissue.model.expected_counts(codes, state, size)
    if rows is not None:
        c, l = _neighbour_rows(tissue, rows)
    else:
        shared = sp.csr_matrix((pool_weights, pool, np.array([0, pool.size])), shape=(1, n))
        shared.sum_duplicates()
        c1, l1 = _neighbour_rows(tissue, shared)
        c, l = np.full(idx.size, c1[0]), np.full(idx.size, l1[0])
    return tissue.model.expected_counts(codes, state, size, c, l)


def true_counterfactual_node(
    adata: Any,
    focal: Any,
    perturbations: Mapping[Any, Any],
    *,
    groupby: str | None = None,
    renormalize: bool = False,
) -> np.ndarray:
    """Exact expected counts of focal cells when their neighbours' expression of genes is shifted.

    The graph is the original true graph. Each sender u's intrinsic normalised expression of gene
    g becomes m_ug * exp(lfc) (natural log); only the ligand signal can change, since the
    composition signal depends on types alone. The focal cells' own expression is not shifted.

    Parameters
    ----------
    adata
        A whole tissue made by :func:`synthetic_tissue`.
    focal
        Positions (or boolean mask) of the focal (receiving) cells.
    perturbations
        ``{gene: lfc}`` for every cell, or with ``groupby`` ``{group: {gene: lfc}}`` (values may
        be pandas Series) applied only to senders in that group.
    groupby
        obs column whose groups key ``perturbations``.
    renormalize
        Rescale each shifted sender profile back to its original total (as normalise-to-total
        after a multiplicative shift would), so shifting any gene dilutes the ligand genes.

    Returns
    -------
    numpy.ndarray
        float64, len(focal) x genes.
    """
    tissue = _load(adata)
    n = tissue.codes.shape[0]
    per_group, group_of = shift_table(adata, perturbations, groupby)
    idx = positions(focal, n, "focal")

    def shifted_scores(used: np.ndarray) -> np.ndarray:
        cols, table, row = shift_rows(per_group, group_of, used)
        shift = table[row]
        return tissue.model.ligand_scores(
            tissue.codes[used], tissue.state[used], tissue.composition[used], cols, shift, renormalize
        )

    c, l = _neighbour_rows(tissue, tissue.graph[idx], shift=shifted_scores)
    return tissue.model.expected_counts(tissue.codes[idx], tissue.state[idx], tissue.size[idx], c, l)
