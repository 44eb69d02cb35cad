"""Cellina on scvi-tools: module, model, adversarial training plan and presets."""

from . import presets
from ._attention import attention_by_group
from ._decoders import FactorisedNicheDecoder
from ._gcn_model import CellinaGCN
from ._gcn_module import CellinaGCNModule
from ._graph_data import GraphDataSplitter, check_seed_patches
from ._graph_encoder import CONVOLUTION_TYPES, GraphEncoder
from ._graph_sampler import SUBGRAPH_TYPES, fit_fanouts
from ._model import Cellina
from ._module import CellinaModule
from ._splits import holdout_split
from ._training import train_model
from ._training_plan import CellinaTrainingPlan, auto_kl_warmup_epochs, linear_warmup
from ._variants import MODEL_VARIANTS, load_model, model_class, saved_model_class, variant_name
from .presets import PRESETS, PUBLISHED, RECOMMENDED, Preset, get_preset

#: the published name of the training plan
CellinaAdversarialTrainingPlan = CellinaTrainingPlan

__all__ = [
    "CONVOLUTION_TYPES",
    "MODEL_VARIANTS",
    "PRESETS",
    "PUBLISHED",
    "RECOMMENDED",
    "SUBGRAPH_TYPES",
    "Cellina",
    "CellinaAdversarialTrainingPlan",
    "CellinaGCN",
    "CellinaGCNModule",
    "CellinaModule",
    "CellinaTrainingPlan",
    "FactorisedNicheDecoder",
    "GraphDataSplitter",
    "GraphEncoder",
    "Preset",
    "attention_by_group",
    "auto_kl_warmup_epochs",
    "check_seed_patches",
    "fit_fanouts",
    "get_preset",
    "holdout_split",
    "linear_warmup",
    "load_model",
    "model_class",
    "presets",
    "saved_model_class",
    "train_model",
    "variant_name",
]
