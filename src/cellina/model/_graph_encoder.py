"""The spatial encoder of CellinaGCN: stacked graph layers over a cell's neighbourhood, Gaussian head.

Every layer reads the previous representation of a cell's in-neighbours only; no layer adds a
self-loop, so a cell's own expression reaches its ``s`` through its neighbours (after two layers,
along paths such as cell -> neighbour -> cell) and, with GATv2, through the attention scores
(GATv2 scores an edge from both ends), never as a message of its own.

Layers work on blocks: ``x_src`` are the nodes a layer reads, ``x_dst`` the nodes it updates,
which are always the first rows of ``x_src`` (see :mod:`cellina.model._graph_sampler`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal
from torch_geometric.nn import GATv2Conv, GCNConv, GINConv, SimpleConv
from torch_geometric.utils import softmax

from ._gat_kernels import fused_gatv2, fused_gatv2_available

#: graph layers of the spatial encoder (the published names)
CONVOLUTION_TYPES = ("gat", "gcn", "gin", "sg", "mean")


class GraphLayer(nn.Module):
    """One message-passing layer without self-loops.

    ``"gat"``: torch-geometric's ``GATv2Conv`` (one head, no self-loops); ``"gcn"``: ``GCNConv``
    with the symmetric normalisation ``1 / sqrt(d_i d_j)`` from the cells' full-graph degrees;
    ``"sg"``: the same normalised propagation followed by a linear map (SGC with one hop);
    ``"gin"``: ``GINConv`` on the neighbours only (the root term is left out); ``"mean"``: a
    linear map, then the mean over neighbours.
    """

    def __init__(self, kind: str, n_in: int, n_out: int):
        super().__init__()
        if kind not in CONVOLUTION_TYPES:
            raise ValueError(f"convolution_type={kind!r} is not supported; use one of {CONVOLUTION_TYPES}.")
        self.kind = kind
        if kind == "gat":
            self.conv = GATv2Conv(n_in, n_out, heads=1, concat=False, add_self_loops=False)
        elif kind == "gcn":
            self.conv = GCNConv(n_in, n_out, add_self_loops=False, normalize=False)
        elif kind == "gin":
            mlp = nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU(), nn.Linear(n_out, n_out))
            self.conv = GINConv(mlp)
        else:
            self.lin = nn.Linear(n_in, n_out)
            self.conv = SimpleConv(aggr="sum" if kind == "sg" else "mean", combine_root=None)

    def forward(
        self,
        x_src: torch.Tensor,
        x_dst: torch.Tensor,
        edge_index: torch.Tensor,
        degree: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Updated ``x_dst`` and, for GATv2 with ``return_attention``, each edge's attention."""
        if self.kind == "gat":
            out, alpha = gatv2(self.conv, x_src, x_dst, edge_index)
            return out, alpha if return_attention else None
        if self.kind == "gin":
            return self.conv((x_src, torch.zeros_like(x_dst)), edge_index), None
        if self.kind == "mean":
            h = self.lin(x_src)
            return self.conv((h, h[: x_dst.shape[0]]), edge_index), None
        weight = _symmetric_weights(edge_index, degree, x_src)
        if self.kind == "gcn":
            out = self.conv(x_src, edge_index, edge_weight=weight)
            return out[: x_dst.shape[0]], None
        propagated = self.conv((x_src, x_dst), edge_index, edge_weight=weight)
        return self.lin(propagated), None


