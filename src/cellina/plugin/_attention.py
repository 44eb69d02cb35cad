"""Attention of the graph variant for the plugin: pure functions of explicit inputs.

:class:`~cellina.model.CellinaGCN` computes, per GATv2 layer, the weight each cell (the
receiver) gives each of its graph neighbours (the senders); a receiver's weights sum to 1.
The attention step computes them once per model (:meth:`CellinaGCN.get_attention_weights`);
the functions below read one receiver's edges and group the weights into a receiver x sender
table (:func:`cellina.model.attention_by_group`). Their colours are in :mod:`cellina.plugin._colours`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.plugin._state import Attention, Progress, SessionError, Steps


def attention_problem(model: Any) -> str | None:
    """Why ``model`` has no attention to show, or None when it has."""
    if model is None:
        return "no model yet: train or load a CellinaGCN model first"
    if getattr(model, "niche_input", "features") != "graph":
        return (
            f"attention exists for CellinaGCN only: this model is {type(model).__name__}, whose niche is a "
            "fixed kernel-weighted mean of the neighbours (choose CellinaGCN in the Model dock)"
        )
    convolution = getattr(getattr(model, "module", None), "convolution_type", "gat")
    if convolution != "gat":
        return f"attention exists for convolution_type='gat' only; this model uses {convolution!r}"
    return None


def attention_steps(model: Any, adata: ad.AnnData) -> Steps:
    """Every GATv2 layer's attention on ``adata``'s graph (held-out cells are nobody's neighbour)."""
    problem = attention_problem(model)
    if problem is not None:
        raise SessionError(problem)
    yield Progress(0, 1, "attention of every cell")
    layers = model.get_attention_weights(adata)
    yield Progress(1, 1, "done")
    return Attention(model=model, adata=adata, layers=tuple(sp.csr_matrix(m) for m in layers))


@dataclass(frozen=True)
class ReceiverEdges:
    """The neighbours (senders) one cell (the receiver) attends to in one layer, and the weights.

    ``relative`` is each weight times the receiver's number of neighbours: 1 is uniform attention.
    """

    receiver: int
    senders: np.ndarray
    weights: np.ndarray
    layer: int
    n_layers: int

    @property
    def relative(self) -> np.ndarray:
        return self.weights * max(self.senders.size, 1)


def layer_index(layer: int, n_layers: int) -> int:
    """A layer number (negative counts from the last) as a position, with an error naming it."""
    if not -n_layers <= int(layer) < n_layers:
        raise SessionError(f"layer={layer} is out of range: the model has {n_layers} GATv2 layer(s)")
    return int(layer) % n_layers


def receiver_edges(layers: tuple, receiver: int, layer: int = -1) -> ReceiverEdges:
    """The stored entries of row ``receiver`` of one layer: its neighbours and their weights."""
    which = layer_index(layer, len(layers))
    matrix = layers[which]
    if not 0 <= int(receiver) < matrix.shape[0]:
        raise SessionError(f"cell {receiver} is out of range: the tissue has {matrix.shape[0]} cells")
    start, end = matrix.indptr[int(receiver)], matrix.indptr[int(receiver) + 1]
    senders = np.asarray(matrix.indices[start:end], dtype=np.int64)
    weights = np.asarray(matrix.data[start:end], dtype=np.float64)
    order = np.argsort(senders, kind="stable")
    return ReceiverEdges(int(receiver), senders[order], weights[order], which, len(layers))


def attention_table(layers: tuple, groups: pd.Series, layer: int = -1) -> pd.DataFrame:
    """Receiver group x sender group attention relative to uniform (:func:`cellina.model.attention_by_group`)."""
    from cellina.model import attention_by_group

    matrix = layers[layer_index(layer, len(layers))]
    return attention_by_group(matrix, groups, normalize=True)
