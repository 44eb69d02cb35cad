"""Plain data types of the plugin: keys, parameters, selections, typed step results, errors.

Nothing here imports another plugin module, Qt or napari, and nothing here does science:
the steps (:mod:`cellina.plugin._steps`) take these as inputs and return them as results,
and the session (:mod:`cellina.plugin._session`) keeps them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from cellina.keys import OBSM

FOCAL = "focal"
DONORS = "donors"
# A log fold change this negative is a knockout: exp(-10) leaves < 0.005% of the expression.
KNOCKOUT_LFC = -10.0
#: obs columns of the latent clusters
CLUSTER_COLUMNS = {"z": "cellina_z_cluster", "s": "cellina_s_cluster"}

#: model options the Model dock shows; their defaults come from the chosen preset
PRESET_OPTIONS = ("niche_decoder", "spatial_decoding", "type_aware_discriminator", "spatial_encoder")
#: the model variants the Model dock offers: label -> variant name of :func:`cellina.model.train_model`
VARIANTS = {"Cellina": "cellina", "CellinaGCN": "gcn"}
#: what a value of the receiver x sender attention table means
UNIFORM_NOTE = "1 = uniform attention (as much as any neighbour); maps can differ between training seeds"
#: options of the graph variant only (constructor arguments of :class:`cellina.model.CellinaGCN`)
GRAPH_OPTIONS = ("num_neighbors", "link_prediction_weight", "convolution_type", "subgraph_type", "seed_patches")
#: graph options whose default the chosen preset sets (None: the preset's value)
PRESET_GRAPH_OPTIONS = ("link_prediction_weight", "num_neighbors", "subgraph_type")
#: ``TrainParams.num_neighbors`` value for every neighbour in every hop (None takes the preset's)
ALL_NEIGHBOURS = -1


class SessionError(ValueError):
    """A user-facing problem with the session's state or input (shown as a notification)."""


class StepCancelled(SessionError):
    """A step was cancelled before it had a result worth keeping."""


class TrainingCancelled(StepCancelled):
    """Training was cancelled before a usable model existed."""


#: ``TissueKeys.counts_layer`` value that reads the counts from ``X`` even when a counts layer exists
COUNTS_IN_X = "X"


@dataclass
class TissueKeys:
    """Where the tissue's annotations live in the AnnData.

    Coordinates come from ``obsm[spatial_key]`` (x then y) or from the obs columns
    ``x_column`` and ``y_column``: giving the two columns is enough (the default obsm key is
    then not used); ``pixel_size`` is the size of one coordinate unit in micrometres. The
    counts come from ``layers[counts_layer]``; left at None, from ``layers["counts"]`` when
    the AnnData has one, else from ``X`` (:data:`COUNTS_IN_X` forces ``X``). ``guessed``
    names the fields that were guessed from common names rather than chosen.

    Raises
    ------
    SessionError
        Only one of the two columns, or the columns together with another obsm key.
    """

    spatial_key: str | None = OBSM.SPATIAL
    x_column: str | None = None
    y_column: str | None = None
    pixel_size: float = 1.0
    cell_type_key: str | None = "cell_type"
    domain_key: str | None = "domain"
    batch_key: str | None = None
    counts_layer: str | None = None
    guessed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.x_column is None) != (self.y_column is None):
            given = "x_column" if self.x_column is not None else "y_column"
            raise SessionError(f"give both x_column and y_column, not only {given}")
        if self.x_column is not None and self.spatial_key is not None:
            if self.spatial_key != OBSM.SPATIAL:
                raise SessionError(
                    f"give the coordinates either as obsm[{self.spatial_key!r}] or as the obs columns "
                    f"{self.x_column!r}/{self.y_column!r}, not both"
                )
            self.spatial_key = None
        self.guessed = tuple(self.guessed)


@dataclass
class PreprocessParams:
    """QC, gene selection, normalisation, spatial-graph and niche-feature settings.

    ``composition``: whether the niche features hold the neighbours' cell types beside their
    expression (``"added"``), instead of it (``"only"``) or not at all (``"off"``); the cell
    types are those of the cell-type key.
    """

    min_counts_cell: int = 3
    min_counts_gene: int = 3
    n_top_genes: int | None = 2000
    target_sum: float = 1e4
    bandwidth_um: float = 20.0
    max_neighbours: int = 50
    cutoff: float = 0.1
    composition: str = "off"


