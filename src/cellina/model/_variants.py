"""The model variants every face offers: ``"cellina"`` (niche features) and ``"gcn"`` (graph encoder)."""

from __future__ import annotations

import os
from typing import Any

import torch

from ._gcn_model import CellinaGCN
from ._model import Cellina

#: variant name -> model class; the names the command line, the protocol and the plugin use
MODEL_VARIANTS: dict[str, type[Cellina]] = {"cellina": Cellina, "gcn": CellinaGCN}


def model_class(variant: str | type) -> type[Cellina]:
    """The model class of ``variant`` (``"cellina"``, ``"gcn"``, a class name or the class itself)."""
    if isinstance(variant, type) and variant in MODEL_VARIANTS.values():
        return variant
    key = str(variant).lower()
    by_class_name = {cls.__name__.lower(): cls for cls in MODEL_VARIANTS.values()}
    if key in MODEL_VARIANTS:
        return MODEL_VARIANTS[key]
    if key in by_class_name:
        return by_class_name[key]
    raise ValueError(f"unknown model variant {variant!r}; use one of {sorted(MODEL_VARIANTS)}.")


def variant_name(model: Any) -> str:
    """The variant name of a model instance or class (``"cellina"`` or ``"gcn"``)."""
    cls = model if isinstance(model, type) else type(model)
    for name, candidate in sorted(MODEL_VARIANTS.items(), key=lambda item: item[0] == "cellina"):
        if issubclass(cls, candidate):
            return name
    raise ValueError(f"{cls.__name__} is not a Cellina model variant.")


def saved_model_class(dir_path: str, prefix: str = "") -> type[Cellina]:
    """The class a model folder was saved from (read from its ``model.pt``)."""
    path = os.path.join(dir_path, f"{prefix}model.pt")
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved Cellina model at {path}.")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    name = saved.get("attr_dict", {}).get("registry_", {}).get("model_name", "Cellina")
    return model_class(name)


def load_model(dir_path: str, adata: Any = None, **kwargs: Any) -> Cellina:
    """Load a saved :class:`Cellina` or :class:`CellinaGCN`, whichever the folder holds.

    Parameters
    ----------
    dir_path
        Folder holding ``model.pt``.
    adata
        AnnData with the training data's genes (``None``: the one saved with the model).
    **kwargs
        Passed to the class's ``load``.
    """
    return saved_model_class(dir_path, kwargs.get("prefix") or "").load(dir_path, adata=adata, **kwargs)
