"""The Cellina dual-encoder VAE module (scvi-tools ``BaseModuleClass``)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial
from scvi.module import Classifier
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, Encoder
from torch.distributions import Normal, kl_divergence

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._constants import (
    METRIC_CLF_ACC,
    METRIC_CLF_LOSS,
    METRIC_DOMCLF_ACC,
    METRIC_DOMCLF_LOSS,
    METRIC_FOOL_LOSS,
    METRIC_VAE_LOSS,
    RAW,
)
from ._decoders import FactorisedNicheDecoder
from ._losses import (
    ADVERSARIAL_LOSSES,
    AdversarialLoss,
    negative_cross_entropy,
    nb_log_likelihood,
    soft_target_cross_entropy,
    uniform_target_cross_entropy,
)

GeneLikelihood = Literal["nb", "zinb", "poisson"]
NicheDecoder = Literal["concat", "factorised", "type_gated"]
SpatialDecoding = Literal["sample", "mean"]
_LIKELIHOODS = ("nb", "zinb", "poisson")
_NICHE_DECODERS = ("concat", "factorised", "type_gated")
_SPATIAL_DECODINGS = ("sample", "mean")
_DISPERSIONS = ("gene", "gene-batch", "gene-cell")

#: defaults of the auxiliary heads (scvi-tools ``Classifier`` arguments)
CLASSIFIER_DEFAULTS = {"n_hidden": 64, "n_layers": 1}
DISCRIMINATOR_DEFAULTS = {"n_hidden": 64, "n_layers": 2}


def _choice(name: str, value: Any, allowed: tuple) -> Any:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {allowed}.")
    return value


def _standard_normal(q: Normal) -> Normal:
    """N(0, I) on the device and shape of the posterior ``q``."""
    return Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))


def _head(n_input: int, n_labels: int, defaults: dict, kwargs: dict | None) -> Classifier:
    options = {**defaults, **(kwargs or {})}
    for reserved in ("n_input", "n_labels", "logits"):
        if reserved in options:
            raise ValueError(f"{reserved!r} of an auxiliary head is set by the model, not by its kwargs.")
    return Classifier(n_input, n_labels=n_labels, logits=True, **options)


class CellinaModule(BaseModuleClass):
    """Dual-encoder variational autoencoder with an intrinsic and a spatial latent.

    ``z`` is encoded from ``log1p`` of the cell's own counts, ``s`` from the niche features
    ``spatial_x`` (optionally together with a detached posterior mean of ``z``); with several
    batches the batch enters both encoders and the decoder. Counts are decoded from ``[z; s]``.
    Both latents have standard-normal priors. Optional heads: a cell-type classifier on ``z``,
    a domain discriminator on ``z`` (its own optimiser in
    :class:`~cellina.model.CellinaTrainingPlan`) and a domain classifier on ``s``.

    Parameters
    ----------
    n_input
        Number of genes (columns of the counts matrix).
    n_spatial
        Number of niche features.
    n_batch
        Number of batches (``0`` or ``1``: no batch covariate).
    n_labels, n_domains
        Number of cell-type labels and of spatial domains.
    n_hidden, n_latent, n_layers, dropout_rate
        Width, ``z`` dimension, depth and dropout of encoders and decoder.
    n_latent_spatial
        Dimension of ``s``; defaults to ``n_latent``.
    dispersion, gene_likelihood
        As in scvi-tools (``"gene"``, ``"gene-batch"``, ``"gene-cell"``; ``"nb"``, ``"zinb"``,
        ``"poisson"``).
    use_observed_lib_size
        Decode at the observed library size; ``False`` learns a log-normal library latent with
        the empirical prior ``library_log_means`` / ``library_log_vars``.
    classifier_lambda, discriminator_lambda, domain_classifier_lambda
        Weights of the cell-type classifier on ``z``, of the domain adversary on ``z`` and of
        the domain classifier on ``s``; a head is built only when its weight is ``> 0``.
    classifier_kwargs, discriminator_kwargs
        Extra :class:`scvi.module.Classifier` arguments of the heads (``n_hidden``,
        ``n_layers``, ``dropout_rate``...); the domain classifier uses ``classifier_kwargs``.
    encode_batch
        With several batches, inject the batch into both encoders as well as the decoder (the
        published model), so slide effects are explained by the covariate rather than stored in
        ``z`` or ``s``.
    adversarial_loss
        How the encoder fools the discriminator: ``"uniform"`` (cross-entropy against a uniform
        guess, or the type's domain mix with the type-aware discriminator; bounded) or
        ``"negative_ce"`` (minus the discriminator's cross-entropy, the published form).
    condition_on_intrinsic
        Feed the detached posterior mean of ``z`` to the ``s`` encoder as well.
    spatial_kl_weight
        Weight of the KL term of ``s`` relative to the ELBO's (``1.0``: the plain ELBO, as
        published). Smaller values keep ``s`` informative so that counterfactual changes keep
        their size; the measured effect is in ``docs/benchmarks.md``.
    niche_decoder
        ``"concat"`` (the published decoder: one MLP on ``[z; s]``), ``"factorised"``
        (:class:`~cellina.model.FactorisedNicheDecoder`: an MLP on ``z`` plus a
        rank-``niche_rank`` response to ``s`` modulated by ``z``) or ``"type_gated"`` (the
        factorised decoder plus a full-rank niche map per cell type, weighted by the
        classifier's detached type probabilities; needs the classifier).
    niche_rank
        Rank of the factorised niche response.
    spatial_decoding
        ``"sample"`` (published) decodes a posterior sample of ``s`` in training; ``"mean"``
        decodes its posterior mean, the value counterfactuals decode, so the learnt niche
        response is not shrunk by posterior noise (``s`` becomes a deterministic niche code
        whose KL term acts as an L2 penalty).
    type_aware_discriminator
        Tell the discriminator each cell's type (one-hot beside ``z``) and push the encoder
        towards that type's domain mix among the training cells, so the adversary removes
        what ``z`` knows about the domain beyond the type instead of the type itself (types
        differ in where they live). Needs labels; ignored without the adversary.
    """

    def __init__(
        self,
        n_input: int,
        n_spatial: int,
        n_batch: int = 0,
        n_labels: int = 0,
        n_domains: int = 0,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_latent_spatial: int | None = None,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        dispersion: Literal["gene", "gene-batch", "gene-cell"] = "gene",
        gene_likelihood: GeneLikelihood = "nb",
        use_observed_lib_size: bool = True,
        library_log_means: np.ndarray | None = None,
        library_log_vars: np.ndarray | None = None,
        classifier_lambda: float = 1.0,
        discriminator_lambda: float = 1.0,
        domain_classifier_lambda: float = 0.0,
        classifier_kwargs: dict | None = None,
        discriminator_kwargs: dict | None = None,
        encode_batch: bool = True,
        adversarial_loss: AdversarialLoss = "uniform",
        condition_on_intrinsic: bool = False,
        spatial_kl_weight: float = 0.1,
        niche_decoder: NicheDecoder = "concat",
        niche_rank: int = 8,
        spatial_decoding: SpatialDecoding = "sample",
        type_aware_discriminator: bool = False,
    ):
        super().__init__()
        self.spatial_decoding = _choice("spatial_decoding", spatial_decoding, _SPATIAL_DECODINGS)
        self.niche_decoder = _choice("niche_decoder", niche_decoder, _NICHE_DECODERS)
        self.gene_likelihood = _choice("gene_likelihood", gene_likelihood, _LIKELIHOODS)
        self.dispersion = _choice("dispersion", dispersion, _DISPERSIONS)
        self.adversarial_loss = _choice("adversarial_loss", adversarial_loss, ADVERSARIAL_LOSSES)
        for name, value in (
            ("spatial_kl_weight", spatial_kl_weight),
            ("classifier_lambda", classifier_lambda),
            ("discriminator_lambda", discriminator_lambda),
            ("domain_classifier_lambda", domain_classifier_lambda),
        ):
            if not float(value) >= 0:
                raise ValueError(f"{name}={value} must be >= 0.")
        self.spatial_kl_weight = float(spatial_kl_weight)
        self.classifier_lambda = float(classifier_lambda)
        self.discriminator_lambda = float(discriminator_lambda)
        self.domain_classifier_lambda = float(domain_classifier_lambda)
        self._check_heads(n_labels, n_domains, type_aware_discriminator)
        self.n_input, self.n_spatial, self.n_batch = n_input, n_spatial, n_batch
        self.n_labels, self.n_domains, self.n_latent = n_labels, n_domains, n_latent
        self.n_latent_spatial = n_latent if n_latent_spatial is None else n_latent_spatial
        self.use_observed_lib_size = use_observed_lib_size
        self.condition_on_intrinsic = condition_on_intrinsic
        self.encode_batch = bool(encode_batch)
        self.type_aware_discriminator = bool(type_aware_discriminator and self.discriminator_lambda > 0)
        # what scvi-tools' VAEMixin expects of a module with a Gaussian latent
        self.latent_distribution = "normal"
        self._register_state(library_log_means, library_log_vars)
        self._build_networks(n_hidden, n_layers, dropout_rate, niche_rank)
        self.classifier = (
            _head(n_latent, n_labels, CLASSIFIER_DEFAULTS, classifier_kwargs) if self.use_classifier else None
        )
        n_disc_input = n_latent + (n_labels if self.type_aware_discriminator else 0)
        self.discriminator = (
            _head(n_disc_input, n_domains, DISCRIMINATOR_DEFAULTS, discriminator_kwargs)
            if self.use_adversary
            else None
        )
        self.domain_classifier = (
            _head(self.n_latent_spatial, n_domains, CLASSIFIER_DEFAULTS, classifier_kwargs)
            if self.use_domain_classifier
            else None
        )

    # ------------------------------------------------------------------ construction
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
    def domain_discriminator(self) -> Classifier | None:
        """The discriminator of the domain from ``z`` (the published attribute name)."""
        return self.discriminator

    def _check_heads(self, n_labels: int, n_domains: int, type_aware: bool) -> None:
        if self.niche_decoder == "type_gated" and self.classifier_lambda <= 0:
            raise ValueError(
                "niche_decoder='type_gated' gates the niche response by the cell-type classifier "
                "on z; it needs classifier_lambda > 0 (and labels)."
            )
        if self.classifier_lambda > 0 and n_labels < 2:
            raise ValueError(f"The cell-type classifier needs at least 2 labels, got n_labels={n_labels}.")
        for name in ("discriminator_lambda", "domain_classifier_lambda"):
            if getattr(self, name) > 0 and n_domains < 2:
                raise ValueError(f"{name} > 0 needs at least 2 domains, got n_domains={n_domains}.")
        if type_aware and self.discriminator_lambda > 0 and n_labels < 1:
            raise ValueError(
                "type_aware_discriminator=True tells the discriminator each cell's type; it needs "
                f"cell-type labels, got n_labels={n_labels}."
            )

    def _register_state(self, library_log_means, library_log_vars) -> None:
        # Label x domain counts of the training cells: the domain mix a type alone predicts.
        # Saved only when used, so models saved before the option existed still load.
        aware = self.type_aware_discriminator
        counts = torch.zeros(self.n_labels, self.n_domains) if aware else torch.zeros(0)
        self.register_buffer("domain_counts_by_type", counts, persistent=aware)
        if not self.use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                raise ValueError("use_observed_lib_size=False needs library_log_means and library_log_vars.")
            self.register_buffer("library_log_means", torch.as_tensor(library_log_means, dtype=torch.float32))
            self.register_buffer("library_log_vars", torch.as_tensor(library_log_vars, dtype=torch.float32))
        # Loss-normalisation factors travel with the state dict (checkpoints, save/load, DDP).
        self.register_buffer("alpha_classifier", torch.tensor(1.0))
        self.register_buffer("alpha_adversarial", torch.tensor(1.0))
        self.register_buffer("alphas_frozen", torch.tensor(False))
        # Only models with a domain classifier save its factor: older models still load.
        self.register_buffer(
            "alpha_domain_classifier", torch.tensor(1.0), persistent=self.use_domain_classifier
        )

    def _build_networks(self, n_hidden: int, n_layers: int, dropout_rate: float, niche_rank: int) -> None:
        n_cat = max(self.n_batch, 1)
        if self.dispersion == "gene":
            self.px_r = torch.nn.Parameter(torch.randn(self.n_input))
        elif self.dispersion == "gene-batch":
            self.px_r = torch.nn.Parameter(torch.randn(self.n_input, n_cat))
        encoder_cats = [n_cat] if self.encode_batch else None
        common = {"n_layers": n_layers, "n_hidden": n_hidden, "dropout_rate": dropout_rate, "return_dist": True}
        self.z_encoder = Encoder(self.n_input, self.n_latent, n_cat_list=encoder_cats, **common)
        n_s_input = self.n_spatial + (self.n_latent if self.condition_on_intrinsic else 0)
        self.s_encoder = Encoder(n_s_input, self.n_latent_spatial, n_cat_list=encoder_cats, **common)
        if not self.use_observed_lib_size:
            self.l_encoder = Encoder(
                self.n_input, 1, n_cat_list=encoder_cats, **{**common, "n_layers": 1}
            )
        if self.niche_decoder == "concat":
            self.decoder = DecoderSCVI(
                self.n_latent + self.n_latent_spatial, self.n_input, n_cat_list=[n_cat],
                n_layers=n_layers, n_hidden=n_hidden,
            )
        else:
            self.decoder = FactorisedNicheDecoder(
                self.n_latent, self.n_latent_spatial, self.n_input, n_cat, rank=niche_rank,
                n_layers=n_layers, n_hidden=n_hidden,
                n_types=self.n_labels if self.niche_decoder == "type_gated" else 0,
            )

    # ------------------------------------------------------------------ parameters
    def vae_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters optimised by the VAE step (everything but the discriminator)."""
        disc = set() if self.discriminator is None else {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc]

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters optimised by the discriminator step."""
        return [] if self.discriminator is None else list(self.discriminator.parameters())

    # ------------------------------------------------------------------ inputs
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "spatial_x": tensors[RK.SPATIAL_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    def _get_generative_input(self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs) -> dict:
        return {
            "z": inference_outputs[MK.Z_KEY],
            "s": inference_outputs[MK.S_KEY],
            "library": inference_outputs[MK.LIBRARY_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
            "classifier_logits": inference_outputs.get(MK.CLASSIFIER_LOGITS_KEY),
        }

    # ------------------------------------------------------------------ model
    def _encode(self, encoder: Encoder, values: torch.Tensor, batch_index: torch.Tensor):
        return encoder(values, batch_index) if self.encode_batch else encoder(values)

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        spatial_x: torch.Tensor,
        batch_index: torch.Tensor,
        give_mean: bool = False,
        n_samples: int = 1,
    ) -> dict[str, Any]:
        """Encode ``z`` from the cell's counts and ``s`` from its niche features.

        Parameters
        ----------
        x
            Raw counts, ``(n_cells, n_input)``.
        spatial_x
            Niche features, ``(n_cells, n_spatial)``.
        batch_index
            Batch codes, ``(n_cells, 1)`` (integers or floats holding integers).
        give_mean
            Posterior means instead of samples. With ``spatial_decoding="mean"`` ``s`` is the
            posterior mean either way.
        n_samples
            Posterior samples per cell; above 1 the latents get a leading sample dimension.

        Returns
        -------
        dict
            ``z``, ``qz`` (and its ``qzm``/``qzv``), ``s``, ``qs`` (``qsm``/``qsv``), ``shifted``
            (``[z; s]``), ``ql``, ``library`` (log scale) and, with a classifier,
            ``classifier_logits``; in evaluation mode also ``discriminator_logits``.
        """
        batch_index = batch_index.long()
        x_log = torch.log1p(x)
        qz, z = self._encode(self.z_encoder, x_log, batch_index)
        s_input = spatial_x
        if self.condition_on_intrinsic:
            # Detached so that the spatial branch cannot reshape z.
            s_input = torch.cat([spatial_x, qz.loc.detach()], dim=-1)
        qs, s = self._encode(self.s_encoder, s_input, batch_index)
        ql = None
        if self.use_observed_lib_size:
            # Clamp so that a cell without counts yields a finite (zero) log library.
            library = torch.log(x.sum(dim=1, keepdim=True).clamp_min(1.0))
        else:
            ql, library = self._encode(self.l_encoder, x_log, batch_index)
        z, s, library = self._draw(qz, z, qs, s, ql, library, give_mean, n_samples)
        out = {
            MK.Z_KEY: z, MK.QZ_KEY: qz, MK.QZM_KEY: qz.loc, MK.QZV_KEY: qz.scale.square(),
            MK.S_KEY: s, MK.QS_KEY: qs, MK.QSM_KEY: qs.loc, MK.QSV_KEY: qs.scale.square(),
            MK.SHIFTED_KEY: torch.cat([z, s], dim=-1), MK.QL_KEY: ql, MK.LIBRARY_KEY: library,
        }
        if self.classifier is not None:
            out[MK.CLASSIFIER_LOGITS_KEY] = self.classifier(z)
        if self.discriminator is not None and not self.training and not self.type_aware_discriminator:
            # In training the adversarial term needs the discriminator *after* its own step,
            # so its logits are computed there; here they only serve inspection.
            out[MK.DISCRIMINATOR_LOGITS_KEY] = self.discriminator(z)
        return out

    def _draw(self, qz, z, qs, s, ql, library, give_mean: bool, n_samples: int):
        """The latents to decode: means, one sample, or ``n_samples`` samples stacked first."""
        s_is_mean = give_mean or self.spatial_decoding == "mean"
        if n_samples > 1:
            z = qz.loc.expand(n_samples, *qz.loc.shape) if give_mean else qz.rsample((n_samples,))
            s = qs.loc.expand(n_samples, *qs.loc.shape) if s_is_mean else qs.rsample((n_samples,))
            if ql is None or give_mean:
                base = library if ql is None else ql.loc
                library = base.expand(n_samples, *base.shape)
            else:
                library = ql.rsample((n_samples,))
            return z, s, library
        if give_mean:
            z = qz.loc
            if ql is not None:
                library = ql.loc
        if s_is_mean:
            s = qs.loc
        return z, s, library

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        s: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
        classifier_logits: torch.Tensor | None = None,
        transform_batch: int | None = None,
    ) -> dict[str, Any]:
        """Decode counts from ``[z; s]`` with the batch injected.

        Parameters
        ----------
        z, s
            Intrinsic and spatial latents (optionally with a leading sample dimension).
        library
            Log library size.
        batch_index
            Batch codes, ``(n_cells, 1)``.
        classifier_logits
            The classifier's logits for ``z`` when already computed (the type-gated decoder
            reads its probabilities; they are recomputed when absent).
        transform_batch
            Decode every cell as if it came from this batch code.

        Returns
        -------
        dict
            ``px`` (count distribution; ``mu`` at the given library, ``scale`` summing to one
            per cell), ``px_r`` and the priors ``pz``, ``ps``, ``pl``.
        """
        batch_index = batch_index.long()
        if transform_batch is not None:
            batch_index = torch.full_like(batch_index, int(transform_batch))
        extra = {}
        if self.niche_decoder == "type_gated":
            logits = self.classifier(z) if classifier_logits is None else classifier_logits
            # Detached: the gate reads the classifier, it does not train it or z.
            extra["type_probs"] = torch.softmax(logits, dim=-1).detach()
        px_scale, px_r, px_rate, px_dropout = self.decoder(
            self.dispersion, torch.cat([z, s], dim=-1), library, batch_index, **extra
        )
        if self.dispersion == "gene":
            px_r = self.px_r
        elif self.dispersion == "gene-batch":
            px_r = F.linear(F.one_hot(batch_index.squeeze(-1), self.px_r.shape[1]).float(), self.px_r)
        px_r = torch.exp(px_r)
        if self.gene_likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(mu=px_rate, theta=px_r, zi_logits=px_dropout, scale=px_scale)
        elif self.gene_likelihood == "nb":
            px = NegativeBinomial(mu=px_rate, theta=px_r, scale=px_scale)
        else:
            px = Poisson(rate=px_rate, scale=px_scale)
        return {
            MK.PX_KEY: px,
            MK.PX_R_KEY: px_r,
            MK.PZ_KEY: Normal(torch.zeros_like(z), torch.ones_like(z)),
            MK.PS_KEY: Normal(torch.zeros_like(s), torch.ones_like(s)),
            MK.PL_KEY: self._library_prior(batch_index),
        }

    def _library_prior(self, batch_index: torch.Tensor) -> Normal | None:
        if self.use_observed_lib_size:
            return None
        onehot = F.one_hot(batch_index.squeeze(-1), self.library_log_means.shape[1]).float()
        return Normal(F.linear(onehot, self.library_log_means), F.linear(onehot, self.library_log_vars).sqrt())

    # ------------------------------------------------------------------ auxiliary heads
    def _discriminator_logits(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if not self.type_aware_discriminator:
            return self.discriminator(z)
        if labels is None:
            raise ValueError("the type-aware discriminator needs the cell-type labels of the minibatch.")
        onehot = F.one_hot(labels.view(-1).long(), self.n_labels).to(z.dtype)
        return self.discriminator(torch.cat([z, onehot], dim=-1))

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

    # ------------------------------------------------------------------ objective
    def _reconstruction_loss(self, x: torch.Tensor, generative_outputs: dict) -> torch.Tensor:
        px = generative_outputs[MK.PX_KEY]
        if self.gene_likelihood == "nb":
            return -nb_log_likelihood(x, px.mu, generative_outputs[MK.PX_R_KEY])
        return -px.log_prob(x).sum(-1)

    def _kl_terms(self, inference_outputs: dict, generative_outputs: dict) -> dict[str, torch.Tensor]:
        # Against N(0, I) on the posteriors' own shape: one value per cell whatever was decoded.
        kl_z = kl_divergence(inference_outputs[MK.QZ_KEY], _standard_normal(inference_outputs[MK.QZ_KEY])).sum(-1)
        kl_s = kl_divergence(inference_outputs[MK.QS_KEY], _standard_normal(inference_outputs[MK.QS_KEY])).sum(-1)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(kl_z)
        else:
            kl_l = kl_divergence(inference_outputs[MK.QL_KEY], generative_outputs[MK.PL_KEY]).sum(-1)
        return {MK.KL_Z: kl_z, MK.KL_S: kl_s, MK.KL_L: kl_l}

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
            add(METRIC_CLF_LOSS, F.cross_entropy(logits, labels), self.classifier_lambda * scales["classifier"],
                (METRIC_CLF_ACC, (logits.argmax(-1) == labels).float().mean()))
        if self.discriminator is not None:
            raw = self._adversarial_loss(z, tensors.get(REGISTRY_KEYS.LABELS_KEY), domains)
            add(METRIC_FOOL_LOSS, raw, self.discriminator_lambda * scales["discriminator"])
        if self.domain_classifier is not None:
            target = domains.view(-1).long()
            logits = self.domain_classifier(inference_outputs[MK.S_KEY])
            add(METRIC_DOMCLF_LOSS, F.cross_entropy(logits, target),
                self.domain_classifier_lambda * scales["domain_classifier"],
                (METRIC_DOMCLF_ACC, (logits.argmax(-1) == target).float().mean()))
        return out

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float | torch.Tensor = 1.0,
        classifier_scale: float | torch.Tensor = 1.0,
        discriminator_scale: float | torch.Tensor = 1.0,
        domain_classifier_scale: float | torch.Tensor = 1.0,
    ) -> LossOutput:
        """``L_VAE + lambda_clf a_clf L_clf + lambda_adv a_adv L_adv + lambda_dc a_dc L_dc``.

        ``L_VAE`` is the mean over cells of the negative log-likelihood plus
        ``kl_weight * (KL(z) + spatial_kl_weight * KL(s)) + KL(l)``. ``L_clf`` is the
        cross-entropy of the cell-type classifier on ``z``; ``L_adv`` the encoder's adversarial
        objective (``adversarial_loss``); ``L_dc`` the cross-entropy of the domain classifier
        on ``s``. The ``lambda`` are the module's weights, the ``a`` (``*_scale``) the plan's
        loss-normalisation factors.

        Returns
        -------
        LossOutput
            ``loss`` is the whole objective; ``extra_metrics`` hold ``vae_loss``, each head's
            weighted term (``classifier_loss``, ``fool_loss``, ``domain_classifier_loss``), its
            unweighted value (``*_raw``) and accuracy, and the mean ``kl_z`` / ``kl_s``.
        """
        rec = self._reconstruction_loss(tensors[REGISTRY_KEYS.X_KEY], generative_outputs)
        kl = self._kl_terms(inference_outputs, generative_outputs)
        vae_loss = torch.mean(
            rec + kl_weight * (kl[MK.KL_Z] + self.spatial_kl_weight * kl[MK.KL_S]) + kl[MK.KL_L]
        )
        scales = {
            "classifier": classifier_scale,
            "discriminator": discriminator_scale,
            "domain_classifier": domain_classifier_scale,
        }
        heads = self._head_terms(tensors, inference_outputs, scales)
        total = vae_loss
        for name in (METRIC_CLF_LOSS, METRIC_FOOL_LOSS, METRIC_DOMCLF_LOSS):
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

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def sample(
        self,
        tensors: dict[str, torch.Tensor],
        n_samples: int = 1,
        max_poisson_rate: float = 1e8,
        generative_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """Counts drawn from the posterior predictive distribution (scvi-tools' contract).

        Returns
        -------
        torch.Tensor
            On the CPU, ``(n_cells, n_input)`` for one sample, else ``(n_cells, n_input, n_samples)``.
        """
        _, gen = self.forward(
            tensors, inference_kwargs={"n_samples": n_samples}, generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        dist = gen[MK.PX_KEY]
        if self.gene_likelihood == "poisson":
            dist = Poisson(torch.clamp(dist.rate, max=max_poisson_rate))
        samples = dist.sample()
        return (samples.permute(1, 2, 0) if n_samples > 1 else samples).cpu()

    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 1,
    ) -> torch.Tensor | float:
        """Importance-sampling estimate of ``log p(x)`` per cell.

        ``z``, ``s`` (and a learnt library) are drawn from their posteriors; each draw weighs
        ``p(x | z, s, l) p(z) p(s) p(l) / (q(z) q(s) q(l))``. With ``spatial_decoding="mean"``
        the decoder reads the posterior mean of ``s``, which is then not integrated over.

        Parameters
        ----------
        tensors
            Minibatch (registry keys).
        n_mc_samples
            Importance samples per cell.
        return_mean
            Return the mean over cells as a float.
        n_mc_samples_per_pass
            Samples drawn per forward pass (memory).

        Returns
        -------
        torch.Tensor or float
            ``(n_cells,)`` log-likelihoods on the CPU, or their mean.
        """
        if n_mc_samples < 1:
            raise ValueError(f"n_mc_samples={n_mc_samples} must be >= 1.")
        per_pass = max(1, min(int(n_mc_samples_per_pass), int(n_mc_samples)))
        x = tensors[REGISTRY_KEYS.X_KEY]
        terms = []
        for start in range(0, n_mc_samples, per_pass):
            k = min(per_pass, n_mc_samples - start)
            inf, gen = self.forward(tensors, inference_kwargs={"n_samples": k}, compute_loss=False)
            z, s = inf[MK.Z_KEY], inf[MK.S_KEY]
            if k == 1:
                z, s = z.unsqueeze(0), s.unsqueeze(0)
            log_px = self._reconstruction_loss(x, gen).neg().reshape(k, -1)
            qz, qs = inf[MK.QZ_KEY], inf[MK.QS_KEY]
            log_w = log_px + _standard_normal(qz).log_prob(z).sum(-1) - qz.log_prob(z).sum(-1)
            if self.spatial_decoding == "sample":
                log_w = log_w + _standard_normal(qs).log_prob(s).sum(-1) - qs.log_prob(s).sum(-1)
            if not self.use_observed_lib_size:
                lib = inf[MK.LIBRARY_KEY].reshape(k, -1, 1)
                log_w = log_w + gen[MK.PL_KEY].log_prob(lib).sum(-1) - inf[MK.QL_KEY].log_prob(lib).sum(-1)
            terms.append(log_w)
        log_lkl = torch.logsumexp(torch.cat(terms, dim=0), dim=0) - math.log(n_mc_samples)
        return float(log_lkl.mean()) if return_mean else log_lkl.cpu()
