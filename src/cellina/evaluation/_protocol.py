"""Leave-one-out protocol of the published tutorial, with exact-truth scores on synthetic tissue.

One cell type is held out in the target (tumour) domain: its cells are masked out of the
training graph and the training split. The model then has to predict how the same type's
control-domain (healthy) cells would change

* **edge**: when their neighbourhood is rewired to the observed neighbours (unmasked graph)
  of the held-out cells, excluding the held-out type itself;
* **node**: when their neighbours' expression is shifted by the pseudobulk domain shift of
  each neighbour's type (the held-out type's own row replaced by the shift of all other types).

Predicted and observed log-fold changes (control -> held-out target cells) are compared as
in the tutorial. On our synthetic tissue the exact counterfactual mean is known, so every
predicted change is also measured against the predictor's own factual prediction for the
same control cells and compared with the exact change on the niche-responsive genes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._baselines import mean_shift_baseline, mean_shift_delta
from ._lfc import (
    get_lfc,
    global_pseudobulk_lfc,
    mean_normalized_expression,
    perturbation_table,
    pseudobulk_lfc,
    safe_log2_fold_change,
)
from ._metrics import energy_distance, lfc_scores, truth_scores
from ._utils import as_matrix, log1p_normalize

METHODS = ("cellina", "cellina_no_aux", "scvi", "mean_shift", "oracle")
PERTURBATIONS = ("edge", "node")


@dataclass
class LeaveOneOutResult:
    """Outcome of one leave-one-out run.

    Attributes
    ----------
    holdout
        The held-out cell type.
    scores
        Tidy table, one row per (perturbation, method): the tutorial scores on the top DEGs
        (``pearson``, ``spearman``, ``signed_precision``, ``skill``), ``energy_distance`` to the
        observed target cells (log1p CP10K, 30 principal components), and on synthetic tissue
        ``truth_pearson``, ``truth_skill``, ``truth_slope``, ``null_change``, ``null_change_true``,
        ``responsive_change_true``.
    lfc
        Per (perturbation, method): a genes-indexed frame with ``true_lfc`` (observed),
        ``pred_lfc`` (predicted), ``is_deg`` and, with truth, ``true_change`` / ``pred_change``.
    indices
        Integer cell indices used: ``train``, ``validation``, ``test``, ``control``, ``target``,
        ``neighbours`` (the donor pool).
    disentanglement
        Per method with latents: probe accuracies (see :func:`latent_probe_scores`).
    timings
        Seconds spent per stage.
    models
        The trained models (only with ``return_models=True``).
    """

    holdout: str
    scores: pd.DataFrame
    lfc: dict[tuple[str, str], pd.DataFrame]
    indices: dict[str, np.ndarray]
    disentanglement: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Scores with the held-out type as a column (for concatenating several runs)."""
        out = self.scores.copy()
        out.insert(0, "holdout", self.holdout)
        return out


# ----------------------------------------------------------------------------- probes


