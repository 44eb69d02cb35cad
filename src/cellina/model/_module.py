"""The Cellina dual-encoder VAE module (scvi-tools ``BaseModuleClass``)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scvi import REGISTRY_KEYS
from scvi.distributions import NegativeBinomial, Poisson, ZeroInflatedNegativeBinomial
from scvi.module import Classifier
from scvi.module.base import BaseModuleClass, LossOutput, auto_move_data
from scvi.nn import DecoderSCVI, Encoder
from torch.distributions import Normal, kl_divergence

from ._constants import (
    CELLINA_MODULE_KEYS as MK,
)
from ._constants import (
    CELLINA_REGISTRY_KEYS as RK,
)
from ._constants import (
    METRIC_ADV_LOSS,
    METRIC_CLF_ACC,
    METRIC_CLF_LOSS,
    METRIC_VAE_LOSS,
)

GeneLikelihood = Literal["nb", "zinb", "poisson"]
NicheDecoder = Literal["concat", "factorised", "type_gated"]
_LIKELIHOODS = ("nb", "zinb", "poisson")
_NICHE_DECODERS = ("concat", "factorised", "type_gated")
SpatialDecoding = Literal["sample", "mean"]
_SPATIAL_DECODINGS = ("sample", "mean")
_DISPERSIONS = ("gene", "gene-batch", "gene-cell")


def uniform_target_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the uniform distribution over classes.

    This is the adversarial objective the encoder minimises to fool the domain
    discriminator. Its minimum, ``log(n_classes)``, is reached when the discriminator
    is maximally unsure; unlike "flipped labels" it never rewards confidently
    predicting a wrong domain, and it stays bounded away from zero, which keeps the
    loss-normalisation ratio measured over the first epoch finite.

    Parameters
    ----------
    logits
        Unnormalised class scores, shape ``(n_cells, n_classes)``.

    Returns
    -------
    torch.Tensor
        Scalar mean over cells.
    """
    return -F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


