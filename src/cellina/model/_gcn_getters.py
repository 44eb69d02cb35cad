"""Prediction faces of :class:`~cellina.model.CellinaGCN`: graph inputs, rewired and perturbed
neighbourhoods, attention.

The getters of :class:`~cellina.model.Cellina` (and scvi-tools') run unchanged on top of two
overrides: ``_minibatches`` and ``_make_data_loader`` hand out graph minibatches after a
layer-wise pass (:mod:`cellina.model._graph_inference`) instead of niche features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from cellina.keys import LAYERS

from ._attention import attention_by_group as _attention_by_group
from ._graph_data import GraphInputs
from ._graph_inference import GraphPredictionBatches, attention_weights
from ._graph_sampler import prepare_graph
from ._validation import LatentRng, LibrarySize, as_indices, check_library_size, latent_streams

#: seeds per prediction minibatch when none is given (the result does not depend on it)
PREDICTION_BATCH = 1024


class GraphGettersMixin:
    """Graph inputs, prediction on other graphs or node features, and attention."""

    # ------------------------------------------------------------------ inputs
    def graph_inputs(
        self,
        adata: AnnData | None = None,
        *,
        graph: Any = None,
        node_features: Any = None,
        exclude_indices: Any = "heldout",
    ) -> GraphInputs:
        """Counts, node features and graph of ``adata`` for prediction.

        Parameters
        ----------
        adata
            Registered AnnData (``None``: the training data).
        graph
            A cells x cells graph replacing ``obsp[spatial_connectivities_key]``.
        node_features
            A cells x genes matrix replacing the node features' source (counts, or
            ``x_spatial_layer``), in the same space (e.g. perturbed counts).
        exclude_indices
            Cells that are nobody's neighbour: ``"heldout"`` (the cells held out in training,
            default), ``None`` or positions.
        """
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        exclude = self._exclusion(adata, exclude_indices)
        return self.graph_options().inputs(manager, exclude, graph=graph, source=node_features)

    def node_feature_source(self, adata: AnnData | None = None) -> Any:
        """The matrix node features are made from: ``layers[x_spatial_layer]`` or the registered counts."""
        adata = self._validate_anndata(adata)
        layer = self.graph_options().x_spatial_layer
        return self.registered_counts(adata) if layer is None else adata.layers[layer]

    def _minibatches(self, adata: AnnData, indices: np.ndarray, batch_size: int | None, spatial_x: Any = None):
        """Prediction minibatches of ``indices``; ``spatial_x`` may carry other :class:`GraphInputs`."""
        inputs = spatial_x if isinstance(spatial_x, GraphInputs) else self.graph_inputs(adata)
        return iter(GraphPredictionBatches(self.module, inputs, indices, batch_size or PREDICTION_BATCH))

    def _make_data_loader(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        shuffle: bool = False,
        data_loader_class: Any = None,
        **kwargs: Any,
    ) -> GraphPredictionBatches:
        """Graph minibatches for scvi-tools' getters (``get_elbo``, ``get_normalized_expression``, ...)."""
        adata = self._validate_anndata(adata)
        idx = as_indices(indices, adata.n_obs, "indices")
        return GraphPredictionBatches(self.module, self.graph_inputs(adata), idx, batch_size or PREDICTION_BATCH)

    def predict_from_niche(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        spatial_x: Any = None,
        output: Literal["expression", "z", "s", "shifted"] = "expression",
        library_size: LibrarySize = "latent",
        batch_size: int | None = None,
        give_mean: bool = True,
        *,
        rng: LatentRng = None,
    ) -> np.ndarray:
        """Factual prediction (``spatial_x=None``); the graph variant takes no niche features.

        Other graphs or node features go through :meth:`predict_from_graph`.
        """
        if spatial_x is not None:
            raise TypeError(
                "CellinaGCN encodes s from the spatial graph, not from niche features; use "
                "predict_from_graph(adata, indices, graph=..., node_features=...) instead."
            )
        return self.predict_from_graph(adata, indices, None, None, output, library_size, batch_size, give_mean, rng=rng)

    def _obsm_features(self, adata: AnnData, key: str, idx: np.ndarray) -> np.ndarray:
        raise ValueError(
            f"CellinaGCN reads no niche features (adata.obsm[{key!r}]); for a node perturbation write perturbed "
            "counts with cellina.make_perturbed_expression and use get_perturbed_latents(adata, cf_layer=...)."
        )

    # ------------------------------------------------------------------ decoding
    def predict_from_graph(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        graph: Any = None,
        node_features: Any = None,
        output: Literal["expression", "z", "s", "shifted"] = "expression",
        library_size: LibrarySize = "latent",
        batch_size: int | None = None,
        give_mean: bool = True,
        exclude_indices: Any = "heldout",
        *,
        rng: LatentRng = None,
    ) -> np.ndarray:
        """Decode cells with their own ``z`` and library, ``s`` from another graph or node features.

        The graph variant's counterpart of :meth:`Cellina.predict_from_niche`; ``adata`` is never
        modified. ``graph`` and ``node_features`` default to the registered ones (see
        :meth:`graph_inputs`); ``output``, ``library_size``, ``batch_size``, ``give_mean`` and
        ``rng`` are as in :meth:`Cellina.predict_from_niche`.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = as_indices(indices, adata.n_obs, "indices")
        inputs = self.graph_inputs(adata, graph=graph, node_features=node_features, exclude_indices=exclude_indices)
        return self._decode(adata, idx, batch_size, inputs, output, library_size, give_mean, rng)

    def rewired_graph(self, adata: AnnData, focal: np.ndarray, neighbourhoods: Any) -> sp.csr_matrix:
        """The registered graph with ``focal`` cells' neighbourhoods replaced.

        Row ``i`` of ``neighbourhoods`` (one per focal cell, cells x cells columns) becomes focal
        cell ``i``'s in-neighbours; the focal cells are removed as anyone else's neighbour, so
        their own expression cannot come back through a donor. ``focal`` must be distinct.
        """
        n = adata.n_obs
        if self.graph_key not in adata.obsp:
            raise ValueError(f"adata.obsp[{self.graph_key!r}] (the model's graph) is missing.")
        rows = sp.csr_matrix(neighbourhoods)
        if rows.shape != (focal.size, n):
            raise ValueError(f"neighbourhoods must have shape ({focal.size}, {n}), got {rows.shape}.")
        base = prepare_graph(adata.obsp[self.graph_key], n, focal, f"adata.obsp[{self.graph_key!r}]")
        # the focal cells' own rows are replaced: drop them from the base graph
        base.data[np.repeat(np.isin(np.arange(n), focal), np.diff(base.indptr))] = 0
        base.eliminate_zeros()
        rows = rows.tocoo()
        donors = sp.csr_matrix((np.ones(rows.nnz, dtype=np.float32), (focal[rows.row], rows.col)), shape=(n, n))
        return (base + donors).tocsr()

    def predict_with_neighbourhoods(
        self,
        adata: AnnData,
        focal: np.ndarray,
        neighbourhoods: Any,
        output: str = "expression",
        library_size: LibrarySize = "latent",
        batch_size: int | None = None,
        give_mean: bool = True,
        exclude: np.ndarray | None = None,
        node_features: Any = None,
        *,
        rng: LatentRng = None,
    ) -> np.ndarray:
        """Decode ``focal`` cells whose in-neighbours are the rows of ``neighbourhoods``.

        Every other cell keeps its neighbours, minus the focal cells and ``exclude``; a cell
        listed twice in ``focal`` is predicted once per occurrence with its own row. ``rng`` as in
        :meth:`Cellina.predict_from_niche`.
        """
        streams = None if give_mean else latent_streams(rng)
        if streams is not None:  # one stream across the occurrences' graphs
            rng = streams if streams[1] is not None else streams[0]
        focal = np.asarray(focal, dtype=np.int64)
        rows = sp.csr_matrix(neighbourhoods)
        order = np.argsort(focal, kind="stable")
        first = np.r_[True, focal[order][1:] != focal[order][:-1]]
        occurrence = np.empty(focal.size, dtype=np.int64)
        occurrence[order] = np.arange(focal.size) - np.maximum.accumulate(np.where(first, np.arange(focal.size), 0))
        out = None
        for k in range(int(occurrence.max(initial=-1)) + 1):
            pick = np.flatnonzero(occurrence == k)
            graph = self.rewired_graph(adata, focal[pick], rows[pick])
            values = self.predict_from_graph(
                adata, focal[pick], graph, node_features, output, library_size, batch_size, give_mean,
                exclude_indices=exclude, rng=rng,
            )  # fmt: skip
            if out is None:
                out = np.empty((focal.size, values.shape[1]), dtype=values.dtype)
            out[pick] = values
        return out

    # ------------------------------------------------------------------ node perturbation (published)
    def _cf_layer(self, adata: AnnData, cf_layer: str) -> Any:
        if cf_layer not in adata.layers:
            raise ValueError(
                f"cf_layer={cf_layer!r} is not in adata.layers (have {list(adata.layers.keys())}); write it with "
                f"cellina.make_perturbed_expression(adata, ..., layer_key={cf_layer!r})."
            )
        return adata.layers[cf_layer]

    def get_perturbed_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        cf_layer: str = LAYERS.PERTURBED_COUNTS,
        library_size: LibrarySize = "latent",
    ) -> np.ndarray:
        """Expected counts when every cell's node features come from ``adata.layers[cf_layer]``.

        The published node perturbation of the graph variant: write perturbed counts with
        :func:`cellina.make_perturbed_expression` (``add_shift=False``), then decode; ``z`` and the
        library still come from the registered counts, and the graph aggregates the perturbed
        neighbours on the fly.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_genes)`` float32.
        """
        check_library_size(library_size)
        adata = self._validate_anndata(adata)
        source = self._cf_layer(adata, cf_layer)
        return self.predict_from_graph(adata, indices, None, source, "expression", library_size, batch_size)

    def get_perturbed_latents(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
        latent_key: Literal["s", "z", "shifted"] = "s",
        cf_layer: str = LAYERS.PERTURBED_COUNTS,
    ) -> np.ndarray:
        """Latents with node features from ``adata.layers[cf_layer]`` (``"s"``, ``"z"`` or ``"shifted"``)."""
        if latent_key not in ("s", "z", "shifted"):
            raise ValueError(f"latent_key must be 's', 'z' or 'shifted', got {latent_key!r}.")
        adata = self._validate_anndata(adata)
        source = self._cf_layer(adata, cf_layer)
        return self.predict_from_graph(adata, indices, None, source, latent_key, "latent", batch_size, give_mean)

    def _make_counterfactual_adata(self, *args: Any, **kwargs: Any) -> AnnData:
        raise TypeError("CellinaGCN has no niche features to rewrite; use get_counterfactual_expression.")

    # ------------------------------------------------------------------ attention
    def get_attention_weights(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        exclude_indices: Any = "heldout",
    ) -> list[sp.csr_matrix]:
        """The attention each cell pays its neighbours, one cells x cells matrix per GATv2 layer.

        Row ``i`` of layer ``l`` holds the softmax weights cell ``i`` gives its in-neighbours in
        ``adata``'s graph (rows sum to 1 for cells with neighbours, 0 otherwise); only the rows of
        ``indices`` are filled. Computed on full neighbourhoods, the way predictions are.

        Parameters
        ----------
        adata
            Registered AnnData (``None``: the training data); its graph and counts are used.
        indices
            Receiving cells (``None``: all).
        exclude_indices
            As in :meth:`graph_inputs`.

        Returns
        -------
        list of scipy.sparse.csr_matrix
            ``n_layers`` float32 matrices of shape ``(n_obs, n_obs)``.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        rows = np.unique(as_indices(indices, adata.n_obs, "indices"))
        return attention_weights(self.module, self.graph_inputs(adata, exclude_indices=exclude_indices), rows)

    def attention_by_group(
        self,
        groupby: str,
        layer: int = -1,
        normalize: bool = True,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
    ) -> pd.DataFrame:
        """Receiver-group x sender-group attention, relative to uniform attention by default.

        See :func:`cellina.model.attention_by_group`: with ``normalize=True`` a value above 1
        means cells of the receiver group attend to neighbours of the sender group more than a
        uniform average over their neighbours would.

        Parameters
        ----------
        groupby
            ``obs`` column of the groups (e.g. the cell type).
        layer
            Which GATv2 layer (default: the last).
        normalize
            Relative to uniform attention, or the raw mean attention per edge.
        adata, indices
            As in :meth:`get_attention_weights` (``indices``: the receivers).
        """
        adata = self._validate_anndata(adata)
        if groupby not in adata.obs:
            raise ValueError(f"groupby={groupby!r} is not a column of adata.obs.")
        matrices = self.get_attention_weights(adata, indices)
        if not -len(matrices) <= int(layer) < len(matrices):
            raise ValueError(f"layer={layer} is out of range for {len(matrices)} attention layer(s).")
        return _attention_by_group(matrices[int(layer)], adata.obs[groupby], normalize)
