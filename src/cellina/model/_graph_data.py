"""Minibatches of the graph variant: seed cells plus sampled neighbourhoods, through scvi-tools.

A training minibatch holds the seeds' registry entries (counts, batch, labels, domains, as a
plain scvi-tools minibatch has them) and the graph entries of
:data:`~cellina.model._constants.GRAPH_KEYS`: the node features of every sampled cell (gathered
from one dense table of every cell's features, kept for training when it takes at most
:data:`DENSE_FEATURES_MAX_BYTES`, or else densified for this minibatch only), the trimmed edges of every layer, node counts, batch codes, degrees and
domains. :class:`GraphDataSplitter` is a :class:`scvi.dataloaders.DataSplitter`, so ``train(...,
datasplitter_kwargs={"external_indexing": ...})`` works as for :class:`~cellina.model.Cellina`;
the test part of the split (the held-out cells) is removed from the graph before anything is
sampled, so no held-out cell is ever in a training or validation subgraph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.dataloaders import DataSplitter
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._constants import GRAPH_KEYS as GK
from ._graph_sampler import locality_order, prepare_graph, sample_subgraph, spatial_patches

#: how node features are made from their source matrix
FEATURE_TRANSFORMS = ("log1p", "identity")


#: largest node-feature table (cells x genes, float32) that training keeps in memory, in bytes
DENSE_FEATURES_MAX_BYTES = 2**30


@dataclass
class NodeFeatures:
    """Rows of a cells x genes matrix turned into node features, dense only for the rows asked.

    :meth:`keep_dense` transforms the whole matrix once and keeps it as one float32 table, so
    that a minibatch gathers its rows instead of densifying and transforming them again (the
    values are the same).
    """

    source: Any
    transform: str = "log1p"
    #: every cell's node features (row ``slot[i]`` holds cell ``i``), or None
    table: torch.Tensor | None = field(default=None, repr=False)
    slot: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.transform not in FEATURE_TRANSFORMS:
            raise ValueError(f"node feature transform {self.transform!r}: use one of {FEATURE_TRANSFORMS}.")
        if sp.issparse(self.source) and not sp.isspmatrix_csr(self.source):
            self.source = sp.csr_matrix(self.source)

    @property
    def width(self) -> int:
        return int(self.source.shape[1])

    def raw(self, rows: np.ndarray) -> np.ndarray:
        """The source's rows, dense float32."""
        block = self.source[rows]
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        return block.astype(np.float32, copy=False)

    def transformed(self, raw: np.ndarray) -> np.ndarray:
        return np.log1p(raw) if self.transform == "log1p" else raw

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Node features of ``rows``, dense float32."""
        if self.table is not None:
            return self.table.numpy()[self.slot[rows]]
        return self.transformed(self.raw(rows))

    def tensor(self, rows: np.ndarray) -> torch.Tensor:
        """Node features of ``rows`` as a float32 tensor."""
        return torch.from_numpy(self.rows(rows))  # numpy copies whole rows: faster than index_select

    def keep_dense(
        self, order: np.ndarray | None = None, max_bytes: int = DENSE_FEATURES_MAX_BYTES, chunk: int = 8192
    ) -> bool:
        """Build the dense table of every cell's node features if it takes at most ``max_bytes``.

        ``order`` lists the cells in the table's row order (default: by position); minibatches
        that list their cells in the same order gather the table in runs. Returns whether the
        table is kept.
        """
        n_obs, width = self.source.shape
        if self.table is None and n_obs * width * 4 <= max_bytes:
            order = np.arange(n_obs) if order is None else np.asarray(order, dtype=np.int64)
            table = np.empty((n_obs, width), dtype=np.float32)
            for a in range(0, n_obs, chunk):
                table[a : a + chunk] = self.transformed(self.raw(order[a : a + chunk]))
            self.slot = np.empty(n_obs, dtype=np.int64)
            self.slot[order] = np.arange(n_obs)
            self.table = torch.from_numpy(table)
        return self.table is not None


@dataclass
class GraphInputs:
    """What graph minibatches are cut from: counts, node features, graph and the cells' codes."""

    counts: Any
    features: NodeFeatures
    graph: sp.csr_matrix
    batch: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    features_are_counts: bool = True
    #: the cells in the order each hop of a sampled subgraph lists them (None: by position)
    order: np.ndarray | None = None

    def for_training(self) -> GraphInputs:
        """Ready for many minibatches: hops list their cells in :func:`locality_order` (so the
        graph layers read memory in runs) and the node features stay dense in that order when
        they fit in :data:`DENSE_FEATURES_MAX_BYTES`. What the layers compute is unchanged."""
        if self.order is None:
            self.order = locality_order(self.graph)
        self.features.keep_dense(self.order)
        return self

    @property
    def degree(self) -> np.ndarray:
        return np.diff(self.graph.indptr).astype(np.float32)

    def registry_entries(self, seeds: np.ndarray, seed_counts: np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The seeds' scvi-tools entries: counts, batch, labels and domains."""
        if seed_counts is None:
            seed_counts = NodeFeatures(self.counts).raw(seeds)
        return {
            REGISTRY_KEYS.X_KEY: torch.from_numpy(seed_counts),
            REGISTRY_KEYS.BATCH_KEY: _codes(self.batch, seeds),
            REGISTRY_KEYS.LABELS_KEY: _codes(self.labels, seeds),
            RK.DOMAINS_KEY: _codes(self.domains, seeds),
        }


def _codes(values: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(values[rows], dtype=np.int64).reshape(-1, 1))


def registered_codes(adata_manager: Any, key: str, n_obs: int) -> np.ndarray:
    """Integer codes of a registered categorical field (zeros when it is not registered)."""
    try:
        values = adata_manager.get_from_registry(key)
    except KeyError:
        return np.zeros(n_obs, dtype=np.int64)
    return np.asarray(values).reshape(-1).astype(np.int64)


@dataclass(frozen=True)
class GraphOptions:
    """How a model cuts graph minibatches: which graph, features, fan-out and subgraph type."""

    graph_key: str
    fanouts: tuple[int | None, ...]
    subgraph_type: str = "induced"
    x_spatial_layer: str | None = None
    feature_transform: str = "log1p"
    contrastive: bool = False
    positives: int | None = 2
    #: spatial patches per training minibatch (None: seeds drawn at random)
    seed_patches: int | None = None

    @property
    def n_layers(self) -> int:
        return len(self.fanouts)

    def inputs(
        self, adata_manager: Any, exclude: np.ndarray | None = None, graph: Any = None, source: Any = None
    ) -> GraphInputs:
        """The inputs of ``adata_manager``'s AnnData, with ``exclude`` removed from the graph.

        ``graph`` replaces ``obsp[graph_key]`` and ``source`` the node features' source matrix
        (e.g. perturbed counts); the seeds' counts are always the registered ones.
        """
        adata = adata_manager.adata
        where = f"adata.obsp[{self.graph_key!r}]"
        if graph is None:
            if self.graph_key not in adata.obsp:
                raise ValueError(
                    f"{where} (spatial_connectivities_key) is missing; build it with cellina.spatial.spatial_neighbors."
                )
            graph = adata.obsp[self.graph_key]
        else:
            where = "the rewired graph"
        counts = adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        if source is None and self.x_spatial_layer is not None:
            if self.x_spatial_layer not in adata.layers:
                raise ValueError(
                    f"x_spatial_layer={self.x_spatial_layer!r} is not in adata.layers (have {list(adata.layers.keys())})."
                )
            source = adata.layers[self.x_spatial_layer]
        features = NodeFeatures(counts if source is None else source, self.feature_transform)
        if features.source.shape != counts.shape:
            raise ValueError(
                f"the node features' source has shape {features.source.shape}, but the counts have {counts.shape}."
            )
        n = adata.n_obs
        return GraphInputs(
            counts=features.source if source is None else counts,
            features=features,
            graph=prepare_graph(graph, n, exclude, where),
            batch=registered_codes(adata_manager, REGISTRY_KEYS.BATCH_KEY, n),
            labels=registered_codes(adata_manager, REGISTRY_KEYS.LABELS_KEY, n),
            domains=registered_codes(adata_manager, RK.DOMAINS_KEY, n),
            features_are_counts=source is None,
        )


def pack_blocks(edges: list[np.ndarray], sizes: list[int], start: int) -> dict[str, torch.Tensor]:
    """The block entries of a graph minibatch."""
    return {
        GK.EDGES: torch.from_numpy(np.concatenate(edges, axis=1).astype(np.int64)),
        GK.EDGE_COUNTS: torch.tensor([e.shape[1] for e in edges], dtype=torch.int64),
        GK.SIZES: torch.tensor(sizes, dtype=torch.int64),
        GK.START: torch.tensor([start], dtype=torch.int64),
    }


class SampledGraphBatches(Dataset):
    """``dataset[seeds]``: one training or validation minibatch for a list of seed cells.

    Parameters
    ----------
    inputs
        Counts, features and the graph (held-out cells already removed).
    options
        Fan-out, subgraph type, contrastive targets.
    seed
        ``None``: fan-out draws from torch's global generator (training: reproducible under
        ``torch.manual_seed``); an int: a fixed draw per minibatch (validation).
    """

    def __init__(self, inputs: GraphInputs, options: GraphOptions, positions: np.ndarray, seed: int | None = None):
        self.inputs, self.options, self.seed = inputs, options, seed
        self.positions = np.asarray(positions, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.positions.size)

    def _rng(self, seeds: np.ndarray) -> np.random.Generator:
        if self.seed is None:
            return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        return np.random.default_rng([self.seed, int(seeds[0])])

    def __getitem__(self, items: Any) -> dict[str, torch.Tensor]:
        inputs, options = self.inputs, self.options
        seeds = self.positions[np.atleast_1d(np.asarray(items, dtype=np.int64))]
        sub = sample_subgraph(
            inputs.graph,
            seeds,
            options.fanouts,
            self._rng(seeds),
            options.subgraph_type,
            options.positives if options.contrastive else 0,
            inputs.order,
        )
        sizes, edges = sub.blocks(options.n_layers, candidates=options.contrastive)
        nodes = sub.nodes[: sizes[0]]
        if inputs.features.table is not None:
            batch = inputs.registry_entries(seeds)
            batch[GK.X] = inputs.features.tensor(nodes)
        else:
            raw = inputs.features.raw(nodes)
            batch = inputs.registry_entries(seeds, raw[: seeds.size] if inputs.features_are_counts else None)
            batch[GK.X] = torch.from_numpy(inputs.features.transformed(raw))
        batch.update(pack_blocks(edges, sizes, 0))
        batch[GK.BATCH] = _codes(inputs.batch, nodes)
        batch[GK.DEGREE] = torch.from_numpy(inputs.degree[nodes])
        batch[GK.DOMAINS] = _codes(inputs.domains, nodes[: sizes[-1]]).reshape(-1)
        batch[GK.NODES] = torch.from_numpy(nodes)
        return batch


def check_seed_patches(value: Any) -> int | None:
    """``seed_patches`` as an int (None: seeds at random), or a ValueError naming the value."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"seed_patches={value!r} must be a positive int (or None for random seeds).")
    return int(value)


class PatchBatches(Sampler):
    """Training minibatches whose seeds are a few spatial patches of neighbouring cells.

    Every epoch the graph is cut into new patches (:func:`spatial_patches`) of about
    ``batch_size / n_patches`` seeds each; the patches are shuffled and the seeds, patch after
    patch, are cut into minibatches of ``batch_size``. Each epoch still visits every seed once.
    Neighbouring seeds share most of their neighbourhoods, so a minibatch of a few patches reads a
    small part of the cells that as many seeds drawn at random read (with all neighbours on 20,000
    cells, 8 patches of 64 seeds read about a sixth; docs/gcn.md). Random draws come from torch's
    global generator, so training stays reproducible under ``torch.manual_seed``.

    Parameters
    ----------
    graph
        The message-passing graph (all cells, held-out ones removed as neighbours).
    positions
        The seeds' cell positions; minibatches list indices into it.
    batch_size, drop_last
        As for a :class:`torch.utils.data.BatchSampler`.
    n_patches
        Patches per minibatch.
    """

    def __init__(self, graph: sp.csr_matrix, positions: np.ndarray, batch_size: int, n_patches: int, drop_last: bool):
        n_patches = check_seed_patches(n_patches)
        if n_patches is None:
            raise ValueError("PatchBatches needs a number of patches per minibatch.")
        # patches grow over edges in both directions; symmetrised once, not every epoch
        self.both_ways = sp.csr_matrix(graph + graph.T)
        self.positions = np.asarray(positions, dtype=np.int64)
        self.batch_size, self.drop_last = int(batch_size), bool(drop_last)
        # patches are cut over every cell of the graph, of which the seeds may be a part
        self.patch_size = max(1.0, self.batch_size / n_patches * graph.shape[0] / max(1, self.positions.size))

    def __len__(self) -> int:
        n = self.positions.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        patch = spatial_patches(self.both_ways, self.patch_size, rng)
        rank = rng.permutation(int(patch.max()) + 1)[patch[self.positions]]
        items = np.argsort(rank, kind="stable")
        for start in range(0, items.size, self.batch_size):
            batch = items[start : start + self.batch_size]
            if self.drop_last and batch.size < self.batch_size:
                return
            yield batch.tolist()


def graph_loader(
    dataset: SampledGraphBatches,
    batch_size: int,
    shuffle: bool,
    drop_last: bool,
    distributed: bool = False,
    seed_patches: int | None = None,
) -> DataLoader:
    """A loader handing ``dataset`` whole lists of positions (one ``__getitem__`` per minibatch).

    ``seed_patches`` (when shuffling, on one device): minibatches of that many spatial patches
    (:class:`PatchBatches`) instead of seeds drawn at random.
    """
    if seed_patches is not None and shuffle and not distributed:
        patches = PatchBatches(dataset.inputs.graph, dataset.positions, batch_size, seed_patches, drop_last)
        return DataLoader(dataset, sampler=patches, batch_size=None)
    if distributed:
        order = DistributedSampler(range(len(dataset)), shuffle=shuffle, drop_last=drop_last)
    else:
        order = RandomSampler(range(len(dataset))) if shuffle else SequentialSampler(range(len(dataset)))
    return DataLoader(dataset, sampler=BatchSampler(order, int(batch_size), drop_last), batch_size=None)


class GraphDataSplitter(DataSplitter):
    """scvi-tools' data splitter with graph minibatches (seeds plus sampled neighbourhoods).

    Splits the cells as :class:`scvi.dataloaders.DataSplitter` does (``train_size``,
    ``validation_size`` or ``external_indexing``), then removes the test cells from the graph,
    so they are never sampled into any subgraph, and serves :class:`SampledGraphBatches`.

    Parameters
    ----------
    adata_manager
        The model's AnnData manager.
    graph_options
        :class:`GraphOptions` (the model passes them).
    **kwargs
        :class:`scvi.dataloaders.DataSplitter` arguments and ``batch_size``.
    """

    def __init__(self, adata_manager: Any, graph_options: GraphOptions | None = None, **kwargs):
        if graph_options is None:
            raise ValueError("GraphDataSplitter needs graph_options; CellinaGCN.train passes them.")
        self.graph_options = graph_options
        self.inputs: GraphInputs | None = None
        super().__init__(adata_manager, **kwargs)

    def setup(self, stage: str | None = None) -> None:
        """Split the cells, then build the graph without the test cells."""
        super().setup(stage)
        if self.inputs is None:
            inputs = self.graph_options.inputs(self.adata_manager, exclude=np.asarray(self.test_idx))
            self.inputs = inputs.for_training()

    def _loader(self, positions: np.ndarray, shuffle: bool, drop_last: bool, seed: int | None) -> DataLoader:
        dataset = SampledGraphBatches(self.inputs, self.graph_options, positions, seed)
        batch_size = self.data_loader_kwargs.get("batch_size") or 128
        distributed = bool(self.data_loader_kwargs.get("distributed_sampler", False))
        return graph_loader(dataset, batch_size, shuffle, drop_last, distributed, self.graph_options.seed_patches)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_idx, True, self.drop_last, None)

    def val_dataloader(self) -> DataLoader | None:
        if len(self.val_idx) > 0:
            return self._loader(self.val_idx, False, False, 0)
        return None

    def test_dataloader(self) -> DataLoader | None:
        if len(self.test_idx) > 0:
            return self._loader(self.test_idx, False, False, 0)
        return None