def gatv2(
    conv: GATv2Conv,
    x_src: torch.Tensor,
    x_dst: torch.Tensor,
    edge_index: torch.Tensor,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``conv``'s output for ``x_dst`` (one head, no self-loops, no edge features) and each edge's attention.

    The same function as ``conv((x_src, x_dst), edge_index)``, with fewer passes over the
    edges. Cost grows with edges x channels, so the edge part is most of a layer's time. On the
    CPU (float32, no attention dropout) it runs in the fused kernels of
    :mod:`cellina.model._gat_kernels`, which store nothing of size edges x channels; elsewhere
    in torch operations, where each source's ``lin_l`` row is gathered once for both the score
    and the message (torch-geometric gathers it twice) and the score is one matrix-vector
    product rather than a product and a sum. ``fused=False`` forces the torch path (``None``:
    the kernels wherever they apply).
    """
    x_l = conv.lin_l(x_src)
    x_r = conv.lin_r(x_dst)
    usable = (conv.dropout == 0 or not conv.training) and fused is not False
    if usable and fused_gatv2_available(x_l, x_r, conv.att):
        out, alpha = fused_gatv2(x_l, x_r, conv.att, edge_index, conv.negative_slope)
        return (out if conv.bias is None else out + conv.bias), alpha
    src, dst = edge_index[0], edge_index[1]
    x_j = x_l.index_select(0, src)
    scores = F.leaky_relu(x_j + x_r.index_select(0, dst), conv.negative_slope) @ conv.att.reshape(-1)
    alpha = softmax(scores, dst, num_nodes=x_dst.shape[0])
    weights = F.dropout(alpha, p=conv.dropout, training=conv.training)
    out = torch.zeros(x_dst.shape[0], x_l.shape[1], dtype=x_l.dtype, device=x_l.device)
    out = out.index_add(0, dst, x_j * weights.unsqueeze(1))
    if conv.bias is not None:
        out = out + conv.bias
    return out, alpha


def _symmetric_weights(edge_index: torch.Tensor, degree: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if degree is None:
        raise ValueError("GCN-type layers need the cells' graph degrees (graph_degree) in the minibatch.")
    deg = degree.to(x.dtype).clamp_min(1.0)
    return torch.rsqrt(deg[edge_index[0]] * deg[edge_index[1]])


#: how the graph layers are finished: the published ``"mlp"`` or the ``"linear"`` layers
GRAPH_ENCODERS = ("mlp", "linear")


class GraphEncoder(nn.Module):
    """Stacked graph layers (with the batch injected into each) and a Gaussian head.

    Each layer: graph convolution, plus a linear map of the one-hot batch when there are several
    batches, then (``kind="mlp"``, published) layer norm, ReLU and dropout, or (``kind="linear"``)
    a batch normalisation and dropout. The last layer's output for the final targets goes through
    linear mean and log-variance heads, as scvi-tools' ``Encoder`` does.

    ``"linear"`` is the graph counterpart of Cellina's linear niche encoder: with GATv2 the
    encoder is linear in the neighbours' features for given attention, and the batch normalisation
    standardises each hidden unit across cells, as Cellina's linear encoder standardises each niche
    feature. A layer norm instead rescales each cell's units by their own spread: neighbourhoods
    share most of their expression, so what differs between niches is a small part of that spread,
    ``s`` comes out almost the same in every cell and learns the niche only from the contrastive
    loss (``docs/benchmarks.md``, "Where CellinaGCN's niche responses shrink").

    Parameters
    ----------
    n_input
        Node feature width (genes).
    n_output
        Dimension of ``s``.
    n_hidden, n_layers, dropout_rate
        Width and number of graph layers, and dropout after each.
    n_batch
        Number of batches (injected when > 1).
    convolution_type
        One of :data:`CONVOLUTION_TYPES`.
    kind
        One of :data:`GRAPH_ENCODERS`.
    var_eps
        Floor of the posterior variance.
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_hidden: int = 128,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        n_batch: int = 0,
        convolution_type: str = "gat",
        kind: str = "mlp",
        var_eps: float = 1e-4,
    ):
        super().__init__()
        if int(n_layers) < 1:
            raise ValueError(f"n_layers={n_layers}: the graph encoder needs at least one layer.")
        if kind not in GRAPH_ENCODERS:
            raise ValueError(f"spatial_encoder={kind!r}: the graph variant's layers are one of {GRAPH_ENCODERS}.")
        self.kind = kind
        self.n_hidden = int(n_hidden)
        self.n_layers = int(n_layers)
        self.n_batch = int(n_batch)
        self.convolution_type = convolution_type
        dims = [n_input] + [n_hidden] * self.n_layers
        self.layers = nn.ModuleList(GraphLayer(convolution_type, dims[i], dims[i + 1]) for i in range(self.n_layers))
        self.covariates = (
            nn.ModuleList(nn.Linear(self.n_batch, n_hidden, bias=False) for _ in range(self.n_layers))
            if self.n_batch > 1
            else None
        )
        self.norms = nn.ModuleList(
            nn.LayerNorm(n_hidden) if kind == "mlp" else nn.BatchNorm1d(n_hidden, momentum=0.01, eps=1e-3)
            for _ in range(self.n_layers)
        )
        self.dropout = nn.Dropout(dropout_rate)
        self.mean_encoder = nn.Linear(n_hidden, n_output)
        self.var_encoder = nn.Linear(n_hidden, n_output)
        self.var_eps = var_eps

    def layer(
        self,
        index: int,
        x_src: torch.Tensor,
        x_dst: torch.Tensor,
        edge_index: torch.Tensor,
        batch_dst: torch.Tensor | None = None,
        degree: torch.Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Layer ``index`` for one block: the updated representation of ``x_dst`` (and attention)."""
        h, alpha = self.layers[index](x_src, x_dst, edge_index, degree, return_attention)
        if self.covariates is not None:
            if batch_dst is None:
                raise ValueError("the graph encoder was built with batches; pass each node's batch code.")
            onehot = F.one_hot(batch_dst.reshape(-1).long(), self.n_batch).to(h.dtype)
            h = h + self.covariates[index](onehot)
        norm = self.norms[index]
        if self.kind == "linear" and self.training and h.shape[0] < 2:
            # a batch statistic needs two cells: a lone target is normalised with the running ones
            h = F.batch_norm(h, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        else:
            h = norm(h)
        return self.dropout(F.relu(h) if self.kind == "mlp" else h), alpha

    def propagate(
        self,
        x: torch.Tensor,
        edges: list[torch.Tensor],
        sizes: list[int],
        start: int = 0,
        batch_index: torch.Tensor | None = None,
        degree: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run layers ``start, start + 1, ...`` over their blocks; the last block's targets' output.

        ``x`` holds the input of layer ``start`` for ``sizes[0]`` nodes; block ``b`` reads the first
        ``sizes[b]`` rows and updates the first ``sizes[b + 1]``. ``batch_index`` and ``degree``
        are per node (at least ``sizes[0]`` rows).
        """
        if start + len(edges) != self.n_layers:
            raise ValueError(
                f"the minibatch has {len(edges)} graph block(s) from layer {start}, but the encoder "
                f"has {self.n_layers} layers."
            )
        h = x[: sizes[0]]
        for b, edge_index in enumerate(edges):
            n_dst = sizes[b + 1]
            batch_dst = None if batch_index is None else batch_index[:n_dst]
            h, _ = self.layer(start + b, h[: sizes[b]], h[:n_dst], edge_index, batch_dst, degree)
        return h

    def head(self, h: torch.Tensor) -> tuple[Normal, torch.Tensor]:
        """Gaussian posterior of ``s`` from the last layer's output, and one sample."""
        mean = self.mean_encoder(h)
        var = torch.exp(self.var_encoder(h)) + self.var_eps
        dist = Normal(mean, var.sqrt())
        return dist, dist.rsample()
