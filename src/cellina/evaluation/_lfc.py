"""Log-fold changes: the tutorial's cell-level ``get_lfc`` and pseudobulk shifts per cell type."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._utils import as_matrix, column_mean, row_sums, scale_rows


def normalize_counts(x: Any, eps: float = 1e-8, scale: float = 1e4) -> np.ndarray | sp.csr_matrix:
    """Scale every cell to ``scale`` total counts, as the tutorial's ``_normalize_counts``.

    Parameters
    ----------
    x
        Cells x genes counts (dense or sparse).
    eps
        Added to each cell's total so that empty cells give zeros rather than NaN.
    scale
        Target total per cell.

    Returns
    -------
    numpy.ndarray or scipy.sparse.csr_matrix
        Same sparsity as the input.
    """
    mat = as_matrix(x, "x")
    return scale_rows(mat, scale / (row_sums(mat) + eps))


def log2_change_std(pred: Any, std: Any, scale: float = 1e4, eps: float = 1e-6) -> np.ndarray:
    """Per-gene spread of a predicted change across draws, in log2 units.

    ``pred`` and ``std`` are the mean and the standard deviation across draws of each cell's
    expected expression (``return_std=True``; the draws vary the donors and, with
    ``uncertainty="posterior"``, the model's latents). Both are scaled by each cell's predicted
    library to ``scale`` (as :func:`mean_normalized_expression` scales the prediction), the
    std is averaged over cells and taken relative to the mean normalised prediction: to first
    order, how far one cell's log2 change moves across the draws. It is not the standard error of
    the focal group's mean change, which averages over the cells and is far smaller when the
    cells vary independently. It is what the plugin shows beside each gene's log2 fold change
    and what ``truth_calibration`` uses.

    Parameters
    ----------
    pred, std
        Cells x genes, the same shape.
    scale, eps
        Library size every cell is scaled to; pseudo-count of :func:`safe_log2_fold_change`.

    Returns
    -------
    numpy.ndarray
        One non-negative value per gene.
    """
    mean = np.asarray(as_matrix(pred, "pred").todense() if sp.issparse(pred) else pred, dtype=np.float64)
    spread = np.asarray(std.todense() if sp.issparse(std) else std, dtype=np.float64)
    if mean.shape != spread.shape or mean.ndim != 2:
        raise ValueError(f"pred {mean.shape} and std {spread.shape} must be cells x genes of the same shape.")
    factor = scale / (mean.sum(axis=1, keepdims=True) + 1e-8)
    level = (mean * factor).mean(axis=0)
    return (spread * factor).mean(axis=0) / ((level + eps) * np.log(2.0))


def safe_log2_fold_change(a: Any, b: Any, eps: float = 1e-6) -> np.ndarray:
    """Elementwise ``log2((a + eps) / (b + eps))``.

    Parameters
    ----------
    a, b
        Numerator and denominator (same shape).
    eps
        Pseudo-count on the normalised scale; keeps genes absent from both sides at 0.

    Returns
    -------
    numpy.ndarray
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"fold change operands differ in shape: {a.shape} vs {b.shape}.")
    return np.log2((a + eps) / (b + eps))


def mean_normalized_expression(
    x: Any, normalize_counts: bool = True, scale: float = 1e4, eps: float = 1e-8
) -> np.ndarray:
    """Per-gene mean over cells of (optionally) library-normalised expression.

    Sparse input stays sparse: the per-cell scaling is a diagonal product.

    Parameters
    ----------
    x
        Cells x genes matrix.
    normalize_counts
        Scale each cell to ``scale`` total before averaging.
    scale, eps
        As in :func:`normalize_counts`.

    Returns
    -------
    numpy.ndarray
        One value per gene.
    """
    mat = as_matrix(x, "x")
    if normalize_counts:
        mat = scale_rows(mat, scale / (row_sums(mat) + eps))
    return column_mean(mat)


