"""CellinaGCN: the graph variant of Cellina (the paper's "Cellina-GAT"), a scvi-tools model."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scvi.data import AnnDataManager

from cellina.keys import OBSP

from ._gcn_getters import GraphGettersMixin
from ._gcn_module import CellinaGCNModule
from ._graph_data import GraphDataSplitter, GraphOptions, check_seed_patches
from ._graph_encoder import CONVOLUTION_TYPES
from ._graph_sampler import SUBGRAPH_TYPES, check_fanouts, fit_fanouts
from ._model import Cellina, check_setup, registry_fields
from .presets import Preset, get_preset

logger = logging.getLogger(__name__)

#: graph layers of the spatial encoder unless ``n_layers`` is given
N_LAYERS_DEFAULT = 2


def looks_like_counts(matrix: Any, max_values: int = 1_000_000) -> bool:
    """Whether ``matrix`` holds non-negative integers (checked on up to ``max_values`` stored values)."""
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix[: max(1, max_values // max(1, matrix.shape[1]))])
    values = np.asarray(values).ravel()[:max_values]
    return bool(values.size == 0 or (values.min() >= 0 and np.all(values == np.round(values))))


class CellinaGCN(GraphGettersMixin, Cellina):
    """Cellina with a graph encoder for ``s``: GATv2 attention over each cell's neighbourhood.

    ``z``, the decoder, the cell-type classifier, the domain adversary, the training plan and the
    presets are :class:`Cellina`'s; only ``s`` differs. Instead of reading niche features, ``s`` is
    encoded by ``n_layers`` graph layers (GATv2 by default: one head, no self-loops) over the
    spatial graph ``obsp[spatial_connectivities_key]``, whose row ``i`` lists the cells whose
    expression reaches cell ``i`` (as for the niche features). Node features are ``log1p`` of the
    counts, or of ``x_spatial_layer``; training keeps them as one dense float32 table when it
    takes at most 1 GiB, and densifies them per minibatch otherwise. A supervised-contrastive loss
    on ``s`` (``link_prediction_weight``) pulls neighbours together and pushes cells of other
    domains apart. No ``compute_spatial_features`` step is needed.

    Training minibatches are seed cells plus their sampled ``n_layers``-hop neighbourhoods
    (``num_neighbors`` per hop); the held-out cells (the test part of ``external_indexing``) are
    removed from the graph first, so they are in no subgraph. Prediction computes each layer once
    per cell on full neighbourhoods (layer-wise), so it does not depend on the batch size.

    Every getter and counterfactual of :class:`Cellina` works with the same call:
    ``get_latent_representation``, ``get_normalized_expression``, ``get_elbo``, ...,
    ``get_counterfactual_expression`` / ``get_counterfactual_latents`` (donors or an anchor's
    neighbours become the focal cells' only neighbours), :func:`cellina.counterfactual.node_counterfactual`;
    node perturbations the published way: :func:`cellina.make_perturbed_expression` writes
    perturbed counts to a layer and ``get_perturbed_expression(adata, cf_layer="counts_cf")``
    aggregates them. :meth:`get_attention_weights` and :meth:`attention_by_group` show whom each
    cell attends to.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden, n_latent, n_layers
        As in :class:`Cellina`; ``n_layers`` is also the number of graph layers (hops).
    discriminator_lambda, classifier_lambda, use_observed_lib_size
        As in :class:`Cellina`.
    link_prediction_weight
        Weight of the spatial loss on ``s`` (``0``: off).
    spatial_loss_type
        ``"supcon"`` (supervised-contrastive) or ``"domain_clf"`` (a classifier of the domain
        from ``s``).
    supcon_temperature
        Temperature of the contrastive loss.
    num_neighbors
        Neighbours sampled per hop in training: ``None`` (all), an int for every hop, or one
        value per hop (``-1``: all), e.g. ``[10, 5]``.
    x_spatial_layer
        Layer whose rows are the node features (default: the registered counts). Integer data
        goes through ``log1p``; anything else is used as it is.
    convolution_type
        ``"gat"`` (GATv2), ``"gcn"``, ``"gin"``, ``"sg"`` or ``"mean"``.
    subgraph_type
        ``"induced"`` (every graph edge between sampled cells) or ``"directional"`` (only the
        sampled edges: each cell reads the neighbours drawn for it).
    supcon_positives
        How many of a seed's sampled neighbours the contrastive loss compares it with (``None``:
        all). Their ``s`` is computed from their neighbours within one hop of the seeds, in the
        last graph layer only, so the loss costs little beyond the seeds' own computation.
    seed_patches
        Training minibatches take their seed cells from this many spatial patches of neighbouring
        cells, cut anew every epoch, instead of at random (``None``, as published). Neighbouring
        seeds share their neighbourhoods, so a step reads far fewer cells; prediction is unchanged.
    **kwargs
        Further :class:`Cellina` options (``dropout_rate``, ``niche_decoder``,
        ``spatial_kl_weight``, ``preset``, ...). ``spatial_encoder`` chooses how each graph
        layer is finished: ``"mlp"`` (default, published: layer norm and ReLU) or ``"linear"``
        (batch normalisation across cells, no activation: the counterpart of Cellina's linear
        niche encoder, which the recommended preset chooses for both variants).

    Examples
    --------
    >>> CellinaGCN.setup_anndata(adata, batch_key="slide", labels_key="cell_type", domains_key="domain",
    ...     layer="counts", spatial_connectivities_key="spatial_connectivities")
    >>> model = CellinaGCN.from_preset(adata, "recommended", num_neighbors=[10, 5])
    >>> model.train(max_epochs=50)
    >>> attention = model.attention_by_group("cell_type")
    """

    _module_cls = CellinaGCNModule
    _data_splitter_cls = GraphDataSplitter
    #: the graph variant reads the spatial graph, not niche features
    niche_input = "graph"
    _options_without_effect: tuple[str, ...] = ()

    def __init__(
        self,
        adata: AnnData | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = N_LAYERS_DEFAULT,
        discriminator_lambda: float = 1.0,
        classifier_lambda: float = 1.0,
        link_prediction_weight: float = 1.0,
        spatial_loss_type: Literal["supcon", "domain_clf"] = "supcon",
        supcon_temperature: float = 0.25,
        num_neighbors: int | list[int] | None = None,
        x_spatial_layer: str | None = None,
        use_observed_lib_size: bool = True,
        convolution_type: Literal["gat", "gcn", "gin", "sg", "mean"] = "gat",
        subgraph_type: Literal["induced", "directional"] = "induced",
        supcon_positives: int | None = 2,
        seed_patches: int | None = None,
        **kwargs,
    ):
        if adata is None:
            raise ValueError("CellinaGCN needs an AnnData registered with CellinaGCN.setup_anndata.")
        if convolution_type not in CONVOLUTION_TYPES:
            raise ValueError(f"convolution_type={convolution_type!r} is not supported; use one of {CONVOLUTION_TYPES}.")
        if subgraph_type not in SUBGRAPH_TYPES:
            raise ValueError(f"subgraph_type={subgraph_type!r}: use one of {SUBGRAPH_TYPES}.")
        self.fanouts_ = check_fanouts(num_neighbors, int(n_layers))
        self._node_source_layer = x_spatial_layer
        if x_spatial_layer is not None and x_spatial_layer not in adata.layers:
            raise ValueError(
                f"x_spatial_layer={x_spatial_layer!r} is not in adata.layers (have {list(adata.layers.keys())})."
            )
        source = adata.layers[x_spatial_layer] if x_spatial_layer is not None else None
        self.node_feature_transform = "log1p" if source is None or looks_like_counts(source) else "identity"
        self.subgraph_type = subgraph_type
        if supcon_positives is not None and (isinstance(supcon_positives, bool) or int(supcon_positives) < 1):
            raise ValueError(f"supcon_positives={supcon_positives!r} must be a positive int or None (all).")
        self.supcon_positives = None if supcon_positives is None else int(supcon_positives)
        self.seed_patches = check_seed_patches(seed_patches)
        super().__init__(
            adata,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_layers=n_layers,
            classifier_lambda=classifier_lambda,
            discriminator_lambda=discriminator_lambda,
            use_observed_lib_size=use_observed_lib_size,
            link_prediction_weight=link_prediction_weight,
            spatial_loss_type=spatial_loss_type,
            supcon_temperature=supcon_temperature,
            convolution_type=convolution_type,
            **kwargs,
        )
        self._model_summary_string = self._summary()
        self.init_params_ = self._get_init_params(locals())

    #: the variant has every option of the presets
    _options_without_effect: tuple[str, ...] = ()

    @classmethod
    def from_preset(cls, adata: AnnData, preset: str | Preset, **overrides: Any) -> CellinaGCN:
        """A model with a preset's options, ``overrides`` on top (as :meth:`Cellina.from_preset`).

        A preset's per-hop ``num_neighbors`` is fitted to ``n_layers`` (the recommended ``(10, 5)``
        gives ``[10]`` with one layer, ``[10, 5, 5]`` with three); one given in ``overrides`` is used
        as it is.
        """
        chosen = get_preset(preset)
        if "num_neighbors" in chosen.model and "num_neighbors" not in overrides:
            n_layers = int(overrides.get("n_layers", N_LAYERS_DEFAULT))
            overrides["num_neighbors"] = fit_fanouts(chosen.model["num_neighbors"], n_layers)
        return super().from_preset(adata, chosen, **overrides)

    # ------------------------------------------------------------------ construction
    def _niche_dimensions(self) -> dict[str, int]:
        """The width of what ``s`` is encoded from: the node features (one per gene)."""
        return {"n_node_features": self.summary_stats.n_vars}

    def _summary(self) -> str:
        base = super()._summary()
        head, tail = base.split(": ", 1)
        m = self.module
        fan = "all" if all(f is None for f in self.fanouts_) else str([f or "all" for f in self.fanouts_])
        parts = [
            f"{m.n_graph_layers} {m.convolution_type} layers ({m.spatial_encoder})",
            f"{self.subgraph_type} subgraphs, neighbours per hop {fan}",
            "random seeds" if self.seed_patches is None else f"seeds in {self.seed_patches} patches per minibatch",
            f"spatial loss {m.spatial_loss_type} (weight {m.link_prediction_weight})",
        ]
        return "CellinaGCN" + head.removeprefix("Cellina") + ": " + ", ".join(parts) + ", " + tail

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str | None = None,
        labels_key: str | None = None,
        domains_key: str | None = None,
        layer: str | None = None,
        spatial_connectivities_key: str = OBSP.CONNECTIVITIES,
        **kwargs,
    ) -> None:
        """Register an AnnData for CellinaGCN (checked in full before anything is written).

        Parameters
        ----------
        adata
            Cells x genes AnnData with a spatial graph.
        batch_key, labels_key, domains_key, layer
            As in :meth:`Cellina.setup_anndata`.
        spatial_connectivities_key
            ``obsp`` key of the spatial graph (:func:`cellina.spatial.spatial_neighbors`); row
            ``i`` lists the cells whose expression reaches cell ``i``. Mask held-out cells out of
            it (``spatial_neighbors(test_indices=...)``) or hold them out in training; they are
            then removed from every sampled subgraph.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        check_setup(adata, batch_key, labels_key, domains_key, layer)
        if spatial_connectivities_key not in adata.obsp:
            raise ValueError(
                f"spatial_connectivities_key={spatial_connectivities_key!r} is not in adata.obsp (have "
                f"{list(adata.obsp.keys())}); build the graph with cellina.spatial.spatial_neighbors."
            )
        setup_method_args = cls._get_setup_method_args(**locals())
        adata_manager = AnnDataManager(
            fields=registry_fields(batch_key, labels_key, domains_key, layer), setup_method_args=setup_method_args
        )
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    @property
    def graph_key(self) -> str:
        """The ``obsp`` key of the spatial graph the model was set up with."""
        return self.adata_manager.registry["setup_args"]["spatial_connectivities_key"]

    @property
    def spatial_obsm_key(self) -> None:
        """The graph variant reads no niche features (``None``)."""
        return None

    def graph_options(self) -> GraphOptions:
        """How this model cuts graph minibatches."""
        return GraphOptions(
            graph_key=self.graph_key,
            fanouts=tuple(self.fanouts_),
            subgraph_type=self.subgraph_type,
            x_spatial_layer=self._node_source_layer,
            feature_transform=self.node_feature_transform,
            contrastive=bool(self.module.use_contrastive),
            positives=self.supcon_positives,
            seed_patches=self.seed_patches,
        )

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int | None = None,
        accelerator: str = "auto",
        devices: int | list[int] | str = "auto",
        batch_size: int = 128,
        early_stopping: bool = False,
        datasplitter_kwargs: dict | None = None,
        plan_kwargs: dict | None = None,
        **kwargs,
    ):
        """Train as :meth:`Cellina.train` does, on graph minibatches.

        ``datasplitter_kwargs={"external_indexing": [train, validation, test]}`` works as for
        Cellina; the test cells are recorded as held out (``model.heldout_indices_``) and are
        removed from the graph before any subgraph is sampled. ``batch_size`` counts seed cells.
        """
        splitter = dict(datasplitter_kwargs or {})
        if "graph_options" in splitter:
            raise ValueError("datasplitter_kwargs['graph_options'] is set by CellinaGCN from its own options.")
        splitter["graph_options"] = self.graph_options()
        return super().train(
            max_epochs, accelerator, devices, batch_size, early_stopping, splitter, plan_kwargs, **kwargs
        )
