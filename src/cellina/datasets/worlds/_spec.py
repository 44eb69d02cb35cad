"""Scenario specification of a world: niche channels, layout, confounds and data size.

Every field is validated when the object is made, with an error naming the field, so a world
that generates is a world whose truth is well defined. Specifications are frozen (hashable,
safe to share between worlds) and convert to and from plain dictionaries, which is how a world
stores the specification that made it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cellina.datasets._errors import DatasetTypeError
from cellina.datasets._inputs import as_str_list, check_int, check_positive, check_real
from cellina.datasets.worlds._catalogue import COARSE_TYPES, FINE_TO_COARSE, FINE_TYPES

SENSED: tuple[str, ...] = ("fraction", "ligand", "structure", "gradient")
KERNELS: tuple[str, ...] = ("contact", "gaussian", "exponential")
DOSES: tuple[str, ...] = ("linear", "saturating", "threshold")
GRADIENTS: tuple[str, ...] = ("hypoxia", "morphogen")
# Smooth kernels are cut where their weight falls below this share of the weight at distance 0:
# the niche is then a finite neighbourhood and exactly reproducible.
KERNEL_TAIL = 0.01
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def kernel_reach(kernel: str, scale: float) -> float:
    """Distance (um) beyond which a kernel gives no weight: the radius, or where weight < KERNEL_TAIL."""
    if kernel == "contact":
        return float(scale)
    if kernel == "gaussian":
        return float(scale) * math.sqrt(-2.0 * math.log(KERNEL_TAIL))
    return -float(scale) * math.log(KERNEL_TAIL)


def _choice(value: object, name: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
    return str(value)


def _pair(value: object, name: str, low: float, high: float) -> tuple[float, float]:
    items = list(value) if isinstance(value, (tuple, list)) else None
    if items is None or len(items) != 2:
        raise DatasetTypeError(f"{name} must be a pair (low, high), got {value!r}")
    a = check_real(items[0], f"{name}[0]", low, high, open_low=True)
    b = check_real(items[1], f"{name}[1]", low, high, open_low=True)
    if a > b:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return (a, b)


def _set(obj: object, **values: Any) -> None:
    for key, value in values.items():  # frozen dataclasses are normalised once, in __post_init__
        object.__setattr__(obj, key, value)


@dataclass(frozen=True)
class Channel:
    """One niche mechanism: what a cell senses around it and how its genes respond.

    The sensed level of a receiver v is S = sum_u w(d_vu) p_u / sum_u w(d_vu) over the other cells
    u of its slide within the kernel's reach, with p_u a per-sender property:

    * ``fraction``: 1 if u's fine type is among ``senders`` (coarse names expand to their subtypes);
    * ``ligand``: u's ligand level, the mean over the channel's ligand genes of
      log1p(CP10K of u's intrinsic expected expression); ``senders`` are the types that make it;
    * ``structure``: 1 if u belongs to a vessel (needs ``Layout.vessels``);
    * ``gradient``: u's level of the world's gradient (``WorldSpec.gradient``).

    The level is scaled to x = (S - low) / (high - low) with low/high the 5th/95th percentiles of
    S over the world, passed through ``dose`` (``linear`` x, ``saturating``
    (1 + K) x+ / (x+ + K) with K = ``half_saturation``, ``threshold`` a logistic step at
    ``threshold`` of width ``width``) and centred on the healthy domain's mean response.

    Parameters
    ----------
    name
        Identifier used in keys (letters, digits, underscores).
    sensed, kernel, dose
        See above; ``kernel`` is ``contact`` (weight 1 within ``scale``), ``gaussian``
        (exp(-d^2 / 2 scale^2)) or ``exponential`` (exp(-d / scale)), both cut at weight 0.01.
    scale
        Kernel radius / bandwidth / decay length in micrometres.
    senders
        Sender types (``fraction``) or ligand-making types (``ligand``); empty otherwise.
    responders
        ``{coarse type: responsiveness}``: a shared response gene moves in a responder by its
        effect times this factor.
    n_genes
        Number of response genes of the channel.
    effect
        Range of the absolute log-effect of a response gene over the low -> high range of x.
    specificity
        Share of the response genes that move in one responder type only.
    """

    name: str
    sensed: str
    kernel: str
    scale: float
    dose: str = "linear"
    senders: tuple[str, ...] = ()
    responders: Mapping[str, float] = field(default_factory=dict)
    n_genes: int = 12
    effect: tuple[float, float] = (0.8, 1.6)
    specificity: float = 0.3
    half_saturation: float = 0.25
    threshold: float = 0.5
    width: float = 0.08

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise ValueError(f"Channel.name must be an identifier (letters, digits, _), got {self.name!r}")
        where = f"Channel {self.name!r}"
        sensed = _choice(self.sensed, f"{where}.sensed", SENSED)
        senders = tuple(as_str_list(self.senders)) if self.senders is not None else ()
        if sensed in ("fraction", "ligand") and not senders:
            raise ValueError(f"{where}.senders must name at least one cell type for sensed={sensed!r}")
        if sensed in ("structure", "gradient") and senders:
            raise ValueError(f"{where}.senders must be empty for sensed={sensed!r} (the property is per cell)")
        bad = [s for s in senders if s not in FINE_TYPES and s not in COARSE_TYPES]
        if bad:
            raise ValueError(f"{where}.senders has unknown cell types {bad}; known: {list(FINE_TYPES + COARSE_TYPES)}")
        if not isinstance(self.responders, Mapping) or not self.responders:
            raise DatasetTypeError(f"{where}.responders must be a non-empty mapping coarse type -> responsiveness")
        unknown = [str(k) for k in self.responders if str(k) not in COARSE_TYPES]
        if unknown:
            raise ValueError(f"{where}.responders has unknown coarse types {unknown}; known: {list(COARSE_TYPES)}")
        responders = {
            str(k): check_real(v, f"{where}.responders[{k!r}]", 0.0, 10.0, open_low=True)
            for k, v in sorted(self.responders.items(), key=lambda kv: COARSE_TYPES.index(str(kv[0])))
        }
        _set(
            self,
            sensed=sensed,
            kernel=_choice(self.kernel, f"{where}.kernel", KERNELS),
            scale=check_positive(self.scale, f"{where}.scale"),
            dose=_choice(self.dose, f"{where}.dose", DOSES),
            senders=senders,
            responders=responders,
            n_genes=check_int(self.n_genes, f"{where}.n_genes", 1),
            effect=_pair(self.effect, f"{where}.effect", 0.0, 10.0),
            specificity=check_real(self.specificity, f"{where}.specificity", 0.0, 1.0),
            half_saturation=check_positive(self.half_saturation, f"{where}.half_saturation"),
            threshold=check_real(self.threshold, f"{where}.threshold", -1.0, 2.0),
            width=check_positive(self.width, f"{where}.width"),
        )

    def __hash__(self) -> int:  # responders is a dict; hash its items
        return hash((self.name, self.sensed, self.kernel, self.scale, tuple(self.responders.items())))

    @property
    def reach(self) -> float:
        """Distance in um beyond which a cell is not sensed."""
        return kernel_reach(self.kernel, self.scale)

    @property
    def sender_types(self) -> tuple[str, ...]:
        """``senders`` as fine types (a coarse name stands for all its subtypes)."""
        return tuple(f for f in FINE_TYPES if f in self.senders or FINE_TO_COARSE[f] in self.senders)


@dataclass(frozen=True)
class Layout:
    """Spatial organisation: domains, and where types cluster (0 strengths = independent draws).

    Tumour regions are the top ``tumour_fraction`` of a smooth random field (bumps of radius
    ~``tumour_radius`` um), the margin the next ``margin_fraction``. ``nests`` (log-odds) packs
    malignant cells into nests of radius ``nest_radius`` with stroma between them;
    ``aggregates`` (log-odds) gathers T and B cells into aggregates of radius
    ``aggregate_radius`` (``aggregate_density`` per mm^2, outside the tumour); ``vessels``
    per mm^2 (``vessel_tumour_boost`` times denser in the tumour) are curved lines of
    endothelial cells ``vessel_width`` um wide and ``vessel_length`` um long.
    """

    tumour_fraction: float = 0.35
    margin_fraction: float = 0.15
    tumour_radius: float = 220.0
    nests: float = 0.0
    nest_radius: float = 35.0
    aggregates: float = 0.0
    aggregate_radius: float = 45.0
    aggregate_density: float = 3.0
    vessels: float = 0.0
    vessel_length: float = 300.0
    vessel_width: float = 14.0
    vessel_tumour_boost: float = 3.0

    def __post_init__(self) -> None:
        _set(
            self,
            tumour_fraction=check_real(self.tumour_fraction, "Layout.tumour_fraction", 0.05, 0.7),
            margin_fraction=check_real(self.margin_fraction, "Layout.margin_fraction", 0.0, 0.5),
            tumour_radius=check_positive(self.tumour_radius, "Layout.tumour_radius"),
            nests=check_real(self.nests, "Layout.nests", 0.0, 10.0),
            nest_radius=check_positive(self.nest_radius, "Layout.nest_radius"),
            aggregates=check_real(self.aggregates, "Layout.aggregates", 0.0, 10.0),
            aggregate_radius=check_positive(self.aggregate_radius, "Layout.aggregate_radius"),
            aggregate_density=check_real(self.aggregate_density, "Layout.aggregate_density", 0.0, 100.0),
            vessels=check_real(self.vessels, "Layout.vessels", 0.0, 100.0),
            vessel_length=check_positive(self.vessel_length, "Layout.vessel_length"),
            vessel_width=check_positive(self.vessel_width, "Layout.vessel_width"),
            vessel_tumour_boost=check_positive(self.vessel_tumour_boost, "Layout.vessel_tumour_boost"),
        )
        if self.tumour_fraction + self.margin_fraction >= 0.9:
            raise ValueError("Layout.tumour_fraction + Layout.margin_fraction must leave healthy tissue (< 0.9)")


@dataclass(frozen=True)
class Confounds:
    """Intrinsic differences between domains that are not niche effects (0 / 1 = none).

    ``subtype_shift`` adds to the log-odds of every coarse type's second subtype in the tumour
    (half in the margin); ``state_shift`` raises the mean of the cell-state programme in the
    tumour; ``size_ratio`` multiplies tumour cells' library size (its square root in the margin).
    """

    subtype_shift: float = 0.0
    state_shift: float = 0.0
    size_ratio: float = 1.0

    def __post_init__(self) -> None:
        _set(
            self,
            subtype_shift=check_real(self.subtype_shift, "Confounds.subtype_shift", -5.0, 5.0),
            state_shift=check_real(self.state_shift, "Confounds.state_shift", -0.5, 0.5),
            size_ratio=check_real(self.size_ratio, "Confounds.size_ratio", 0.2, 5.0),
        )


@dataclass(frozen=True)
class WorldSpec:
    """A whole world: its channels, layout, confounds, data size, depth, batches and seed.

    ``depth`` is the median expected total count of a cell (before the size confound),
    ``depth_sigma`` the log-scale spread of library sizes, ``spacing`` the distance between
    neighbouring cells (um), ``dispersion`` the range of the genes' negative-binomial inverse
    dispersion, ``batch_sd`` the standard deviation of each slide's gene-wise log batch effect
    and ``gradient`` what the gradient property measures (``hypoxia``: distance from the nearest
    vessel; ``morphogen``: depth inside the tumour field).
    """

    name: str
    description: str
    channels: tuple[Channel, ...]
    seed: int = 0
    n_cells: int = 10_000
    n_genes: int = 500
    n_slides: int = 2
    depth: float = 400.0
    depth_sigma: float = 0.35
    spacing: float = 12.0
    dispersion: tuple[float, float] = (2.0, 20.0)
    batch_sd: float = 0.15
    gradient: str = "hypoxia"
    layout: Layout = field(default_factory=Layout)
    confounds: Confounds = field(default_factory=Confounds)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"WorldSpec.name must be a non-empty string, got {self.name!r}")
        channels = tuple(self.channels) if isinstance(self.channels, (tuple, list)) else None
        if not channels or not all(isinstance(c, Channel) for c in channels):
            raise DatasetTypeError("WorldSpec.channels must be a non-empty sequence of Channel")
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise ValueError(f"WorldSpec.channels have repeated names {names}")
        if not isinstance(self.layout, Layout) or not isinstance(self.confounds, Confounds):
            raise DatasetTypeError("WorldSpec.layout must be a Layout and WorldSpec.confounds a Confounds")
        gradient = _choice(self.gradient, "WorldSpec.gradient", GRADIENTS)
        needs_vessels = any(c.sensed == "structure" for c in channels) or (
            gradient == "hypoxia" and any(c.sensed == "gradient" for c in channels)
        )
        if needs_vessels and self.layout.vessels <= 0:
            raise ValueError("a structure channel or a hypoxia gradient needs vessels: set Layout(vessels=...) > 0")
        _set(
            self,
            seed=check_int(self.seed, "seed", 0),
            description=str(self.description),
            channels=channels,
            n_cells=check_int(self.n_cells, "n_cells", 200),
            n_genes=check_int(self.n_genes, "n_genes", 60),
            n_slides=check_int(self.n_slides, "n_slides", 1),
            depth=check_positive(self.depth, "depth"),
            depth_sigma=check_real(self.depth_sigma, "depth_sigma", 0.0, 2.0),
            spacing=check_real(self.spacing, "spacing", 4.0, 50.0),
            dispersion=_pair(self.dispersion, "dispersion", 0.0, 1e4),
            batch_sd=check_real(self.batch_sd, "batch_sd", 0.0, 2.0),
            gradient=gradient,
        )
        if self.n_cells < 100 * self.n_slides:
            raise ValueError(f"n_cells={self.n_cells} is too small for n_slides={self.n_slides} (need 100 per slide)")


def spec_to_dict(spec: WorldSpec) -> dict[str, Any]:
    """Plain nested dictionary of a specification (lists and numbers only, .h5ad-safe)."""
    out = asdict(spec)
    out["channels"] = {
        c["name"]: {k: (list(v) if isinstance(v, tuple) else v) for k, v in c.items()} for c in out["channels"]
    }
    out["channel_order"] = [c.name for c in spec.channels]
    out["dispersion"] = list(spec.dispersion)
    return out


def spec_from_dict(data: Mapping[str, Any]) -> WorldSpec:
    """Inverse of :func:`spec_to_dict`; accepts what an .h5ad round trip returns (numpy scalars and arrays)."""

    def plain(value: Any) -> Any:
        if hasattr(value, "tolist"):
            return value.tolist()
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    data = plain(dict(data))
    channels = []
    for name in as_str_list(data["channel_order"]):
        raw = dict(data["channels"][name])
        raw["senders"] = tuple(as_str_list(raw.get("senders", [])))
        raw["effect"] = tuple(raw["effect"])
        channels.append(Channel(**raw))
    top = {f.name for f in fields(WorldSpec)}
    kwargs = {k: v for k, v in data.items() if k in top and k not in ("channels", "layout", "confounds")}
    kwargs["dispersion"] = tuple(kwargs["dispersion"])
    return WorldSpec(
        channels=tuple(channels), layout=Layout(**data["layout"]), confounds=Confounds(**data["confounds"]), **kwargs
    )
