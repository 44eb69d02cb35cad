"""The Cellina dual-encoder VAE module (scvi-tools ``BaseModuleClass``)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial
from scvi.module.base import BaseModuleClass, auto_move_data
from scvi.nn import DecoderSCVI, Encoder
from torch.distributions import Normal

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._constants import METRIC_CLF_LOSS, METRIC_DOMCLF_LOSS, METRIC_FOOL_LOSS, METRIC_NICHE_FOOL_LOSS
from ._decoders import FactorisedNicheDecoder
from ._encoders import LinearGaussianEncoder
from ._heads import AuxiliaryHeadsMixin
from ._losses import (
    ADVERSARIAL_LOSSES,
    AdversarialLoss,
)
from ._module_evaluation import ModuleEvaluationMixin
from ._objective import ObjectiveMixin

GeneLikelihood = Literal["nb", "zinb", "poisson"]
NicheDecoder = Literal["concat", "factorised", "type_gated"]
SpatialDecoding = Literal["sample", "mean"]
SpatialEncoder = Literal["mlp", "linear"]
_LIKELIHOODS = ("nb", "zinb", "poisson")
_NICHE_DECODERS = ("concat", "factorised", "type_gated")
_SPATIAL_DECODINGS = ("sample", "mean")
_SPATIAL_ENCODERS = ("mlp", "linear")
_DISPERSIONS = ("gene", "gene-batch", "gene-cell")


def _choice(name: str, value: Any, allowed: tuple) -> Any:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; use one of {allowed}.")
    return value


class CellinaModule(ObjectiveMixin, AuxiliaryHeadsMixin, ModuleEvaluationMixin, BaseModuleClass):
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
    spatial_encoder
        ``"mlp"`` (published: scvi-tools' ``Encoder``) or ``"linear"``
        (:class:`~cellina.model.LinearGaussianEncoder`: the posterior mean of ``s`` is linear in
        the standardised niche features, so niches beyond the training range are not squashed).
    spatial_components, n_spatial_passthrough
        With the linear encoder: read the expression columns of the niche features through
        their ``spatial_components`` leading principal directions (fixed by the model from
        its data), and the last ``n_spatial_passthrough`` columns (the neighbours' cell-type
        shares) as they are. ``None`` (default): every column as it is.
    niche_adversary_lambda
        Weight of an adversary that keeps the niche out of ``z`` directly: a regressor learns to
        predict the niche code ``s`` (posterior mean, detached) from ``z`` and the cell's type,
        and the encoder is pushed to make it predict only the type's mean ``s``. The domain
        adversary sees only domain labels; a niche signal that varies within a domain can hide
        in ``z`` from it, and the decoder then explains the niche response from ``z`` instead of
        ``s``, so counterfactual changes come out too small. ``0`` (default) builds no regressor.
    """

    #: auxiliary losses the training plan normalises: (metric, factor buffer, ``loss`` keyword)
    NORMALISED_LOSSES: tuple[tuple[str, str, str], ...] = (
        (METRIC_CLF_LOSS, "alpha_classifier", "classifier_scale"),
        (METRIC_FOOL_LOSS, "alpha_adversarial", "discriminator_scale"),
        (METRIC_DOMCLF_LOSS, "alpha_domain_classifier", "domain_classifier_scale"),
        (METRIC_NICHE_FOOL_LOSS, "alpha_niche_adversary", "niche_adversary_scale"),
    )

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
        niche_adversary_lambda: float = 0.0,
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
        spatial_encoder: SpatialEncoder = "mlp",
        spatial_components: int | None = None,
        n_spatial_passthrough: int = 0,
    ):
        super().__init__()
        choices = {
            "spatial_encoder": (spatial_encoder, _SPATIAL_ENCODERS),
            "spatial_decoding": (spatial_decoding, _SPATIAL_DECODINGS),
            "niche_decoder": (niche_decoder, _NICHE_DECODERS),
            "gene_likelihood": (gene_likelihood, _LIKELIHOODS),
            "dispersion": (dispersion, _DISPERSIONS),
            "adversarial_loss": (adversarial_loss, ADVERSARIAL_LOSSES),
        }
        for name, (value, allowed) in choices.items():
            setattr(self, name, _choice(name, value, allowed))
        weights = {
            "spatial_kl_weight": spatial_kl_weight,
            "classifier_lambda": classifier_lambda,
            "discriminator_lambda": discriminator_lambda,
            "domain_classifier_lambda": domain_classifier_lambda,
            "niche_adversary_lambda": niche_adversary_lambda,
        }
        for name, value in weights.items():
            if not float(value) >= 0:
                raise ValueError(f"{name}={value} must be >= 0.")
            setattr(self, name, float(value))
        self._check_heads(n_labels, n_domains, type_aware_discriminator)
        self.n_input, self.n_spatial, self.n_batch = n_input, n_spatial, n_batch
        self.n_labels, self.n_domains, self.n_latent = n_labels, n_domains, n_latent
        self.n_latent_spatial = n_latent if n_latent_spatial is None else n_latent_spatial
        self.use_observed_lib_size = use_observed_lib_size
        self.condition_on_intrinsic = condition_on_intrinsic
        self.encode_batch = bool(encode_batch)
        self.type_aware_discriminator = bool(type_aware_discriminator and self.discriminator_lambda > 0)
        if spatial_components is not None and (self.spatial_encoder != "linear" or condition_on_intrinsic):
            raise ValueError(
                "spatial_components needs spatial_encoder='linear' without condition_on_intrinsic "
                f"(got spatial_encoder={self.spatial_encoder!r}, condition_on_intrinsic={condition_on_intrinsic})."
            )
        self.spatial_components, self.n_spatial_passthrough = spatial_components, int(n_spatial_passthrough)
        # what scvi-tools' VAEMixin expects of a module with a Gaussian latent
        self.latent_distribution = "normal"
        self._register_state(library_log_means, library_log_vars)
        self._build_networks(n_hidden, n_layers, dropout_rate, niche_rank)
        self._build_heads(classifier_kwargs, discriminator_kwargs)

    # ------------------------------------------------------------------ construction
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
        self.register_buffer("alpha_domain_classifier", torch.tensor(1.0), persistent=self.use_domain_classifier)
        niche = self.use_niche_adversary
        self.register_buffer("alpha_niche_adversary", torch.tensor(1.0), persistent=niche)
        # Each type's mean niche code s: what the type alone says about the niche.
        means = torch.zeros(max(self.n_labels, 1), self.n_latent_spatial) if niche else torch.zeros(0)
        self.register_buffer("s_mean_by_type", means, persistent=niche)

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
        if self.spatial_encoder == "linear":
            self.s_encoder = LinearGaussianEncoder(
                n_s_input,
                self.n_latent_spatial,
                n_cat if self.encode_batch else 0,
                n_components=self.spatial_components,
                n_passthrough=self.n_spatial_passthrough,
            )
        else:
            self.s_encoder = Encoder(n_s_input, self.n_latent_spatial, n_cat_list=encoder_cats, **common)
        if not self.use_observed_lib_size:
            self.l_encoder = Encoder(self.n_input, 1, n_cat_list=encoder_cats, **{**common, "n_layers": 1})
        if self.niche_decoder == "concat":
            self.decoder = DecoderSCVI(
                self.n_latent + self.n_latent_spatial,
                self.n_input,
                n_cat_list=[n_cat],
                n_layers=n_layers,
                n_hidden=n_hidden,
            )
        else:
            self.decoder = FactorisedNicheDecoder(
                self.n_latent,
                self.n_latent_spatial,
                self.n_input,
                n_cat,
                rank=niche_rank,
                n_layers=n_layers,
                n_hidden=n_hidden,
                n_types=self.n_labels if self.niche_decoder == "type_gated" else 0,
            )

    def logged_loss_factors(self) -> list[str]:
        """The loss-normalisation factors the plan logs every epoch (buffer names)."""
        names = ["alpha_classifier", "alpha_adversarial"]
        names += ["alpha_domain_classifier"] if self.domain_classifier is not None else []
        return names + (["alpha_niche_adversary"] if self.niche_regressor is not None else [])

    # ------------------------------------------------------------------ parameters
    def vae_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters optimised by the VAE step (everything but the adversaries)."""
        adversaries = {id(p) for p in self.discriminator_parameters()}
        return [p for p in self.parameters() if id(p) not in adversaries]

    def discriminator_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters optimised by the adversary step: the domain discriminator and the niche regressor."""
        heads = [h for h in (self.discriminator, self.niche_regressor) if h is not None]
        return [p for head in heads for p in head.parameters()]

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
        return self._latents(x, x_log, batch_index, (qz, z), (qs, s), give_mean, n_samples)

    def _latents(self, x, x_log, batch_index, intrinsic, spatial, give_mean: bool, n_samples: int) -> dict[str, Any]:
        """The inference outputs from both posteriors: library, draws, ``[z; s]`` and the heads' logits."""
        (qz, z), (qs, s) = intrinsic, spatial
        ql = None
        if self.use_observed_lib_size:
            # Clamp so that a cell without counts yields a finite (zero) log library.
            library = torch.log(x.sum(dim=1, keepdim=True).clamp_min(1.0))
        else:
            ql, library = self._encode(self.l_encoder, x_log, batch_index)
        z, s, library = self._draw(qz, z, qs, s, ql, library, give_mean, n_samples)
        out = {
            MK.Z_KEY: z,
            MK.QZ_KEY: qz,
            MK.QZM_KEY: qz.loc,
            MK.QZV_KEY: qz.scale.square(),
            MK.S_KEY: s,
            MK.QS_KEY: qs,
            MK.QSM_KEY: qs.loc,
            MK.QSV_KEY: qs.scale.square(),
            MK.SHIFTED_KEY: torch.cat([z, s], dim=-1),
            MK.QL_KEY: ql,
            MK.LIBRARY_KEY: library,
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
