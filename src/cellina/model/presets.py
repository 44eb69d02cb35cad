"""Named option sets of the Cellina model: the published objective and our recommendation.

Every face of the project reads these: the Python API (:meth:`Cellina.from_preset`), the
command line (``cellina train --preset``), the Model dock and the documentation. Each option
is explained once, here, in :data:`OPTION_NOTES`; ``docs/benchmarks.md`` has the measured
effect of the presets.

A preset has model options (constructor arguments of :class:`~cellina.model.Cellina`) and plan
options (``plan_kwargs`` of :meth:`Cellina.train`). Options a preset does not name keep the
constructor's and the plan's defaults, which are what the published tutorial expects; sizes
(``n_latent``, ``n_hidden``, ``n_layers``) and training length stay the user's choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named set of model and training-plan options.

    Attributes
    ----------
    name
        Short name (``"published"``, ``"recommended"``).
    summary
        One line for menus and help texts.
    model
        Constructor options of :class:`~cellina.model.Cellina`.
    plan
        Options of :class:`~cellina.model.CellinaTrainingPlan` (``plan_kwargs``).
    """

    name: str
    summary: str
    model: Mapping[str, Any] = field(default_factory=dict)
    plan: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read-only views: a preset is shared by every face and must not be edited in place.
        object.__setattr__(self, "model", MappingProxyType(dict(self.model)))
        object.__setattr__(self, "plan", MappingProxyType(dict(self.plan)))

    def model_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """The preset's model options with ``overrides`` on top."""
        return {**self.model, **overrides}

    def plan_kwargs(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The preset's plan options with ``overrides`` on top."""
        return {**self.plan, **dict(overrides or {})}


PUBLISHED = Preset(
    name="published",
    summary="the published Cellina objective, exactly",
    model={
        "niche_decoder": "concat",
        "spatial_decoding": "sample",
        "spatial_kl_weight": 1.0,
        "adversarial_loss": "negative_ce",
        "type_aware_discriminator": False,
        "condition_on_intrinsic": False,
        "encode_batch": True,
        "domain_classifier_lambda": 0.0,
        "spatial_encoder": "mlp",
        "link_prediction_weight": 1.0,
        "num_neighbors": None,
        "subgraph_type": "induced",
        "classifier_kwargs": {"n_hidden": 128, "n_layers": 1},
        "discriminator_kwargs": {"n_hidden": 32, "n_layers": 2},
    },
    plan={
        "n_epochs_kl_warmup": 400,
        "normalize_losses": True,
        "train_while_normalizing": False,
        "validation_kl_weight": "warmup",
    },
)

RECOMMENDED = Preset(
    name="recommended",
    summary="the project's improvements: niche responses of the right size",
    model={
        "niche_decoder": "type_gated",
        "spatial_decoding": "mean",
        "spatial_kl_weight": 0.0,
        "adversarial_loss": "uniform",
        "type_aware_discriminator": True,
        "condition_on_intrinsic": False,
        "encode_batch": True,
        "domain_classifier_lambda": 0.0,
        "spatial_encoder": "linear",
        "link_prediction_weight": 0.0,
        "num_neighbors": (10, 5),
        "subgraph_type": "directional",
    },
    plan={
        "n_epochs_kl_warmup": "auto",
        "normalize_losses": True,
        "train_while_normalizing": True,
        "validation_kl_weight": "full",
    },
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in (PUBLISHED, RECOMMENDED)})