def latent_probe_scores(
    latent: np.ndarray,
    labels: Sequence[Any],
    test_size: float = 0.3,
    seed: int = 0,
    max_cells: int | None = 20000,
) -> dict[str, float]:
    """Balanced accuracy of a logistic regression predicting ``labels`` from ``latent``.

    Fitted on a stratified random part of the cells and scored on the rest, so the number
    says how much label information the representation carries, not how well it is memorised.

    Parameters
    ----------
    latent
        Cells x dimensions representation.
    labels
        One label per cell.
    test_size
        Fraction of cells held out for scoring.
    seed
        Seed of the split and the subsample.
    max_cells
        Deterministic subsample for speed (``None``: all cells).

    Returns
    -------
    dict
        ``balanced_accuracy`` and ``chance`` (1 / number of classes).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(latent, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"`latent` has {x.shape[0]} cells but `labels` has {y.shape[0]}.")
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"`labels` needs at least two classes, got {classes.tolist()}.")
    rng = np.random.default_rng(seed)
    if max_cells is not None and x.shape[0] > max_cells:
        keep = np.sort(rng.choice(x.shape[0], size=max_cells, replace=False))
        x, y = x[keep], y[keep]
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    scaler = StandardScaler().fit(x_tr)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x_tr), y_tr)
    return {
        "balanced_accuracy": float(balanced_accuracy_score(y_te, clf.predict(scaler.transform(x_te)))),
        "chance": 1.0 / classes.size,
    }


# ----------------------------------------------------------------------------- helpers


def _check_inputs(adata, holdout, labels_key, domains_key, control_domain, target_domain, layer):
    for key, what in ((labels_key, "labels"), (domains_key, "domains")):
        if key not in adata.obs:
            raise ValueError(f"{what} key {key!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"counts layer {layer!r} not found in adata.layers ({list(adata.layers.keys())}).")
    labels = adata.obs[labels_key].astype(str).to_numpy()
    domains = adata.obs[domains_key].astype(str).to_numpy()
    for d in (control_domain, target_domain):
        if d not in set(domains):
            raise ValueError(f"domain {d!r} not found in adata.obs[{domains_key!r}] (values: {sorted(set(domains))}).")
    if control_domain == target_domain:
        raise ValueError(f"`control_domain` and `target_domain` are both {control_domain!r}.")
    if str(holdout) not in set(labels):
        raise ValueError(
            f"held-out type {holdout!r} not found in adata.obs[{labels_key!r}] (values: {sorted(set(labels))})."
        )
    for d in (control_domain, target_domain):
        if not np.any((labels == str(holdout)) & (domains == d)):
            raise ValueError(f"held-out type {holdout!r} has no cells in domain {d!r}.")
    if "spatial" not in adata.obsm:
        raise ValueError("adata.obsm['spatial'] (cell coordinates) is missing.")
    return labels, domains


def _counts(adata, layer):
    return adata.X if layer is None else adata.layers[layer]


def _population_lfc(pred: Any, factual: Any) -> np.ndarray:
    """log2 ratio of the mean library-normalised expression of two predictions for the same cells."""
    return safe_log2_fold_change(mean_normalized_expression(pred), mean_normalized_expression(factual))


def _set_log_normalized_x(adata, layer, target_sum=1e4):
    adata.X = log1p_normalize(as_matrix(_counts(adata, layer), "counts"), target_sum).astype(np.float32)


def _donor_pool(conn_orig: sp.spmatrix, idx_target: np.ndarray, labels: np.ndarray, holdout: str) -> np.ndarray:
    neighbours = np.unique(sp.csr_matrix(conn_orig)[idx_target].nonzero()[1])
    return neighbours[labels[neighbours] != str(holdout)]


def _poisson_cells(pred: Any, totals: np.ndarray, seed: int) -> np.ndarray:
    """Poisson counts drawn from predicted expected expression at each cell's observed library size."""
    mat = np.asarray(pred, dtype=np.float64)
    rows = mat.sum(axis=1, keepdims=True)
    rate = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0) * totals[:, None]
    return np.random.default_rng(seed).poisson(np.clip(rate, 0.0, None)).astype(np.float64)


def _score(
    true_lfc: np.ndarray,
    pred_lfc: np.ndarray,
    n_deg: int,
    pred_cells: Any,
    target_cells: Any,
    energy: bool,
    energy_max_cells: int,
    seed: int,
) -> dict[str, float]:
    out: dict[str, float] = dict(lfc_scores(true_lfc, pred_lfc, k=n_deg))
    if energy:
        out["energy_distance"] = energy_distance(pred_cells, target_cells, max_cells=energy_max_cells, seed=seed)
    return out


# ----------------------------------------------------------------------------- runner


