"""Registry and output keys shared by the Cellina module, model and training plan."""

from __future__ import annotations

from typing import NamedTuple


class _CellinaRegistryKeys(NamedTuple):
    SPATIAL_KEY: str = "spatial_x"
    DOMAINS_KEY: str = "domains"


class _CellinaModuleKeys(NamedTuple):
    Z_KEY: str = "z"
    QZ_KEY: str = "qz"
    S_KEY: str = "s"
    QS_KEY: str = "qs"
    QL_KEY: str = "ql"
    LIBRARY_KEY: str = "library"
    PX_KEY: str = "px"
    PX_R_KEY: str = "px_r"
    PZ_KEY: str = "pz"
    PS_KEY: str = "ps"
    PL_KEY: str = "pl"


CELLINA_REGISTRY_KEYS = _CellinaRegistryKeys()
CELLINA_MODULE_KEYS = _CellinaModuleKeys()

#: metric names logged to ``model.history`` (suffixed with ``_train`` / ``_validation``)
METRIC_VAE_LOSS = "vae_loss"
METRIC_CLF_LOSS = "classifier_loss"
METRIC_CLF_ACC = "classifier_accuracy"
METRIC_ADV_LOSS = "adversarial_loss"
METRIC_DISC_LOSS = "discriminator_loss"
METRIC_DISC_ACC = "discriminator_accuracy"
METRIC_ALPHA_CLF = "alpha_classifier"
METRIC_ALPHA_ADV = "alpha_adversarial"
METRIC_KL_WEIGHT = "kl_weight"
