"""The user-facing Cellina model (scvi-tools ``BaseModelClass``)."""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.data.fields import CategoricalObsField, LayerField, ObsmField
from scvi.model.base import BaseModelClass, RNASeqMixin, UnsupervisedTrainingMixin, VAEMixin

from cellina.keys import OBSM
from cellina.spatial._composition import composition_width

from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._counterfactual import CellinaCounterfactualMixin
from ._getters import CellinaGettersMixin
from ._module import CellinaModule
from ._population import PopulationChangeMixin
from ._training_plan import CellinaTrainingPlan, auto_kl_warmup_epochs
from ._validation import (
    check_counts,
    check_niche_features,
    check_obs_column,
    check_saved_genes,
    library_size_prior,
    resolve_devices,
)
from .presets import Preset, get_preset

logger = logging.getLogger(__name__)


class Cellina(
    CellinaCounterfactualMixin,
    PopulationChangeMixin,
    CellinaGettersMixin,
    RNASeqMixin,
    VAEMixin,
    UnsupervisedTrainingMixin,
    BaseModelClass,
):
    """Dual-encoder VAE separating intrinsic state ``z`` from spatial context ``s``.

    ``z`` is encoded from the cell's own counts, ``s`` from its niche features
    (``obsm[spatial_obsm_key]``, built by :func:`cellina.spatial.compute_spatial_features`),
    and counts are decoded from ``[z; s]``. A cell-type classifier and a domain adversary on
    ``z`` (trained in alternation, see :class:`~cellina.model.CellinaTrainingPlan`) keep spatial
    information out of ``z``, which makes tissue-graph counterfactuals possible: hold ``z``
    fixed and change the niche. scvi-tools' getters work as for ``SCVI``
    (``get_normalized_expression``, ``get_elbo``, ``get_marginal_ll``, ...).

    The defaults are the published model's architecture; :meth:`from_preset` builds the
    ``"published"`` objective exactly or the ``"recommended"`` one (:mod:`cellina.model.presets`
    explains every option the two differ on).

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden, n_latent, n_layers, dropout_rate
        Width, ``z`` dimension, depth and dropout of encoders and decoder.
    gene_likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"``.
    use_observed_lib_size
        Use the observed library size (default) rather than a learnt library latent.
    classifier_lambda
        Weight of the cell-type classifier on ``z``; ``0`` turns it off, and it is off when no
        ``labels_key`` is registered.
    discriminator_lambda
        Weight of the domain adversary on ``z``; ``0`` turns it off.
    domain_classifier_lambda
        Weight of a classifier of the domain from ``s`` (off by default).
    niche_adversary_lambda
        Weight of the niche adversary, which keeps the niche code ``s`` out of ``z`` beyond the
        cell type (off by default; see :class:`~cellina.model.CellinaModule`).
    classifier_kwargs, discriminator_kwargs
        Extra :class:`scvi.module.Classifier` arguments of the heads (e.g. ``n_hidden``).
    condition_on_intrinsic
        Feed a detached ``z`` (posterior mean) into the ``s`` encoder as well.
    n_latent_spatial
        Dimension of ``s`` (defaults to ``n_latent``).
    dispersion
        ``"gene"``, ``"gene-batch"`` or ``"gene-cell"``.
    spatial_kl_weight, niche_decoder, niche_rank, spatial_decoding, type_aware_discriminator,
    encode_batch, adversarial_loss
        See :class:`~cellina.model.CellinaModule` and :data:`cellina.model.presets.OPTION_NOTES`.
    disattenuate_niche
        Edge counterfactuals' default for ``disattenuate``: divide the change in ``s`` by the
        reliability of the focal cells' niche codes (:func:`cellina.counterfactual.niche_reliability`).
        Nothing the model learns changes; the statistics are measured when training ends.
    preset
        Name of the preset these options came from (set by :meth:`from_preset`; its plan
        options then become :meth:`train`'s defaults). Recorded with the model.
    **module_kwargs
        Further :class:`~cellina.model.CellinaModule` options (``spatial_encoder``,
        ``spatial_components``, ...).

    Examples
    --------
    >>> Cellina.setup_anndata(adata, labels_key="cell_type", domains_key="domain", layer="counts")
    >>> model = Cellina.from_preset(adata, "recommended", n_latent=16)
    >>> model.train(max_epochs=50)
    >>> adata.obsm["cellina_z"] = model.get_latent_representation(latent_key="z")
    """

    _module_cls = CellinaModule
    _training_plan_cls = CellinaTrainingPlan

    def __init__(
        self,
        adata: AnnData | None = None,
        n_hidden: int = 128,
        n_latent: int = 10,
        n_layers: int = 2,
        dropout_rate: float = 0.1,
        gene_likelihood: Literal["nb", "zinb", "poisson"] = "nb",
        use_observed_lib_size: bool = True,
        classifier_lambda: float = 1.0,
        discriminator_lambda: float = 1.0,
        domain_classifier_lambda: float = 0.0,
        niche_adversary_lambda: float = 0.0,
        classifier_kwargs: dict | None = None,
        discriminator_kwargs: dict | None = None,
        condition_on_intrinsic: bool = False,
        n_latent_spatial: int | None = None,
        dispersion: Literal["gene", "gene-batch", "gene-cell"] = "gene",
        spatial_kl_weight: float = 0.1,
        niche_decoder: Literal["concat", "factorised", "type_gated"] = "concat",
        niche_rank: int = 8,
        spatial_decoding: Literal["sample", "mean"] = "sample",
        type_aware_discriminator: bool = False,
        encode_batch: bool = True,
        adversarial_loss: Literal["uniform", "negative_ce"] = "uniform",
        disattenuate_niche: bool = False,
        preset: str | None = None,
        **module_kwargs,
    ):
        super().__init__(adata)
        if adata is None:
            raise ValueError("Cellina needs an AnnData registered with Cellina.setup_anndata.")
        if not isinstance(disattenuate_niche, bool | np.bool_):
            raise ValueError(f"disattenuate_niche={disattenuate_niche!r} must be True or False.")
        self.disattenuate_niche = bool(disattenuate_niche)
        self.preset = None if preset is None else get_preset(preset).name
        effective_classifier_lambda = self._classifier_weight(classifier_lambda, niche_decoder)
        self._check_registered_keys(discriminator_lambda, domain_classifier_lambda, type_aware_discriminator)
        self.module = self._module_cls(
            **self._data_dimensions(use_observed_lib_size),
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_latent_spatial=n_latent_spatial,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            classifier_lambda=effective_classifier_lambda,
            discriminator_lambda=discriminator_lambda,
            domain_classifier_lambda=domain_classifier_lambda,
            niche_adversary_lambda=niche_adversary_lambda,
            classifier_kwargs=classifier_kwargs,
            discriminator_kwargs=discriminator_kwargs,
            encode_batch=encode_batch,
            adversarial_loss=adversarial_loss,
            condition_on_intrinsic=condition_on_intrinsic,
            spatial_kl_weight=spatial_kl_weight,
            niche_decoder=niche_decoder,
            niche_rank=niche_rank,
            spatial_decoding=spatial_decoding,
            type_aware_discriminator=type_aware_discriminator,
            **module_kwargs,
        )
        self._fit_niche_projection()
        self._model_summary_string = self._summary()
        logger.info("The Cellina model has been initialized %s", self._summary().split(":")[0])
        self.init_params_ = self._get_init_params(locals())

    #: preset options this variant does not have (a preset sets them for the other variant)
    _options_without_effect: tuple[str, ...] = ("link_prediction_weight", "num_neighbors", "subgraph_type")

    @classmethod
    def from_preset(cls, adata: AnnData, preset: str | Preset, **overrides: Any) -> Cellina:
        """A model with a preset's options, ``overrides`` on top.

        The preset's plan options become :meth:`train`'s defaults, and its name is recorded
        with the model (``model.preset``).

        Parameters
        ----------
        adata
            AnnData registered with :meth:`setup_anndata`.
        preset
            ``"published"``, ``"recommended"`` or a :class:`~cellina.model.presets.Preset`.
        **overrides
            Constructor options that replace or add to the preset's.
        """
        chosen = get_preset(preset)
        options = {k: v for k, v in chosen.model.items() if k not in cls._options_without_effect}
        return cls(adata, **{**options, **overrides}, preset=chosen.name)

    # ------------------------------------------------------------------ construction checks
    def _data_dimensions(self, use_observed_lib_size: bool) -> dict[str, Any]:
        """The module's sizes read off the registered data (and the library prior when learnt)."""
        stats = self.summary_stats
        dims = {
            "n_input": stats.n_vars,
            **self._niche_dimensions(),
            "n_batch": stats.n_batch,
            "n_labels": stats.n_labels,
            "n_domains": stats[f"n_{RK.DOMAINS_KEY}"],
            "library_log_means": None,
            "library_log_vars": None,
        }
        if not use_observed_lib_size:
            manager = self.adata_manager
            dims["library_log_means"], dims["library_log_vars"] = library_size_prior(
                manager.get_from_registry(REGISTRY_KEYS.X_KEY),
                manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY),
                stats.n_batch,
            )
        return dims

    def _niche_dimensions(self) -> dict[str, int]:
        """The width of what ``s`` is encoded from (the niche features) and of their cell-type block."""
        record = self.adata.uns.get("cellina", {}).get("spatial_features", {}).get(self.spatial_obsm_key)
        return {
            "n_spatial": self.summary_stats[f"n_{RK.SPATIAL_KEY}"],
            "n_spatial_passthrough": composition_width(record),
        }

    def _fit_niche_projection(self) -> None:
        encoder = getattr(self.module, "s_encoder", None)
        if getattr(encoder, "n_components", None) is not None:
            encoder.fit_projection(self.adata_manager.get_from_registry(RK.SPATIAL_KEY))

    def _classifier_weight(self, classifier_lambda: float, niche_decoder: str) -> float:
        labels_key = self.adata_manager.registry["setup_args"].get("labels_key")
        if labels_key is None:
            if niche_decoder == "type_gated":
                raise ValueError(
                    "niche_decoder='type_gated' weights the niche response by the cell-type classifier "
                    "on z: pass labels_key to Cellina.setup_anndata, or use niche_decoder='factorised'."
                )
            if classifier_lambda > 0:
                logger.info("No labels_key registered: the cell-type classifier is off.")
            # a negative weight is still refused, by the module that owns the weights
            return min(float(classifier_lambda), 0.0)
        if niche_decoder == "type_gated" and classifier_lambda <= 0:
            raise ValueError(
                "niche_decoder='type_gated' weights the niche response by the cell-type classifier "
                f"on z: keep classifier_lambda > 0 (got {classifier_lambda}), or use niche_decoder='factorised'."
            )
        if classifier_lambda > 0 and self.summary_stats.n_labels < 2:
            raise ValueError(
                f"adata.obs[{labels_key!r}] has a single label; the classifier needs >= 2 (or set classifier_lambda=0)."
            )
        return float(classifier_lambda)

    def _check_registered_keys(self, discriminator_lambda, domain_classifier_lambda, type_aware) -> None:
        setup_args = self.adata_manager.registry["setup_args"]
        domains_key = setup_args.get("domains_key")
        for name, value in (
            ("discriminator_lambda", discriminator_lambda),
            ("domain_classifier_lambda", domain_classifier_lambda),
        ):
            if value > 0 and domains_key is None:
                raise ValueError(
                    f"{name} > 0 needs spatial domains: pass domains_key to Cellina.setup_anndata, or set {name}=0."
                )
        if type_aware and discriminator_lambda > 0 and setup_args.get("labels_key") is None:
            raise ValueError(
                "type_aware_discriminator=True tells the discriminator each cell's type: pass "
                "labels_key to Cellina.setup_anndata, or set type_aware_discriminator=False."
            )

    def _summary(self) -> str:
        m = self.module
        mode = "with" if m.discriminator is not None else "without"
        parts = [
            f"n_latent {m.n_latent}",
            f"n_latent_spatial {m.n_latent_spatial}",
            f"gene_likelihood {m.gene_likelihood}",
            f"classifier_lambda {m.classifier_lambda}",
            f"discriminator_lambda {m.discriminator_lambda}",
            f"spatial_kl_weight {m.spatial_kl_weight}",
            f"niche_decoder {m.niche_decoder}"
            + (f" (rank {m.decoder.state_directions.out_features})" if m.niche_decoder != "concat" else ""),
            f"spatial_decoding {m.spatial_decoding}",
            f"adversarial_loss {m.adversarial_loss}",
        ]
        if m.domain_classifier is not None:
            parts.append(f"domain_classifier_lambda {m.domain_classifier_lambda}")
        if m.type_aware_discriminator:
            parts.append("type-aware discriminator")
        if m.n_batch > 1:
            parts.append(f"{m.n_batch} batches" + (" in encoders and decoder" if m.encode_batch else " in the decoder"))
        preset = f" (preset {self.preset!r})" if self.preset else ""
        return f"Cellina model {mode} adversarial domain forgetting{preset}: " + ", ".join(parts) + "."

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str | None = None,
        labels_key: str | None = None,
        domains_key: str | None = None,
        spatial_obsm_key: str = OBSM.NICHE_FEATURES,
        layer: str | None = None,
        **kwargs,
    ) -> None:
        """Register an AnnData for Cellina.

        Everything is validated before anything is written to ``adata``.

        Parameters
        ----------
        adata
            Cells x genes AnnData.
        batch_key
            ``obs`` column of technical batches (slides); injected into the decoder and, by
            default, both encoders.
        labels_key
            ``obs`` column of cell types (the classifier on ``z``).
        domains_key
            ``obs`` column of spatial domains (the adversary on ``z``); >= 2 domains.
        spatial_obsm_key
            ``obsm`` key of the niche features (dense or sparse).
        layer
            Layer holding raw counts (``None``: ``adata.X``). Checked in full to hold
            non-negative integers.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        check_setup(adata, batch_key, labels_key, domains_key, layer)
        check_niche_features(adata, spatial_obsm_key)
        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            *registry_fields(batch_key, labels_key, domains_key, layer),
            ObsmField(RK.SPATIAL_KEY, spatial_obsm_key),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ registered data
    @property
    def spatial_obsm_key(self) -> str:
        """The ``obsm`` key of the niche features the model was set up with."""
        return self.adata_manager.registry["setup_args"]["spatial_obsm_key"]

    def registered_counts(self, adata: AnnData | None = None) -> Any:
        """The counts matrix registered for ``adata`` (``None``: the training data)."""
        adata = self._validate_anndata(adata)
        return self.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)

    def register_anndata(self, adata: AnnData) -> AnnData:
        """Check ``adata`` against the training data's registry and register it with the model.

        Returns the AnnData to pass to the getters (a copy is never made here).
        """
        return self._validate_anndata(adata)

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
        """Train with the alternating adversarial plan.

        Accepts every argument of :meth:`scvi.model.base.UnsupervisedTrainingMixin.train`
        (``check_val_every_n_epoch``, ``early_stopping_patience``, ``early_stopping_monitor``,
        ``enable_checkpointing``, ``callbacks``,
        ``datasplitter_kwargs={"external_indexing": [train, val, test]}``, ...). The test part of
        ``external_indexing`` is recorded as the held-out cells (``model.heldout_indices_``),
        which counterfactuals keep out of every rebuilt niche. A GPU device list on a machine
        without a GPU falls back to the CPU with a warning.

        Parameters
        ----------
        max_epochs
            Number of epochs.
        accelerator, devices
            Lightning accelerator and devices.
        batch_size
            Minibatch size.
        early_stopping
            Stop when ``early_stopping_monitor`` (e.g. ``"vae_loss_validation"``) plateaus. The
            full-KL validation loss rises by construction while the KL weight warms up, so
            unless ``min_epochs`` is given training then runs at least until the warm-up is over.
        datasplitter_kwargs
            Passed to :class:`scvi.dataloaders.DataSplitter`.
        plan_kwargs
            :class:`~cellina.model.CellinaTrainingPlan` options (``lr``, ``normalize_losses``,
            ``n_epochs_kl_warmup``, ...), on top of the preset's; unknown keys are an error.
        **kwargs
            Passed to :class:`scvi.train.Trainer`.
        """
        accelerator, devices = resolve_devices(accelerator, devices)
        plan_kwargs = get_preset(self.preset).plan_kwargs(plan_kwargs) if self.preset else dict(plan_kwargs or {})
        if early_stopping and max_epochs is not None and "min_epochs" not in kwargs:
            if plan_kwargs.get("validation_kl_weight", "full") == "full":
                warmup = plan_kwargs.get("n_epochs_kl_warmup", "auto")
                warmup = auto_kl_warmup_epochs(max_epochs) if warmup in (None, "auto") else int(warmup)
                kwargs["min_epochs"] = min(warmup, int(max_epochs))
        external = (datasplitter_kwargs or {}).get("external_indexing")
        heldout = np.zeros(0, dtype=np.int64)
        if external is not None and len(external) > 2 and external[2] is not None:
            heldout = np.unique(np.asarray(external[2], dtype=np.int64))
        result = super().train(
            accelerator=accelerator,
            devices=devices,
            batch_size=batch_size,
            early_stopping=early_stopping,
            datasplitter_kwargs=datasplitter_kwargs,
            plan_kwargs=plan_kwargs,
            max_epochs=max_epochs,
            **kwargs,
        )
        self.heldout_indices_ = heldout
        self.niche_reliability_ = None
        if self.disattenuate_niche:
            self.measure_niche_reliability()
        return result

    # ------------------------------------------------------------------ save / load
    @classmethod
    def load(cls, dir_path: str, adata: AnnData | None = None, **kwargs) -> Cellina:
        """Load a model saved with :meth:`save` or written by ``SaveCheckpoint``.

        Parameters
        ----------
        dir_path
            Folder holding ``model.pt`` (e.g. one checkpoint sub-folder).
        adata
            AnnData with the same genes, in the same order, as the training data.
        **kwargs
            Passed to :meth:`scvi.model.base.BaseModelClass.load`.
        """
        if adata is not None:
            check_saved_genes(dir_path, adata, kwargs.get("prefix") or "")
        return super().load(dir_path, adata=adata, **kwargs)


def check_setup(adata: AnnData, batch_key, labels_key, domains_key, layer) -> None:
    """The checks both variants' ``setup_anndata`` make before writing anything: counts and columns."""
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"layer={layer!r} is not in adata.layers (have {list(adata.layers.keys())}).")
    counts = adata.X if layer is None else adata.layers[layer]
    if counts is None:
        raise ValueError("adata.X is empty; pass the raw counts layer with layer=...")
    check_counts(counts, f"adata.layers[{layer!r}]" if layer is not None else "adata.X")
    if batch_key is not None:
        check_obs_column(adata, batch_key, "batch_key")
    if labels_key is not None:
        check_obs_column(adata, labels_key, "labels_key")
    if domains_key is not None:
        n_dom = check_obs_column(adata, domains_key, "domains_key").nunique()
        if n_dom < 2:
            raise ValueError(
                f"adata.obs[{domains_key!r}] (domains_key) has {n_dom} domain(s); the domain adversary needs at least 2."
            )


def registry_fields(batch_key, labels_key, domains_key, layer) -> list:
    """The scvi-tools fields both variants register: counts, batch, labels and domains."""
    return [
        LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
        CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
        CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
        CategoricalObsField(RK.DOMAINS_KEY, domains_key),
    ]
