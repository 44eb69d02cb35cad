"""The CellinaGCN module: Cellina's module with a graph encoder for ``s`` and a contrastive loss on it.

Everything but the spatial encoder is :class:`~cellina.model.CellinaModule`'s own: the ``z``
encoder, the library, the decoders, the classifier, the domain adversary, the objective and the
presets' options. ``s`` is encoded from a cell's graph neighbourhood instead of its niche
features, and the loss may add a supervised-contrastive term on ``s``
(:func:`~cellina.model._losses.supervised_contrastive_loss`).
"""

from __future__ import annotations

from typing import Any

import torch
from scvi import REGISTRY_KEYS
from scvi.module.base import LossOutput, auto_move_data
from torch.distributions import Normal

from ._constants import GRAPH_KEYS as GK
from ._constants import METRIC_SPATIAL_LOSS, RAW
from ._graph_encoder import GraphEncoder
from ._losses import supervised_contrastive_loss
from ._module import CellinaModule

#: the published spatial losses of the graph variant
SPATIAL_LOSS_TYPES = ("supcon", "domain_clf")
#: inference output holding the posterior means of s of every node the last graph layer updated
S_CANDIDATES_KEY = "graph_s_candidates"


def graph_blocks(graph: dict[str, Any]) -> tuple[list[torch.Tensor], list[int], int]:
    """Edges, node counts and first layer of a minibatch's graph blocks."""
    counts = [int(c) for c in graph[GK.EDGE_COUNTS].reshape(-1).tolist()]
    edges = list(torch.split(graph[GK.EDGES].long(), counts, dim=1)) if counts else []
    sizes = [int(n) for n in graph[GK.SIZES].reshape(-1).tolist()]
    return edges, sizes, int(graph[GK.START].reshape(-1)[0])


