"""The graph variant's building blocks without training: sampler, blocks, contrastive loss, attention summary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from cellina.model import attention_by_group
from cellina.model._graph_data import PatchBatches
from cellina.model._graph_sampler import (
    block_of,
    check_fanouts,
    fit_fanouts,
    locality_order,
    prepare_graph,
    receptive_field,
    sample_subgraph,
    spatial_patches,
    take_rows,
)
from cellina.model._losses import supervised_contrastive_loss


def _ring(n: int = 12, reach: int = 2) -> sp.csr_matrix:
    """Cells on a ring, each reading the ``reach`` cells on either side (and a self-loop to drop)."""
    rows, cols = [], []
    for i in range(n):
        for d in range(-reach, reach + 1):
            rows.append(i)
            cols.append((i + d) % n)
    return sp.csr_matrix((np.full(len(rows), 0.5), (rows, cols)), shape=(n, n))


def test_prepare_graph_drops_self_loops_stored_zeros_and_excluded_columns():
    graph = _ring().tolil()
    graph[0, 1] = 0.0  # a stored zero is not an edge
    out = prepare_graph(graph.tocsr(), 12, exclude=np.array([5]))
    dense = out.toarray()
    assert np.all(np.diag(dense) == 0)
    assert dense[0, 1] == 0 and dense[0, 2] == 1
    assert dense[:, 5].sum() == 0 and dense[5].sum() == 4  # 5 still reads its neighbours
    assert set(np.unique(out.data)) == {1.0}
    with pytest.raises(ValueError, match=r"adata.obsp\['g'\] must be a square 10 x 10"):
        prepare_graph(out, 10, where="adata.obsp['g']")


def test_fanouts_are_checked_against_the_layers():
    assert check_fanouts(None, 2) == (None, None)
    assert check_fanouts(4, 2) == (4, 4)
    assert check_fanouts([10, -1], 2) == (10, None)
    with pytest.raises(ValueError, match="n_layers=3"):
        check_fanouts([10, 5], 3)
    with pytest.raises(ValueError, match="positive int"):
        check_fanouts([0, 5], 2)


def test_a_presets_fanouts_are_fitted_to_the_layers():
    assert fit_fanouts((10, 5), 1) == [10]
    assert fit_fanouts((10, 5), 2) == [10, 5]
    assert fit_fanouts([10, 5], 4) == [10, 5, 5, 5]
    assert fit_fanouts(None, 3) is None and fit_fanouts(7, 3) == 7
    with pytest.raises(ValueError, match=r"num_neighbors=\[\]"):
        fit_fanouts([], 2)


def test_take_rows_keeps_at_most_the_fanout_without_repeats():
    graph = prepare_graph(_ring(30, reach=5), 30)
    rng = np.random.default_rng(0)
    rows = np.array([0, 7, 7, 29])
    owner, neighbour = take_rows(graph, rows, 3, rng)
    for k, row in enumerate(rows):
        picked = neighbour[owner == k]
        assert picked.size == 3 and np.unique(picked).size == 3
        assert set(picked) <= set(graph[row].indices)
    owner, neighbour = take_rows(graph, rows, None, None)
    assert np.bincount(owner).tolist() == [10, 10, 10, 10]


def test_subgraph_lists_seeds_first_then_by_hop_and_never_an_excluded_cell():
    graph = prepare_graph(_ring(40, reach=2), 40, exclude=np.array([3, 20]))
    seeds = np.array([1, 21])
    sub = sample_subgraph(graph, seeds, (None, None), None, "induced")
    assert sub.nodes[:2].tolist() == [1, 21]
    assert sub.hop_bounds == (2, 2 + 6, 2 + 6 + 7)
    assert not {3, 20} & set(sub.nodes.tolist())
    # every induced edge is a graph edge between sampled cells, and every such edge is there
    # except those into the last hop's cells, which no layer updates
    g = sub.nodes
    assert all(graph[g[t], g[s]] for s, t in zip(sub.sources, sub.targets))
    assert len(sub.sources) == graph[g[: sub.hop_bounds[-2]]][:, g].nnz > 0


def test_a_locality_order_lists_each_hop_in_that_order_and_changes_nothing_else():
    graph = prepare_graph(_ring(60, reach=3), 60, exclude=np.array([7]))
    order = locality_order(graph)
    assert sorted(order.tolist()) == list(range(60))
    # neighbours on the ring get nearby ranks (by position, cells 59 and 0 are 59 apart)
    rank = np.argsort(order)
    assert np.abs(rank[graph.tocoo().row] - rank[graph.tocoo().col]).max() <= 12
    seeds = np.array([30, 2])
    plain = sample_subgraph(graph, seeds, (None, None), None, "induced", positives=None)
    local = sample_subgraph(graph, seeds, (None, None), None, "induced", positives=None, order=order)
    assert local.hop_bounds == plain.hop_bounds and local.n_candidates == plain.n_candidates
    assert local.nodes[:2].tolist() == [30, 2]
    for a, b in zip(plain.hop_bounds[:-1], plain.hop_bounds[1:], strict=True):
        assert set(local.nodes[a:b]) == set(plain.nodes[a:b]) and np.all(np.diff(rank[local.nodes[a:b]]) > 0)

    def edge_set(sub):
        return {(int(sub.nodes[i]), int(sub.nodes[j])) for i, j in zip(sub.sources, sub.targets)}

    assert edge_set(local) == edge_set(plain)


def _grid(side: int) -> sp.csr_matrix:
    """Cells on a ``side`` x ``side`` lattice, each reading its (up to 8) surrounding cells."""
    cell = np.arange(side * side).reshape(side, side)
    rows, cols = [], []
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr or dc:
                a = cell[max(0, -dr) : side - max(0, dr), max(0, -dc) : side - max(0, dc)]
                b = cell[max(0, dr) : side + min(0, dr) or None, max(0, dc) : side + min(0, dc) or None]
                rows.append(a.ravel())
                cols.append(b.ravel())
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    return prepare_graph(sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(side * side,) * 2), side * side)


def test_spatial_patches_are_connected_groups_of_about_the_size_asked():
    graph = _grid(30)
    # two cells that read nobody and nobody reads: each gets a patch of its own
    graph = prepare_graph(sp.block_diag([graph, sp.csr_matrix((2, 2))]), 902)
    patch = spatial_patches(graph, 25, np.random.default_rng(0))
    assert patch.shape == (902,) and patch.min() == 0
    sizes = np.bincount(patch)
    assert sizes.min() >= 1 and sizes.sum() == 902
    assert 20 <= 900 / np.unique(patch[:900]).size <= 30  # about 25 cells each
    assert patch[900] != patch[901] and sizes[patch[900]] == sizes[patch[901]] == 1
    for p in np.unique(patch[:900]):
        members = np.flatnonzero(patch == p)
        n_parts, _ = sp.csgraph.connected_components(graph[members][:, members], directed=False)
        assert n_parts == 1
    assert not np.array_equal(patch, spatial_patches(graph, 25, np.random.default_rng(1)))
    with pytest.raises(ValueError, match="patch_size=0.5 must be at least 1 cell"):
        spatial_patches(graph, 0.5, np.random.default_rng(0))


def test_patch_minibatches_visit_every_seed_once_and_read_fewer_cells():
    graph = _grid(40)
    positions = np.random.default_rng(0).permutation(1600)[:1400]  # the training cells, shuffled
    sampler = PatchBatches(graph, positions, 128, 4, drop_last=False)
    torch.manual_seed(0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 11
    assert sorted(np.concatenate(batches).tolist()) == list(range(1400))
    assert all(len(b) == 128 for b in batches[:-1])
    torch.manual_seed(0)
    assert list(sampler) == batches  # reproducible under torch.manual_seed
    assert list(sampler) != batches  # new patches every epoch

    def cells_read(items) -> int:
        return sample_subgraph(graph, positions[np.asarray(items)], (None, None), None, "induced").hop_bounds[-1]

    rng = np.random.default_rng(1)
    at_random = np.mean([cells_read(rng.permutation(1400)[:128]) for _ in range(5)])
    assert np.mean([cells_read(b) for b in batches[:5]]) < 0.5 * at_random
    dropping = PatchBatches(graph, positions, 128, 4, drop_last=True)
    assert len(dropping) == len(list(dropping)) == 10
    with pytest.raises(ValueError, match="seed_patches=0 must be a positive int"):
        PatchBatches(graph, positions, 128, 0, drop_last=False)


def test_directional_subgraphs_keep_only_the_sampled_edges():
    graph = prepare_graph(_ring(40, reach=3), 40)
    sub = sample_subgraph(graph, np.array([0]), (2, 2), np.random.default_rng(1), "directional")
    assert sub.hop_bounds[1] == 3
    # 2 edges into the seed, 2 into each of the 2 hop-1 cells
    assert len(sub.targets) == 6
    assert np.bincount(sub.targets, minlength=sub.nodes.size)[:3].tolist() == [2, 2, 2]


def test_blocks_are_trimmed_to_what_the_seeds_need():
    graph = prepare_graph(_ring(40, reach=2), 40)
    sub = sample_subgraph(graph, np.array([10]), (None, None), None, "induced", positives=None)
    sizes, edges = sub.blocks(2)
    assert sizes == [9, 5, 1]
    assert edges[1].shape[1] == 4 and np.all(edges[1][1] == 0)
    assert np.all(edges[0][1] < 5) and np.all(edges[0][0] < 9)
    # the contrastive loss needs s of the seed's neighbours too: the last layer updates them from
    # the cells the first layer updated anyway; the seed's own edges are unchanged
    sizes, candidate_edges = sub.blocks(2, candidates=True)
    assert sizes == [9, 5, 5]
    assert np.array_equal(candidate_edges[0], edges[0])
    last = candidate_edges[1]
    assert np.all(last < 5) and np.array_equal(last[:, last[1] == 0], edges[1])
    # hop 1 is [8, 9, 11, 12]: 8 reads 9 and 10 of the first hop, 9 reads 8, 10 and 11, ...
    assert np.bincount(last[1], minlength=5).tolist() == [4, 2, 3, 3, 2]


def test_directional_candidates_read_their_near_neighbours():
    graph = prepare_graph(_ring(40, reach=2), 40)
    sub = sample_subgraph(graph, np.array([10]), (2, 2), np.random.default_rng(0), "directional", positives=None)
    sizes, edges = sub.blocks(2, candidates=True)
    assert sizes[-1] == 3 and sizes[1] == 3
    hop1 = sub.nodes[1:3]
    into = {int(sub.nodes[t]) for t in edges[1][1] if t > 0}
    assert into == set(hop1.tolist())
    for s_, t in edges[1].T:
        assert graph[sub.nodes[t], sub.nodes[s_]] == 1


def test_the_contrastive_candidates_are_a_few_sampled_neighbours_per_seed():
    graph = prepare_graph(_ring(60, reach=4), 60)
    seeds = np.array([5, 30])
    sub = sample_subgraph(graph, seeds, (None, 2), np.random.default_rng(2), "induced", positives=3)
    assert sub.n_candidates == 6 and sub.hop_bounds[1] == 2 + 16
    candidates = sub.nodes[2:8]
    assert sum(abs(int(c) - 5) <= 4 for c in candidates) == 3 and sum(abs(int(c) - 30) <= 4 for c in candidates) == 3
    sizes, edges = sub.blocks(2, candidates=True)
    assert sizes[-1] == 8 and np.all(edges[1] < sub.hop_bounds[1])
    none = sample_subgraph(graph, seeds, (None, 2), np.random.default_rng(2), "induced", positives=0)
    assert none.n_candidates == 0 and none.blocks(2, candidates=True)[0][-1] == 2


def test_receptive_field_and_full_blocks():
    graph = prepare_graph(_ring(20, reach=1), 20)
    fields = receptive_field(graph, np.array([5, 5, 6]), 2)
    assert [f.tolist() for f in fields] == [[5, 6], [4, 5, 6, 7], [3, 4, 5, 6, 7, 8]]
    nodes, edges = block_of(graph, np.array([5, 6]))
    assert nodes[:2].tolist() == [5, 6] and sorted(nodes[2:].tolist()) == [4, 7]
    pairs = {(int(nodes[s]), int(nodes[t])) for s, t in edges.T}
    assert pairs == {(4, 5), (6, 5), (5, 6), (7, 6)}


# ---------------------------------------------------------------------- contrastive loss
def _supcon_by_hand(s, n_anchors, pairs, domains, temperature):
    u = s / np.linalg.norm(s, axis=1, keepdims=True)
    positives = {a: set() for a in range(n_anchors)}
    for c, a in pairs:
        positives[a].add(c)
    losses = []
    for a in range(n_anchors):
        pos = positives[a] - {a}
        neg = {c for c in range(len(s)) if domains[c] != domains[a] and c not in pos and c != a}
        if not pos or not neg:
            continue
        sim = {c: float(u[a] @ u[c]) / temperature for c in pos | neg}
        log_denominator = math.log(sum(math.exp(v) for v in sim.values()))
        losses.append(log_denominator - sum(sim[p] for p in pos) / len(pos))
    return sum(losses) / len(losses)


def test_supcon_equals_a_hand_computation():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(7, 4))
    domains = np.array([0, 1, 0, 1, 1, 0, 2])
    # anchors 0..2 (anchor 2 lists itself, which never counts as its own positive)
    pairs = np.array([[3, 0], [4, 0], [5, 1], [0, 1], [6, 2], [2, 2]]).T
    got = supervised_contrastive_loss(torch.tensor(s), 3, torch.tensor(pairs), torch.tensor(domains), 0.25)
    want = _supcon_by_hand(s, 3, pairs.T.tolist(), domains, 0.25)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_supcon_drops_anchors_without_a_positive_or_a_negative():
    s = torch.randn(4, 3, requires_grad=True)
    same_domain = torch.zeros(4, dtype=torch.long)
    pairs = torch.tensor([[2, 3], [0, 1]])
    loss = supervised_contrastive_loss(s, 2, pairs, same_domain, 0.5)
    assert loss.item() == 0.0  # no negatives anywhere
    loss.backward()  # still part of the graph, with zero gradient
    assert torch.all(s.grad == 0)
    no_pairs = torch.zeros((2, 0), dtype=torch.long)
    assert supervised_contrastive_loss(s.detach(), 2, no_pairs, torch.tensor([0, 1, 0, 1]), 0.5).item() == 0.0
    # anchor 1 has no positive: only anchor 0 counts
    one = supervised_contrastive_loss(s.detach(), 2, torch.tensor([[2], [0]]), torch.tensor([0, 1, 0, 1]), 0.5)
    want = _supcon_by_hand(s.detach().numpy(), 2, [(2, 0)], [0, 1, 0, 1], 0.5)
    assert one.item() == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------------- attention summary
def test_attention_by_group_is_the_mean_relative_to_uniform():
    # cell 0 (type A) reads 1 (B) and 2 (C) with 0.8 / 0.2; cell 3 (A) reads 1 (B) alone
    att = sp.csr_matrix(([0.8, 0.2, 1.0], ([0, 0, 3], [1, 2, 1])), shape=(4, 4))
    groups = pd.Categorical(["A", "B", "C", "A"])
    rel = attention_by_group(att, groups)
    assert rel.loc["A", "B"] == pytest.approx((0.8 * 2 + 1.0 * 1) / 2)
    assert rel.loc["A", "C"] == pytest.approx(0.2 * 2)
    assert np.isnan(rel.loc["B", "A"])
    raw = attention_by_group(att, groups, normalize=False)
    assert raw.loc["A", "B"] == pytest.approx(0.9)
    assert rel.index.name == "receiver" and rel.columns.name == "sender"
    with pytest.raises(ValueError, match="one label per cell"):
        attention_by_group(att, groups[:3])
