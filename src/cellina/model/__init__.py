"""Cellina on scvi-tools: module, model, adversarial training plan and presets."""

from . import presets
from ._decoders import FactorisedNicheDecoder
from ._model import Cellina
from ._module import CellinaModule
from ._splits import holdout_split
from ._training import train_model
from ._training_plan import CellinaTrainingPlan, auto_kl_warmup_epochs, linear_warmup
from .presets import PRESETS, PUBLISHED, RECOMMENDED, Preset, get_preset

#: the published name of the training plan
CellinaAdversarialTrainingPlan = CellinaTrainingPlan

__all__ = [
    "PRESETS",
    "PUBLISHED",
    "RECOMMENDED",
    "Cellina",
    "CellinaAdversarialTrainingPlan",
    "CellinaModule",
    "CellinaTrainingPlan",
    "FactorisedNicheDecoder",
    "Preset",
    "auto_kl_warmup_epochs",
    "get_preset",
    "holdout_split",
    "linear_warmup",
    "presets",
    "train_model",
]
