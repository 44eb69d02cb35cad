"""A family of synthetic evaluation worlds with exact counterfactual truth.

Each world is generated from a :class:`WorldSpec`: niche channels that differ in what is sensed
(a type fraction, senders' ligand expression, proximity to vessels, a gradient), the kernel and
reach (contact, Gaussian, exponential), and the dose-response (linear, saturating, threshold);
a layout with malignant nests, immune aggregates and vessels; intrinsic confounds between
domains (subtype mix, cell state, cell size); depth, panel size, slides and batch effects. The
generator shares no code with the model (it never imports ``cellina.spatial`` or
``cellina.model``). The registry splits the named worlds into development, evaluation and
confirmation worlds.
"""

from cellina.datasets.worlds._catalogue import COARSE_TYPES, DOMAINS, FINE_TO_COARSE, FINE_TYPES
from cellina.datasets.worlds._generate import make_world
from cellina.datasets.worlds._registry import (
    CONFIRMATION_WORLDS,
    DEVELOPMENT_WORLDS,
    EVALUATION_WORLDS,
    HOLDOUT_TYPES,
    LOCKED_WORLDS,
    RESERVE_WORLDS,
    SEALED_WORLDS,
    SPLITS,
    VAULT_WORLDS,
    WORLDS,
    list_worlds,
    world_spec,
    world_split,
)
from cellina.datasets.worlds._spec import (
    DOSES,
    GRADIENTS,
    KERNELS,
    SENSED,
    Channel,
    Confounds,
    Layout,
    WorldSpec,
    kernel_reach,
    spec_from_dict,
    spec_to_dict,
)
from cellina.datasets.worlds._store import WORLD_KEY
from cellina.datasets.worlds._truth import WorldTruth

__all__ = [
    "COARSE_TYPES",
    "DOMAINS",
    "FINE_TO_COARSE",
    "FINE_TYPES",
    "DEVELOPMENT_WORLDS",
    "DOSES",
    "CONFIRMATION_WORLDS",
    "RESERVE_WORLDS",
    "SEALED_WORLDS",
    "VAULT_WORLDS",
    "LOCKED_WORLDS",
    "SPLITS",
    "EVALUATION_WORLDS",
    "GRADIENTS",
    "HOLDOUT_TYPES",
    "KERNELS",
    "SENSED",
    "WORLDS",
    "WORLD_KEY",
    "Channel",
    "Confounds",
    "Layout",
    "WorldSpec",
    "WorldTruth",
    "kernel_reach",
    "list_worlds",
    "make_world",
    "spec_from_dict",
    "spec_to_dict",
    "world_spec",
    "world_split",
]
