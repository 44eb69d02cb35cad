"""Adversarial training plan for :class:`~cellina.model.CellinaModule`."""

from __future__ import annotations

import math
from typing import Literal

import torch
from scvi import REGISTRY_KEYS
from scvi.train import TrainingPlan
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._constants import (
    METRIC_DISC_ACC,
    METRIC_DISC_LOSS,
    METRIC_KL_WEIGHT,
    METRIC_NICHE_REG_LOSS,
    METRIC_VAE_LOSS,
    RAW,
)
from ._module import CellinaModule

#: longest automatic KL warm-up, in epochs
KL_WARMUP_CAP = 100


def auto_kl_warmup_epochs(max_epochs: int | None) -> int:
    """Default KL warm-up length: a quarter of ``max_epochs`` (at least 1, at most 100).

    scvi-tools warms up over 400 epochs, so runs that stop after 50-100 epochs would never
    reach the full ELBO; a quarter of the planned run reaches full weight early enough for
    early stopping and checkpoint selection to see the final objective.

    Parameters
    ----------
    max_epochs
        Planned number of epochs (``None`` gives the cap).

    Returns
    -------
    int
        Number of warm-up epochs.
    """
    if not max_epochs:
        return KL_WARMUP_CAP
    return int(min(KL_WARMUP_CAP, max(1, math.ceil(max_epochs / 4))))


def linear_warmup(
    epoch: int,
    step: int,
    n_epochs: int | None,
    n_steps: int | None,
    max_weight: float = 1.0,
    min_weight: float = 0.0,
) -> float:
    """Weight rising linearly from ``min_weight`` to ``max_weight`` over epochs (or steps).

    The schedule of scvi-tools' training plans: epochs take precedence over steps; with
    neither, the weight is ``max_weight`` from the start.
    """
    if min_weight > max_weight:
        raise ValueError(f"min_kl_weight={min_weight} is larger than max_kl_weight={max_weight}.")
    span = max_weight - min_weight
    if n_epochs:
        if epoch < n_epochs:
            return min_weight + span * epoch / n_epochs
    elif n_steps and step < n_steps:
        return min_weight + span * step / n_steps
    return max_weight


def _fused_creator(optimizer: str, lr: float, eps: float, weight_decay: float):
    """Adam/AdamW with the fused kernel: the same update as the per-tensor loop, about ten
    times faster per step on CPU for the gene-wide layers."""
    optimizer_cls = {"Adam": torch.optim.Adam, "AdamW": torch.optim.AdamW}[optimizer]

    def create(params):
        params = list(params)
        kwargs = {"lr": lr, "eps": eps, "weight_decay": weight_decay}
        if params and all(p.device.type in ("cpu", "cuda") for p in params):
            kwargs["fused"] = True
        return optimizer_cls(params, **kwargs)

    return create