class CellinaGCNModule(CellinaModule):
    """Dual-encoder VAE whose spatial latent ``s`` is encoded by a graph network.

    ``s`` comes from :class:`~cellina.model._graph_encoder.GraphEncoder` (GATv2 layers by
    default) run over a minibatch's sampled neighbourhoods (see the graph batch keys in
    :mod:`cellina.model._constants`); the seeds are the cells of the minibatch and the first rows
    of every block. All other parts, arguments and defaults are :class:`CellinaModule`'s.

    Parameters
    ----------
    n_input
        Number of genes.
    n_node_features
        Width of the node features (defaults to ``n_input``).
    n_hidden, n_layers, dropout_rate
        As in :class:`CellinaModule`; ``n_layers`` is also the number of graph layers (hops).
    link_prediction_weight
        Weight of the spatial loss on ``s`` (``0``: off).
    spatial_loss_type
        ``"supcon"``: the supervised-contrastive loss (a seed's sampled neighbours are its
        positives, cells of another domain that are not neighbours its negatives);
        ``"domain_clf"``: a classifier of the domain from ``s`` (the module's domain classifier,
        weighted by ``link_prediction_weight``).
    supcon_temperature
        Temperature of the contrastive loss.
    convolution_type
        ``"gat"`` (GATv2, default), ``"gcn"``, ``"gin"``, ``"sg"`` or ``"mean"``.
    spatial_encoder
        How each graph layer is finished: ``"mlp"`` (published: layer norm and ReLU) or
        ``"linear"`` (batch normalisation, no activation; see
        :class:`~cellina.model._graph_encoder.GraphEncoder`).
    **kwargs
        :class:`CellinaModule` arguments (``n_batch``, ``n_labels``, ``n_domains``, the heads'
        weights, the decoder options, ...).
    """

    NORMALISED_LOSSES = (*CellinaModule.NORMALISED_LOSSES, (METRIC_SPATIAL_LOSS, "alpha_spatial", "spatial_scale"))

    def __init__(
        self,
        n_input: int,
        n_node_features: int | None = None,
        n_hidden: int = 128,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        link_prediction_weight: float = 1.0,
        spatial_loss_type: str = "supcon",
        supcon_temperature: float = 0.25,
        convolution_type: str = "gat",
        **kwargs,
    ):
        if spatial_loss_type not in SPATIAL_LOSS_TYPES:
            raise ValueError(f"spatial_loss_type={spatial_loss_type!r}: use one of {SPATIAL_LOSS_TYPES}.")
        if not float(link_prediction_weight) >= 0:
            raise ValueError(f"link_prediction_weight={link_prediction_weight} must be >= 0.")
        if not float(supcon_temperature) > 0:
            raise ValueError(f"supcon_temperature={supcon_temperature} must be > 0.")
        # Cellina's niche-feature encoder is replaced by the graph layers (which check the kind)
        graph_encoder = kwargs.pop("spatial_encoder", "mlp")
        if kwargs.get("condition_on_intrinsic"):
            raise ValueError(
                "condition_on_intrinsic=True is not available with the graph encoder: z exists for the "
                "seed cells only, not for the neighbours the graph layers read."
            )
        if spatial_loss_type == "domain_clf":
            given = float(kwargs.get("domain_classifier_lambda", 0.0))
            if given and given != float(link_prediction_weight):
                raise ValueError(
                    f"spatial_loss_type='domain_clf' weights the domain classifier on s by "
                    f"link_prediction_weight={link_prediction_weight}; domain_classifier_lambda={given} disagrees."
                )
            kwargs["domain_classifier_lambda"] = float(link_prediction_weight)
        n_features = n_input if n_node_features is None else int(n_node_features)
        super().__init__(n_input, n_features, n_hidden=n_hidden, n_layers=n_layers, dropout_rate=dropout_rate, **kwargs)
        self.link_prediction_weight = float(link_prediction_weight)
        self.spatial_loss_type = spatial_loss_type
        self.supcon_temperature = float(supcon_temperature)
        self.convolution_type = convolution_type
        # the MLP niche encoder of the parent is replaced by the graph encoder
        self.s_encoder = GraphEncoder(
            n_features,
            self.n_latent_spatial,
            n_hidden=n_hidden,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            n_batch=self.n_batch if self.encode_batch else 0,
            convolution_type=convolution_type,
            kind=graph_encoder,
        )
        self.spatial_encoder = graph_encoder
        self.register_buffer("alpha_spatial", torch.tensor(1.0))

    @property
    def use_contrastive(self) -> bool:
        """Whether the loss has the supervised-contrastive term."""
        return self.spatial_loss_type == "supcon" and self.link_prediction_weight > 0

    @property
    def n_graph_layers(self) -> int:
        return self.s_encoder.n_layers

    def logged_loss_factors(self) -> list[str]:
        return super().logged_loss_factors() + (["alpha_spatial"] if self.use_contrastive else [])

    # ------------------------------------------------------------------ inputs
    def _get_inference_input(self, tensors: dict[str, torch.Tensor], **kwargs) -> dict:
        if GK.X not in tensors:
            raise ValueError(
                f"CellinaGCN needs graph minibatches (with {GK.X!r}, {GK.EDGES!r}, ...) as CellinaGCN's "
                f"own data loaders make them; got the keys {sorted(tensors)}."
            )
        return {
            "x": tensors[REGISTRY_KEYS.X_KEY],
            "graph": {key: tensors[key] for key in GK if key in tensors},
            "batch_index": tensors[REGISTRY_KEYS.BATCH_KEY],
        }

    # ------------------------------------------------------------------ model
    def encode_spatial(self, graph: dict[str, torch.Tensor]) -> tuple[Normal, torch.Tensor]:
        """Posterior of ``s`` (and a sample) for every node the minibatch's last block updates."""
        edges, sizes, start = graph_blocks(graph)
        hidden = self.s_encoder.propagate(
            graph[GK.X].float(),
            edges,
            sizes,
            start,
            graph.get(GK.BATCH) if self.encode_batch else None,
            graph.get(GK.DEGREE),
        )
        return self.s_encoder.head(hidden)

    @auto_move_data
    def inference(
        self,
        x: torch.Tensor,
        graph: dict[str, torch.Tensor],
        batch_index: torch.Tensor,
        give_mean: bool = False,
        n_samples: int = 1,
    ) -> dict[str, Any]:
        """Encode ``z`` from the seeds' counts and ``s`` from their graph neighbourhoods.

        Parameters
        ----------
        x
            Raw counts of the seed cells, ``(n_cells, n_input)``.
        graph
            The minibatch's graph entries (:data:`~cellina.model._constants.GRAPH_KEYS`).
        batch_index
            Batch codes of the seed cells, ``(n_cells, 1)``.
        give_mean, n_samples
            As in :meth:`CellinaModule.inference`.

        Returns
        -------
        dict
            :meth:`CellinaModule.inference`'s outputs for the seeds; when the last block also
            updates the seeds' neighbours (contrastive training), ``graph_s_candidates`` holds
            the posterior means of ``s`` of every node it updates.
        """
        batch_index = batch_index.long()
        x_log = torch.log1p(x)
        qz, z = self._encode(self.z_encoder, x_log, batch_index)
        qs_all, s_all = self.encode_spatial(graph)
        n_seed = x.shape[0]
        qs = Normal(qs_all.loc[:n_seed], qs_all.scale[:n_seed])
        out = self._latents(x, x_log, batch_index, (qz, z), (qs, s_all[:n_seed]), give_mean, n_samples)
        if qs_all.loc.shape[0] > n_seed:
            out[S_CANDIDATES_KEY] = qs_all.loc
        return out

    # ------------------------------------------------------------------ objective
    def contrastive_loss(self, tensors: dict[str, torch.Tensor], inference_outputs: dict) -> torch.Tensor | None:
        """The supervised-contrastive loss of a minibatch, or ``None`` when it has no candidates."""
        candidates = inference_outputs.get(S_CANDIDATES_KEY)
        if candidates is None or GK.DOMAINS not in tensors:
            return None
        edges, _, _ = graph_blocks({key: tensors[key] for key in (GK.EDGES, GK.EDGE_COUNTS, GK.SIZES, GK.START)})
        last = edges[-1].to(candidates.device)
        n_seed = tensors[REGISTRY_KEYS.X_KEY].shape[0]
        pairs = last[:, (last[1] < n_seed) & (last[0] < candidates.shape[0])]
        domains = tensors[GK.DOMAINS].reshape(-1)[: candidates.shape[0]].to(candidates.device)
        return supervised_contrastive_loss(candidates, n_seed, pairs, domains, self.supcon_temperature)

    def _head_terms(self, tensors: dict, inference_outputs: dict, scales: dict[str, float]) -> dict:
        out = super()._head_terms(tensors, inference_outputs, scales)
        if self.use_contrastive:
            raw = self.contrastive_loss(tensors, inference_outputs)
            if raw is not None:
                out[METRIC_SPATIAL_LOSS + RAW] = raw
                out[METRIC_SPATIAL_LOSS] = raw * self.link_prediction_weight * scales["spatial"]
        return out

    def loss(
        self,
        tensors: dict[str, torch.Tensor],
        inference_outputs: dict,
        generative_outputs: dict,
        kl_weight: float | torch.Tensor = 1.0,
        classifier_scale: float | torch.Tensor = 1.0,
        discriminator_scale: float | torch.Tensor = 1.0,
        domain_classifier_scale: float | torch.Tensor = 1.0,
        niche_adversary_scale: float | torch.Tensor = 1.0,
        spatial_scale: float | torch.Tensor = 1.0,
    ) -> LossOutput:
        """:meth:`CellinaModule.loss` plus ``link_prediction_weight * a_spatial * L_supcon``.

        ``L_supcon`` is the contrastive loss of the seeds of the minibatch (``spatial_loss`` in
        the metrics, unweighted ``spatial_loss_raw``); minibatches without the seeds' neighbours'
        ``s`` (prediction, the scvi-tools getters) add nothing.
        """
        scales = {
            "classifier": classifier_scale,
            "discriminator": discriminator_scale,
            "domain_classifier": domain_classifier_scale,
            "niche_adversary": niche_adversary_scale,
            "spatial": spatial_scale,
        }
        return self._loss_output(tensors, inference_outputs, generative_outputs, kl_weight, scales)
