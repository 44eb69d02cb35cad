"""The Cellina objective: negative ELBO plus the weighted auxiliary heads."""

from __future__ import annotations

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import LossOutput
from torch.distributions import kl_divergence

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import METRIC_CLF_LOSS, METRIC_VAE_LOSS, RAW
from ._losses import nb_log_likelihood
from ._module_evaluation import standard_normal


class ObjectiveMixin:
    """``loss`` of :class:`~cellina.model.CellinaModule` and its reconstruction and KL terms."""

    def _reconstruction_loss(self, x: torch.Tensor, generative_outputs: dict) -> torch.Tensor:
        px = generative_outputs[MK.PX_KEY]
        if self.gene_likelihood == "nb":
            return -nb_log_likelihood(x, px.mu, generative_outputs[MK.PX_R_KEY])
        return -px.log_prob(x).sum(-1)

    def _kl_terms(self, inference_outputs: dict, generative_outputs: dict) -> dict[str, torch.Tensor]:
        # Against N(0, I) on the posteriors' own shape: one value per cell whatever was decoded.
        kl_z = kl_divergence(inference_outputs[MK.QZ_KEY], standard_normal(inference_outputs[MK.QZ_KEY])).sum(-1)
        kl_s = kl_divergence(inference_outputs[MK.QS_KEY], standard_normal(inference_outputs[MK.QS_KEY])).sum(-1)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(kl_z)
        else:
            kl_l = kl_divergence(inference_outputs[MK.QL_KEY], generative_outputs[MK.PL_KEY]).sum(-1)
        return {MK.KL_Z: kl_z, MK.KL_S: kl_s, MK.KL_L: kl_l}

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float | torch.Tensor = 1.0,
        classifier_scale: float | torch.Tensor = 1.0,
        discriminator_scale: float | torch.Tensor = 1.0,
        domain_classifier_scale: float | torch.Tensor = 1.0,
        niche_adversary_scale: float | torch.Tensor = 1.0,
    ) -> LossOutput:
        """``L_VAE + lambda_clf a_clf L_clf + lambda_adv a_adv L_adv + lambda_dc a_dc L_dc + lambda_n a_n L_n``.

        ``L_VAE`` is the mean over cells of the negative log-likelihood plus
        ``kl_weight * (KL(z) + spatial_kl_weight * KL(s)) + KL(l)``. ``L_clf`` is the
        cross-entropy of the cell-type classifier on ``z``; ``L_adv`` the encoder's adversarial
        objective (``adversarial_loss``); ``L_dc`` the cross-entropy of the domain classifier
        on ``s``; ``L_n`` the encoder's objective against the niche regressor (the distance of its
        prediction from the type's mean ``s``). The ``lambda`` are the module's weights, the ``a`` (``*_scale``) the plan's
        loss-normalisation factors.

        Returns
        -------
        LossOutput
            ``loss`` is the whole objective; ``extra_metrics`` hold ``vae_loss``, each head's
            weighted term (``classifier_loss``, ``fool_loss``, ``domain_classifier_loss``), its
            unweighted value (``*_raw``) and accuracy, and the mean ``kl_z`` / ``kl_s``.
        """
        scales = {
            "classifier": classifier_scale,
            "discriminator": discriminator_scale,
            "domain_classifier": domain_classifier_scale,
            "niche_adversary": niche_adversary_scale,
        }
        return self._loss_output(tensors, inference_outputs, generative_outputs, kl_weight, scales)

    def _loss_output(self, tensors, inference_outputs, generative_outputs, kl_weight, scales: dict) -> LossOutput:
        """The objective with the heads' normalisation factors ``scales`` (keyed by head)."""
        rec = self._reconstruction_loss(tensors[REGISTRY_KEYS.X_KEY], generative_outputs)
        kl = self._kl_terms(inference_outputs, generative_outputs)
        vae_loss = torch.mean(rec + kl_weight * (kl[MK.KL_Z] + self.spatial_kl_weight * kl[MK.KL_S]) + kl[MK.KL_L])
        heads = self._head_terms(tensors, inference_outputs, scales)
        total = vae_loss
        for name, _, _ in self.NORMALISED_LOSSES:
            if name in heads:
                total = total + heads[name]
        extra = {
            METRIC_VAE_LOSS: vae_loss.detach(),
            "kl_z": kl[MK.KL_Z].detach().mean(),
            "kl_s": kl[MK.KL_S].detach().mean(),
        }
        extra.update({k: v.detach() for k, v in heads.items()})
        classification = {}
        if METRIC_CLF_LOSS in heads:
            labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
            classification = {
                "classification_loss": heads[METRIC_CLF_LOSS + RAW],
                "logits": inference_outputs[MK.CLASSIFIER_LOGITS_KEY].detach(),
                "true_labels": labels,
            }
        return LossOutput(loss=total, reconstruction_loss=rec, kl_local=kl, extra_metrics=extra, **classification)
