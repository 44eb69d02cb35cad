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

Training, edge and node counterfactuals go through the library's single entries
(:func:`cellina.model.train_model`, the model's ``get_counterfactual_expression``,
:func:`cellina.counterfactual.node_counterfactual`), as the command line and the plugin do.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import pandas as pd

from ._config import METHODS, PERTURBATIONS, LeaveOneOutConfig
from ._holdout import HoldoutTissue, prepare_holdout
from ._lfc import get_lfc, log2_change_std
from ._methods import MODEL_METHODS, MethodRun, run_method
from ._metrics import energy_distance, lfc_scores, truth_scores
from ._truth import ExactTruth, population_lfc, resolve_truth

__all__ = ["METHODS", "PERTURBATIONS", "LeaveOneOutConfig", "LeaveOneOutResult", "leave_one_out"]


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
        ``responsive_change_true`` and, for Cellina edge runs with ``n_draws > 1``,
        ``truth_calibration`` (share of responsive genes whose exact change lies within two
        spreads across draws, :func:`log2_change_std`, of the predicted change).
    lfc
        Per (perturbation, method): a genes-indexed frame with ``true_lfc`` (observed),
        ``pred_lfc`` (predicted), ``is_deg`` and, with truth, ``true_change`` / ``pred_change``
        (and ``pred_change_std`` with several draws).
    indices
        Integer cell indices used: ``train``, ``validation``, ``test``, ``control``, ``target``,
        ``neighbours`` (the donor pool) and, when donors were drawn, ``donors`` (``(n_draws, n_control, k)``
        with several draws).
    disentanglement
        Per method with latents: probe accuracies (see :func:`latent_probe_scores`).
    timings
        Seconds spent per stage.
    models
        The trained models (only with ``return_models=True``).
    predictions
        Per (perturbation, method): the predicted expression of the control cells (only with
        ``return_models=True``).
    """

    holdout: str
    scores: pd.DataFrame
    lfc: dict[tuple[str, str], pd.DataFrame]
    indices: dict[str, np.ndarray]
    disentanglement: dict[str, dict[str, float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    predictions: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Scores with the held-out type as a column (for concatenating several runs)."""
        out = self.scores.copy()
        out.insert(0, "holdout", self.holdout)
        return out


def _poisson_cells(pred: Any, totals: np.ndarray, seed: int) -> np.ndarray:
    """Poisson counts drawn from predicted expected expression at each cell's observed library size."""
    mat = np.asarray(pred, dtype=np.float64)
    rows = mat.sum(axis=1, keepdims=True)
    rate = np.divide(mat, rows, out=np.zeros_like(mat), where=rows > 0) * totals[:, None]
    return np.random.default_rng(seed).poisson(np.clip(rate, 0.0, None)).astype(np.float64)


class _Scores:
    """Collects one score row and one log-fold-change frame per (perturbation, method)."""

    def __init__(self, tissue: HoldoutTissue, config: LeaveOneOutConfig, truth: ExactTruth | None) -> None:
        self.tissue, self.config, self.truth = tissue, config, truth
        self.rows: list[dict[str, Any]] = []
        self.frames: dict[tuple[str, str], pd.DataFrame] = {}
        self.predictions: dict[tuple[str, str], np.ndarray] = {}
        self.control_totals = np.asarray(tissue.control_counts.sum(axis=1)).ravel()

    def add(
        self, pert: str, method: str, pred: Any, factual: Any | None, expected: bool = True, std: Any = None
    ) -> None:
        """Score ``pred`` (expected values unless ``expected=False``) against the observed target cells;
        ``std``, the per-cell spread across draws, adds ``truth_calibration`` on synthetic tissue."""
        cfg, tissue = self.config, self.tissue
        k = cfg.n_deg if pert == "edge" or cfg.n_deg_node is None else cfg.n_deg_node
        true_lfc, pred_lfc, deg = get_lfc(tissue.control_counts, tissue.target_counts, pred, n_deg=k)
        row: dict[str, Any] = {"perturbation": pert, "method": method, **lfc_scores(true_lfc, pred_lfc, k=k)}
        if cfg.energy:
            # Expected values have no count noise, observed cells do: sample counts before comparing
            # the populations, or the energy distance measures noise rather than the change.
            cells = _poisson_cells(pred, self.control_totals, cfg.seed) if expected else pred
            row["energy_distance"] = energy_distance(
                cells, tissue.target_counts, max_cells=cfg.energy_max_cells, seed=cfg.seed
            )
        frame = pd.DataFrame({"true_lfc": true_lfc, "pred_lfc": pred_lfc}, index=tissue.work.var_names.copy())
        frame["is_deg"] = False
        frame.iloc[deg, frame.columns.get_loc("is_deg")] = True
        if self.truth is not None and pert in self.truth.changes and factual is not None:
            pred_change = population_lfc(pred, factual)
            true_change = self.truth.changes[pert]
            change_std = log2_change_std(pred, std) if std is not None else None
            row.update(truth_scores(pred_change, true_change, self.truth.responsive, self.truth.null, change_std))
            frame["true_change"] = true_change
            frame["pred_change"] = pred_change
            if change_std is not None:
                frame["pred_change_std"] = change_std
        self.rows.append(row)
        self.frames[(pert, method)] = frame
        if cfg.return_models:
            self.predictions[(pert, method)] = np.asarray(pred)


