"""The auxiliary heads of the Cellina module: cell-type classifier, domain adversary, domain classifier.

Kept apart from the VAE itself; :class:`~cellina.model.CellinaModule` mixes them in.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.module import Classifier

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._constants import (
    METRIC_CLF_ACC,
    METRIC_CLF_LOSS,
    METRIC_DOMCLF_ACC,
    METRIC_DOMCLF_LOSS,
    METRIC_FOOL_LOSS,
    METRIC_NICHE_FOOL_LOSS,
    RAW,
)
from ._losses import negative_cross_entropy, soft_target_cross_entropy, uniform_target_cross_entropy

#: weight of a new minibatch in each type's running mean niche code
S_MEAN_MOMENTUM = 0.05


def niche_regressor(n_input: int, n_output: int, n_hidden: int = 64) -> torch.nn.Module:
    """The niche adversary: an MLP from ``[z; one-hot type]`` to the niche code ``s``."""
    return torch.nn.Sequential(
        torch.nn.Linear(n_input, n_hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(n_hidden, n_hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(n_hidden, n_output),
    )


#: defaults of the auxiliary heads (scvi-tools ``Classifier`` arguments)
CLASSIFIER_DEFAULTS = {"n_hidden": 64, "n_layers": 1}
DISCRIMINATOR_DEFAULTS = {"n_hidden": 64, "n_layers": 2}


def auxiliary_head(n_input: int, n_labels: int, defaults: dict, kwargs: dict | None) -> Classifier:
    options = {**defaults, **(kwargs or {})}
    for reserved in ("n_input", "n_labels", "logits"):
        if reserved in options:
            raise ValueError(f"{reserved!r} of an auxiliary head is set by the model, not by its kwargs.")
    return Classifier(n_input, n_labels=n_labels, logits=True, **options)


class AuxiliaryHeadsMixin:
    """Losses of the heads on ``z`` and ``s`` and the type-aware discriminator's bookkeeping."""

    def _build_heads(self, classifier_kwargs: dict | None, discriminator_kwargs: dict | None) -> None:
        """The heads the weights ask for (``None`` for the others)."""
        n_latent, n_labels, n_domains = self.n_latent, self.n_labels, self.n_domains
        self.classifier = (
            auxiliary_head(n_latent, n_labels, CLASSIFIER_DEFAULTS, classifier_kwargs) if self.use_classifier else None
        )
        n_disc_input = n_latent + (n_labels if self.type_aware_discriminator else 0)
        self.discriminator = (
            auxiliary_head(n_disc_input, n_domains, DISCRIMINATOR_DEFAULTS, discriminator_kwargs)
            if self.use_adversary
            else None
        )
        self.domain_classifier = (
            auxiliary_head(self.n_latent_spatial, n_domains, CLASSIFIER_DEFAULTS, classifier_kwargs)
            if self.use_domain_classifier
            else None
        )
        self.niche_regressor = (
            niche_regressor(n_latent + n_labels, self.n_latent_spatial) if self.use_niche_adversary else None
        )

    @property
    def use_classifier(self) -> bool:
        return self.classifier_lambda > 0

    @property
    def use_adversary(self) -> bool:
        return self.discriminator_lambda > 0

    @property
    def use_domain_classifier(self) -> bool:
        return self.domain_classifier_lambda > 0

    @property
    def use_niche_adversary(self) -> bool:
        return self.niche_adversary_lambda > 0

    @property
    def domain_discriminator(self) -> Classifier | None:
        """The discriminator of the domain from ``z`` (the published attribute name)."""
        return self.discriminator

    def _discriminator_logits(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.type_aware_discriminator:
            return self.discriminator(z)
        if labels is None:
            raise ValueError("the type-aware discriminator needs the cell-type labels of the minibatch.")
        onehot = F.one_hot(labels.view(-1).long(), self.n_labels).to(z.dtype)
        return self.discriminator(torch.cat([z, onehot], dim=-1))

    # ------------------------------------------------------------------ niche adversary
    def _type_onehot(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if self.n_labels == 0:
            return z.new_zeros(z.shape[0], 0)
        if labels is None:
            raise ValueError("the niche adversary needs the cell-type labels of the minibatch.")
        return F.one_hot(labels.view(-1).long(), self.n_labels).to(z.dtype)

    def _type_codes(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return z.new_zeros(z.shape[0], dtype=torch.long) if self.n_labels == 0 else labels.view(-1).long()

    def niche_regressor_loss(self, z: torch.Tensor, s: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Mean squared error of the regressor predicting the niche code ``s`` from ``z`` and the type.

        The plan passes detached tensors; each type's running mean of ``s`` is updated here.
        """
        self._update_s_means(s, self._type_codes(z, labels))
        pred = self.niche_regressor(torch.cat([z, self._type_onehot(z, labels)], dim=-1))
        return F.mse_loss(pred, s)

    @torch.no_grad()
    def _update_s_means(self, s: torch.Tensor, codes: torch.Tensor) -> None:
        n_types = self.s_mean_by_type.shape[0]
        counts = torch.bincount(codes, minlength=n_types).to(s.dtype)
        sums = torch.zeros_like(self.s_mean_by_type).index_add_(0, codes, s)
        seen = counts > 0
        batch_means = sums[seen] / counts[seen].unsqueeze(-1)
        fresh = seen & (self.s_mean_by_type.abs().sum(-1) == 0)
        old = self.s_mean_by_type[seen]
        updated = torch.where(fresh[seen].unsqueeze(-1), batch_means, old + S_MEAN_MOMENTUM * (batch_means - old))
        self.s_mean_by_type[seen] = updated

    def _niche_fool_loss(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The encoder's objective against the niche regressor: make it predict only the type's mean ``s``."""
        pred = self.niche_regressor(torch.cat([z, self._type_onehot(z, labels)], dim=-1))
        return F.mse_loss(pred, self.s_mean_by_type[self._type_codes(z, labels)])

    def domain_mix_by_type(self) -> torch.Tensor:
        """Each type's domain frequencies among the training cells seen so far (add-one smoothed).

        Returns
        -------
        torch.Tensor
            ``(n_labels, n_domains)``, rows summing to one.
        """
        prior = self.domain_counts_by_type + 1.0
        return prior / prior.sum(-1, keepdim=True)

    @torch.no_grad()
    def count_domains(self, labels: torch.Tensor, domains: torch.Tensor) -> None:
        """Add a training minibatch to the label x domain counts (type-aware discriminator only)."""
        if not self.type_aware_discriminator:
            return
        idx = labels.view(-1).long() * self.n_domains + domains.view(-1).long()
        counts = torch.bincount(idx, minlength=self.n_labels * self.n_domains)
        self.domain_counts_by_type += counts.view(self.n_labels, self.n_domains).to(self.domain_counts_by_type)

    def _adversarial_loss(
        self, z: torch.Tensor, labels: torch.Tensor | None, domains: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The encoder's unweighted objective against the discriminator (lower = better fooled)."""
        logits = self._discriminator_logits(z, labels)
        if self.adversarial_loss == "negative_ce":
            if domains is None:
                raise ValueError("adversarial_loss='negative_ce' needs the domains of the minibatch.")
            return negative_cross_entropy(logits, domains.view(-1).long())
        if not self.type_aware_discriminator:
            return uniform_target_cross_entropy(logits)
        # Target: the domain mix of the cell's type, what the discriminator knows without z.
        return soft_target_cross_entropy(logits, self.domain_mix_by_type()[labels.view(-1).long()])

    def discriminator_loss(
        self, z: torch.Tensor, domains: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy and accuracy of the discriminator predicting the domain from ``z``.

        Parameters
        ----------
        z
            Intrinsic latent (the plan passes a detached tensor).
        domains
            Domain codes, ``(n_cells, 1)``.
        labels
            Cell-type codes, ``(n_cells, 1)``; needed by the type-aware discriminator.

        Returns
        -------
        tuple of torch.Tensor
            Scalar loss and scalar accuracy.
        """
        logits = self._discriminator_logits(z, labels)
        target = domains.view(-1).long()
        return F.cross_entropy(logits, target), (logits.argmax(dim=-1) == target).float().mean()

    def _head_terms(self, tensors: dict, inference_outputs: dict, scales: dict[str, float]) -> dict:
        """Each auxiliary head's unweighted loss (``*_raw``), weighted loss and accuracy."""
        z = inference_outputs[MK.Z_KEY]
        out: dict[str, torch.Tensor] = {}

        def add(name: str, raw: torch.Tensor, weight: float, accuracy: tuple[str, torch.Tensor] | None = None) -> None:
            out[name + RAW] = raw
            out[name] = raw * weight
            if accuracy is not None:
                out[accuracy[0]] = accuracy[1].detach()

        domains = tensors.get(RK.DOMAINS_KEY)
        if self.classifier is not None:
            labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
            logits = inference_outputs.get(MK.CLASSIFIER_LOGITS_KEY)
            logits = self.classifier(z) if logits is None else logits
            add(
                METRIC_CLF_LOSS,
                F.cross_entropy(logits, labels),
                self.classifier_lambda * scales["classifier"],
                (METRIC_CLF_ACC, (logits.argmax(-1) == labels).float().mean()),
            )
        if self.discriminator is not None:
            raw = self._adversarial_loss(z, tensors.get(REGISTRY_KEYS.LABELS_KEY), domains)
            add(METRIC_FOOL_LOSS, raw, self.discriminator_lambda * scales["discriminator"])
        if self.niche_regressor is not None:
            raw = self._niche_fool_loss(z, tensors.get(REGISTRY_KEYS.LABELS_KEY))
            add(METRIC_NICHE_FOOL_LOSS, raw, self.niche_adversary_lambda * scales["niche_adversary"])
        if self.domain_classifier is not None:
            target = domains.view(-1).long()
            logits = self.domain_classifier(inference_outputs[MK.S_KEY])
            add(
                METRIC_DOMCLF_LOSS,
                F.cross_entropy(logits, target),
                self.domain_classifier_lambda * scales["domain_classifier"],
                (METRIC_DOMCLF_ACC, (logits.argmax(-1) == target).float().mean()),
            )
        return out
