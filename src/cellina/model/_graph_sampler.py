"""Vectorised k-hop subgraph sampling on a CSR spatial graph (numpy only, no Python loop over cells).

Conventions: row ``i`` of the graph lists the cells whose messages reach cell ``i`` (its
in-neighbours), as in the niche features of :class:`~cellina.model.Cellina`, where row ``i``
of ``D^-1 W`` averages over the same cells. An edge ``j -> i`` is stored as ``(source j,
target i)``, the order torch-geometric's ``edge_index`` uses.

A sampled subgraph lists its nodes by hop (the seed cells first, then the cells first reached
at hop 1, hop 2, ...), so the nodes a layer must update are always a prefix of the nodes it reads
from: a message-passing layer ``l`` of ``L`` only needs to update the nodes within ``L - 1 - l``
hops of the seeds ("trimming"), and its output for the seeds is exactly what the untrimmed
computation gives on the same subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from cellina.spatial import distinct_draws

#: how the edges of a sampled subgraph are chosen
SUBGRAPH_TYPES = ("induced", "directional")


def prepare_graph(matrix: Any, n_obs: int, exclude: np.ndarray | None = None, where: str = "graph") -> sp.csr_matrix:
    """The message-passing graph: ``matrix`` as CSR, without self-loops, stored zeros or the
    columns of ``exclude`` (cells that must be nobody's neighbour, e.g. held-out cells).

    Rows are kept as they are: an excluded cell may still read its own neighbours, it is only
    never read. Edge weights are dropped (attention and the other layers learn their own).

    Parameters
    ----------
    matrix
        ``n_obs x n_obs`` connectivities (sparse or dense).
    n_obs
        Number of cells.
    exclude
        Positions of cells removed as neighbours (None: none).
    where
        How to name ``matrix`` in errors, e.g. ``"adata.obsp['spatial_connectivities']"``.

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 ones on the kept edges, sorted column indices.
    """
    shape = getattr(matrix, "shape", None)
    if shape != (n_obs, n_obs):
        raise ValueError(f"{where} must be a square {n_obs} x {n_obs} cell graph, got shape {shape}.")
    graph = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    if graph.nnz and not np.all(np.isfinite(graph.data)):
        raise ValueError(f"{where} holds NaN or infinite weights.")
    rows = np.repeat(np.arange(n_obs), np.diff(graph.indptr))
    # self-loops and stored zeros are not edges
    keep = (graph.indices != rows) & (graph.data != 0)
    if exclude is not None and len(exclude):
        excluded = np.zeros(n_obs, dtype=bool)
        excluded[np.asarray(exclude, dtype=np.int64)] = True
        keep &= ~excluded[graph.indices]
    graph = _filter_edges(graph, keep, rows)
    graph.data[:] = 1.0
    graph.sort_indices()
    return graph


def _filter_edges(graph: sp.csr_matrix, keep: np.ndarray, rows: np.ndarray) -> sp.csr_matrix:
    """``graph`` with only the stored entries where ``keep`` is true (row order kept)."""
    if keep.all():
        return graph
    lengths = np.bincount(rows[keep], minlength=graph.shape[0])
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return sp.csr_matrix((graph.data[keep], graph.indices[keep], indptr), shape=graph.shape)


def check_fanouts(num_neighbors: Any, n_layers: int) -> tuple[int | None, ...]:
    """Per-hop fan-out, one entry per message-passing layer.

    ``None`` (or ``-1``) means every neighbour; an int applies to every hop; a list gives one
    value per hop (the published form, e.g. ``[10, 5]``), with ``-1`` meaning all.
    """
    if num_neighbors is None:
        return (None,) * n_layers
    values = [num_neighbors] * n_layers if isinstance(num_neighbors, (int, np.integer)) else list(num_neighbors)
    if len(values) != n_layers:
        raise ValueError(
            f"num_neighbors={num_neighbors!r} gives {len(values)} hop(s) but the graph encoder has "
            f"n_layers={n_layers} layers; give one fan-out per layer (or one int, or None for all)."
        )
    out = []
    for value in values:
        if value is None or int(value) == -1:
            out.append(None)
        elif isinstance(value, (bool, np.bool_)) or int(value) != value or int(value) < 1:
            raise ValueError(f"num_neighbors={num_neighbors!r}: each fan-out must be a positive int, -1 or None.")
        else:
            out.append(int(value))
    return tuple(out)


def fit_fanouts(num_neighbors: Any, n_layers: int) -> Any:
    """A preset's fan-outs fitted to ``n_layers``: a per-hop list is cut to the first ``n_layers``
    values, or its last value repeated for the deeper hops; ``None`` and an int apply to every hop
    as they are. A preset names fan-outs for the first hops (e.g. ``[10, 5]``) whatever the depth
    the user chooses; what a user passes is checked against ``n_layers`` as given.
    """
    if num_neighbors is None or isinstance(num_neighbors, (int, np.integer)):
        return num_neighbors
    values = list(num_neighbors)
    if not values:
        raise ValueError("num_neighbors=[]: give at least one fan-out (or None for all neighbours).")
    return (values + [values[-1]] * n_layers)[: int(n_layers)]


def take_rows(
    graph: sp.csr_matrix, rows: np.ndarray, fanout: int | None, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``fanout`` in-neighbours of each of ``rows``, drawn without replacement.

    Returns
    -------
    owner, neighbour
        For each kept edge, the position in ``rows`` of its target and the neighbour's id.
    """
    rows = np.asarray(rows, dtype=np.int64)
    block = graph[rows]  # scipy's compiled row gather
    offsets = block.indptr[:-1].astype(np.int64)
    degree = np.diff(block.indptr).astype(np.int64)
    total = int(block.indptr[-1])
    owner = np.repeat(np.arange(rows.size), degree)
    neighbour = block.indices.astype(np.int64)
    if fanout is None or total == 0 or degree.max() <= fanout:
        return owner, neighbour
    if rng is None:
        raise ValueError("sampling a fan-out needs a random generator")
    # rows with more neighbours than the fan-out draw `fanout` distinct positions; others keep all
    large = degree > fanout
    keep = ~large[owner]
    picked = distinct_draws(degree[large], fanout, rng) + offsets[large][:, None]
    keep[picked.ravel()] = True
    return owner[keep], neighbour[keep]


@dataclass
class Subgraph:
    """Seeds and their sampled neighbourhoods, with the edges each layer reads.

    Attributes
    ----------
    nodes
        Global cell positions, seeds first, then by the hop at which a cell was first reached.
    hop_bounds
        ``hop_bounds[h]``: number of nodes within ``h`` hops of the seeds (``hop_bounds[0]`` is
        the number of seeds).
    sources, targets
        Local edge ends (``sources[e] -> targets[e]``) of the subgraph, into every node but those
        first reached at the last hop (which layers read but never update).
    """

    nodes: np.ndarray
    hop_bounds: tuple[int, ...]
    sources: np.ndarray
    targets: np.ndarray
    #: first-hop cells listed right after the seeds whose ``s`` the contrastive loss compares
    n_candidates: int = 0
    #: edges into the candidates from cells within one hop (at most the first hop's fan-out each)
    near_sources: np.ndarray | None = None
    near_targets: np.ndarray | None = None

    def blocks(self, n_layers: int, candidates: bool = False) -> tuple[list[int], list[np.ndarray]]:
        """Node counts and edges of each layer, trimmed to what the seeds need.

        Layer ``l`` updates the nodes within ``n_layers - 1 - l`` hops of the seeds (capped at the
        sampled depth) from the nodes one hop further out. With ``candidates`` the last layer
        also updates the candidates (some of the seeds' sampled neighbours, whose ``s`` the
        contrastive loss compares), from those of their neighbours that the layers before have
        updated anyway (the cells within one hop of the seeds): nothing else is computed for
        them, and the seeds' own computation is unchanged.

        Returns
        -------
        sizes, edges
            ``sizes[0]``: nodes read by the first layer; ``sizes[l + 1]``: nodes updated by
            layer ``l`` (a prefix of ``nodes``). ``edges[l]``: ``(2, E_l)`` local
            ``(source, target)`` pairs of layer ``l``.
        """
        depth = len(self.hop_bounds) - 1
        reach = [min(n_layers - 1 - layer, depth) for layer in range(n_layers)]
        sizes = [self.hop_bounds[min(reach[0] + 1, depth)]]
        edges = []
        for layer in range(n_layers):
            n_src, n_dst = self.hop_bounds[min(reach[layer] + 1, depth)], self.hop_bounds[reach[layer]]
            keep = (self.targets < n_dst) & (self.sources < n_src)
            block = np.stack([self.sources[keep], self.targets[keep]])
            if candidates and layer == n_layers - 1 and self.n_candidates > 0:
                n_dst = self.hop_bounds[0] + self.n_candidates
                block = np.concatenate([block, np.stack([self.near_sources, self.near_targets])], axis=1)
            edges.append(block)
            sizes.append(n_dst)
        return sizes, edges


def _positives(owner: np.ndarray, neighbour: np.ndarray, n_seeds: int, k: int | None, rng) -> np.ndarray:
    """Up to ``k`` (``None``: all) of each seed's sampled neighbours."""
    if k is None:
        return np.unique(neighbour)
    counts = np.bincount(owner, minlength=n_seeds)
    offsets = np.cumsum(counts) - counts
    keep = ~(counts > k)[owner]
    large = counts > k
    keep[(distinct_draws(counts[large], k, rng) + offsets[large][:, None]).ravel()] = True
    return np.unique(neighbour[keep])


def sample_subgraph(
    graph: sp.csr_matrix,
    seeds: np.ndarray,
    fanouts: tuple[int | None, ...],
    rng: np.random.Generator | None,
    subgraph_type: str = "induced",
    positives: int | None = 0,
    order: np.ndarray | None = None,
) -> Subgraph:
    """Seeds plus their sampled ``len(fanouts)``-hop neighbourhoods.

    Each hop draws, for every cell first reached at the previous hop, at most ``fanouts[h]``
    of its in-neighbours (``None``: all), as torch-geometric's ``NeighborLoader`` does.
    ``subgraph_type="induced"`` keeps every graph edge between the sampled cells;
    ``"directional"`` keeps only the sampled edges (each cell reads the cells drawn for it).

    Parameters
    ----------
    graph
        Graph from :func:`prepare_graph` (cells that must not appear have no column entries).
    seeds
        Distinct seed positions.
    fanouts
        Fan-out per hop.
    rng
        Source of randomness of the fan-out draws.
    subgraph_type
        ``"induced"`` or ``"directional"``.
    positives
        Candidates of the contrastive loss: up to this many of each seed's sampled neighbours
        (``None``: all of them; ``0``: none), listed right after the seeds (see
        :meth:`Subgraph.blocks`).
    order
        Every cell once, in the order in which each hop lists its cells (e.g.
        :func:`locality_order`, so that cells close in the tissue get close positions and the
        layers read memory in runs); ``None``: by position.
    """
    if subgraph_type not in SUBGRAPH_TYPES:
        raise ValueError(f"subgraph_type={subgraph_type!r}: use one of {SUBGRAPH_TYPES}.")
    seeds = np.asarray(seeds, dtype=np.int64)
    n_obs = graph.shape[0]
    # membership by lookup tables over the cells, indexed by rank in `order` (linear in the
    # cells, no sorting or hashing; a hop's new cells come out in that order)
    rank = None
    if order is not None:
        rank = np.empty(n_obs, dtype=np.int64)
        rank[order] = np.arange(n_obs)
    seen = np.zeros(n_obs, dtype=bool)
    seen[seeds if rank is None else rank[seeds]] = True
    parts, frontier, bounds, n_candidates = [seeds], seeds, [seeds.size], 0
    sampled_src, sampled_dst = [], []
    for hop, fanout in enumerate(fanouts):
        owner, neighbour = take_rows(graph, frontier, fanout, rng)
        sampled_src.append(neighbour)
        sampled_dst.append(frontier[owner])
        reached = np.zeros(n_obs, dtype=bool)
        reached[neighbour if rank is None else rank[neighbour]] = True
        keys = np.flatnonzero(reached & ~seen)
        seen[keys] = True
        new = keys if order is None else order[keys]
        if hop == 0 and positives != 0:
            chosen = np.zeros(n_obs, dtype=bool)
            chosen[_positives(owner, neighbour, seeds.size, positives, rng)] = True
            first = chosen[new]
            new, n_candidates = np.concatenate([new[first], new[~first]]), int(first.sum())
        parts.append(new)
        frontier = new
        bounds.append(bounds[-1] + new.size)
    nodes = np.concatenate(parts)
    local = np.full(n_obs, -1, dtype=np.int64)
    local[nodes] = np.arange(nodes.size)
    out = Subgraph(nodes, tuple(bounds), np.zeros(0, np.int64), np.zeros(0, np.int64), n_candidates)
    if subgraph_type == "induced":
        # the cells first reached at the last hop are read, never updated: no edge into them
        out.sources, out.targets = _edges_within(graph, nodes[: bounds[-2]], local, nodes.size)
    else:
        out.sources = local[np.concatenate(sampled_src)]
        out.targets = local[np.concatenate(sampled_dst)]
    if n_candidates:
        # what a candidate reads in the last layer: at most the first hop's fan-out of its
        # neighbours within one hop of the seeds (the cells whose previous layer is computed)
        source, owner = _edges_within(graph, nodes[bounds[0] : bounds[0] + n_candidates], local, bounds[1])
        lengths = np.bincount(owner, minlength=n_candidates)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        near = sp.csr_matrix((np.ones(source.size, np.float32), source, indptr), shape=(n_candidates, bounds[1]))
        owner, source = take_rows(near, np.arange(n_candidates), fanouts[0], rng)
        out.near_sources, out.near_targets = source, owner + bounds[0]
    return out


def _edges_within(
    graph: sp.csr_matrix, rows: np.ndarray, local: np.ndarray, n_local: int
) -> tuple[np.ndarray, np.ndarray]:
    """Edges into ``rows`` from the cells whose position in ``local`` is below ``n_local``.

    Returns local source positions and the positions in ``rows`` of the targets (grouped by
    target, in the order of ``rows``).
    """
    owner, neighbour = take_rows(graph, rows, None, None)
    position = local[neighbour]
    keep = (position >= 0) & (position < n_local)
    return position[keep], owner[keep]


def spatial_patches(graph: sp.csr_matrix, patch_size: float, rng: np.random.Generator) -> np.ndarray:
    """Every cell's patch: connected groups of about ``patch_size`` neighbouring cells.

    Patches grow from ``n / patch_size`` centres drawn at random, one hop per round, along the
    rows of ``graph`` (pass it symmetrised, ``graph + graph.T``, to grow over edges in both
    directions): a cell joins the patch of a neighbour that reached it in the previous round (one
    at random when several did). Cells that no centre reaches (another
    component without a centre, isolated cells) get centres of their own, until every cell is in
    a patch. The work is linear in the edges; a new ``rng`` state gives a new partition.

    Returns
    -------
    numpy.ndarray
        ``int64`` patch number per cell, ``0 .. n_patches - 1``.
    """
    if not patch_size >= 1:
        raise ValueError(f"patch_size={patch_size!r} must be at least 1 cell.")
    n_obs = graph.shape[0]
    patch = np.full(n_obs, -1, dtype=np.int64)
    n_patches = 0
    while (left := np.flatnonzero(patch < 0)).size:
        k = max(1, int(round(left.size / patch_size)))
        frontier = rng.choice(left, size=min(k, left.size), replace=False)
        patch[frontier] = n_patches + np.arange(frontier.size)
        n_patches += frontier.size
        while frontier.size:
            owner, neighbour = take_rows(graph, frontier, None, None)
            free = patch[neighbour] < 0
            shuffled = rng.permutation(int(free.sum()))
            reached, first = np.unique(neighbour[free][shuffled], return_index=True)
            patch[reached] = patch[frontier[owner[free][shuffled][first]]]
            frontier = reached
    return patch


def locality_order(graph: sp.csr_matrix) -> np.ndarray:
    """The cells in an order that keeps graph neighbours at nearby positions (reverse
    Cuthill-McKee on the symmetrised graph)."""
    return np.asarray(reverse_cuthill_mckee(sp.csr_matrix(graph), symmetric_mode=False), dtype=np.int64)


def receptive_field(graph: sp.csr_matrix, targets: np.ndarray, n_hops: int) -> list[np.ndarray]:
    """The cells each layer of layer-wise inference must update for ``targets``' final output.

    Returns ``fields`` with ``fields[h]`` the sorted cells within ``h`` hops of ``targets``
    (``fields[0]`` = the distinct targets); the layer ``L - 1 - h`` updates ``fields[h]``.
    """
    fields = [np.unique(np.asarray(targets, dtype=np.int64))]
    for _ in range(n_hops):
        _, neighbour = take_rows(graph, fields[-1], None, None)
        fields.append(np.union1d(fields[-1], neighbour))
    return fields


def block_of(graph: sp.csr_matrix, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One full-neighbourhood layer for ``targets``: its source cells (``targets`` first, then
    their other in-neighbours) and local ``(2, E)`` edges."""
    targets = np.asarray(targets, dtype=np.int64)
    owner, neighbour = take_rows(graph, targets, None, None)
    extra = np.setdiff1d(np.unique(neighbour), targets)
    nodes = np.concatenate([targets, extra])
    order = np.argsort(nodes, kind="stable")
    positions = order[np.searchsorted(nodes[order], neighbour)]
    return nodes, np.stack([positions, owner])
