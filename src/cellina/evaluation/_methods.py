"""The protocol's predictors: Cellina (and its ablation), scvi-tools SCVI, the mean shift, the oracle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellina.keys import OBSM

from ._baselines import mean_shift_baseline, mean_shift_delta
from ._config import LeaveOneOutConfig
from ._holdout import HoldoutTissue
from ._probes import disentanglement_scores
from ._truth import ExactTruth

#: methods that train a Cellina model (and draw the edge donors)
MODEL_METHODS = ("cellina", "cellina_no_aux")
#: scvi-tools SCVI options taken from the Cellina model options, so the comparison is about space
_SHARED_CAPACITY = ("n_hidden", "n_latent", "n_layers", "dropout_rate", "gene_likelihood")


@dataclass
class MethodRun:
    """What the methods of one protocol run share: the tissue, the options, the scorer, the donors."""

    tissue: HoldoutTissue
    config: LeaveOneOutConfig
    score: Callable[..., None]
    truth: ExactTruth | None = None
    donors: np.ndarray | None = None
    probes: dict[str, dict[str, float]] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)

    def use_donors(self, donors: np.ndarray) -> None:
        """Record the edge donors; the first set drawn also fixes the exact edge truth."""
        if self.donors is None:
            self.donors = np.asarray(donors)
            if self.truth is not None:
                self.truth.set_edge(self.donors)
        elif self.truth is not None and not np.array_equal(donors, self.donors):
            raise RuntimeError(
                "the models drew different donors for the same seed; the edge truth would not match the prediction."
            )


def cellina_model_kwargs(method: str, model_kwargs: Any, preset: str | None = None) -> dict[str, Any]:
    """Constructor options of a Cellina method on top of ``preset``; the ablation turns both auxiliary
    heads off, and a type-gated decoder (the preset's or the caller's) becomes the factorised one,
    since the type gate reads the classifier the ablation removes."""
    from cellina.model import get_preset

    kwargs = dict(model_kwargs or {})
    if method == "cellina_no_aux":
        kwargs.update(classifier_lambda=0.0, discriminator_lambda=0.0)
        decoder = kwargs.get("niche_decoder", get_preset(preset).model.get("niche_decoder") if preset else None)
        if decoder == "type_gated":
            kwargs["niche_decoder"] = "factorised"
    return kwargs


def train_cellina(run: MethodRun, method: str) -> Any:
    """A Cellina model (the variant ``config.model``) trained through :func:`cellina.model.train_model` with
    the target cells held out."""
    from cellina.model import train_model

    cfg, tissue = run.config, run.tissue
    return train_model(
        tissue.work,
        labels_key=cfg.labels_key,
        domains_key=cfg.domains_key,
        batch_key=cfg.batch_key,
        layer=cfg.counts_layer,
        spatial_obsm_key=OBSM.NICHE_FEATURES,
        heldout=tissue.target,
        validation_size=cfg.validation_size,
        seed=cfg.seed,
        preset=cfg.preset,
        model=cfg.model,
        model_kwargs=cellina_model_kwargs(method, cfg.model_kwargs, cfg.preset),
        plan_kwargs={"normalize_losses": True, **dict(cfg.plan_kwargs or {})},
        **cfg.train_options(),
    )


def edge_prediction(
    model: Any, tissue: HoldoutTissue, config: LeaveOneOutConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Expected counts of the control cells with pooled donors from the target cells' neighbours
    (mean over ``config.n_draws`` draws), the donors (``(n_control, k)`` for one draw, else
    ``(n_draws, n_control, k)``) and, with several draws, each value's std across them (of the
    donors only, or of the donors and the posterior: ``config.uncertainty``)."""
    out, std, donors = model.get_counterfactual_expression(
        indices=tissue.control,
        neighbour_indices=tissue.pool,
        adata=tissue.work,
        batch_size=config.batch_size,
        seed=config.seed,
        precomputed=False,
        n_neighbours=config.n_neighbours,
        n_draws=config.n_draws,
        return_std=True,
        return_donors=True,
        uncertainty=config.uncertainty,
    )
    donors = np.asarray(donors)
    if config.n_draws == 1:
        return np.asarray(out), donors[0], None
    return np.asarray(out), donors, np.asarray(std)


def node_prediction(model: Any, tissue: HoldoutTissue, config: LeaveOneOutConfig) -> np.ndarray:
    """Expected counts (at 1e4) of the control cells with every sender type shifted by the table."""
    from cellina.counterfactual import node_counterfactual

    result = node_counterfactual(
        model,
        tissue.work,
        tissue.shifts,
        tissue.control,
        sender_key=config.labels_key,
        add_shift=True,
        renormalize=True,
        library_size=1e4,
        batch_size=config.batch_size,
    )
    return np.asarray(result.expression)