def nb_log_likelihood(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Per-cell negative-binomial log-likelihood summed over genes.

    The same quantity as ``scvi.distributions.NegativeBinomial(mu, theta).log_prob(x)
    .sum(-1)``, but with a per-gene ``theta`` the terms that depend on ``theta`` alone
    (``theta * log(theta)`` and ``lgamma(theta)``) are evaluated once per gene instead of
    once per cell and gene, and ``lgamma(x + 1)``, a constant, carries no gradient. This
    removes one ``lgamma``/``digamma`` pair and one ``log`` over the minibatch.

    Parameters
    ----------
    x
        Counts, ``(n_cells, n_genes)``.
    mu
        Means, ``(n_cells, n_genes)``.
    theta
        Inverse dispersion, ``(n_genes,)`` or ``(n_cells, n_genes)``.
    eps
        Numerical floor, as in scvi-tools.

    Returns
    -------
    torch.Tensor
        ``(n_cells,)``.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    per_entry = x * (torch.log(mu + eps) - log_theta_mu) - theta * log_theta_mu
    per_entry = per_entry + torch.lgamma(x + theta)
    with torch.no_grad():
        constant = torch.lgamma(x + 1).sum(-1)
    if theta.dim() == 1:
        per_gene = (theta * torch.log(theta + eps) - torch.lgamma(theta)).sum()
        return per_entry.sum(-1) + per_gene - constant
    return (per_entry + theta * torch.log(theta + eps) - torch.lgamma(theta)).sum(-1) - constant


class FactorisedNicheDecoder(torch.nn.Module):
    """Decoder whose log expression is an intrinsic term plus a low-rank niche response.

    ``log rho = f(z, batch) + V [(A z + a) * (B s + b)]`` before the softmax over genes: ``f`` is
    scvi-tools' ``DecoderSCVI`` on ``z`` alone, and the niche enters only through ``rank``
    products of a cell-state direction and a niche direction. Expanding the product gives a
    niche effect shared by all cells (``V (a * B s)``) plus one that depends on the cell's state
    (``V (A z * B s)``), so each cell type can answer the same niche with its own genes, and the
    answer is linear in ``s``: a niche beyond the training range moves expression along the
    learnt direction instead of saturating. Outputs match ``DecoderSCVI``'s.

    Parameters
    ----------
    n_latent, n_latent_spatial
        Dimensions of ``z`` and ``s``.
    n_output
        Number of genes.
    n_cat
        Number of batches (categories injected into ``f``).
    rank
        Number of niche response directions.
    n_layers, n_hidden
        Layers and width of ``f``.
    n_types
        With ``n_types > 0`` a type-gated niche term ``sum_t p_t W_t s`` is added, where ``p``
        are the cell-type probabilities passed to :meth:`forward` and each ``W_t`` is a full
        ``n_latent_spatial x n_output`` map, zero at the start. It lets every cell type answer
        the niche with its own genes at full rank, which the shared low-rank term cannot do
        for a type whose response genes nobody else uses.
    """

    def __init__(
        self,
        n_latent: int,
        n_latent_spatial: int,
        n_output: int,
        n_cat: int,
        rank: int = 8,
        n_layers: int = 2,
        n_hidden: int = 128,
        n_types: int = 0,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"niche_rank={rank} must be >= 1.")
        self.n_latent = n_latent
        self.intrinsic = DecoderSCVI(n_latent, n_output, n_cat_list=[n_cat], n_layers=n_layers, n_hidden=n_hidden)
        self.state_directions = torch.nn.Linear(n_latent, rank)
        self.niche_directions = torch.nn.Linear(n_latent_spatial, rank)
        self.gene_loadings = torch.nn.Linear(rank, n_output, bias=False)
        # start from the intrinsic decoder alone; the niche response grows from zero
        torch.nn.init.zeros_(self.gene_loadings.weight)
        self.n_types = n_types
        # (type, niche dimension) -> gene; row t * n_latent_spatial + j belongs to type t
        self.type_niche_loadings = (
            torch.nn.Parameter(torch.zeros(n_types * n_latent_spatial, n_output)) if n_types > 0 else None
        )

    def forward(
        self,
        dispersion: str,
        z_s: torch.Tensor,
        library: torch.Tensor,
        *cat_list: torch.Tensor,
        type_probs: torch.Tensor | None = None,
    ):
        z, s = z_s[:, : self.n_latent], z_s[:, self.n_latent :]
        px_scale, px_r, _, px_dropout = self.intrinsic(dispersion, z, library, *cat_list)
        niche = self.gene_loadings(self.state_directions(z) * self.niche_directions(s))
        if self.type_niche_loadings is not None:
            if type_probs is None or type_probs.shape != (z.shape[0], self.n_types):
                got = None if type_probs is None else tuple(type_probs.shape)
                raise ValueError(f"type_probs must have shape {(z.shape[0], self.n_types)}, got {got}.")
            gated = (type_probs.unsqueeze(-1) * s.unsqueeze(1)).flatten(1)
            niche = niche + gated @ self.type_niche_loadings
        px_scale = torch.softmax(torch.log(px_scale + 1e-12) + niche, dim=-1)
        return px_scale, px_r, torch.exp(library) * px_scale, px_dropout


class CellinaModule(BaseModuleClass):
    """Dual-encoder variational autoencoder with an intrinsic and a spatial latent.

    ``z`` is encoded from ``log1p`` of the cell's own counts, ``s`` from the niche
    features ``phi`` (optionally together with a detached posterior mean of ``z``), and
    counts are decoded from ``[z; s]`` with the batch injected into the decoder. Both
    latents have standard-normal priors. A cell-type classifier on ``z`` and a domain
    discriminator on ``z`` are optional auxiliary heads; the discriminator is optimised by
    its own optimiser in :class:`~cellina.model.CellinaTrainingPlan`.

    Parameters
    ----------
    n_input
        Number of genes (columns of the counts matrix).
    n_spatial
        Number of niche features (columns of ``phi``).
    n_batch
        Number of batches (``1`` or ``0`` disables batch injection).
    n_labels
        Number of cell-type labels for the classifier on ``z``.
    n_domains
        Number of spatial domains for the discriminator on ``z``.
    n_hidden
        Hidden units per layer of encoders and decoder.
    n_latent
        Dimension of ``z``.
    n_latent_spatial
        Dimension of ``s``; defaults to ``n_latent``.
    n_layers
        Hidden layers of encoders and decoder.
    dropout_rate
        Dropout rate of the encoders.
    dispersion
        ``"gene"``, ``"gene-batch"`` or ``"gene-cell"``.
    gene_likelihood
        ``"nb"``, ``"zinb"`` or ``"poisson"``.
    use_observed_lib_size
        Use the observed library size (sum of counts) as the decoder's scaling factor.
        If ``False`` a log-normal library latent with an empirical prior is learnt.
    library_log_means, library_log_vars
        Per-batch prior of the log library size, required when
        ``use_observed_lib_size=False``.
    use_classifier
        Build the cell-type classifier head on ``z``.
    use_adversary
        Build the domain discriminator on ``z``.
    condition_on_intrinsic
        Feed the detached posterior mean of ``z`` to the ``s`` encoder as well.
    n_hidden_classifier
        Hidden units of the classifier and discriminator heads.
    niche_decoder
        ``"concat"`` (the published decoder: one MLP on ``[z; s]``) or ``"factorised"``
        (:class:`FactorisedNicheDecoder`: an MLP on ``z`` plus a rank-``niche_rank`` response
        to ``s`` modulated by ``z``). On the synthetic tissue's leave-one-type-out protocol the
        factorised decoder predicts held-out type-specific niche responses better; see
        ``docs/benchmarks.md``. ``"type_gated"`` adds to the factorised decoder a full-rank
        niche map per cell type, weighted by the classifier's type probabilities from ``z``
        (detached), so it needs ``use_classifier``.
    niche_rank
        Rank of the factorised niche response.
    spatial_kl_weight
        Extra weight of the KL term of ``s`` (on top of the warm-up). With the full weight
        (``1.0``, the plain ELBO) ``s`` carries the niche signal with so much posterior noise
        that the decoder learns to respond to it only weakly: on a 2,000-cell synthetic
        tissue (healthy Myeloid cells rewired to tumour donors, exact truth on the
        niche-responsive genes) the predicted change had the right direction but 1.5 % of
        the true size after 100 epochs (slope 0.015, skill 0.03). With ``0.1`` the slope
        was 0.38 (skill 0.61) after 100 epochs and 0.70 (skill 0.90) after 300, with the
        domain still at chance from ``z``.
    spatial_decoding
        ``"sample"`` (the published model) decodes a sample of ``s`` from its posterior
        during training; ``"mean"`` always decodes the posterior mean, so ``s`` becomes a
        deterministic code of the niche (its KL term then acts as an L2 penalty on the
        mean, and the posterior scale carries nothing). Why: counterfactuals decode the
        posterior mean, and a decoder that learnt its niche response from noisy samples
        of ``s`` under-sizes that response (regression dilution). With the type-gated
        decoder on the synthetic tissue's leave-one-type-out protocol (8 held-out types x 2-3
        training seeds, same initial weights) ``"mean"`` raised the size of the predicted
        edge change (slope on the exact change) from 0.61 to 0.69, its skill from 0.80 to
        0.86 and the tutorial's top-50 Pearson from 0.863 to 0.895 (``docs/benchmarks.md``).
    type_aware_discriminator
        ``False`` (the published model): the discriminator predicts the domain from ``z``
        alone and the encoder is pushed towards a uniform prediction. ``True``: the
        discriminator also receives the cell's type label (one-hot), and the encoder is
        pushed towards that type's domain mix in the training data, the best the
        discriminator can do without ``z``. Why: cell types differ in where they live (malignant
        cells only in the tumour), so a type-blind discriminator reads the domain off the cell
        type that ``z`` must keep, and the adversary then fights the classifier instead of the
        niche signal hidden in ``z``. Told the type, the discriminator can only win from what
        ``z`` knows about the domain beyond the type, which is the leak that makes counterfactual
        niche responses too small. Needs cell-type labels; ignored without the adversary. With
        the type-gated decoder and ``spatial_decoding="mean"`` on the synthetic tissue's
        leave-one-type-out protocol (8 held-out types x 4 training seeds, the same donor draws
        and initial weights but the discriminator's) it raised the tutorial's top-50 Pearson
        from 0.885 to 0.908 (every seed higher), the skill of the exact edge change from 0.852
        to 0.887 and its size (slope) from 0.685 to 0.761 (``docs/benchmarks.md``).
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
        use_classifier: bool = True,
        use_adversary: bool = True,
        condition_on_intrinsic: bool = False,
        n_hidden_classifier: int = 64,
        spatial_kl_weight: float = 0.1,
        niche_decoder: NicheDecoder = "concat",
        niche_rank: int = 8,
        spatial_decoding: SpatialDecoding = "sample",
        type_aware_discriminator: bool = False,
    ):
        super().__init__()
        if spatial_decoding not in _SPATIAL_DECODINGS:
            raise ValueError(
                f"spatial_decoding={spatial_decoding!r} is not supported; use one of {_SPATIAL_DECODINGS}."
            )
        self.spatial_decoding = spatial_decoding
        if niche_decoder not in _NICHE_DECODERS:
            raise ValueError(f"niche_decoder={niche_decoder!r} is not supported; use one of {_NICHE_DECODERS}.")
        self.niche_decoder = niche_decoder
        if spatial_kl_weight < 0:
            raise ValueError(f"spatial_kl_weight={spatial_kl_weight} must be >= 0.")
        self.spatial_kl_weight = float(spatial_kl_weight)
        if gene_likelihood not in _LIKELIHOODS:
            raise ValueError(
                f"gene_likelihood={gene_likelihood!r} is not supported; use one of {_LIKELIHOODS}."
            )
        if dispersion not in _DISPERSIONS:
            raise ValueError(
                f"dispersion={dispersion!r} is not supported; use one of {_DISPERSIONS}."
            )
        if niche_decoder == "type_gated" and not use_classifier:
            raise ValueError(
                "niche_decoder='type_gated' gates the niche response by the cell-type classifier "
                "on z; it needs use_classifier=True (labels and a classifier weight > 0)."
            )
        if use_classifier and n_labels < 2:
            raise ValueError(
                f"The cell-type classifier needs at least 2 labels, got n_labels={n_labels}."
            )
        if use_adversary and n_domains < 2:
            raise ValueError(
                f"The domain adversary needs at least 2 domains, got n_domains={n_domains}."
            )
        self.n_input = n_input
        self.n_spatial = n_spatial
        self.n_batch = n_batch
        self.n_labels = n_labels
        self.n_domains = n_domains
        self.n_latent = n_latent
        self.n_latent_spatial = n_latent if n_latent_spatial is None else n_latent_spatial
        self.dispersion = dispersion
        self.gene_likelihood = gene_likelihood
        self.use_observed_lib_size = use_observed_lib_size
        self.condition_on_intrinsic = condition_on_intrinsic
        self.use_classifier = use_classifier
        self.use_adversary = use_adversary
        self.type_aware_discriminator = bool(type_aware_discriminator and use_adversary)
        if self.type_aware_discriminator and n_labels < 1:
            raise ValueError(
                "type_aware_discriminator=True tells the discriminator each cell's type; it needs "
                f"cell-type labels, got n_labels={n_labels}."
            )
        # Label x domain counts of the training cells: the domain mix a type alone predicts.
        # Saved only when used, so models saved before the option existed still load.
        self.register_buffer(
            "domain_counts_by_type",
            torch.zeros(n_labels, n_domains) if self.type_aware_discriminator else torch.zeros(0),
            persistent=self.type_aware_discriminator,
        )

        if not use_observed_lib_size:
            if library_log_means is None or library_log_vars is None:
                raise ValueError(
                    "use_observed_lib_size=False needs library_log_means and library_log_vars."
                )
            self.register_buffer(
                "library_log_means", torch.as_tensor(library_log_means, dtype=torch.float32)
            )
            self.register_buffer(
                "library_log_vars", torch.as_tensor(library_log_vars, dtype=torch.float32)
            )

        # Loss-normalisation factors are buffers so that they travel with the state dict
        # (checkpoints, save/load, DDP broadcast) rather than living in the plan.
        self.register_buffer("alpha_classifier", torch.tensor(1.0))
        self.register_buffer("alpha_adversarial", torch.tensor(1.0))
        self.register_buffer("alphas_frozen", torch.tensor(False))

        n_cat = max(n_batch, 1)
        if dispersion == "gene":
            self.px_r = torch.nn.Parameter(torch.randn(n_input))
        elif dispersion == "gene-batch":
            self.px_r = torch.nn.Parameter(torch.randn(n_input, n_cat))

        self.z_encoder = Encoder(
            n_input,
            n_latent,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            return_dist=True,
        )
        n_s_input = n_spatial + (n_latent if condition_on_intrinsic else 0)
        self.s_encoder = Encoder(
            n_s_input,
            self.n_latent_spatial,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            return_dist=True,
        )
        if not use_observed_lib_size:
            self.l_encoder = Encoder(
                n_input,
                1,
                n_layers=1,
                n_hidden=n_hidden,
                dropout_rate=dropout_rate,
                return_dist=True,
            )
        if niche_decoder in ("factorised", "type_gated"):
            self.decoder = FactorisedNicheDecoder(
                n_latent,
                self.n_latent_spatial,
                n_input,
                n_cat,
                rank=niche_rank,
                n_layers=n_layers,
                n_hidden=n_hidden,
                n_types=n_labels if niche_decoder == "type_gated" else 0,
            )
        else:
            self.decoder = DecoderSCVI(
                n_latent + self.n_latent_spatial,
                n_input,
                n_cat_list=[n_cat],
                n_layers=n_layers,
                n_hidden=n_hidden,
            )
        self.classifier = (
            Classifier(
                n_latent, n_hidden=n_hidden_classifier, n_labels=n_labels, n_layers=1, logits=True
            )
            if use_classifier
            else None
        )
        self.discriminator = (
            Classifier(
                n_latent + (n_labels if self.type_aware_discriminator else 0),
                n_hidden=n_hidden_classifier,
                n_labels=n_domains,
                n_layers=2,
                logits=True,
            )
            if use_adversary
            else None
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
            "phi": tensors[RK.SPATIAL_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    def _get_generative_input(
        self, tensors: dict[str, torch.Tensor], inference_outputs: dict, **kwargs
    ) -> dict:
        return {
            "z": inference_outputs[MK.Z_KEY],
            "s": inference_outputs[MK.S_KEY],
            "library": inference_outputs[MK.LIBRARY_KEY],
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    # ------------------------------------------------------------------ model
    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        phi: torch.Tensor,
        batch_index: torch.Tensor,
        give_mean: bool = False,
    ) -> dict[str, torch.Tensor | torch.distributions.Distribution | None]:
        """Encode ``z`` from the cell's counts and ``s`` from its niche features.

        Parameters
        ----------
        x
            Raw counts, ``(n_cells, n_input)``.
        phi
            Niche features, ``(n_cells, n_spatial)``.
        batch_index
            Batch codes, ``(n_cells, 1)``.
        give_mean
            Return posterior means instead of samples (deterministic decoding). With
            ``spatial_decoding="mean"`` ``s`` is the posterior mean either way.

        Returns
        -------
        dict
            ``z``, ``qz``, ``s``, ``qs``, ``ql`` and ``library`` (log scale).
        """
        x_log = torch.log1p(x)
        qz, z = self.z_encoder(x_log)
        if self.condition_on_intrinsic:
            # Detached so that the spatial branch cannot reshape z.
            s_input = torch.cat([phi, qz.loc.detach()], dim=-1)
        else:
            s_input = phi
        qs, s = self.s_encoder(s_input)
        ql = None
        if self.use_observed_lib_size:
            # Clamp so that a cell without counts yields a finite (zero) log library.
            library = torch.log(x.sum(dim=1, keepdim=True).clamp_min(1.0))
        else:
            ql, library = self.l_encoder(x_log)
            if give_mean:
                library = ql.loc
        if give_mean:
            z = qz.loc
        if give_mean or self.spatial_decoding == "mean":
            s = qs.loc
        return {
            MK.Z_KEY: z,
            MK.QZ_KEY: qz,
            MK.S_KEY: s,
            MK.QS_KEY: qs,
            MK.QL_KEY: ql,
            MK.LIBRARY_KEY: library,
        }

    @auto_move_data
    def generative(
        self,
        z: torch.Tensor,
        s: torch.Tensor,
        library: torch.Tensor,
        batch_index: torch.Tensor,
    ) -> dict[str, torch.distributions.Distribution | None]:
        """Decode counts from ``[z; s]`` with the batch injected.

        Parameters
        ----------
        z, s
            Intrinsic and spatial latents.
        library
            Log library size, ``(n_cells, 1)``.
        batch_index
            Batch codes, ``(n_cells, 1)``.

        Returns
        -------
        dict
            ``px`` (count distribution whose ``mu`` is at the given library and whose
            ``scale`` sums to one per cell), priors ``pz``, ``ps`` and ``pl``.
        """
        decoder_input = torch.cat([z, s], dim=-1)
        extra = {}
        if self.niche_decoder == "type_gated":
            # Detached: the gate reads the classifier, it does not train it or z.
            extra["type_probs"] = torch.softmax(self.classifier(z), dim=-1).detach()
        px_scale, px_r, px_rate, px_dropout = self.decoder(
            self.dispersion, decoder_input, library, batch_index, **extra
        )
        if self.dispersion == "gene":
            px_r = self.px_r
        elif self.dispersion == "gene-batch":
            px_r = F.linear(
                F.one_hot(batch_index.squeeze(-1).long(), self.px_r.shape[1]).float(), self.px_r
            )
        px_r = torch.exp(px_r)
        if self.gene_likelihood == "zinb":
            px = ZeroInflatedNegativeBinomial(
                mu=px_rate, theta=px_r, zi_logits=px_dropout, scale=px_scale
            )
        elif self.gene_likelihood == "nb":
            px = NegativeBinomial(mu=px_rate, theta=px_r, scale=px_scale)
        else:
            px = Poisson(rate=px_rate, scale=px_scale)
        pl = None
        if not self.use_observed_lib_size:
            n_cat = self.library_log_means.shape[1]
            onehot = F.one_hot(batch_index.squeeze(-1).long(), n_cat).float()
            pl = Normal(
                F.linear(onehot, self.library_log_means),
                F.linear(onehot, self.library_log_vars).sqrt(),
            )
        return {
            MK.PX_KEY: px,
            MK.PX_R_KEY: px_r,
            MK.PZ_KEY: Normal(torch.zeros_like(z), torch.ones_like(z)),
            MK.PS_KEY: Normal(torch.zeros_like(s), torch.ones_like(s)),
            MK.PL_KEY: pl,
        }

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
        """Add a training minibatch to the label x domain counts (type-aware discriminator only).

        Parameters
        ----------
        labels, domains
            Cell-type and domain codes, ``(n_cells, 1)``.
        """
        if not self.type_aware_discriminator:
            return
        idx = labels.view(-1).long() * self.n_domains + domains.view(-1).long()
        counts = torch.bincount(idx, minlength=self.n_labels * self.n_domains)
        self.domain_counts_by_type += counts.view(self.n_labels, self.n_domains).to(self.domain_counts_by_type)

    def _adversarial_loss(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        logits = self._discriminator_logits(z, labels)
        if not self.type_aware_discriminator:
            return uniform_target_cross_entropy(logits)
        # Target: the domain mix of the cell's type, what the discriminator knows without z.
        target = self.domain_mix_by_type()[labels.view(-1).long()]
        return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()

    def discriminator_loss(
        self, z: torch.Tensor, domains: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the discriminator predicting the domain from ``z``.

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
        loss = F.cross_entropy(logits, target)
        acc = (logits.argmax(dim=-1) == target).float().mean()
        return loss, acc

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float | torch.Tensor = 1.0,
        classifier_weight: float | torch.Tensor = 1.0,
        adversarial_weight: float | torch.Tensor = 1.0,
    ) -> LossOutput:
        """Objective ``L_VAE + classifier_weight * L_clf + adversarial_weight * L_adv``.

        ``L_VAE`` is the mean over cells of the negative log-likelihood plus
        ``kl_weight * (KL(z) + spatial_kl_weight * KL(s))``. ``L_clf`` is the cross-entropy
        of the cell-type classifier on ``z``; ``L_adv`` is the cross-entropy of the
        discriminator's prediction on ``z`` against the uniform distribution over domains
        (see :func:`uniform_target_cross_entropy`), or, with the type-aware discriminator,
        against the domain mix of the cell's type (:meth:`domain_mix_by_type`). The plan passes
        ``weight = lambda * alpha``.

        Parameters
        ----------
        tensors
            Minibatch (registry keys).
        inference_outputs, generative_outputs
            Outputs of :meth:`inference` and :meth:`generative`.
        kl_weight
            Weight of the KL terms (warm-up).
        classifier_weight, adversarial_weight
            Weights of the auxiliary terms.

        Returns
        -------
        LossOutput
            With ``vae_loss``, ``classifier_loss``, ``classifier_accuracy`` and
            ``adversarial_loss`` (unweighted) in ``extra_metrics``.
        """
        x = tensors[REGISTRY_KEYS.X_KEY]
        px = generative_outputs[MK.PX_KEY]
        if self.gene_likelihood == "nb":
            rec = -nb_log_likelihood(x, px.mu, generative_outputs[MK.PX_R_KEY])
        else:
            rec = -px.log_prob(x).sum(-1)
        kl_z = kl_divergence(inference_outputs[MK.QZ_KEY], generative_outputs[MK.PZ_KEY]).sum(-1)
        kl_s = kl_divergence(inference_outputs[MK.QS_KEY], generative_outputs[MK.PS_KEY]).sum(-1)
        if self.use_observed_lib_size:
            kl_l = torch.zeros_like(kl_z)
        else:
            kl_l = kl_divergence(
                inference_outputs[MK.QL_KEY], generative_outputs[MK.PL_KEY]
            ).sum(-1)
        vae_loss = torch.mean(rec + kl_weight * (kl_z + self.spatial_kl_weight * kl_s) + kl_l)
        total = vae_loss
        z = inference_outputs[MK.Z_KEY]
        extra: dict[str, torch.Tensor] = {
            METRIC_VAE_LOSS: vae_loss.detach(),
            "kl_z": kl_z.detach().mean(),
            "kl_s": kl_s.detach().mean(),
        }
        clf_kwargs = {}
        if self.classifier is not None:
            labels = tensors[REGISTRY_KEYS.LABELS_KEY].view(-1).long()
            logits = self.classifier(z)
            clf_loss = F.cross_entropy(logits, labels)
            total = total + classifier_weight * clf_loss
            extra[METRIC_CLF_LOSS] = clf_loss.detach()
            extra[METRIC_CLF_ACC] = (logits.argmax(-1) == labels).float().mean().detach()
            clf_kwargs = {
                "classification_loss": clf_loss,
                "logits": logits.detach(),
                "true_labels": labels,
            }
        if self.discriminator is not None:
            labels = tensors.get(REGISTRY_KEYS.LABELS_KEY)
            adv_loss = self._adversarial_loss(z, labels)
            total = total + adversarial_weight * adv_loss
            extra[METRIC_ADV_LOSS] = adv_loss.detach()
        return LossOutput(
            loss=total,
            reconstruction_loss=rec,
            kl_local={"kl_z": kl_z, "kl_s": kl_s, "kl_l": kl_l},
            extra_metrics=extra,
            **clf_kwargs,
        )

    @torch.inference_mode()
    def sample(self, tensors: dict[str, torch.Tensor], n_samples: int = 1) -> torch.Tensor:
        """Draw counts from the posterior predictive distribution.

        Parameters
        ----------
        tensors
            Minibatch (registry keys).
        n_samples
            Number of draws per cell.

        Returns
        -------
        torch.Tensor
            ``(n_samples, n_cells, n_input)`` counts.
        """
        _, gen = self.forward(tensors, compute_loss=False)
        return gen[MK.PX_KEY].sample((n_samples,))
