"""The options of the leave-one-out protocol, in one frozen record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cellina.keys import LAYERS
from cellina.preprocessing import composition_arguments

METHODS = ("cellina", "cellina_no_aux", "scvi", "mean_shift", "oracle")
PERTURBATIONS = ("edge", "node")
#: the variants of cellina.model.MODEL_VARIANTS (named here: this module must not import torch)
MODEL_VARIANTS = ("cellina", "gcn")
#: what the edge prediction's spread describes (cellina.counterfactual.UNCERTAINTIES, named here too)
UNCERTAINTIES = ("donors", "posterior")


@dataclass(frozen=True)
class LeaveOneOutConfig:
    """Options of :func:`cellina.evaluation.leave_one_out`; each is also a keyword of that call.

    Attributes
    ----------
    labels_key, domains_key
        ``obs`` columns with the cell type and the spatial domain.
    control_domain, target_domain
        Domain of the control cells (source) and of the held-out cells (target).
    layer
        Counts layer (``None``: ``adata.X`` holds counts).
    batch_key
        Optional batch column (e.g. the slide) the models are set up with.
    perturbations
        Any of ``"edge"`` and ``"node"``.
    methods
        Any of ``"cellina"`` (``preset`` and ``model_kwargs``), ``"cellina_no_aux"`` (the same
        with ``classifier_lambda = discriminator_lambda = 0``; a ``"type_gated"`` niche decoder,
        which reads the classifier, becomes ``"factorised"``), ``"scvi"`` (space-blind
        scvi-tools SCVI with the domain as batch covariate; its counterfactual decodes the
        control cells with ``transform_batch=target_domain``) and ``"mean_shift"``
        (:func:`cellina.evaluation.mean_shift_baseline`, shift averaged over the other types);
        on synthetic tissue also ``"oracle"``: the exact counterfactual means (same donors, same
        shifts), the ceiling of every score given the count noise of the observed cells.
    bandwidth, max_neighbours, cutoff, library_key
        The gaussian-kernel graph (:func:`cellina.preprocessing.prepare_tissue`): bandwidth in
        coordinate units, neighbours per cell, weight cut-off, and the column whose groups
        (slides) are never connected.
    composition
        The neighbours' ``labels_key`` composition in the niche features: ``"off"`` (default,
        expression alone), ``"added"`` (after the expression) or ``"only"``.
    preset
        Model preset (:mod:`cellina.model.presets`); ``None`` (default): the constructor's
        defaults, on which the documented benchmark figures were measured.
    model
        Variant the Cellina methods train: ``"cellina"`` (default, niche features) or ``"gcn"``
        (:class:`~cellina.model.CellinaGCN`; ``model_kwargs`` may then hold its options, e.g.
        ``num_neighbors``). Its scores are named ``cellina_gcn`` / ``cellina_gcn_no_aux``.
    model_kwargs, train_kwargs, plan_kwargs
        Constructor options on top of the preset, :func:`cellina.model.train_model` options
        (``max_epochs``, default 50; ``batch_size``, default 256) and training-plan options
        (``normalize_losses`` defaults to ``True``).
    scvi_kwargs
        For ``scvi.model.SCVI(...)``; it trains with ``train_kwargs``' ``max_epochs`` and
        ``batch_size`` and the same capacity options as ``model_kwargs``.
    n_deg
        Top observed DEGs for the tutorial scores (the tutorial uses 50 for edge).
    n_deg_node
        The same for the node perturbation (the tutorial uses 20); ``None``: ``n_deg``.
    n_pert_genes
        Genes per cell type in the node perturbation table.
    n_neighbours
        Donors drawn per control cell in the edge perturbation.
    n_draws
        Donor draws the Cellina methods average the edge prediction over (default 1, the
        tutorial's single draw). With more than one, the spread across draws is kept
        (:func:`cellina.evaluation.log2_change_std`: how far one cell's change moves across
        them) and, on synthetic tissue, scored as ``truth_calibration``; the exact edge truth is
        then the mean over the same draws.
    uncertainty
        What that spread describes (``Cellina.get_counterfactual_expression``): ``"donors"``
        (default) the donors drawn, ``"posterior"`` the donors and a posterior sample of the
        latents in every draw. The prediction is the same for both.
    validation_size
        Fraction of the non-test cells used for validation, in (0, 1).
    batch_size
        Inference batch size.
    energy
        Compute the energy distance between predicted and observed target cells. Model
        predictions are expected values without count noise, so they are first turned into
        Poisson counts at each control cell's observed library size (seeded); the mean-shift
        prediction is built from observed counts and is used as it is.
    energy_max_cells
        Subsample size per population for the energy distance.
    truth
        ``"auto"``: exact-truth scores when ``adata`` is a :mod:`cellina.datasets` synthetic
        tissue or world; ``True`` requires it; ``False`` skips them.
    probes
        Fit latent probes (domain and cell type from ``z``, domain from ``s``) on the training cells.
    seed
        Seed of the split, the weights, the donor draws and the subsamples.
    return_models
        Keep the trained models and the predictions in the result.
    """

    labels_key: str = "coarse_type"
    domains_key: str = "domain"
    control_domain: str = "healthy"
    target_domain: str = "tumour"
    layer: str | None = LAYERS.COUNTS
    batch_key: str | None = None
    perturbations: Sequence[str] = PERTURBATIONS
    methods: Sequence[str] = ("cellina", "mean_shift")
    bandwidth: float = 30.0
    max_neighbours: int = 50
    cutoff: float = 0.1
    library_key: str | None = None
    composition: str = "off"
    preset: str | None = None
    model: str = "cellina"
    model_kwargs: Mapping[str, Any] | None = None
    train_kwargs: Mapping[str, Any] | None = None
    plan_kwargs: Mapping[str, Any] | None = None
    scvi_kwargs: Mapping[str, Any] | None = None
    n_deg: int = 50
    n_deg_node: int | None = None
    n_pert_genes: int = 200
    n_neighbours: int = 50
    n_draws: int = 1
    uncertainty: str = "donors"
    validation_size: float = 0.1
    batch_size: int = 1024
    energy: bool = True
    energy_max_cells: int = 500
    truth: bool | str = "auto"
    probes: bool = True
    seed: int = 0
    return_models: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "perturbations", tuple(self.perturbations))
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown method(s) {unknown}; choose from {list(METHODS)}.")
        bad = [p for p in self.perturbations if p not in PERTURBATIONS]
        if bad or not self.perturbations:
            raise ValueError(f"unknown perturbation(s) {bad}; choose from {list(PERTURBATIONS)}.")
        if self.model not in MODEL_VARIANTS:
            raise ValueError(f"model={self.model!r} is not a variant; use one of {list(MODEL_VARIANTS)}.")
        composition_arguments(self.composition, self.labels_key)  # checks the value
        if self.composition == "only" and "node" in self.perturbations:
            raise ValueError(
                "composition='only' leaves no genes in the niche features, so no node perturbation "
                "can move them; use perturbations=('edge',) or composition='added'."
            )
        if int(self.n_draws) < 1:
            raise ValueError(f"n_draws={self.n_draws} must be >= 1.")
        if self.uncertainty not in UNCERTAINTIES:
            raise ValueError(f"uncertainty={self.uncertainty!r}: use one of {list(UNCERTAINTIES)}.")
        if not 0.0 < self.validation_size < 1.0:
            raise ValueError(f"`validation_size` must lie in (0, 1), got {self.validation_size!r}.")

    def method_label(self, method: str) -> str:
        """The name a method's scores get: the Cellina methods name the graph variant when it is trained."""
        if self.model == "gcn" and method.startswith("cellina"):
            return method.replace("cellina", "cellina_gcn", 1)
        return method

    @property
    def counts_layer(self) -> str:
        """The layer the prepared tissue keeps its counts in."""
        return self.layer if self.layer is not None else LAYERS.COUNTS

    def train_options(self) -> dict[str, Any]:
        """Options of ``train`` for every model of the run (the protocol's defaults, then ``train_kwargs``)."""
        return {
            "max_epochs": 50,
            "batch_size": 256,
            "early_stopping": False,
            "enable_progress_bar": False,
            **dict(self.train_kwargs or {}),
        }
