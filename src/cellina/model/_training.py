"""One training entry for every face: register the data, split off held-out cells, train."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from anndata import AnnData

from cellina.keys import OBSM, OBSP

from ._model import Cellina
from ._splits import holdout_split
from ._variants import model_class
from .presets import Preset


def train_model(
    adata: AnnData,
    *,
    labels_key: str | None,
    domains_key: str | None,
    batch_key: str | None = None,
    layer: str | None = "counts",
    spatial_obsm_key: str = OBSM.NICHE_FEATURES,
    heldout: Any = None,
    validation_size: float = 0.1,
    seed: int = 0,
    preset: str | Preset | None = "recommended",
    model_kwargs: dict[str, Any] | None = None,
    plan_kwargs: dict[str, Any] | None = None,
    model: str | type = "cellina",
    spatial_connectivities_key: str = OBSP.CONNECTIVITIES,
    **train_kwargs: Any,
) -> Cellina:
    """Set up ``adata``, build a model from a preset and train it with held-out cells kept out.

    The command line, the plugin and the evaluation protocol all train through this function,
    so the same inputs, preset and seed give the same model whatever the face.

    Parameters
    ----------
    adata
        AnnData with counts and niche features (:func:`cellina.preprocessing.prepare_tissue`);
        registered in place, as :meth:`Cellina.setup_anndata` does. The graph variant reads
        the spatial graph instead of the niche features.
    labels_key, domains_key, batch_key, layer, spatial_obsm_key
        As in :meth:`Cellina.setup_anndata` (``spatial_obsm_key``: Cellina only).
    heldout
        Cells held out of training (positions or a boolean mask): they become the test part of
        the split and are recorded with the model (``model.heldout_indices_``). Their graph
        edges must already be masked (``spatial_neighbors(test_indices=...)``).
    validation_size
        Fraction of the other cells used for validation (``0``: none).
    seed
        Seed of the split and of the weights.
    preset
        ``"recommended"`` (default), ``"published"``, a :class:`Preset` or ``None`` (the
        constructor's defaults).
    model_kwargs
        Constructor options on top of the preset's.
    plan_kwargs
        Training-plan options on top of the preset's.
    model
        The variant: ``"cellina"`` (default, niche features) or ``"gcn"``
        (:class:`~cellina.model.CellinaGCN`, a graph encoder over the spatial graph).
    spatial_connectivities_key
        ``obsp`` key of the spatial graph the graph variant reads.
    **train_kwargs
        Passed to :meth:`Cellina.train` (``max_epochs``, ``batch_size``, ``early_stopping``,
        ``callbacks``, ``accelerator``...).

    Returns
    -------
    Cellina or CellinaGCN
        The trained model.
    """
    cls = model_class(model)
    keys = {"batch_key": batch_key, "labels_key": labels_key, "domains_key": domains_key, "layer": layer}
    if cls is Cellina:
        cls.setup_anndata(adata, spatial_obsm_key=spatial_obsm_key, **keys)
    else:
        cls.setup_anndata(adata, spatial_connectivities_key=spatial_connectivities_key, **keys)
    held = None if heldout is None else np.asarray(heldout)
    if held is not None and held.dtype == bool:
        held = np.flatnonzero(held)
    split = holdout_split(adata.n_obs, held, validation_size, seed)
    torch.manual_seed(seed)
    options = dict(model_kwargs or {})
    trained = cls(adata, **options) if preset is None else cls.from_preset(adata, preset, **options)
    if split[1].size:
        train_kwargs.setdefault("check_val_every_n_epoch", 1)
    trained.train(datasplitter_kwargs={"external_indexing": split}, plan_kwargs=plan_kwargs, **train_kwargs)
    return trained