def leave_one_out(
    adata: Any,
    holdout: str,
    *,
    labels_key: str = "coarse_type",
    domains_key: str = "domain",
    control_domain: str = "healthy",
    target_domain: str = "tumour",
    layer: str | None = "counts",
    batch_key: str | None = None,
    perturbations: Sequence[str] = PERTURBATIONS,
    methods: Sequence[str] = ("cellina", "mean_shift"),
    bandwidth: float = 30.0,
    max_neighbours: int = 50,
    cutoff: float = 0.1,
    library_key: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    train_kwargs: dict[str, Any] | None = None,
    plan_kwargs: dict[str, Any] | None = None,
    scvi_kwargs: dict[str, Any] | None = None,
    n_deg: int = 50,
    n_deg_node: int | None = None,
    n_pert_genes: int = 200,
    n_neighbours: int = 50,
    validation_size: float = 0.1,
    batch_size: int = 1024,
    energy: bool = True,
    energy_max_cells: int = 500,
    truth: bool | str = "auto",
    probes: bool = True,
    seed: int = 0,
    return_models: bool = False,
) -> LeaveOneOutResult:
    """Run the tutorial's hold-out-one-type protocol and score every method.

    Parameters
    ----------
    adata
        AnnData with counts (``layer``), ``obsm["spatial"]`` coordinates, cell types and
        domains. It is never modified: the run works on a copy.
    holdout
        Cell type held out in ``target_domain``.
    labels_key, domains_key
        ``obs`` columns with the cell type and the spatial domain.
    control_domain, target_domain
        Domain of the control cells (source) and of the held-out cells (target).
    layer
        Counts layer (``None``: ``adata.X`` holds counts).
    batch_key
        Optional batch column passed to ``setup_anndata``.
    perturbations
        Any of ``"edge"`` and ``"node"``.
    methods
        Any of ``"cellina"`` (``model_kwargs``), ``"cellina_no_aux"`` (the same with
        ``classifier_lambda = discriminator_lambda = 0``; a ``"type_gated"`` niche decoder, which
        reads the classifier, becomes ``"factorised"``), ``"scvi"`` (space-blind scvi-tools
        SCVI with the domain as batch covariate; its counterfactual decodes the control cells
        with ``transform_batch=target_domain``) and ``"mean_shift"``
        (:func:`cellina.evaluation.mean_shift_baseline`, shift averaged over the other types);
        on synthetic tissue also ``"oracle"``: the exact counterfactual means (same donors, same
        shifts), the ceiling of every score given the count noise of the observed cells.
    bandwidth, max_neighbours, cutoff, library_key
        Passed to :func:`cellina.spatial.spatial_neighbors` (gaussian kernel).
    model_kwargs, train_kwargs, plan_kwargs
        For ``Cellina(...)``, ``train(...)`` and its ``plan_kwargs``.
    scvi_kwargs
        For ``scvi.model.SCVI(...)``; training uses ``train_kwargs``' ``max_epochs`` and
        ``batch_size``.
    n_deg
        Top observed DEGs for the tutorial scores (the tutorial uses 50 for edge).
    n_deg_node
        The same for the node perturbation (the tutorial uses 20); ``None``: ``n_deg``.
    n_pert_genes
        Genes per cell type in the node perturbation table.
    n_neighbours
        Donors drawn per control cell in the edge perturbation.
    validation_size
        Fraction of the non-test cells used for validation.
    batch_size
        Inference batch size.
    energy
        Compute the energy distance between predicted and observed target cells. Model
        predictions are expected values without count noise, so they are first turned into
        Poisson counts at each control cell's observed library size (seeded); the mean-shift
        prediction is built from observed counts and is used as it is.
    energy_max_cells
        Subsample size per population for the energy distance.
    truth
        ``"auto"``: exact-truth scores when ``adata`` is a :mod:`cellina.datasets` synthetic
        tissue or world (:func:`cellina.datasets.truth_for`); ``True`` requires it; ``False`` skips them.
    probes
        Fit latent probes (domain and cell type from ``z``, domain from ``s``) on the
        training cells.
    seed
        Seed of the split, the donor draws and the subsamples.
    return_models
        Keep the trained models in the result.

    Returns
    -------
    LeaveOneOutResult
    """
    from cellina.spatial import compute_spatial_features, spatial_neighbors

    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
    bad = [p for p in perturbations if p not in PERTURBATIONS]
    if bad or not perturbations:
        raise ValueError(f"unknown perturbation(s) {bad}; choose from {list(PERTURBATIONS)}.")
    if not 0.0 < validation_size < 1.0:
        raise ValueError(f"`validation_size` must lie in (0, 1), got {validation_size!r}.")
    labels, domains = _check_inputs(adata, holdout, labels_key, domains_key, control_domain, target_domain, layer)
    holdout = str(holdout)
    use_truth = _resolve_truth(adata, truth)
    if "oracle" in methods and not use_truth:
        raise ValueError("method 'oracle' needs the exact truth of a cellina.datasets synthetic tissue (truth=False "
                         "or adata.uns['cellina_truth'] missing).")

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    work = adata.copy()
    counts_layer = layer if layer is not None else "counts"
    if layer is None:
        work.layers["counts"] = work.X.copy()

    # --- split: the held-out type in the target domain is the test set
    is_holdout = labels == holdout
    idx_target = np.flatnonzero(is_holdout & (domains == target_domain))
    idx_control = np.flatnonzero(is_holdout & (domains == control_domain))
    from cellina.model._splits import holdout_split

    idx_train, idx_val, _ = holdout_split(work.n_obs, idx_target, validation_size, seed)

    # --- graph: unmasked for the donor pool, masked for training features (no leakage)
    _set_log_normalized_x(work, counts_layer)
    nb_kwargs = dict(bandwidth=bandwidth, max_neighbours=max_neighbours, cutoff=cutoff, standardize=False,
                     library_key=library_key)
    conn_orig = spatial_neighbors(work, inplace=False, **nb_kwargs)
    if isinstance(conn_orig, tuple):
        conn_orig = conn_orig[0]
    work.obsp["spatial_connectivities_orig"] = sp.csr_matrix(conn_orig)
    spatial_neighbors(work, test_indices=idx_target, **nb_kwargs)
    compute_spatial_features(work)
    work.X = work.layers[counts_layer].copy()
    donors_pool = _donor_pool(conn_orig, idx_target, labels, holdout)
    if donors_pool.size == 0:
        raise ValueError(f"the held-out {holdout!r} cells in {target_domain!r} have no neighbours of another type.")
    timings["prepare"] = time.perf_counter() - t0

    counts = _counts(work, counts_layer)
    control_counts = counts[idx_control]
    target_counts = counts[idx_target]

    # --- node perturbation table (pseudobulk shifts; held-out type gets the global shift)
    table = None
    if "node" in perturbations:
        per_type = pseudobulk_lfc(work, labels_key, domains_key, control_domain, target_domain, layer=counts_layer)
        glob = global_pseudobulk_lfc(work, domains_key, control_domain, target_domain, labels_key=labels_key,
                                     exclude=holdout, layer=counts_layer)
        table = perturbation_table(per_type, n_genes=n_pert_genes, holdout=holdout, global_lfc=glob)

    truth_info = (_truth_changes(adata, idx_control, table, labels_key, perturbations, renormalize=True,
                                   holdout=holdout)
                  if use_truth else None)

    rows: list[dict[str, Any]] = []
    lfc_frames: dict[tuple[str, str], pd.DataFrame] = {}
    probes_out: dict[str, dict[str, float]] = {}
    models: dict[str, Any] = {}
    donors_used: np.ndarray | None = None
    if truth_info is not None and "edge" in perturbations and not any(
        m in ("cellina", "cellina_no_aux") for m in methods
    ):
        # No model draws donors: draw them the way the model does, so baselines still get an edge truth.
        from cellina.counterfactual import sample_donors

        donors_used = sample_donors(idx_control, donors_pool, n_neighbours, np.random.default_rng(seed))
        _set_true_edge(truth_info, adata, idx_control, donors_used)

    control_totals = np.asarray(control_counts.sum(axis=1)).ravel()

    def record(pert: str, method: str, pred: Any, factual: Any | None, expected: bool = True) -> None:
        k = n_deg if pert == "edge" or n_deg_node is None else n_deg_node
        true_lfc, pred_lfc, deg = get_lfc(control_counts, target_counts, pred, n_deg=k)
        row: dict[str, Any] = {"perturbation": pert, "method": method}
        # Expected values have no count noise, observed cells do: sample counts before comparing
        # the populations, or the energy distance measures noise rather than the change.
        cells = _poisson_cells(pred, control_totals, seed) if expected else pred
        row.update(_score(true_lfc, pred_lfc, k, cells, target_counts, energy, energy_max_cells, seed))
        frame = pd.DataFrame({"true_lfc": true_lfc, "pred_lfc": pred_lfc}, index=work.var_names.copy())
        frame["is_deg"] = False
        frame.iloc[deg, frame.columns.get_loc("is_deg")] = True
        if truth_info is not None and pert in truth_info["changes"] and factual is not None:
            pred_change = _population_lfc(pred, factual)
            true_change = truth_info["changes"][pert]
            row.update(truth_scores(pred_change, true_change, truth_info["responsive"], truth_info["null"]))
            frame["true_change"] = true_change
            frame["pred_change"] = pred_change
        rows.append(row)
        lfc_frames[(pert, method)] = frame

    # Model-based methods first: the edge truth is evaluated for the donors the first model drew,
    # and the baselines are scored against that same truth.
    ordered = sorted(methods, key=lambda m: m not in ("cellina", "cellina_no_aux"))
    for method in ordered:
        t1 = time.perf_counter()
        if method in ("cellina", "cellina_no_aux"):
            kwargs = dict(model_kwargs or {})
            if method == "cellina_no_aux":
                kwargs.update(classifier_lambda=0.0, discriminator_lambda=0.0)
                if kwargs.get("niche_decoder") == "type_gated":
                    # the type gate reads the classifier, which the ablation removes
                    kwargs["niche_decoder"] = "factorised"
            model = _train_cellina(work, counts_layer, labels_key, domains_key, batch_key, kwargs, train_kwargs,
                                   plan_kwargs, idx_train, idx_val, idx_target)
            factual = _decode_factual(model, work, idx_control, batch_size)
            if "edge" in perturbations:
                pred, donors = _edge_counterfactual(model, work, idx_control, donors_pool, n_neighbours,
                                                    batch_size, seed)
                if donors_used is None:
                    donors_used = donors
                    if truth_info is not None:
                        _set_true_edge(truth_info, adata, idx_control, donors)
                elif truth_info is not None and not np.array_equal(donors, donors_used):
                    raise RuntimeError("the models drew different donors for the same seed; the edge truth "
                                       "would not match the prediction.")
                record("edge", method, pred, factual)
            if "node" in perturbations:
                pred = _node_counterfactual(model, work, counts_layer, table, labels_key, idx_control, batch_size)
                record("node", method, pred, factual)
            if probes:
                probes_out[method] = _cellina_probes(model, work, idx_train, labels, domains, batch_size, seed)
        elif method == "scvi":
            model = _train_scvi(work, counts_layer, domains_key, batch_key, scvi_kwargs, model_kwargs,
                                train_kwargs, idx_train, idx_val, idx_target)
            pred = model.get_normalized_expression(indices=idx_control, transform_batch=target_domain,
                                                   batch_size=batch_size, return_numpy=True)
            factual = model.get_normalized_expression(indices=idx_control, batch_size=batch_size,
                                                      return_numpy=True)
            for pert in perturbations:
                record(pert, method, pred, factual)
            if probes:
                z = model.get_latent_representation(indices=idx_train, batch_size=batch_size)
                from_z = within_group_probe_scores(z, domains[idx_train], labels[idx_train], seed=seed)
                probes_out[method] = {
                    "domain_from_z": from_z["balanced_accuracy"],
                    "celltype_from_z": latent_probe_scores(z, labels[idx_train], seed=seed)["balanced_accuracy"],
                    "domain_chance": from_z["chance"],
                    "domain_from_z_pooled": latent_probe_scores(z, domains[idx_train], seed=seed)["balanced_accuracy"],
                }
        elif method == "oracle":
            model = None
            if truth_info is None:
                raise ValueError("method 'oracle' needs the exact truth of a cellina.datasets synthetic tissue.")
            for pert in perturbations:
                record(pert, method, truth_info["counterfactual"][pert], truth_info["factual"])
        else:  # mean_shift
            model = None
            src = (domains == control_domain) & ~is_holdout
            tgt = (domains == target_domain) & ~is_holdout
            delta = mean_shift_delta(counts[src], counts[tgt], labels[src], labels[tgt])
            pred = mean_shift_baseline(control_counts, delta=delta)
            factual = mean_shift_baseline(control_counts, delta=np.zeros_like(delta))
            for pert in perturbations:
                record(pert, method, pred, factual, expected=False)
        if return_models and model is not None:
            models[method] = model
        timings[method] = time.perf_counter() - t1

    scores = pd.DataFrame(rows)
    indices = {
        "train": idx_train,
        "validation": idx_val,
        "test": idx_target,
        "control": idx_control,
        "target": idx_target,
        "neighbours": donors_pool,
    }
    if donors_used is not None:
        indices["donors"] = donors_used
    return LeaveOneOutResult(holdout=holdout, scores=scores, lfc=lfc_frames, indices=indices,
                             disentanglement=probes_out, timings=timings, models=models)


