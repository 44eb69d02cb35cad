"""Registry, module-output and metric keys shared by the Cellina module, model and plan."""

from __future__ import annotations

from typing import NamedTuple


class _CellinaRegistryKeys(NamedTuple):
    SPATIAL_KEY: str = "spatial_x"
    DOMAINS_KEY: str = "domains"


class _CellinaModuleKeys(NamedTuple):
    Z_KEY: str = "z"
    QZ_KEY: str = "qz"
    QZM_KEY: str = "qzm"
    QZV_KEY: str = "qzv"
    S_KEY: str = "s"
    QS_KEY: str = "qs"
    QSM_KEY: str = "qsm"
    QSV_KEY: str = "qsv"
    SHIFTED_KEY: str = "shifted"
    QL_KEY: str = "ql"
    LIBRARY_KEY: str = "library"
    CLASSIFIER_LOGITS_KEY: str = "classifier_logits"
    DISCRIMINATOR_LOGITS_KEY: str = "discriminator_logits"
    PX_KEY: str = "px"
    PX_R_KEY: str = "px_r"
    PZ_KEY: str = "pz"
    PS_KEY: str = "ps"
    PL_KEY: str = "pl"
    # per-cell KL terms in ``LossOutput.kl_local`` (the published names)
    KL_Z: str = "kl_divergence_z"
    KL_S: str = "kl_divergence_s"
    KL_L: str = "kl_divergence_l"


CELLINA_REGISTRY_KEYS = _CellinaRegistryKeys()
CELLINA_MODULE_KEYS = _CellinaModuleKeys()

#: metric names logged to ``model.history`` (suffixed with ``_train`` / ``_validation``)
METRIC_VAE_LOSS = "vae_loss"
METRIC_CLF_LOSS = "classifier_loss"
METRIC_CLF_ACC = "classifier_accuracy"
METRIC_FOOL_LOSS = "fool_loss"
METRIC_DOMCLF_LOSS = "domain_classifier_loss"
METRIC_NICHE_FOOL_LOSS = "niche_fool_loss"
METRIC_NICHE_REG_LOSS = "niche_regressor_loss"
METRIC_DOMCLF_ACC = "domain_classifier_accuracy"
METRIC_DISC_LOSS = "discriminator_loss"
METRIC_DISC_ACC = "discriminator_accuracy"
METRIC_ALPHA_CLF = "alpha_classifier"
METRIC_ALPHA_ADV = "alpha_adversarial"
METRIC_ALPHA_DOMCLF = "alpha_domain_classifier"
METRIC_ALPHA_NICHE = "alpha_niche_adversary"
METRIC_KL_WEIGHT = "kl_weight"
#: suffix of a head's unweighted loss (the weighted one has no suffix)
RAW = "_raw"
#: the graph variant's contrastive loss on s (weighted; ``_raw`` unweighted)
METRIC_SPATIAL_LOSS = "spatial_loss"


class _GraphBatchKeys(NamedTuple):
    """Minibatch entries of the graph variant beside the registry keys (which hold the seeds)."""

    #: input of the first graph layer in the batch, one row per node (seeds first)
    X: str = "graph_x"
    #: (2, E) local (source, target) edges of every block, block after block
    EDGES: str = "graph_edges"
    #: number of edges of each block
    EDGE_COUNTS: str = "graph_edge_counts"
    #: node counts: nodes read by the first block, then nodes updated by each block
    SIZES: str = "graph_sizes"
    #: index of the graph layer the first block applies
    START: str = "graph_start"
    #: batch code of each node
    BATCH: str = "graph_batch"
    #: full-graph in-degree of each node (GCN normalisation)
    DEGREE: str = "graph_degree"
    #: domain code of each node the last block updates (contrastive negatives)
    DOMAINS: str = "graph_domains"
    #: position of each node in the AnnData
    NODES: str = "graph_nodes"


GRAPH_KEYS = _GraphBatchKeys()