def _options(config: LeaveOneOutConfig | None, options: Mapping[str, Any]) -> LeaveOneOutConfig:
    names = {f.name for f in fields(LeaveOneOutConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise TypeError(f"leave_one_out() got unknown option(s) {unknown}; see LeaveOneOutConfig.")
    return replace(config or LeaveOneOutConfig(), **options)


def _baseline_donors(tissue: HoldoutTissue, config: LeaveOneOutConfig) -> np.ndarray:
    """Donors drawn the way the model draws them, so baselines get an edge truth without a model."""
    from cellina.counterfactual import sample_donors

    rng = np.random.default_rng(config.seed)
    draws = [sample_donors(tissue.control, tissue.pool, config.n_neighbours, rng) for _ in range(config.n_draws)]
    return draws[0] if config.n_draws == 1 else np.stack(draws)


def leave_one_out(
    adata: Any, holdout: str, config: LeaveOneOutConfig | None = None, **options: Any
) -> LeaveOneOutResult:
    """Run the tutorial's hold-out-one-type protocol and score every method.

    Parameters
    ----------
    adata
        AnnData with counts, ``obsm["spatial"]`` coordinates, cell types and domains. It is
        never modified: the run works on a prepared copy.
    holdout
        Cell type held out in the target domain.
    config
        The protocol's options (:class:`LeaveOneOutConfig`; default: its defaults).
    **options
        Any field of :class:`LeaveOneOutConfig`, on top of ``config`` (``methods=...``,
        ``model_kwargs=...``, ``seed=...``).

    Returns
    -------
    LeaveOneOutResult
    """
    config = _options(config, options)
    t0 = time.perf_counter()
    tissue = prepare_holdout(adata, holdout, config)
    truth = None
    if resolve_truth(adata, config.truth):
        truth = ExactTruth(adata, tissue.control, tissue.holdout)
        if tissue.table is not None:
            truth.set_node(tissue.table, groupby=config.labels_key)
    elif "oracle" in config.methods:
        raise ValueError(
            "method 'oracle' needs the exact truth of a cellina.datasets synthetic tissue (truth=False "
            "or adata.uns['cellina_truth'] missing)."
        )
    timings = {"prepare": time.perf_counter() - t0}
    scores = _Scores(tissue, config, truth)
    run = MethodRun(tissue, config, scores.add, truth)
    if truth is not None and "edge" in config.perturbations and not set(config.methods) & set(MODEL_METHODS):
        run.use_donors(_baseline_donors(tissue, config))
    # Model-based methods first: the edge truth is evaluated for the donors the first model drew,
    # and the baselines are scored against that same truth.
    for method in sorted(config.methods, key=lambda m: m not in MODEL_METHODS):
        t1 = time.perf_counter()
        run_method(method, run)
        timings[method] = time.perf_counter() - t1
    indices = {**tissue.indices(), **({"donors": run.donors} if run.donors is not None else {})}
    return LeaveOneOutResult(
        holdout=tissue.holdout,
        scores=pd.DataFrame(scores.rows),
        lfc=scores.frames,
        indices=indices,
        disentanglement=run.probes,
        timings=timings,
        models=run.models,
        predictions=scores.predictions,
    )