class CellinaTrainingPlan(TrainingPlan):
    """Alternating adversarial schedule with optional loss normalisation.

    Per minibatch the module runs one forward pass, then

    1. **discriminator step** (VAE parameters frozen with ``toggle_optimizer``): the
       discriminator minimises ``discriminator_lambda`` times its cross-entropy predicting the
       domain from a *detached* ``z`` (and the cell type, with the type-aware discriminator,
       which also counts each type's domains here);
    2. **VAE step** (discriminator frozen): encoders, decoder and the other heads minimise the
       module's objective (:meth:`CellinaModule.loss`) with the loss-normalisation factors.

    With ``normalize_losses=True`` each head's factor is ``mean|L_VAE| / (mean|L_raw| + eps)``
    over epoch 0, then frozen; ``L_raw`` is the head's unweighted loss. By default epoch 0
    trains with factors 1 while measuring; with ``train_while_normalizing=False`` it only
    measures, as published. The factors are buffers of the module (saved with it) and are
    logged every epoch.

    The KL weight rises linearly over ``n_epochs_kl_warmup`` epochs; ``"auto"`` (default) uses
    a quarter of ``max_epochs``, at most 100 (:func:`auto_kl_warmup_epochs`), and an integer
    such as scvi-tools' 400 gives that schedule. ``vae_loss_validation`` is ``L_VAE`` at KL
    weight 1 (``validation_kl_weight="full"``), so early stopping compares like with like
    across the warm-up, or at the current warm-up weight (``"warmup"``, as published).
    ``elbo_*`` is the plain negative ELBO, ``kl_z_*`` / ``kl_s_*`` its KL terms.

    All state lives in the module and the plan; gradients flow only through
    :meth:`manual_backward`, so Lightning's multi-device strategies (DDP) apply.

    Parameters
    ----------
    module
        A :class:`~cellina.model.CellinaModule`.
    lr
        Learning rate of the VAE optimiser.
    discriminator_lr
        Learning rate of the discriminator optimiser (defaults to ``lr``).
    weight_decay, eps, optimizer, optimizer_creator
        As in :class:`scvi.train.TrainingPlan`; ``"Adam"``/``"AdamW"`` use the fused kernel.
    normalize_losses
        Measure and freeze the loss-normalisation factors over epoch 0.
    train_while_normalizing
        Whether epoch 0 also trains (factors 1) while the factors are measured.
    normalization_eps
        ``eps`` of the factor ratio.
    n_epochs_kl_warmup
        Warm-up epochs, ``"auto"`` or ``None`` (then ``n_steps_kl_warmup``, or no warm-up).
    n_steps_kl_warmup
        Warm-up in steps, used when ``n_epochs_kl_warmup`` is ``None``.
    validation_kl_weight
        ``"full"`` or ``"warmup"``: the KL weight of ``vae_loss_validation``.
    **kwargs
        Further :class:`scvi.train.TrainingPlan` arguments.
    """

    def __init__(
        self,
        module: CellinaModule,
        *,
        lr: float = 1e-3,
        discriminator_lr: float | None = None,
        weight_decay: float = 1e-6,
        eps: float = 0.01,
        optimizer: Literal["Adam", "AdamW", "Custom"] = "Adam",
        optimizer_creator=None,
        normalize_losses: bool = False,
        train_while_normalizing: bool = True,
        normalization_eps: float = 1e-8,
        n_epochs_kl_warmup: int | Literal["auto"] | None = "auto",
        n_steps_kl_warmup: int | None = None,
        validation_kl_weight: Literal["full", "warmup"] = "full",
        **kwargs,
    ):
        if isinstance(n_epochs_kl_warmup, str) and n_epochs_kl_warmup != "auto":
            raise ValueError(f"n_epochs_kl_warmup must be an int, None or 'auto', got {n_epochs_kl_warmup!r}.")
        if validation_kl_weight not in ("full", "warmup"):
            raise ValueError(f"validation_kl_weight must be 'full' or 'warmup', got {validation_kl_weight!r}.")
        self._auto_kl_warmup = n_epochs_kl_warmup == "auto"
        if optimizer in ("Adam", "AdamW"):
            optimizer_creator = _fused_creator(optimizer, lr, eps, weight_decay)
            optimizer = "Custom"
        super().__init__(
            module,
            lr=lr,
            weight_decay=weight_decay,
            eps=eps,
            optimizer=optimizer,
            optimizer_creator=optimizer_creator,
            n_epochs_kl_warmup=None if self._auto_kl_warmup else n_epochs_kl_warmup,
            n_steps_kl_warmup=n_steps_kl_warmup,
            **kwargs,
        )
        unknown = sorted(set(self.loss_kwargs) - {"kl_weight"})
        if unknown:
            # scvi-tools would forward these to module.loss; the Cellina objective takes
            # its weights from the module and the plan, so an unknown key is a typo.
            raise ValueError(f"Unknown plan_kwargs for CellinaTrainingPlan: {unknown}.")
        self.discriminator_lr = lr if discriminator_lr is None else discriminator_lr
        self.normalize_losses = normalize_losses
        self.train_while_normalizing = bool(train_while_normalizing)
        self.normalization_eps = normalization_eps
        self.validation_kl_weight = validation_kl_weight
        self.automatic_optimization = False
        # the auxiliary losses normalised (the module names them), with their factor buffers
        self._heads = tuple(module.NORMALISED_LOSSES)
        # running sums of |L_VAE| and each head's |L_raw|, and the number of batches, in epoch 0
        self._norm_sums = torch.zeros(len(self._heads) + 2)
        self._epoch_sums: dict[str, dict[str, list]] = {}

    # ------------------------------------------------------------------ schedule
    def _max_epochs(self) -> int | None:
        try:
            return self.trainer.max_epochs
        except RuntimeError:  # not attached to a trainer yet (e.g. during construction)
            return None

    @property
    def kl_weight(self) -> torch.Tensor:
        """KL weight of the current epoch (linear warm-up)."""
        n_epochs = self.n_epochs_kl_warmup
        if getattr(self, "_auto_kl_warmup", False):
            n_epochs = auto_kl_warmup_epochs(self._max_epochs())
        weight = linear_warmup(
            self.current_epoch,
            self.global_step,
            n_epochs,
            self.n_steps_kl_warmup if n_epochs is None else None,
            self.max_kl_weight,
            self.min_kl_weight,
        )
        return torch.tensor(float(weight), device=self.device)

    def _scales(self) -> dict[str, torch.Tensor]:
        return {keyword: getattr(self.module, buffer) for _, buffer, keyword in self._heads}

    @property
    def _measuring(self) -> bool:
        return bool(self.normalize_losses and not bool(self.module.alphas_frozen))

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Discriminator step on a detached ``z``, then the VAE step."""
        if self._measuring and not self.train_while_normalizing:
            return self._measure_only(batch)
        opts = self.optimizers()
        opt_vae, opt_disc = (opts if isinstance(opts, list) else [opts, None])[:2]
        n_obs = batch[REGISTRY_KEYS.X_KEY].shape[0]
        inference_outputs, generative_outputs = self.module(batch, compute_loss=False)
        step_metrics = {}
        if opt_disc is not None:
            step_metrics = self._discriminator_step(opt_disc, batch, inference_outputs)
        self.toggle_optimizer(opt_vae)
        loss_output = self.module.loss(
            batch, inference_outputs, generative_outputs, kl_weight=self.kl_weight, **self._scales()
        )
        opt_vae.zero_grad()
        self.manual_backward(loss_output.loss)
        opt_vae.step()
        self.untoggle_optimizer(opt_vae)
        if self._measuring:
            self._accumulate_magnitudes(loss_output.extra_metrics)
        step_metrics.update(self._loss_metrics(loss_output))
        self._accumulate("train", step_metrics, n_obs)
        return loss_output.loss.detach()

    def _discriminator_step(self, opt_disc, batch: dict, inference_outputs: dict) -> dict[str, torch.Tensor]:
        """The adversaries learn from detached latents: the domain from ``z``, the niche code from ``z``."""
        module, metrics = self.module, {}
        z = inference_outputs[MK.Z_KEY].detach()
        labels = batch.get(REGISTRY_KEYS.LABELS_KEY)
        self.toggle_optimizer(opt_disc)
        loss = torch.zeros((), device=z.device)
        if module.discriminator is not None:
            module.count_domains(labels, batch[RK.DOMAINS_KEY])
            disc_loss, disc_acc = module.discriminator_loss(z, batch[RK.DOMAINS_KEY], labels)
            loss = loss + module.discriminator_lambda * disc_loss
            metrics.update({METRIC_DISC_LOSS: disc_loss.detach(), METRIC_DISC_ACC: disc_acc})
        if module.niche_regressor is not None:
            reg_loss = module.niche_regressor_loss(z, inference_outputs[MK.QSM_KEY].detach(), labels)
            loss = loss + module.niche_adversary_lambda * reg_loss
            metrics[METRIC_NICHE_REG_LOSS] = reg_loss.detach()
        opt_disc.zero_grad()
        self.manual_backward(loss)
        opt_disc.step()
        self.untoggle_optimizer(opt_disc)
        return metrics

    def _measure_only(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Epoch 0 of the published normalisation: measure the loss magnitudes, train nothing."""
        with torch.no_grad():
            inference_outputs, generative_outputs = self.module(batch, compute_loss=False)
            loss_output = self.module.loss(
                batch, inference_outputs, generative_outputs, kl_weight=self.kl_weight, **self._scales()
            )
        self._accumulate_magnitudes(loss_output.extra_metrics)
        self._accumulate("train", self._loss_metrics(loss_output), batch[REGISTRY_KEYS.X_KEY].shape[0])
        return loss_output.loss.detach()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Log the validation objective and the discriminator's accuracy."""
        inference_outputs, generative_outputs = self.module(batch, compute_loss=False)
        kl_weight = 1.0 if self.validation_kl_weight == "full" else self.kl_weight
        loss_output = self.module.loss(
            batch, inference_outputs, generative_outputs, kl_weight=kl_weight, **self._scales()
        )
        step_metrics = self._loss_metrics(loss_output)
        if self.module.discriminator is not None:
            disc_loss, disc_acc = self.module.discriminator_loss(
                inference_outputs[MK.Z_KEY], batch[RK.DOMAINS_KEY], batch.get(REGISTRY_KEYS.LABELS_KEY)
            )
            step_metrics.update({METRIC_DISC_LOSS: disc_loss, METRIC_DISC_ACC: disc_acc})
        self._accumulate("validation", step_metrics, batch[REGISTRY_KEYS.X_KEY].shape[0])

    # ------------------------------------------------------------------ metrics
    @staticmethod
    def _loss_metrics(loss_output) -> dict[str, torch.Tensor]:
        """Per-cell means of the ELBO terms plus the module's extra metrics."""
        rec = loss_output.reconstruction_loss_sum / loss_output.n_obs_minibatch
        kl = loss_output.kl_local_sum / loss_output.n_obs_minibatch
        return {
            "loss": loss_output.loss,
            "elbo": rec + kl,
            "reconstruction_loss": rec,
            "kl_local": kl,
            **loss_output.extra_metrics,
        }

    def _accumulate(self, mode: str, values: dict[str, torch.Tensor], n_obs: int) -> None:
        # Lightning's self.log costs ~2 ms per call on CPU whatever the tensor size, which
        # at small batches rivals the step itself; metrics are therefore summed here and
        # logged once per epoch (sample-weighted means, summed across devices).
        store = self._epoch_sums.setdefault(mode, {})
        for key, value in values.items():
            value = torch.as_tensor(value).detach().float() * n_obs
            if key in store:
                store[key][0] += value
                store[key][1] += n_obs
            else:
                store[key] = [value, n_obs]

    def _flush(self, mode: str) -> dict[str, torch.Tensor]:
        store = self._epoch_sums.pop(mode, {})
        if not store:
            return {}
        keys = sorted(store)
        sums = torch.stack([store[k][0] for k in keys]).to(self.device)
        counts = torch.tensor([float(store[k][1]) for k in keys], device=self.device)
        if self.use_sync_dist:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        means = sums / counts
        out = {(f"{mode}_loss" if key == "loss" else f"{key}_{mode}"): means[i] for i, key in enumerate(keys)}
        if "elbo" in store:
            out[f"kl_global_{mode}"] = torch.zeros((), device=self.device)
        return out

    # ------------------------------------------------------------------ normalisation
    def _accumulate_magnitudes(self, extra: dict[str, torch.Tensor]) -> None:
        if self._norm_sums.device != self.device:
            self._norm_sums = self._norm_sums.to(self.device)
        zero = torch.zeros((), device=self.device)
        values = [extra[METRIC_VAE_LOSS].abs()]
        values += [extra.get(name + RAW, zero).abs() for name, _, _ in self._heads]
        values.append(torch.ones((), device=self.device))
        self._norm_sums += torch.stack(values)

    def _freeze_alphas(self) -> None:
        # Summed over devices so every rank freezes the same factors.
        sums = self.trainer.strategy.reduce(self._norm_sums.to(self.device), reduce_op="sum")
        if float(sums[-1]) == 0:
            return
        means = (sums[:-1] / sums[-1]).tolist()
        m = self.module
        for (_, buffer, _), mean in zip(self._heads, means[1:]):
            if mean > 0:
                getattr(m, buffer).fill_(means[0] / (mean + self.normalization_eps))
        m.alphas_frozen.fill_(True)
        self._norm_sums = torch.zeros_like(self._norm_sums)

    def on_train_epoch_end(self) -> None:
        """Freeze the factors after epoch 0 and log the epoch's training metrics."""
        if self._measuring:
            self._freeze_alphas()
        metrics = self._flush("train")
        metrics[METRIC_KL_WEIGHT] = self.kl_weight
        for buffer in self.module.logged_loss_factors():
            metrics[buffer] = getattr(self.module, buffer).detach().clone()
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=False)
        if self.reduce_lr_on_plateau and "validation" not in self.lr_scheduler_metric:
            self.lr_schedulers().step(self.trainer.callback_metrics[self.lr_scheduler_metric])

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation metrics and step a validation-metric scheduler."""
        metrics = self._flush("validation")
        if metrics:
            self.log_dict(metrics, on_step=False, on_epoch=True)
        if self.reduce_lr_on_plateau and "validation" in self.lr_scheduler_metric:
            metric = self.trainer.callback_metrics.get(self.lr_scheduler_metric)
            if metric is not None:
                self.lr_schedulers().step(metric)

    # ------------------------------------------------------------------ published names
    @property
    def _normalize_losses(self) -> bool:
        return bool(self.normalize_losses)

    @property
    def _warmup_done(self) -> bool:
        """Whether the loss-normalisation factors are measured and frozen."""
        return bool(self.module.alphas_frozen)

    @property
    def _scale_clf(self) -> float:
        return float(self.module.alpha_classifier)

    @property
    def _scale_fool(self) -> float:
        return float(self.module.alpha_adversarial)

    @property
    def _scale_domain_classifier(self) -> float:
        return float(self.module.alpha_domain_classifier)

    @property
    def _scale_spatial(self) -> float:
        """Factor of the graph variant's spatial (contrastive) loss; 1 for a module without one."""
        return float(getattr(self.module, "alpha_spatial", 1.0))

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self):
        """One optimiser for the VAE (encoders, decoder, classifiers), one for the discriminator."""
        params = [p for p in self.module.vae_parameters() if p.requires_grad]
        opt_vae = self.get_optimizer_creator()(params)
        scheds = []
        if self.reduce_lr_on_plateau:
            plateau = ReduceLROnPlateau(
                opt_vae,
                patience=self.lr_patience,
                factor=self.lr_factor,
                threshold=self.lr_threshold,
                min_lr=self.lr_min,
                threshold_mode="abs",
            )
            scheds.append({"scheduler": plateau, "monitor": self.lr_scheduler_metric})
        opts = [opt_vae]
        disc_params = self.module.discriminator_parameters()
        if disc_params:
            opts.append(
                torch.optim.Adam(
                    disc_params,
                    lr=self.discriminator_lr,
                    eps=self.eps,
                    weight_decay=self.weight_decay,
                    fused=all(p.device.type in ("cpu", "cuda") for p in disc_params),
                )
            )
        if scheds:
            return opts, scheds
        return opts if len(opts) > 1 else opts[0]
