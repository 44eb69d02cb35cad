"""The user-facing Cellina model (scvi-tools ``BaseModelClass``)."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.data import AnnDataManager
from scvi.distributions import Poisson
from scvi.data.fields import CategoricalObsField, LayerField, ObsmField
from scvi.model._utils import _init_library_size
from scvi.model.base import BaseModelClass, UnsupervisedTrainingMixin

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._module import CellinaModule
from ._training_plan import CellinaTrainingPlan, auto_kl_warmup_epochs

logger = logging.getLogger(__name__)

LibrarySize = Literal["latent", "observed"] | float
_GPU_ACCELERATORS = ("auto", "gpu", "cuda")


# ---------------------------------------------------------------------- validation helpers
def _check_counts(matrix: Any, where: str, chunk_rows: int = 4096) -> None:
    """Raise if ``matrix`` holds negative or non-integer values (checked in full, in chunks)."""
    if sp.issparse(matrix):
        chunks: Iterator[np.ndarray] = iter([np.asarray(matrix.data)])
    else:
        arr = matrix
        chunks = (np.asarray(arr[i : i + chunk_rows]) for i in range(0, arr.shape[0], chunk_rows))
    for values in chunks:
        if values.size == 0:
            continue
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{where} holds NaN or infinite values; Cellina needs raw counts.")
        if values.min() < 0:
            raise ValueError(
                f"{where} holds negative values (min {values.min():g}); Cellina needs raw "
                "non-negative integer counts."
            )
        frac = np.abs(values - np.round(values))
        if frac.max() > 1e-6:
            bad = values.ravel()[np.argmax(frac.ravel())]
            raise ValueError(
                f"{where} holds non-integer values (e.g. {bad:g}); Cellina needs raw counts. "
                "Register the raw counts layer, e.g. setup_anndata(adata, layer='counts')."
            )


def _check_obs_column(adata: AnnData, key: str, arg: str) -> pd.Series:
    if key not in adata.obs:
        raise ValueError(f"{arg}={key!r} is not a column of adata.obs.")
    col = adata.obs[key]
    n_missing = int(col.isna().sum())
    if n_missing:
        raise ValueError(
            f"adata.obs[{key!r}] ({arg}) has {n_missing} missing values; drop or fill them first."
        )
    return col


def _as_indices(values: Any, n_obs: int, name: str, allow_empty: bool = False) -> np.ndarray:
    """Turn integer indices or a boolean mask into a 1-D int64 array, validating the range."""
    if values is None:
        return np.arange(n_obs)
    arr = np.asarray(values)
    if arr.dtype == bool:
        if arr.shape != (n_obs,):
            raise ValueError(
                f"{name} is a boolean mask of shape {arr.shape}; expected ({n_obs},)."
            )
        arr = np.flatnonzero(arr)
    arr = arr.ravel()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer positions or a boolean mask, got {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr.size == 0 and not allow_empty:
        raise ValueError(f"{name} is empty.")
    if arr.size and (arr.min() < 0 or arr.max() >= n_obs):
        raise ValueError(
            f"{name} holds positions outside [0, {n_obs}) (min {arr.min()}, max {arr.max()})."
        )
    return arr


def _resolve_devices(accelerator: str, devices: Any) -> tuple[str, Any]:
    """Map a GPU device request to the CPU when no GPU exists, instead of crashing."""
    wants_gpu_ids = isinstance(devices, (list, tuple)) or (
        isinstance(devices, str) and devices not in ("auto",) and accelerator != "cpu"
    )
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and wants_gpu_ids):
        if not torch.cuda.is_available():
            warnings.warn(
                f"accelerator={accelerator!r}, devices={devices!r} asks for a GPU but none is "
                "available; training on the CPU instead.",
                UserWarning,
                stacklevel=3,
            )
            return "cpu", "auto"
    return accelerator, devices


class Cellina(UnsupervisedTrainingMixin, BaseModelClass):
    """Dual-encoder VAE separating intrinsic state ``z`` from spatial context ``s``.

    ``z`` is encoded from the cell's own counts, ``s`` from its niche features
    (``obsm[spatial_obsm_key]``, built by :func:`cellina.spatial.compute_spatial_features`),
    and counts are decoded from ``[z; s]``. A cell-type classifier and a domain adversary
    on ``z`` (trained in alternation, see :class:`~cellina.model.CellinaTrainingPlan`) keep
    spatial information out of ``z``, which makes tissue-graph counterfactuals possible:
    hold ``z`` fixed and change the niche.

    Parameters
    ----------
    adata
        AnnData registered with :meth:`setup_anndata`.
    n_hidden
        Hidden units per layer.
    n_latent
        Dimension of ``z``.
    n_layers
        Hidden layers of encoders and decoder.
    dropout_rate
        Dropout of the encoders.
    gene_likelihood
        ``"nb"`` (default), ``"zinb"`` or ``"poisson"``.
    use_observed_lib_size
        Use the observed library size (default) rather than a learnt library latent.
    classifier_lambda
        Weight of the cell-type classifier on ``z``; ``0`` turns it off.
    discriminator_lambda
        Weight of the domain adversary on ``z``; ``0`` turns it off.
    condition_on_intrinsic
        Feed a detached ``z`` (posterior mean) into the ``s`` encoder as well.
    n_latent_spatial
        Dimension of ``s`` (defaults to ``n_latent``).
    dispersion
        ``"gene"``, ``"gene-batch"`` or ``"gene-cell"``.
    spatial_kl_weight
        Weight of the KL term of ``s`` relative to the ELBO's. The default 0.1 (not the
        plain ELBO's 1.0) lets counterfactual changes reach their true size; see
        :class:`~cellina.model.CellinaModule`. ``1.0`` gives the published objective.
    niche_decoder
        ``"concat"`` (default, the published decoder on ``[z; s]``) or ``"factorised"``: an
        intrinsic decoder on ``z`` plus a low-rank niche response to ``s`` whose genes depend
        on ``z`` (:class:`~cellina.model.FactorisedNicheDecoder`), more accurate on held-out
        cell types whose niche response is their own (``docs/benchmarks.md``), or
        ``"type_gated"``: the factorised decoder plus a full-rank niche map per cell type,
        weighted by the classifier's type probabilities from ``z``; it needs the classifier
        (``labels_key`` and ``classifier_lambda > 0``).
    niche_rank
        Rank of the factorised niche response.
    spatial_decoding
        ``"sample"`` (default, the published model) trains the decoder on samples of ``s``;
        ``"mean"`` on its posterior mean, the value counterfactuals decode, so that the
        learnt niche response is not shrunk by posterior noise (``s`` is then a
        deterministic niche code; see :class:`~cellina.model.CellinaModule`).
    type_aware_discriminator
        ``False`` (default, the published model): the domain discriminator sees ``z`` alone.
        ``True``: it is also told each cell's type, and ``z`` is pushed to carry nothing
        about the domain beyond its type, so the adversary removes the niche signal leaking
        into ``z`` instead of fighting the classifier over types that live in one domain
        (:class:`~cellina.model.CellinaModule`). Needs ``labels_key``; has no effect with
        ``discriminator_lambda=0``.
    **module_kwargs
        Further :class:`~cellina.model.CellinaModule` arguments.

    Examples
    --------
    >>> Cellina.setup_anndata(adata, labels_key="cell_type", domains_key="domain",
    ...                       layer="counts")
    >>> model = Cellina(adata, n_latent=16)
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
        condition_on_intrinsic: bool = False,
        n_latent_spatial: int | None = None,
        dispersion: Literal["gene", "gene-batch", "gene-cell"] = "gene",
        spatial_kl_weight: float = 0.1,
        niche_decoder: Literal["concat", "factorised", "type_gated"] = "concat",
        niche_rank: int = 8,
        spatial_decoding: Literal["sample", "mean"] = "sample",
        type_aware_discriminator: bool = False,
        **module_kwargs,
    ):
        super().__init__(adata)
        if adata is None:
            raise ValueError("Cellina needs an AnnData registered with Cellina.setup_anndata.")
        if classifier_lambda < 0 or discriminator_lambda < 0:
            raise ValueError(
                "classifier_lambda and discriminator_lambda must be >= 0, got "
                f"{classifier_lambda} and {discriminator_lambda}."
            )
        setup_args = self.adata_manager.registry["setup_args"]
        labels_key = setup_args.get("labels_key")
        domains_key = setup_args.get("domains_key")
        use_classifier = classifier_lambda > 0
        use_adversary = discriminator_lambda > 0
        if use_classifier and labels_key is None:
            raise ValueError(
                "classifier_lambda > 0 needs cell-type labels: pass labels_key to "
                "Cellina.setup_anndata, or set classifier_lambda=0."
            )
        if use_adversary and domains_key is None:
            raise ValueError(
                "discriminator_lambda > 0 needs spatial domains: pass domains_key to "
                "Cellina.setup_anndata, or set discriminator_lambda=0."
            )
        if niche_decoder == "type_gated" and not use_classifier:
            raise ValueError(
                "niche_decoder='type_gated' weights the niche response by the cell-type "
                "classifier on z: pass labels_key to Cellina.setup_anndata and keep "
                f"classifier_lambda > 0 (got {classifier_lambda}), or use niche_decoder='factorised'."
            )
        if type_aware_discriminator and use_adversary and labels_key is None:
            raise ValueError(
                "type_aware_discriminator=True tells the discriminator each cell's type: pass "
                "labels_key to Cellina.setup_anndata, or set type_aware_discriminator=False."
            )
        n_labels = self.summary_stats.n_labels
        n_domains = self.summary_stats[f"n_{RK.DOMAINS_KEY}"]
        if use_classifier and n_labels < 2:
            raise ValueError(
                f"adata.obs[{labels_key!r}] has a single label; the classifier needs >= 2 "
                "(or set classifier_lambda=0)."
            )
        if use_adversary and n_domains < 2:
            raise ValueError(
                f"adata.obs[{domains_key!r}] has {n_domains} domain(s); the adversary needs >= 2 "
                "(or set discriminator_lambda=0)."
            )
        n_batch = self.summary_stats.n_batch
        library_log_means = library_log_vars = None
        if not use_observed_lib_size:
            library_log_means, library_log_vars = _init_library_size(self.adata_manager, n_batch)
        self.classifier_lambda = float(classifier_lambda)
        self.discriminator_lambda = float(discriminator_lambda)
        self.module = self._module_cls(
            n_input=self.summary_stats.n_vars,
            n_spatial=self.summary_stats[f"n_{RK.SPATIAL_KEY}"],
            n_batch=n_batch,
            n_labels=n_labels,
            n_domains=n_domains,
            n_hidden=n_hidden,
            n_latent=n_latent,
            n_latent_spatial=n_latent_spatial,
            n_layers=n_layers,
            dropout_rate=dropout_rate,
            dispersion=dispersion,
            gene_likelihood=gene_likelihood,
            use_observed_lib_size=use_observed_lib_size,
            library_log_means=library_log_means,
            library_log_vars=library_log_vars,
            use_classifier=use_classifier,
            use_adversary=use_adversary,
            condition_on_intrinsic=condition_on_intrinsic,
            spatial_kl_weight=spatial_kl_weight,
            niche_decoder=niche_decoder,
            niche_rank=niche_rank,
            spatial_decoding=spatial_decoding,
            type_aware_discriminator=type_aware_discriminator,
            **module_kwargs,
        )
        mode = (
            "with adversarial domain forgetting"
            if use_adversary
            else "without adversarial domain forgetting"
        )
        self._model_summary_string = (
            f"Cellina model {mode}: n_hidden {n_hidden}, n_latent {n_latent}, "
            f"n_latent_spatial {self.module.n_latent_spatial}, n_layers {n_layers}, "
            f"gene_likelihood {gene_likelihood}, classifier_lambda {classifier_lambda}, "
            f"discriminator_lambda {discriminator_lambda}, "
            f"condition_on_intrinsic {condition_on_intrinsic}, "
            f"spatial_kl_weight {spatial_kl_weight}, niche_decoder {niche_decoder}"
            + (f" (rank {niche_rank})" if niche_decoder != "concat" else "")
            + f", spatial_decoding {spatial_decoding}"
            + (", type-aware discriminator." if self.module.type_aware_discriminator else ".")
        )
        logger.info("The Cellina model has been initialized %s", mode)
        self.init_params_ = self._get_init_params(locals())

    # ------------------------------------------------------------------ setup
    @classmethod
    def setup_anndata(
        cls,
        adata: AnnData,
        batch_key: str | None = None,
        labels_key: str | None = None,
        domains_key: str | None = None,
        spatial_obsm_key: str = "spatial_x",
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
            ``obs`` column of technical batches (injected into the decoder).
        labels_key
            ``obs`` column of cell types (the classifier on ``z``).
        domains_key
            ``obs`` column of spatial domains (the adversary on ``z``); >= 2 domains.
        spatial_obsm_key
            ``obsm`` key of the niche features ``phi``.
        layer
            Layer holding raw counts (``None``: ``adata.X``). Checked in full to hold
            non-negative integers.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.
        """
        if layer is not None and layer not in adata.layers:
            raise ValueError(
                f"layer={layer!r} is not in adata.layers (have {list(adata.layers.keys())})."
            )
        counts = adata.X if layer is None else adata.layers[layer]
        if counts is None:
            raise ValueError("adata.X is empty; pass the raw counts layer with layer=...")
        _check_counts(counts, f"adata.layers[{layer!r}]" if layer is not None else "adata.X")
        if spatial_obsm_key not in adata.obsm:
            raise ValueError(
                f"spatial_obsm_key={spatial_obsm_key!r} is not in adata.obsm; build the niche "
                "features first with cellina.spatial.compute_spatial_features."
            )
        phi = np.asarray(adata.obsm[spatial_obsm_key])
        if phi.ndim != 2 or phi.shape[0] != adata.n_obs:
            raise ValueError(
                f"adata.obsm[{spatial_obsm_key!r}] must be 2-D with {adata.n_obs} rows, "
                f"got shape {phi.shape}."
            )
        if not np.all(np.isfinite(phi)):
            raise ValueError(f"adata.obsm[{spatial_obsm_key!r}] holds NaN or infinite values.")
        if batch_key is not None:
            _check_obs_column(adata, batch_key, "batch_key")
        if labels_key is not None:
            _check_obs_column(adata, labels_key, "labels_key")
        if domains_key is not None:
            n_dom = _check_obs_column(adata, domains_key, "domains_key").nunique()
            if n_dom < 2:
                raise ValueError(
                    f"adata.obs[{domains_key!r}] (domains_key) has {n_dom} domain(s); the "
                    "domain adversary needs at least 2."
                )

        setup_method_args = cls._get_setup_method_args(**locals())
        anndata_fields = [
            LayerField(REGISTRY_KEYS.X_KEY, layer, is_count_data=True),
            CategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key),
            CategoricalObsField(REGISTRY_KEYS.LABELS_KEY, labels_key),
            CategoricalObsField(RK.DOMAINS_KEY, domains_key),
            ObsmField(RK.SPATIAL_KEY, spatial_obsm_key),
        ]
        adata_manager = AnnDataManager(fields=anndata_fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(adata, **kwargs)
        cls.register_manager(adata_manager)

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
        (``check_val_every_n_epoch``, ``early_stopping_patience``,
        ``early_stopping_monitor``, ``enable_checkpointing``, ``callbacks`` such as
        :class:`scvi.train._callbacks.SaveCheckpoint` and Lightning's ``EarlyStopping``,
        ``datasplitter_kwargs={"external_indexing": [train, val, test]}``, ...). A GPU device
        list on a machine without a GPU falls back to the CPU with a warning.

        Parameters
        ----------
        max_epochs
            Number of epochs.
        accelerator, devices
            Lightning accelerator and devices.
        batch_size
            Minibatch size.
        early_stopping
            Stop when ``early_stopping_monitor`` (e.g. ``"vae_loss_validation"``) plateaus.
            The loss rises by construction while the KL weight warms up, so unless
            ``min_epochs`` is given, training runs at least until the warm-up is over.
        datasplitter_kwargs
            Passed to :class:`scvi.dataloaders.DataSplitter`.
        plan_kwargs
            Passed to :class:`~cellina.model.CellinaTrainingPlan` (``lr``,
            ``normalize_losses``, ``n_epochs_kl_warmup``, ...). ``classifier_lambda`` and
            ``discriminator_lambda`` default to the model's. The KL weight warms up
            linearly over a quarter of ``max_epochs`` (at most 100 epochs) unless
            ``n_epochs_kl_warmup`` says otherwise; unknown keys are an error.
        **kwargs
            Passed to :class:`scvi.train.Trainer`.
        """
        accelerator, devices = _resolve_devices(accelerator, devices)
        plan_kwargs = dict(plan_kwargs or {})
        plan_kwargs.setdefault("classifier_lambda", self.classifier_lambda)
        plan_kwargs.setdefault("discriminator_lambda", self.discriminator_lambda)
        if early_stopping and max_epochs is not None and "min_epochs" not in kwargs:
            warmup = plan_kwargs.get("n_epochs_kl_warmup")
            warmup = auto_kl_warmup_epochs(max_epochs) if warmup is None else int(warmup)
            kwargs["min_epochs"] = min(warmup, int(max_epochs))
        return super().train(
            accelerator=accelerator,
            devices=devices,
            batch_size=batch_size,
            early_stopping=early_stopping,
            datasplitter_kwargs=datasplitter_kwargs,
            plan_kwargs=plan_kwargs,
            max_epochs=max_epochs,
            **kwargs,
        )

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

        Returns
        -------
        Cellina
        """
        if adata is not None:
            prefix = kwargs.get("prefix") or ""
            path = os.path.join(dir_path, f"{prefix}model.pt")
            if not os.path.exists(path):
                raise FileNotFoundError(f"No saved Cellina model at {path}.")
            saved = torch.load(path, map_location="cpu", weights_only=False)
            saved_genes = [str(g) for g in np.asarray(saved["var_names"])]
            genes = [str(g) for g in adata.var_names]
            if saved_genes != genes:
                missing = [g for g in saved_genes if g not in set(genes)]
                extra = [g for g in genes if g not in set(saved_genes)]
                detail = (
                    f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                    f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
                    if missing or extra
                    else "same genes in a different order"
                )
                raise ValueError(
                    f"adata.var_names do not match the {len(saved_genes)} genes the model in "
                    f"{dir_path!r} was trained on ({detail}); subset and order adata like the "
                    "training data."
                )
        return super().load(dir_path, adata=adata, **kwargs)

    # ------------------------------------------------------------------ data access
    def _registry_arrays(self, adata: AnnData) -> dict[str, Any]:
        manager = self.get_anndata_manager(adata, required=True)
        out = {
            REGISTRY_KEYS.X_KEY: manager.get_from_registry(REGISTRY_KEYS.X_KEY),
            REGISTRY_KEYS.BATCH_KEY: np.asarray(
                manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
            ).reshape(-1, 1),
            RK.SPATIAL_KEY: manager.get_from_registry(RK.SPATIAL_KEY),
        }
        return out

    def _iter_tensors(
        self,
        adata: AnnData,
        indices: np.ndarray,
        batch_size: int | None,
        phi: np.ndarray | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Minibatches for ``indices``; ``phi`` (rows aligned with ``indices``) overrides the
        registered niche features without touching ``adata``."""
        arrays = self._registry_arrays(adata)
        x_all = arrays[REGISTRY_KEYS.X_KEY]
        phi_all = arrays[RK.SPATIAL_KEY]
        bs = int(batch_size) if batch_size else 1024
        for start in range(0, len(indices), bs):
            idx = indices[start : start + bs]
            x = x_all[idx]
            x = x.toarray() if sp.issparse(x) else np.asarray(x)
            if phi is None:
                phi_b = np.asarray(phi_all[idx] if not isinstance(phi_all, pd.DataFrame)
                                   else phi_all.iloc[idx].to_numpy())
            else:
                phi_b = phi[start : start + bs]
            yield {
                REGISTRY_KEYS.X_KEY: torch.as_tensor(x, dtype=torch.float32),
                REGISTRY_KEYS.BATCH_KEY: torch.as_tensor(
                    arrays[REGISTRY_KEYS.BATCH_KEY][idx], dtype=torch.float32
                ),
                RK.SPATIAL_KEY: torch.as_tensor(np.asarray(phi_b), dtype=torch.float32),
            }

    def _check_phi(self, phi: np.ndarray, n_rows: int, where: str) -> np.ndarray:
        phi = np.asarray(phi)
        n_spatial = self.module.n_spatial
        if phi.ndim != 2 or phi.shape != (n_rows, n_spatial):
            raise ValueError(
                f"{where} must have shape ({n_rows}, {n_spatial}) to match the niche features "
                f"the model was trained on, got {phi.shape}."
            )
        return phi

    @staticmethod
    def _check_library_size(library_size: LibrarySize) -> float | None:
        if isinstance(library_size, str):
            if library_size not in ("latent", "observed"):
                raise ValueError(
                    f"library_size={library_size!r}: use 'latent', 'observed' or a positive number."
                )
            return None
        value = float(library_size)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"library_size={library_size!r} must be a positive number.")
        return value

    @torch.inference_mode()
    def _run(
        self,
        adata: AnnData,
        indices: np.ndarray,
        batch_size: int | None,
        phi: np.ndarray | None = None,
        give_mean: bool = True,
        want: Literal["expression", "z", "s"] = "expression",
        library_size: LibrarySize = "latent",
    ) -> np.ndarray:
        scale = self._check_library_size(library_size) if want == "expression" else None
        self.module.eval()
        out = []
        for tensors in self._iter_tensors(adata, indices, batch_size, phi=phi):
            inf = self.module.inference(
                tensors[REGISTRY_KEYS.X_KEY],
                tensors[RK.SPATIAL_KEY],
                tensors[REGISTRY_KEYS.BATCH_KEY],
                give_mean=give_mean,
            )
            if want == "z":
                out.append(inf[MK.Z_KEY].cpu().numpy())
                continue
            if want == "s":
                out.append(inf[MK.S_KEY].cpu().numpy())
                continue
            gen = self.module.generative(
                inf[MK.Z_KEY], inf[MK.S_KEY], inf[MK.LIBRARY_KEY], tensors[REGISTRY_KEYS.BATCH_KEY]
            )
            px = gen[MK.PX_KEY]
            # NB/ZINB expose the mean as ``mu``, Poisson as ``rate``; for ZINB this is the
            # mean of the negative-binomial part, as in scvi-tools' normalised expression.
            mean = px.rate if isinstance(px, Poisson) else px.mu
            values = mean if scale is None else px.scale * scale
            out.append(values.cpu().numpy())
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ latents
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        batch_size: int | None = None,
        latent_key: Literal["z", "s", "shifted"] = "z",
        shifted_obsm_key: str = "spatial_x_cf",
    ) -> np.ndarray:
        """Intrinsic (``z``), spatial (``s``) or shifted spatial latent.

        Parameters
        ----------
        adata
            Registered AnnData (``None``: the training data).
        indices
            Cells to use (``None``: all).
        give_mean
            Posterior mean (``True``) or one posterior sample.
        batch_size
            Minibatch size.
        latent_key
            ``"z"``: intrinsic latent from the cell's counts; ``"s"``: spatial latent from the
            registered niche features; ``"shifted"``: spatial latent of the *perturbed* niche
            features in ``obsm[shifted_obsm_key]`` (written by
            :func:`cellina.make_neighbor_perturbation`), i.e. where node perturbation moves
            each cell in ``s`` space.
        shifted_obsm_key
            ``obsm`` key used by ``latent_key="shifted"``.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_latent)`` for ``z``, ``(n_cells, n_latent_spatial)`` otherwise.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = _as_indices(indices, adata.n_obs, "indices")
        if latent_key == "z":
            return self._run(adata, idx, batch_size, give_mean=give_mean, want="z")
        if latent_key == "s":
            return self._run(adata, idx, batch_size, give_mean=give_mean, want="s")
        if latent_key == "shifted":
            phi = self._obsm_phi(adata, shifted_obsm_key, idx)
            return self._run(adata, idx, batch_size, phi=phi, give_mean=give_mean, want="s")
        raise ValueError(f"latent_key={latent_key!r}: use 'z', 's' or 'shifted'.")

    def _obsm_phi(self, adata: AnnData, key: str, idx: np.ndarray) -> np.ndarray:
        if key not in adata.obsm:
            raise ValueError(
                f"adata.obsm[{key!r}] does not exist; write it first (e.g. with "
                "cellina.make_neighbor_perturbation(..., obsm_key_out=...))."
            )
        full = adata.obsm[key]
        full = full.to_numpy() if isinstance(full, pd.DataFrame) else full
        if sp.issparse(full):
            full = full.tocsr()
        rows = full[idx]
        rows = rows.toarray() if sp.issparse(rows) else np.asarray(rows)
        if full.shape[0] != adata.n_obs:
            raise ValueError(f"adata.obsm[{key!r}] has {full.shape[0]} rows, expected {adata.n_obs}.")
        return self._check_phi(rows.astype(np.float32, copy=False), len(idx), f"adata.obsm[{key!r}]")

    # ------------------------------------------------------------------ factual / node perturbation
    def get_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        library_size: LibrarySize = "latent",
    ) -> np.ndarray:
        """Factual expected counts: each cell decoded from its own ``z`` and own niche.

        This is the reference against which counterfactual changes are measured.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_latent_representation`.
        library_size
            ``"latent"``/``"observed"``: at the cell's own library size; a number: expected
            counts scaled to that total per cell.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_genes)`` float32.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = _as_indices(indices, adata.n_obs, "indices")
        return self._run(adata, idx, batch_size, library_size=library_size)

    def get_perturbed_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        spatial_obsm_key: str = "spatial_x_cf",
        batch_size: int | None = None,
        library_size: LibrarySize = "latent",
    ) -> np.ndarray:
        """Expected counts when the niche features are read from ``obsm[spatial_obsm_key]``.

        ``z`` and the library still come from the registered counts layer; the registered
        niche features and ``adata`` itself are left untouched.

        Parameters
        ----------
        adata, indices, batch_size
            As in :meth:`get_latent_representation`.
        spatial_obsm_key
            ``obsm`` key of the perturbed niche features (same width as the trained ones).
        library_size
            ``"latent"``/``"observed"`` or a total per cell (e.g. ``1e4``).

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_genes)`` float32.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = _as_indices(indices, adata.n_obs, "indices")
        phi = self._obsm_phi(adata, spatial_obsm_key, idx)
        return self._run(adata, idx, batch_size, phi=phi, library_size=library_size)

    def get_perturbed_latents(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        spatial_obsm_key: str = "spatial_x_cf",
        batch_size: int | None = None,
        give_mean: bool = True,
    ) -> np.ndarray:
        """Spatial latent ``s`` of the niche features in ``obsm[spatial_obsm_key]``.

        Parameters
        ----------
        adata, indices, batch_size, give_mean
            As in :meth:`get_latent_representation`.
        spatial_obsm_key
            ``obsm`` key of the perturbed niche features.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_latent_spatial)``.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = _as_indices(indices, adata.n_obs, "indices")
        phi = self._obsm_phi(adata, spatial_obsm_key, idx)
        return self._run(adata, idx, batch_size, phi=phi, give_mean=give_mean, want="s")

    # ------------------------------------------------------------------ edge perturbation
    def _counterfactual(
        self,
        want: Literal["expression", "s"],
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None,
        batch_size: int | None,
        seed: int,
        precomputed: bool,
        n_neighbours: int,
        n_draws: int,
        return_std: bool,
        library_size: LibrarySize,
        connectivity_key: str,
        return_donors: bool,
    ):
        from cellina.counterfactual import rewired_niche_features

        self._check_if_trained(warn=False)
        if want == "expression":
            self._check_library_size(library_size)
        if int(n_draws) < 1:
            raise ValueError(f"n_draws={n_draws} must be >= 1.")
        adata = self._validate_anndata(adata)
        focal = _as_indices(indices, adata.n_obs, "indices")
        pool = _as_indices(neighbour_indices, adata.n_obs, "neighbour_indices")
        obsm_key = self.registry_["setup_args"]["spatial_obsm_key"]
        counts = self._registry_arrays(adata)[REGISTRY_KEYS.X_KEY]
        rng = np.random.default_rng(seed)
        mean = m2 = None
        donors_used = []
        for draw in range(int(n_draws)):
            phi, donors = rewired_niche_features(
                adata,
                counts,
                focal,
                pool,
                obsm_key=obsm_key,
                rng=rng,
                precomputed=precomputed,
                n_neighbours=n_neighbours,
                connectivity_key=connectivity_key,
            )
            phi = self._check_phi(phi, len(focal), "the rebuilt niche features")
            values = self._run(
                adata, focal, batch_size, phi=phi, want=want, library_size=library_size
            ).astype(np.float64)
            donors_used.append(donors)
            # Welford's update keeps the spread exact without holding every draw.
            if mean is None:
                mean = values
                m2 = np.zeros_like(values)
            else:
                delta = values - mean
                mean += delta / (draw + 1)
                m2 += delta * (values - mean)
        out: list[Any] = [mean.astype(np.float32)]
        if return_std:
            out.append(np.sqrt(m2 / int(n_draws)).astype(np.float32))
        if return_donors:
            out.append(np.stack(donors_used, axis=0))
        return out[0] if len(out) == 1 else tuple(out)

    def get_counterfactual_expression(
        self,
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        precomputed: bool = False,
        n_neighbours: int = 50,
        n_draws: int = 1,
        return_std: bool = False,
        library_size: LibrarySize = "latent",
        connectivity_key: str = "spatial_connectivities_orig",
        return_donors: bool = False,
    ):
        """Expected counts of focal cells after rewiring their neighbourhoods.

        ``precomputed=False`` (pooled rewiring): each focal cell gets ``n_neighbours``
        donors drawn without replacement from ``neighbour_indices`` (never itself); its
        niche features are rebuilt from the donors' counts with the same representation
        :func:`cellina.spatial.compute_spatial_features` used (its provenance record in
        ``uns["cellina"]["spatial_features"]``), weighting donors equally, since rewired
        donors have no distance to the focal cell.
        ``precomputed=True`` (anchor mode): each focal cell inherits the niche of a random
        anchor from ``neighbour_indices``, rebuilt from the anchor's neighbours (kernel
        weights) in ``obsp[connectivity_key]``, the unmasked graph, leaving the focal cell
        itself out. In both modes ``s`` is re-encoded while ``z`` and the library come from
        the cell's own counts. ``adata`` is never modified; results are deterministic for
        a given ``seed``.

        Parameters
        ----------
        indices
            Focal cells (positions or boolean mask).
        neighbour_indices
            Donor pool (pooled mode) or anchor pool (anchor mode).
        adata
            Registered AnnData (``None``: the training data).
        batch_size
            Minibatch size for the network.
        seed
            Seed of the donor draws.
        precomputed
            Anchor mode instead of pooled rewiring.
        n_neighbours
            Donors per focal cell (pooled mode). Clipped, with a warning, to the pool size.
        n_draws
            Independent donor draws to average over.
        return_std
            Also return the per-gene standard deviation across draws.
        library_size
            ``"latent"``/``"observed"``: at each cell's own library; a number: scaled to it.
        connectivity_key
            ``obsp`` key of the unmasked graph (anchor mode).
        return_donors
            Also return the draws: donors ``(n_draws, n_focal, k)`` in pooled mode, anchors
            ``(n_draws, n_focal)`` in anchor mode.

        Returns
        -------
        numpy.ndarray or tuple
            Mean expected counts ``(n_focal, n_genes)``; then the std (if ``return_std``)
            and the draws (if ``return_donors``).
        """
        return self._counterfactual(
            "expression", indices, neighbour_indices, adata, batch_size, seed, precomputed,
            n_neighbours, n_draws, return_std, library_size, connectivity_key, return_donors,
        )

    def get_counterfactual_latents(
        self,
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        precomputed: bool = False,
        n_neighbours: int = 50,
        n_draws: int = 1,
        return_std: bool = False,
        connectivity_key: str = "spatial_connectivities_orig",
        return_donors: bool = False,
    ):
        """Spatial latent ``s`` (posterior mean) of the rewired niches.

        Same draws as :meth:`get_counterfactual_expression` for the same arguments and
        ``seed``; with ``n_draws > 1`` the mean (and, with ``return_std``, the std) over
        draws is returned.

        Parameters
        ----------
        indices, neighbour_indices, adata, batch_size, seed, precomputed, n_neighbours,
        n_draws, return_std, connectivity_key, return_donors
            As in :meth:`get_counterfactual_expression`.

        Returns
        -------
        numpy.ndarray or tuple
            ``(n_focal, n_latent_spatial)``; then std and draws when asked.
        """
        return self._counterfactual(
            "s", indices, neighbour_indices, adata, batch_size, seed, precomputed,
            n_neighbours, n_draws, return_std, "latent", connectivity_key, return_donors,
        )