def get_lfc(
    control: Any,
    target: Any,
    counterfactual: Any,
    normalize_counts: bool = True,
    n_deg: int = 200,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed and predicted log2 fold changes against the control population.

    Follows the published tutorial: each cell is (optionally) scaled to 10,000 counts, the
    three populations are averaged per gene, and
    ``true_lfc = log2((mean_target + 1e-6) / (mean_control + 1e-6))``,
    ``pred_lfc = log2((mean_counterfactual + 1e-6) / (mean_control + 1e-6))``.
    The differentially expressed genes are the ``n_deg`` largest ``|true_lfc|``.

    Parameters
    ----------
    control
        Cells x genes counts of the control population (e.g. healthy cells of the held-out type).
    target
        Cells x genes counts of the observed target population (e.g. the held-out tumour cells).
    counterfactual
        Cells x genes predicted expression of the perturbed control cells.
    normalize_counts
        Scale every cell to 10,000 total before averaging.
    n_deg
        Number of top genes by ``|true_lfc|`` to return (clipped to the number of genes).

    Returns
    -------
    true_lfc : numpy.ndarray
        Observed log2 fold change per gene.
    pred_lfc : numpy.ndarray
        Predicted log2 fold change per gene.
    top_features : numpy.ndarray
        Integer indices of the top ``n_deg`` genes, largest ``|true_lfc|`` first.
    """
    if int(n_deg) < 1:
        raise ValueError(f"`n_deg` must be a positive integer, got {n_deg!r}.")
    mats = {
        "control": as_matrix(control, "control"),
        "target": as_matrix(target, "target"),
        "counterfactual": as_matrix(counterfactual, "counterfactual"),
    }
    n_genes = mats["control"].shape[1]
    for key, mat in mats.items():
        if mat.shape[1] != n_genes:
            raise ValueError(
                f"`{key}` has {mat.shape[1]} genes but `control` has {n_genes}; all three must share genes."
            )
    means = {k: mean_normalized_expression(v, normalize_counts=normalize_counts) for k, v in mats.items()}
    true_lfc = safe_log2_fold_change(means["target"], means["control"])
    pred_lfc = safe_log2_fold_change(means["counterfactual"], means["control"])
    top_features = np.argsort(-np.abs(true_lfc), kind="stable")[: int(n_deg)]
    return true_lfc, pred_lfc, top_features


# --------------------------------------------------------------------------------------
# Pseudobulk log-fold changes (the tutorial builds these with decoupler; this is the same
# sum-pseudobulk -> normalize_total -> log1p construction with scipy sparse products).
# --------------------------------------------------------------------------------------


def _get_counts(adata: Any, layer: str | None) -> Any:
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise ValueError(f"layer {layer!r} not found in adata.layers (available: {list(adata.layers.keys())}).")
    return adata.layers[layer]


def _check_obs_key(adata: Any, key: str, what: str) -> pd.Series:
    if key not in adata.obs:
        raise ValueError(f"{what} key {key!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    return adata.obs[key]


def pseudobulk(
    adata: Any,
    sample_col: str,
    groups_col: str | None = None,
    layer: str | None = "counts",
    min_cells: int = 1,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Sum counts over the cells of each (sample, group) combination.

    Parameters
    ----------
    adata
        AnnData with raw counts.
    sample_col
        ``obs`` column defining samples (the tutorial uses the domain).
    groups_col
        Optional ``obs`` column splitting each sample further (the cell type).
    layer
        Counts layer; ``None`` uses ``adata.X``.
    min_cells
        Pseudobulks built from fewer cells are dropped.

    Returns
    -------
    obs : pandas.DataFrame
        One row per pseudobulk with the sample (and group) label and ``n_cells``.
    counts : numpy.ndarray
        Pseudobulks x genes summed counts (small and dense).
    """
    _check_obs_key(adata, sample_col, "sample")
    cols = [sample_col]
    if groups_col is not None:
        _check_obs_key(adata, groups_col, "groups")
        cols.append(groups_col)
    valid = ~adata.obs[cols].isna().any(axis=1).to_numpy()
    rows = np.flatnonzero(valid)
    # Grouping on integer codes keeps this vectorised for millions of cells.
    grouped = adata.obs[cols].iloc[rows].astype(str).groupby(cols, sort=True)
    codes = grouped.ngroup().to_numpy()
    sizes = grouped.size()
    indicator = sp.csr_matrix((np.ones(len(rows)), (codes, rows)), shape=(len(sizes), adata.n_obs))
    counts = as_matrix(_get_counts(adata, layer), "counts")
    summed = indicator @ counts
    summed = summed.toarray() if sp.issparse(summed) else np.asarray(summed)
    n_cells = sizes.to_numpy().astype(int)
    obs = sizes.index.to_frame(index=False) if len(cols) > 1 else pd.DataFrame({cols[0]: sizes.index.to_numpy()})
    obs["n_cells"] = n_cells
    keep = n_cells >= int(min_cells)
    return obs.loc[keep].reset_index(drop=True), summed[keep]


def _log1p_total(counts: np.ndarray, target_sum: float) -> np.ndarray:
    totals = counts.sum(axis=1)
    factors = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
    return np.log1p(counts * factors[:, None])


def _check_domains(adata: Any, domains_key: str, domains: Sequence[str]) -> None:
    present = set(adata.obs[domains_key].astype(str).unique())
    for d in domains:
        if str(d) not in present:
            raise ValueError(f"domain {d!r} not found in adata.obs[{domains_key!r}] (values: {sorted(present)}).")


def pseudobulk_lfc(
    adata: Any,
    labels_key: str,
    domains_key: str,
    control_domain: str,
    target_domain: str,
    layer: str | None = "counts",
    target_sum: float = 1e4,
    min_cells: int = 1,
) -> pd.DataFrame:
    """Per-cell-type shift between two domains from sum pseudobulks.

    For each cell type present in both domains: sum the counts of its cells in each domain,
    scale each pseudobulk to ``target_sum``, take ``log1p`` and subtract
    (target minus control). Natural-log units, as the tutorial's ``get_perturbation_logfc``.

    Parameters
    ----------
    adata
        AnnData with counts.
    labels_key
        Cell-type column in ``obs``.
    domains_key
        Domain column in ``obs``.
    control_domain, target_domain
        The two domain values compared.
    layer
        Counts layer (``None`` for ``adata.X``).
    target_sum
        Pseudobulk normalisation total.
    min_cells
        Minimum cells per pseudobulk; types below it in either domain are left out.

    Returns
    -------
    pandas.DataFrame
        Cell types x genes, index named ``labels_key``.
    """
    _check_obs_key(adata, labels_key, "labels")
    _check_obs_key(adata, domains_key, "domains")
    _check_domains(adata, domains_key, [control_domain, target_domain])
    obs, counts = pseudobulk(adata, domains_key, labels_key, layer=layer, min_cells=min_cells)
    logx = _log1p_total(counts, target_sum)
    rows = []
    names = []
    for ct in sorted(obs[labels_key].unique()):
        ctrl = np.flatnonzero((obs[domains_key] == str(control_domain)) & (obs[labels_key] == ct))
        targ = np.flatnonzero((obs[domains_key] == str(target_domain)) & (obs[labels_key] == ct))
        if len(ctrl) and len(targ):
            rows.append(logx[targ[0]] - logx[ctrl[0]])
            names.append(ct)
    out = pd.DataFrame(
        np.asarray(rows).reshape(len(rows), -1), index=pd.Index(names, name=labels_key), columns=adata.var_names.copy()
    )
    return out


def global_pseudobulk_lfc(
    adata: Any,
    domains_key: str,
    control_domain: str,
    target_domain: str,
    labels_key: str | None = None,
    exclude: str | Sequence[str] | None = None,
    layer: str | None = "counts",
    target_sum: float = 1e4,
) -> pd.Series:
    """Shift between two domains from one pseudobulk per domain, optionally leaving types out.

    The tutorial's ``get_global_perturbation_logfc``: the held-out cell type is excluded
    (``exclude``) so its own change never enters the perturbation it is asked to predict.

    Parameters
    ----------
    adata
        AnnData with counts.
    domains_key
        Domain column in ``obs``.
    control_domain, target_domain
        The two domain values compared.
    labels_key
        Cell-type column; required when ``exclude`` is given.
    exclude
        Cell type(s) whose cells are left out of both pseudobulks.
    layer
        Counts layer (``None`` for ``adata.X``).
    target_sum
        Pseudobulk normalisation total.

    Returns
    -------
    pandas.Series
        One value per gene (natural-log units), target minus control.
    """
    _check_obs_key(adata, domains_key, "domains")
    _check_domains(adata, domains_key, [control_domain, target_domain])
    keep = np.ones(adata.n_obs, dtype=bool)
    if exclude is not None:
        if labels_key is None:
            raise ValueError("`labels_key` is required when `exclude` is given.")
        labels = _check_obs_key(adata, labels_key, "labels").astype(str)
        excl = [exclude] if isinstance(exclude, str) else list(exclude)
        unknown = [e for e in excl if str(e) not in set(labels.unique())]
        if unknown:
            raise ValueError(f"cell type(s) {unknown} to exclude not found in adata.obs[{labels_key!r}].")
        keep = ~labels.isin([str(e) for e in excl]).to_numpy()
    dom = adata.obs[domains_key].astype(str).to_numpy()
    counts = as_matrix(_get_counts(adata, layer), "counts")
    out = []
    for d in (control_domain, target_domain):
        mask = keep & (dom == str(d))
        if not mask.any():
            raise ValueError(f"no cells left in domain {d!r} after excluding {exclude!r}.")
        total = np.asarray(counts[mask].sum(axis=0)).reshape(1, -1)
        out.append(_log1p_total(total, target_sum)[0])
    return pd.Series(out[1] - out[0], index=adata.var_names.copy())


def perturbation_table(
    lfc: pd.DataFrame,
    n_genes: int = 200,
    holdout: str | None = None,
    global_lfc: pd.Series | None = None,
) -> dict[str, pd.Series]:
    """Per-type gene shifts for ``make_neighbor_perturbation``: each type's top ``n_genes`` by ``|lfc|``.

    As in the tutorial, the held-out type's row is replaced by the global shift so the
    model never sees the held-out type's own change.

    Parameters
    ----------
    lfc
        Cell types x genes shifts (:func:`pseudobulk_lfc`).
    n_genes
        Genes kept per cell type.
    holdout
        Cell type whose row is replaced by ``global_lfc`` (added when missing).
    global_lfc
        Shift used for ``holdout`` (:func:`global_pseudobulk_lfc`).

    Returns
    -------
    dict
        ``{cell_type: Series(gene -> shift)}``.
    """
    if int(n_genes) < 1:
        raise ValueError(f"`n_genes` must be positive, got {n_genes!r}.")
    table = lfc.copy()
    if holdout is not None:
        if global_lfc is None:
            raise ValueError("`global_lfc` is required when `holdout` is given.")
        missing = set(global_lfc.index) - set(table.columns)
        if missing:
            raise ValueError(f"`global_lfc` has genes absent from `lfc`: {sorted(missing)[:5]}.")
        table.loc[holdout, global_lfc.index] = global_lfc.to_numpy()
    out = {}
    for ct in table.index:
        s = table.loc[ct].astype(float)
        out[str(ct)] = s[s.abs().nlargest(int(n_genes)).index]
    return out
