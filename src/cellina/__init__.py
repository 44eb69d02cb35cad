"""Cellina: tissue-graph counterfactuals for spatial transcriptomics.

The public API is imported lazily, so ``import cellina`` stays fast and pulls in
neither torch nor any GUI toolkit until a name that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY_ATTRIBUTES: dict[str, str] = {
    "spatial_neighbors": "cellina.spatial",
    "compute_spatial_features": "cellina.spatial",
    "make_neighbor_perturbation": "cellina.spatial",
    "make_perturbed_expression": "cellina.spatial",
    "make_counterfactual_adata": "cellina.counterfactual",
    "Cellina": "cellina.model",
    "CellinaGCN": "cellina.model",
    "CellinaModule": "cellina.model",
    "CellinaGCNModule": "cellina.model",
    "CellinaAdversarialTrainingPlan": "cellina.model",
}
_LAZY_SUBMODULES = ("datasets", "evaluation", "spatial", "model", "counterfactual")

__all__ = sorted([*_LAZY_ATTRIBUTES, *_LAZY_SUBMODULES, "__version__"])

if TYPE_CHECKING:  # pragma: no cover - for static analysers only
    from cellina import counterfactual, datasets, evaluation, model, spatial
    from cellina.counterfactual import make_counterfactual_adata
    from cellina.model import (
        Cellina,
        CellinaAdversarialTrainingPlan,
        CellinaGCN,
        CellinaGCNModule,
        CellinaModule,
    )
    from cellina.spatial import (
        compute_spatial_features,
        make_neighbor_perturbation,
        make_perturbed_expression,
        spatial_neighbors,
    )


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    elif name in _LAZY_SUBMODULES:
        value = importlib.import_module(f"cellina.{name}")
    else:
        raise AttributeError(f"module 'cellina' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