# ----------------------------------------------------------------------------- model steps


def _train_kwargs(train_kwargs: dict[str, Any] | None, idx_train, idx_val, idx_test) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_epochs": 50, "batch_size": 256, "check_val_every_n_epoch": 1,
                              "early_stopping": False, "enable_progress_bar": False}
    kwargs.update(train_kwargs or {})
    kwargs["datasplitter_kwargs"] = {"external_indexing": [np.asarray(idx_train), np.asarray(idx_val),
                                                           np.asarray(idx_test)]}
    return kwargs


def _train_cellina(work, counts_layer, labels_key, domains_key, batch_key, model_kwargs, train_kwargs,
                   plan_kwargs, idx_train, idx_val, idx_test):
    from cellina.model import Cellina

    Cellina.setup_anndata(work, batch_key=batch_key, labels_key=labels_key, domains_key=domains_key,
                          spatial_obsm_key="spatial_x", layer=counts_layer)
    model = Cellina(work, **model_kwargs)
    plan = {"normalize_losses": True}
    plan.update(plan_kwargs or {})
    model.train(**_train_kwargs(train_kwargs, idx_train, idx_val, idx_test), plan_kwargs=plan)
    return model


def _train_scvi(work, counts_layer, domains_key, batch_key, scvi_kwargs, model_kwargs, train_kwargs,
                idx_train, idx_val, idx_test):
    import scvi

    # Same capacity as the Cellina run unless told otherwise, so the comparison is about space.
    kwargs = {k: v for k, v in (model_kwargs or {}).items() if k in {"n_hidden", "n_latent", "n_layers",
                                                                    "dropout_rate", "gene_likelihood"}}
    kwargs.update(scvi_kwargs or {})
    extra = {"categorical_covariate_keys": [batch_key]} if batch_key is not None else {}
    scvi.model.SCVI.setup_anndata(work, layer=counts_layer, batch_key=domains_key, **extra)
    model = scvi.model.SCVI(work, **kwargs)
    tk = _train_kwargs(train_kwargs, idx_train, idx_val, idx_test)
    for key in ("callbacks", "enable_checkpointing", "early_stopping_monitor"):
        tk.pop(key, None)
    model.train(**tk)
    return model