@dataclass
class TrainParams:
    """Model and training settings, scaled for a desktop.

    ``preset`` (``"recommended"`` or ``"published"``, :mod:`cellina.model.presets`) sets
    every model option it names; the options in :data:`PRESET_OPTIONS` left at None take
    the preset's value, and a value given here overrides it. ``variant`` is ``"cellina"``
    (niche features) or ``"gcn"`` (:class:`~cellina.model.CellinaGCN`, a GATv2 encoder over
    the spatial graph); the options in :data:`GRAPH_OPTIONS` apply to the graph variant only
    (``num_neighbors``: neighbours sampled per hop while training, :data:`ALL_NEIGHBOURS` for all;
    ``num_neighbors``, ``subgraph_type`` and ``link_prediction_weight`` None: the preset's, its
    fan-outs fitted to ``n_layers``; ``seed_patches``: spatial patches per training minibatch,
    None for seeds drawn at random).
    """

    preset: str = "recommended"
    variant: str = "cellina"
    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 2
    niche_decoder: str | None = None
    spatial_decoding: str | None = None
    type_aware_discriminator: bool | None = None
    spatial_encoder: str | None = None
    max_epochs: int = 50
    batch_size: int = 512
    lr: float = 1e-3
    classifier_lambda: float = 1.0
    discriminator_lambda: float = 1.0
    normalize_losses: bool = True
    early_stopping: bool = True
    early_stopping_patience: int = 10
    validation_size: float = 0.1
    holdout_cell_type: str | None = None
    holdout_domain: str | None = None
    seed: int = 0
    num_neighbors: int | tuple[int, ...] | str | None = None
    link_prediction_weight: float | None = None
    convolution_type: str = "gat"
    subgraph_type: str | None = None
    seed_patches: int | None = None

    def __post_init__(self) -> None:
        from cellina.model import fit_fanouts
        from cellina.model.presets import get_preset

        try:
            chosen = get_preset(self.preset)
        except ValueError as err:
            raise SessionError(str(err)) from None
        self.preset = chosen.name
        from_preset = [name for name in (*PRESET_OPTIONS, *PRESET_GRAPH_OPTIONS) if getattr(self, name) is None]
        for name in from_preset:
            setattr(self, name, chosen.model[name])
        if "num_neighbors" in from_preset:
            self.num_neighbors = fit_fanouts(self.num_neighbors, self.n_layers)
        if self.num_neighbors is None:
            self.num_neighbors = ALL_NEIGHBOURS
        self.variant = VARIANTS.get(self.variant, self.variant)
        if self.variant not in VARIANTS.values():
            raise SessionError(
                f"variant={self.variant!r} is not a model variant; use one of {sorted(VARIANTS.values())}"
            )
        if isinstance(self.num_neighbors, str):
            self.num_neighbors = parse_num_neighbors(self.num_neighbors)
        elif isinstance(self.num_neighbors, list):
            self.num_neighbors = tuple(self.num_neighbors)
        self._check_graph_options()

    def _check_graph_options(self) -> None:
        from cellina.model import CONVOLUTION_TYPES, SUBGRAPH_TYPES, check_seed_patches

        if self.convolution_type not in CONVOLUTION_TYPES:
            raise SessionError(f"convolution_type={self.convolution_type!r}: use one of {list(CONVOLUTION_TYPES)}")
        if self.subgraph_type not in SUBGRAPH_TYPES:
            raise SessionError(f"subgraph_type={self.subgraph_type!r}: use one of {list(SUBGRAPH_TYPES)}")
        try:
            self.seed_patches = check_seed_patches(self.seed_patches)
        except ValueError as err:
            raise SessionError(str(err)) from None
        if not self.link_prediction_weight >= 0:
            raise SessionError(f"link_prediction_weight={self.link_prediction_weight!r} must be >= 0")
        hops = self.num_neighbors
        if hops is not None and not isinstance(hops, int):
            if len(hops) != self.n_layers:
                raise SessionError(
                    f"num_neighbors={list(hops)!r} gives {len(hops)} hop(s) but the model has "
                    f"n_layers={self.n_layers}; give one value per layer or one for all"
                )

    @property
    def graph(self) -> bool:
        """Whether these settings train the graph variant."""
        return self.variant == "gcn"

    def model_kwargs(self) -> dict[str, Any]:
        """Constructor options on top of the preset's (with the graph variant's own when it is chosen)."""
        options = {name: getattr(self, name) for name in PRESET_OPTIONS}
        if self.graph:
            options.update({name: getattr(self, name) for name in GRAPH_OPTIONS})
            if isinstance(self.num_neighbors, tuple):
                options["num_neighbors"] = list(self.num_neighbors)
        return {
            "n_latent": self.n_latent,
            "n_hidden": self.n_hidden,
            "n_layers": self.n_layers,
            "classifier_lambda": self.classifier_lambda,
            "discriminator_lambda": self.discriminator_lambda,
            **options,
        }

    def plan_kwargs(self) -> dict[str, Any]:
        """Training-plan options on top of the preset's."""
        return {"lr": self.lr, "normalize_losses": self.normalize_losses}


