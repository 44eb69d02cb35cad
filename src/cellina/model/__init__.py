"""Cellina on scvi-tools: module, model and adversarial training plan."""

from ._model import Cellina
from ._module import CellinaModule, FactorisedNicheDecoder
from ._splits import holdout_split
from ._training_plan import CellinaTrainingPlan, auto_kl_warmup_epochs

__all__ = [
    "Cellina",
    "CellinaModule",
    "CellinaTrainingPlan",
    "FactorisedNicheDecoder",
    "auto_kl_warmup_epochs",
    "holdout_split",
]