def _decode_factual(model, work, idx_control, batch_size):
    """The model's own prediction for the control cells in their observed niche."""
    return np.asarray(model.get_expression(adata=work, indices=idx_control, batch_size=batch_size,
                                           library_size=1e4))


def within_group_probe_scores(
    latent: np.ndarray,
    labels: Sequence,
    groups: Sequence,
    *,
    min_cells_per_class: int = 10,
    **kwargs: Any,
) -> dict[str, float]:
    """:func:`latent_probe_scores` within each group (e.g. domain within each cell type), cell-weighted.

    A representation that keeps cell identity also predicts the domain wherever a type lives in
    one domain only (malignant cells in the tumour); scoring within each type asks only whether
    it carries the domain beyond identity. Groups whose labels have fewer than two classes with
    ``min_cells_per_class`` cells are skipped (their cells are left out of the average).

    Returns
    -------
    dict
        ``balanced_accuracy`` and ``chance``, both averaged over the scored groups weighted by
        their number of cells, and ``n_groups``.
    """
    x = np.asarray(latent, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    g = np.asarray(groups).astype(str)
    if not (x.shape[0] == y.shape[0] == g.shape[0]):
        raise ValueError(
            f"`latent`, `labels` and `groups` must have one row per cell; got {x.shape[0]}, {y.shape[0]} "
            f"and {g.shape[0]}."
        )
    scores, chances, weights = [], [], []
    for group in np.unique(g):
        members = g == group
        classes, counts = np.unique(y[members], return_counts=True)
        kept = np.isin(y, classes[counts >= min_cells_per_class]) & members
        if np.unique(y[kept]).size < 2:
            continue
        out = latent_probe_scores(x[kept], y[kept], **kwargs)
        scores.append(out["balanced_accuracy"])
        chances.append(out["chance"])
        weights.append(int(kept.sum()))
    if not weights:
        raise ValueError("no group has two label classes with enough cells to probe.")
    return {
        "balanced_accuracy": float(np.average(scores, weights=weights)),
        "chance": float(np.average(chances, weights=weights)),
        "n_groups": len(weights),
    }


def _edge_counterfactual(model, work, idx_control, pool, n_neighbours, batch_size, seed):
    out, donors = model.get_counterfactual_expression(indices=idx_control, neighbour_indices=pool, adata=work,
                                                      batch_size=batch_size, seed=seed, precomputed=False,
                                                      n_neighbours=n_neighbours, return_donors=True)
    return np.asarray(out), np.asarray(donors)[0]


def _node_counterfactual(model, work, counts_layer, table, labels_key, idx_control, batch_size):
    from cellina.spatial import make_neighbor_perturbation

    counts_x = work.X
    _set_log_normalized_x(work, counts_layer)
    try:
        make_neighbor_perturbation(work, perturbations=table, groupby=labels_key, obsm_key_out="spatial_x_cf",
                                   base=np.e, renormalize=True, add_shift=True)
    finally:
        work.X = counts_x
    pred = model.get_perturbed_expression(adata=work, indices=idx_control, spatial_obsm_key="spatial_x_cf",
                                          batch_size=batch_size, library_size=1e4)
    return np.asarray(pred)


def _cellina_probes(model, work, idx, labels, domains, batch_size, seed):
    z = model.get_latent_representation(adata=work, indices=idx, latent_key="z", batch_size=batch_size)
    s = model.get_latent_representation(adata=work, indices=idx, latent_key="s", batch_size=batch_size)
    # domain within each cell type: identity (malignant cells live in the tumour) is not a leak
    from_z = within_group_probe_scores(z, domains[idx], labels[idx], seed=seed)
    from_s = within_group_probe_scores(s, domains[idx], labels[idx], seed=seed)
    return {
        "domain_from_z": from_z["balanced_accuracy"],
        "domain_from_s": from_s["balanced_accuracy"],
        "celltype_from_z": latent_probe_scores(z, labels[idx], seed=seed)["balanced_accuracy"],
        "domain_chance": from_z["chance"],
        "domain_from_z_pooled": latent_probe_scores(z, domains[idx], seed=seed)["balanced_accuracy"],
    }


# ----------------------------------------------------------------------------- exact truth

PROGRAMME_COLUMN = "cellina_programme"


def _resolve_truth(adata: Any, truth: bool | str) -> bool:
    from cellina.datasets import has_truth

    has = has_truth(adata)
    if truth == "auto":
        return has
    if truth is True and not has:
        raise ValueError(
            "truth=True needs a tissue from cellina.datasets.synthetic_tissue or a world from "
            f"cellina.datasets.make_world (adata.uns has no exact truth or adata.var[{PROGRAMME_COLUMN!r}] is missing)."
        )
    if truth not in (True, False):
        raise ValueError(f"`truth` must be 'auto', True or False, got {truth!r}.")
    return bool(truth)


def responsive_genes(adata: Any, cell_type: str) -> np.ndarray:
    """Boolean mask of the genes that move with the niche in ``cell_type`` on a synthetic tissue or world.

    On a :func:`cellina.datasets.synthetic_tissue` tissue these are the shared response programmes
    (``composition_response``, ``ligand_response``) and the genes of the cell type's own
    composition response (its ``type_response`` block and, in ligand senders, the ligand genes);
    on a :func:`cellina.datasets.make_world` world, the genes any channel moves in that type.

    Parameters
    ----------
    adata
        A tissue or world from :mod:`cellina.datasets`.
    cell_type
        A coarse type of that tissue (another label selects only the shared programmes of a tissue).

    Returns
    -------
    numpy.ndarray
        ``(n_vars,)`` booleans.
    """
    from cellina.datasets import has_truth, truth_for

    if not has_truth(adata):
        raise ValueError(f"adata.var has no {PROGRAMME_COLUMN!r}: only cellina.datasets tissues and worlds know their responsive genes.")
    return truth_for(adata).responsive(cell_type)


def _truth_changes(adata, idx_control, table, labels_key, perturbations, renormalize, holdout):
    """Exact factual means of the control cells, the node change, and the gene sets to score on."""
    from cellina.datasets import truth_for

    truth = truth_for(adata)
    factual = truth.mean(idx_control)
    changes: dict[str, np.ndarray] = {}
    counterfactual: dict[str, np.ndarray] = {}
    if "node" in perturbations and table is not None:
        node = truth.node(idx_control, table, groupby=labels_key, renormalize=renormalize)
        counterfactual["node"] = node
        changes["node"] = _population_lfc(node, factual)
    return {
        "truth": truth,
        "factual": factual,
        "changes": changes,
        "counterfactual": counterfactual,
        "responsive": truth.responsive(holdout),
        "null": truth.null_genes(),
    }


def _set_true_edge(truth_info, adata, idx_control, donors):
    """Exact counterfactual of the control cells when each gets exactly the donors the model drew (equal weights)."""
    cf = truth_info["truth"].edge(idx_control, np.asarray(donors))
    truth_info["counterfactual"]["edge"] = cf
    truth_info["changes"]["edge"] = _population_lfc(cf, truth_info["factual"])
