"""Layer-wise prediction with the graph encoder: every cell's layers computed once, on all neighbours.

Training samples a neighbourhood per seed; prediction does not need to. To predict ``s`` for some
cells, the layers below the last are computed once for every cell in their receptive field, a
chunk of cells at a time over full neighbourhoods (node features densified per chunk only);
minibatches then carry the last layer's input for each seed's neighbours
(:data:`~cellina.model._constants.GRAPH_KEYS` with ``graph_start = n_layers - 1``), and the
module's own ``inference`` finishes the job. Nothing is computed twice, so predicting every cell
of a tissue costs about one pass per layer, and the result does not depend on the batch size.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ._constants import GRAPH_KEYS as GK
from ._graph_data import GraphInputs, NodeFeatures, _codes, pack_blocks
from ._graph_sampler import block_of, receptive_field

#: cells updated per chunk of a layer-wise pass
CHUNK = 4096


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


class _Layerwise:
    """Runs the graph encoder's layers one at a time over whole receptive fields."""

    def __init__(self, module: Any, inputs: GraphInputs, chunk: int = CHUNK):
        self.module, self.inputs, self.chunk = module, inputs, max(1, int(chunk))
        self.encoder = module.s_encoder
        self.device = _device(module)
        self.degree = torch.from_numpy(inputs.degree)

    def _layer_input(self, layer: int, nodes: np.ndarray, ids: np.ndarray | None, states: torch.Tensor | None):
        if layer == 0:
            return torch.from_numpy(self.inputs.features.rows(nodes))
        return states[np.searchsorted(ids, nodes)]

    def run(
        self, fields: list[np.ndarray], n_run: int, attention_rows: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, torch.Tensor | None, list[sp.coo_matrix]]:
        """Layers ``0 .. n_run - 1``; layer ``l`` updates ``fields[n_layers - 1 - l]``.

        Returns the cells the last run layer updated, their outputs (CPU) and, for each run
        layer, the attention that ``attention_rows`` pay their neighbours (GATv2 only).
        """
        n_layers = self.encoder.n_layers
        ids = states = None
        attention = []
        n_obs = self.inputs.graph.shape[0]
        wanted = None
        if attention_rows is not None:
            wanted = np.zeros(n_obs, dtype=bool)
            wanted[attention_rows] = True
        for layer in range(n_run):
            update = fields[n_layers - 1 - layer]
            out = torch.empty(update.size, self.encoder.n_hidden)
            rows, cols, vals = [], [], []
            for a in range(0, update.size, self.chunk):
                targets = update[a : a + self.chunk]
                nodes, edges = block_of(self.inputs.graph, targets)
                x = self._layer_input(layer, nodes, ids, states).to(self.device)
                h, alpha = self.encoder.layer(
                    layer,
                    x,
                    x[: targets.size],
                    torch.from_numpy(edges).to(self.device),
                    torch.from_numpy(self.inputs.batch[targets]).to(self.device),
                    self.degree[nodes].to(self.device),
                    return_attention=wanted is not None,
                )
                out[a : a + targets.size] = h.cpu()
                if wanted is not None:
                    keep = wanted[targets[edges[1]]]
                    rows.append(targets[edges[1][keep]])
                    cols.append(nodes[edges[0][keep]])
                    vals.append(alpha.cpu().numpy()[keep])
            ids, states = update, out
            if wanted is not None:
                data = np.concatenate(vals) if vals else np.zeros(0, dtype=np.float32)
                ij = (np.concatenate(rows), np.concatenate(cols)) if rows else (np.zeros(0, int), np.zeros(0, int))
                attention.append(sp.coo_matrix((data.astype(np.float32), ij), shape=(n_obs, n_obs)))
        return ids, states, attention


class _Mode:
    """Evaluation mode and no gradients for the duration of a prediction, then the mode as before."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.was_training = module, module.training
        self.grad = torch.inference_mode()

    def __enter__(self):
        self.module.eval()
        self.grad.__enter__()

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        self.module.train(self.was_training)


class GraphPredictionBatches:
    """Minibatches of ``indices`` (in order) for prediction, after a layer-wise pass.

    Iterable any number of times; the layer-wise pass runs on the first iteration.

    Parameters
    ----------
    module
        A :class:`~cellina.model.CellinaGCNModule`.
    inputs
        Counts, node features and the graph the prediction uses.
    indices
        Cells to predict (repeats allowed).
    batch_size
        Seeds per minibatch.
    """

    def __init__(self, module: Any, inputs: GraphInputs, indices: np.ndarray, batch_size: int):
        self.module, self.inputs = module, inputs
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = max(1, int(batch_size))
        self._states: tuple[np.ndarray, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(np.ceil(self.indices.size / self.batch_size))

    def _precompute(self) -> None:
        n_layers = self.module.n_graph_layers
        if n_layers == 1 or self._states is not None:
            return
        fields = receptive_field(self.inputs.graph, self.indices, n_layers - 1)
        with _Mode(self.module):
            ids, states, _ = _Layerwise(self.module, self.inputs).run(fields, n_layers - 1)
        self._states = (ids, states)

    def _batch(self, seeds: np.ndarray) -> dict[str, torch.Tensor]:
        inputs, n_layers = self.inputs, self.module.n_graph_layers
        nodes, edges = block_of(inputs.graph, seeds)
        if self._states is None:
            x = torch.from_numpy(inputs.features.rows(nodes))
        else:
            ids, states = self._states
            x = states[np.searchsorted(ids, nodes)]
        batch = inputs.registry_entries(seeds, NodeFeatures(inputs.counts).raw(seeds))
        batch.update(pack_blocks([edges], [nodes.size, seeds.size], n_layers - 1))
        batch[GK.X] = x
        batch[GK.BATCH] = _codes(inputs.batch, nodes)
        batch[GK.DEGREE] = torch.from_numpy(inputs.degree[nodes])
        batch[GK.NODES] = torch.from_numpy(nodes)
        return batch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._precompute()
        for a in range(0, self.indices.size, self.batch_size):
            yield self._batch(self.indices[a : a + self.batch_size])


def attention_weights(module: Any, inputs: GraphInputs, rows: np.ndarray) -> list[sp.csr_matrix]:
    """Each GATv2 layer's attention that ``rows`` pay their in-neighbours, as cells x cells CSR.

    Row ``i`` of layer ``l`` holds the softmax weights cell ``i`` gives its neighbours in that
    layer (they sum to one when ``i`` has neighbours); rows not in ``rows`` are empty.
    """
    if module.convolution_type != "gat":
        raise ValueError(
            f"attention weights exist for convolution_type='gat' only; this model uses {module.convolution_type!r}."
        )
    n_layers = module.n_graph_layers
    fields = receptive_field(inputs.graph, rows, n_layers - 1)
    with _Mode(module):
        _, _, attention = _Layerwise(module, inputs).run(fields, n_layers, attention_rows=fields[0])
    return [a.tocsr() for a in attention]