#: what each option a preset sets does, and why the two presets differ on it
OPTION_NOTES: Mapping[str, str] = MappingProxyType(
    {
        "niche_decoder": (
            "How s enters the decoder. 'concat' (published): one MLP on [z; s]. 'type_gated': an "
            "MLP on z plus a niche response that is low-rank across types and full-rank per cell "
            "type, so each type answers its niche with its own genes."
        ),
        "spatial_decoding": (
            "'sample' (published) decodes a posterior sample of s while training; 'mean' decodes "
            "its posterior mean, the value counterfactuals decode, so the learnt niche response "
            "is not shrunk by posterior noise."
        ),
        "spatial_kl_weight": (
            "Weight of KL(s) in the ELBO. 1 (published) is the plain ELBO; with it s tends to "
            "collapse and counterfactual changes come out far too small (the API default, 0.1, "
            "still shrinks them). 0 (recommended): the decoder reads the posterior mean of s, so "
            "the KL only pulls s towards zero, and with it every predicted niche response; without "
            "it s is an unpenalised map of the niche features."
        ),
        "adversarial_loss": (
            "How z is pushed to fool the domain discriminator. 'negative_ce' (published): "
            "maximise the discriminator's error, unbounded. 'uniform': match an uninformed "
            "guess (the type's domain mix with the type-aware discriminator), bounded."
        ),
        "type_aware_discriminator": (
            "Tell the discriminator each cell's type, so the adversary removes what z knows "
            "about the domain beyond the type rather than the type itself."
        ),
        "spatial_encoder": (
            "How s is read from the niche features. 'mlp' (published): scvi-tools' two-layer encoder. "
            "'linear': the posterior mean of s is an affine map of the standardised features, so a niche "
            "beyond those seen in training (a held-out type's new neighbourhood) is not squashed by the "
            "hidden layers; with the type-gated decoder the niche response stays linear in the niche. "
            "In the graph variant it finishes each graph layer: 'mlp' (published) with layer norm and ReLU, "
            "'linear' with a batch normalisation across cells and no activation, so s learns the niche "
            "from the likelihood too, not from the contrastive loss alone."
        ),
        "link_prediction_weight": (
            "Graph variant only: weight of the supervised-contrastive loss on s (neighbours alike, other "
            "domains apart). 1 (published); 0 (recommended): with linear graph layers s learns the niche "
            "from the likelihood, and the contrastive loss, which asks for no size of response, shrank "
            "it (docs/benchmarks.md). Cellina has no such loss and ignores it."
        ),
        "num_neighbors": (
            "Graph variant only: neighbours sampled per hop while training (predictions read every "
            "neighbour). None (published): all. (10, 5) (recommended): 10 in the first hop, 5 in each "
            "further one, however many layers; on two development worlds at least as accurate as all "
            "neighbours (edge skill 0.85 and 0.77 against 0.84 and 0.72) and 1.7-2.1 times faster per "
            "epoch (docs/benchmarks.md)."
        ),
        "subgraph_type": (
            "Graph variant only: 'induced' (published) keeps every graph edge between the sampled cells, "
            "'directional' (recommended) only the sampled ones, so each cell's messages come from the "
            "neighbours drawn for it."
        ),
        "condition_on_intrinsic": "Feed a detached z to the s encoder as well (off in both presets).",
        "encode_batch": (
            "With several slides, the batch enters both encoders and the decoder (published), so "
            "the encoders can explain slide effects by the covariate; the niche features still "
            "carry them into s."
        ),
        "domain_classifier_lambda": "Weight of a classifier of the domain from s (off in both presets).",
        "classifier_kwargs": "Size of the cell-type classifier (published: 128 hidden units, 1 layer).",
        "discriminator_kwargs": "Size of the domain discriminator (published: 32 hidden units, 2 layers).",
        "n_epochs_kl_warmup": (
            "KL warm-up. 400 epochs is scvi-tools' schedule (published): a 100-epoch run never "
            "reaches the full ELBO. 'auto': a quarter of max_epochs, at most 100."
        ),
        "normalize_losses": "Rescale each auxiliary loss to the size of the VAE loss, measured over epoch 0.",
        "train_while_normalizing": (
            "Whether epoch 0 trains while the loss scales are measured (published: it only measures)."
        ),
        "validation_kl_weight": (
            "KL weight of vae_loss_validation, the early-stopping monitor: 'warmup' (published) "
            "uses the current warm-up weight, 'full' the final one, so values compare across epochs."
        ),
    }
)


def get_preset(preset: str | Preset) -> Preset:
    """The preset named ``preset`` (``"published"`` or ``"recommended"``), or ``preset`` itself.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.
    """
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[str(preset).lower()]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; use one of {sorted(PRESETS)}.") from None