def parse_num_neighbors(text: str) -> int | tuple[int, ...]:
    """Neighbours sampled per hop from the text a user types: ``"all"`` (or empty) for every
    neighbour (:data:`ALL_NEIGHBOURS`), ``"10"`` for every hop, ``"10, 5"`` for one value per hop
    (``-1``: all in that hop).

    Raises
    ------
    SessionError
        Text that is not ``"all"`` or whole numbers (>= 1, or -1), naming it.
    """
    cleaned = str(text).strip().lower()
    if cleaned in ("", "all", "none"):
        return ALL_NEIGHBOURS
    parts = [p for p in cleaned.strip("()[]").replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise SessionError(
            f"num_neighbors={text!r} is not understood: write 'all', one number (e.g. 10) or one per hop (e.g. 10, 5)"
        ) from None
    bad = [v for v in values if v < 1 and v != -1]
    if bad:
        raise SessionError(f"num_neighbors={text!r}: {bad[0]} neighbours per hop; use a number >= 1, or -1 for all")
    return values[0] if len(values) == 1 else values


def format_num_neighbors(value: int | tuple[int, ...] | None) -> str:
    """The text :func:`parse_num_neighbors` reads back as ``value``: ``"all"``, ``"10"`` or ``"10, 5"``."""
    if value is None or value == ALL_NEIGHBOURS:
        return "all"
    if isinstance(value, int):
        return str(value)
    return ", ".join(str(v) for v in value)


@dataclass
class Selection:
    """A named set of cells: lasso polygons (or an explicit mask), refined by type and domain."""

    base: np.ndarray
    polygons: list[np.ndarray] = field(default_factory=list)
    cell_types: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    mask: np.ndarray | None = None

    @property
    def count(self) -> int:
        return int(self.mask.sum()) if self.mask is not None else 0


@dataclass
class RunResult:
    """One counterfactual run on the focal cells, kept so the user can switch between runs.

    ``expression`` and ``factual`` are expected counts of the focal cells (rows follow
    ``indices``, columns the AnnData's genes); ``std`` is each value's standard deviation across
    the draws (of the donors, and of the model's posterior when ``params["uncertainty"]`` is
    ``"posterior"``); ``novelty`` (a :class:`~cellina.counterfactual.NicheNovelty`) says how far each focal cell's
    counterfactual niche lies from the niches the model saw in training, and ``support`` (a
    :class:`~cellina.counterfactual.TypeSupport`) how many training cells and counts the model had of the focal types. A node run also carries the perturbed niche features of every cell (``spatial_x``),
    which the session stores in ``obsm`` on the main thread.
    """

    name: str
    kind: str
    indices: np.ndarray
    expression: np.ndarray
    factual: np.ndarray
    params: dict[str, Any]
    std: np.ndarray | None = None
    donors: np.ndarray | None = None
    gene_shifts: Any = None
    created: str = ""
    spatial_x: np.ndarray | None = None
    novelty: Any = None
    support: Any = None
    #: with borrowing, per gene: own_lfc, others_lfc, borrowed_lfc (see Cellina.borrowed_counterfactual_change)
    borrowed: Any = None
    #: with a range, per gene: lfc, lfc_corrected, draw_spread, checked_error, low, high (see
    #: Cellina.counterfactual_change_range); a run that asked for one but could not be checked says why in range_note
    change_range: Any = None
    range_note: str = ""

    def log_fold_change(self, genes: int | np.ndarray | slice | None = None, eps: float = 1e-6) -> np.ndarray:
        """Per-cell natural-log fold change of the counterfactual over the factual prediction.

        ``genes`` picks columns (an index, indices or a slice) so one gene costs one column.
        """
        cols = slice(None) if genes is None else genes
        return np.log((self.expression[:, cols] + eps) / (self.factual[:, cols] + eps)).astype(np.float32)

    def borrowed_record(self) -> dict[str, Any]:
        """What an export keeps of a borrowed change: its three log2 columns (in the AnnData's gene order) and
        the reference cells per type; nothing for a run that did not borrow."""
        if self.borrowed is None:
            return {}
        columns = {name: self.borrowed[name].to_numpy() for name in ("own_lfc", "others_lfc", "borrowed_lfc")}
        return {**columns, "borrowed_reference_cells": dict(self.borrowed.attrs.get("reference_cells", {}))}

    def range_record(self) -> dict[str, Any]:
        """What an export keeps of a range: its ends, the corrected change and the checked error (in the AnnData's
        gene order) and the checked types, or why the run has none; nothing for a run that did not ask."""
        if self.range_note:
            return {"range_note": self.range_note}
        if self.change_range is None:
            return {}
        columns = ("low", "high", "lfc_corrected", "checked_error")
        record = {f"range_{name}": self.change_range[name].to_numpy() for name in columns}
        attrs = self.change_range.attrs
        return {
            **record,
            "range_n_draws": attrs.get("n_draws"),
            "range_checked_types": dict(attrs.get("checked_types", {})),
        }


# ---------------------------------------------------------------------- step results
@dataclass(frozen=True)
class Preprocessed:
    """A preprocessed copy of the tissue, the keys that read it, and what to tell the user (cells, genes, graph)."""

    adata: Any
    keys: TissueKeys
    params: PreprocessParams
    message: str = ""


@dataclass(frozen=True)
class Trained:
    """A trained model and the AnnData it trained on (its graph may mask held-out cells).

    ``rebuilt``: the training graph differs from the session's and replaces it on apply.
    """

    model: Any
    data: Any
    params: TrainParams
    history: dict[str, list[float]]
    epochs: int
    cancelled: bool
    holdout: np.ndarray
    rebuilt: bool


@dataclass(frozen=True)
class Latents:
    """``z`` and ``s`` of every cell and a clustering of each."""

    z: np.ndarray
    s: np.ndarray
    z_cluster: np.ndarray
    s_cluster: np.ndarray


@dataclass(frozen=True)
class Attention:
    """The attention of a graph model, one cells x cells CSR per GATv2 layer (row: receiver).

    Computed once per model on the session's tissue (``model`` and ``adata`` say which).
    """

    model: Any
    adata: Any
    layers: tuple


@dataclass(frozen=True)
class Loaded:
    """A model read from a folder."""

    model: Any
    path: str


@dataclass(frozen=True)
class Exported:
    """The perturbed AnnData written to ``path``."""

    adata: Any
    path: str


@dataclass(frozen=True)
class EdgeJob:
    """Inputs of an edge run, gathered on the main thread."""

    model: Any
    adata: Any
    focal: np.ndarray
    donors: np.ndarray
    params: dict[str, Any]
    name: str
    connectivity_key: str


@dataclass(frozen=True)
class NodeJob:
    """Inputs of a node run, gathered on the main thread (references and one copy of the region)."""

    model: Any
    adata: Any
    focal: np.ndarray
    shifts: Any
    sender_key: str | None
    region: np.ndarray | None
    params: dict[str, Any]
    name: str
    layer: str | None


# ---------------------------------------------------------------------- running steps
@dataclass
class Progress:
    """One progress report: ``step`` of ``total`` and a message (plus losses while training)."""

    step: int
    total: int
    message: str
    losses: dict[str, float] | None = None


Steps = Generator[Progress, None, Any]
Status = Literal["done", "failed", "cancelled"]


@dataclass(frozen=True)
class Outcome:
    """How a step ended: exactly one of done (with its value), failed or cancelled (with the error).

    Deliberately not an exception: a thread worker hands it back as an ordinary result.
    """

    status: Status
    value: Any = None
    error: BaseException | None = None
    message: str = ""


@dataclass
class Job:
    """One step for the session: a generator of progress that returns a typed result, and
    ``apply``, which puts the result into the session on the main thread and returns a message.

    ``follow_up`` makes the next job once this one is applied (e.g. latents after training);
    ``cancel`` asks the step to stop early where it can.
    """

    name: str
    steps: Steps
    apply: Callable[[Any], str]
    follow_up: Callable[[], Job | None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None


def params_dict(params: Any) -> dict[str, Any]:
    """Dataclass parameters as a plain dict (for provenance)."""
    return asdict(params)