def _run_cellina(run: MethodRun, method: str) -> Any:
    cfg, tissue = run.config, run.tissue
    model = train_cellina(run, method)
    method = cfg.method_label(method)
    factual = np.asarray(
        model.get_expression(adata=tissue.work, indices=tissue.control, batch_size=cfg.batch_size, library_size=1e4)
    )
    if "edge" in cfg.perturbations:
        pred, donors, std = edge_prediction(model, tissue, cfg)
        run.use_donors(donors)
        run.score("edge", method, pred, factual, std=std)
    if "node" in cfg.perturbations:
        run.score("node", method, node_prediction(model, tissue, cfg), factual)
    if cfg.probes:
        z, s = (
            model.get_latent_representation(
                adata=tissue.work, indices=tissue.train, latent_key=key, batch_size=cfg.batch_size
            )
            for key in ("z", "s")
        )
        niche = tissue.work.obsm[OBSM.NICHE_FEATURES][tissue.train] if OBSM.NICHE_FEATURES in tissue.work.obsm else None
        run.probes[method] = disentanglement_scores(
            z, s, tissue.labels[tissue.train], tissue.domains[tissue.train], cfg.seed, niche=niche
        )
    return model


def _run_scvi(run: MethodRun, method: str) -> Any:
    import scvi

    cfg, tissue = run.config, run.tissue
    kwargs = {k: v for k, v in (cfg.model_kwargs or {}).items() if k in _SHARED_CAPACITY}
    kwargs.update(cfg.scvi_kwargs or {})
    extra = {"categorical_covariate_keys": [cfg.batch_key]} if cfg.batch_key is not None else {}
    scvi.model.SCVI.setup_anndata(tissue.work, layer=cfg.counts_layer, batch_key=cfg.domains_key, **extra)
    model = scvi.model.SCVI(tissue.work, **kwargs)
    options = {
        k: v
        for k, v in cfg.train_options().items()
        if k not in ("callbacks", "enable_checkpointing", "early_stopping_monitor")
    }
    split = [tissue.train, tissue.validation, tissue.target]
    model.train(**{"check_val_every_n_epoch": 1, **options}, datasplitter_kwargs={"external_indexing": split})
    pred = model.get_normalized_expression(
        indices=tissue.control, transform_batch=cfg.target_domain, batch_size=cfg.batch_size, return_numpy=True
    )
    factual = model.get_normalized_expression(indices=tissue.control, batch_size=cfg.batch_size, return_numpy=True)
    for pert in cfg.perturbations:
        run.score(pert, method, pred, factual)
    if cfg.probes:
        z = model.get_latent_representation(indices=tissue.train, batch_size=cfg.batch_size)
        niche = tissue.work.obsm[OBSM.NICHE_FEATURES][tissue.train] if OBSM.NICHE_FEATURES in tissue.work.obsm else None
        run.probes[method] = disentanglement_scores(
            z, None, tissue.labels[tissue.train], tissue.domains[tissue.train], cfg.seed, niche=niche
        )
    return model


def _run_oracle(run: MethodRun, method: str) -> None:
    if run.truth is None:
        raise ValueError("method 'oracle' needs the exact truth of a cellina.datasets synthetic tissue.")
    for pert in run.config.perturbations:
        run.score(pert, method, run.truth.counterfactual[pert], run.truth.factual)


def _run_mean_shift(run: MethodRun, method: str) -> None:
    cfg, tissue = run.config, run.tissue
    others = tissue.labels != tissue.holdout
    src = (tissue.domains == cfg.control_domain) & others
    tgt = (tissue.domains == cfg.target_domain) & others
    counts = tissue.counts
    delta = mean_shift_delta(counts[src], counts[tgt], tissue.labels[src], tissue.labels[tgt])
    pred = mean_shift_baseline(tissue.control_counts, delta=delta)
    factual = mean_shift_baseline(tissue.control_counts, delta=np.zeros_like(delta))
    for pert in cfg.perturbations:
        run.score(pert, method, pred, factual, expected=False)


_RUNNERS: dict[str, Callable[[MethodRun, str], Any]] = {
    "cellina": _run_cellina,
    "cellina_no_aux": _run_cellina,
    "scvi": _run_scvi,
    "oracle": _run_oracle,
    "mean_shift": _run_mean_shift,
}


def run_method(method: str, run: MethodRun) -> None:
    """Predict and score ``method``; trained models are kept in ``run.models``."""
    model = _RUNNERS[method](run, method)
    if model is not None and run.config.return_models:
        run.models[run.config.method_label(method)] = model
