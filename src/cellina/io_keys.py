"""Where a tissue file keeps its annotations: guesses from the names real files use.

One table of the names that scverse tools and the instruments' exports give to cell types,
domains, slides, counts layers and cell coordinates, read by every face (the command line,
the reader and the docks). :func:`guess_keys` returns what it found; a face shows the guesses
as guesses and lets the user override them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

#: obs columns holding cell types, most specific first (compared case-insensitively)
CELL_TYPE_NAMES = (
    "cell_type",
    "celltype",
    "cell_types",
    "cell_type_coarse",
    "celltype_coarse",
    "annotation",
    "cell_annotation",
    "ist",
    "leiden",
    "louvain",
    "cluster",
    "clusters",
)
#: obs columns holding spatial domains or regions
DOMAIN_NAMES = ("domain", "domains", "spatial_domain", "region", "regions", "niche", "niches", "typ")
#: obs columns naming slides, samples or sequencing libraries (used as the batch)
BATCH_NAMES = ("batch", "slide", "slide_id", "sample", "sample_id", "sid", "library_id", "section")
#: layers holding raw counts
COUNTS_LAYER_NAMES = ("counts", "raw_counts", "raw", "count")
#: obsm keys holding cell centres (x, y)
SPATIAL_OBSM_NAMES = ("spatial", "X_spatial", "spatial_um", "X_centroid", "centroids")
#: pairs of obs columns holding cell centres, as scverse tools and instruments name them
XY_COLUMN_NAMES = (
    ("x", "y"),
    ("x_centroid", "y_centroid"),  # Xenium (micrometres)
    ("CenterX_global_px", "CenterY_global_px"),  # CosMx (pixels)
    ("center_x", "center_y"),  # MERSCOPE (micrometres)
    ("centroid_x", "centroid_y"),
    ("x_location", "y_location"),
    ("global_x", "global_y"),
    ("x_um", "y_um"),
    ("x_coord", "y_coord"),
    ("imagecol", "imagerow"),
)
#: micrometres per coordinate unit of the instruments that write pixel (or bin) coordinates
PIXEL_SIZES_UM: Mapping[str, float] = MappingProxyType(
    {
        "CosMx": 0.12028,
        "Xenium image": 0.2125,
        "MERSCOPE mosaic": 0.108,
        "Visium HD 2 um bins": 2.0,
        "Visium HD 8 um bins": 8.0,
        "Visium HD 16 um bins": 16.0,
    }
)
#: coordinate columns only one instrument writes, in pixels: the instrument (a key of PIXEL_SIZES_UM)
INSTRUMENT_COLUMNS: Mapping[str, str] = MappingProxyType({"centerx_global_px": "CosMx", "centerx_local_px": "CosMx"})
#: median distances between neighbouring cell centres that look like micrometres (a cell is 5-30 um)
CELL_SPACING_UM = (1.5, 50.0)
_PIXEL_MARKS = ("px", "pixel", "imagecol", "imagerow")


class CoordinatesNotFoundError(ValueError):
    """No cell coordinates under any of the names :func:`guess_keys` knows."""


@dataclass(frozen=True)
class KeyGuesses:
    """What :func:`guess_keys` found (``None``: nothing matched).

    Attributes
    ----------
    cell_type, domain, batch
        ``obs`` columns of the cell types, the spatial domains and the slides.
    counts_layer
        Layer with raw counts (``None``: none of the usual names; ``X`` may hold them).
    spatial_key
        ``obsm`` key of the coordinates, or ``None`` when they are two obs columns
        (``x_column``, ``y_column``).
    in_pixels
        The coordinate names say pixels (``..._px``): a pixel size is needed.
    """

    cell_type: str | None = None
    domain: str | None = None
    batch: str | None = None
    counts_layer: str | None = None
    spatial_key: str | None = None
    x_column: str | None = None
    y_column: str | None = None
    in_pixels: bool = False


def first_match(names: Iterable[str], candidates: Iterable[Any]) -> str | None:
    """The first of ``names`` present among ``candidates``, compared case-insensitively.

    Returns the candidate's own spelling.
    """
    by_lower = {}
    for candidate in candidates:
        by_lower.setdefault(str(candidate).lower(), str(candidate))
    return next((by_lower[n.lower()] for n in names if n.lower() in by_lower), None)


def _is_numeric(column: Any) -> bool:
    return getattr(column, "dtype", np.dtype(object)).kind in "fiu"


def _x_to_y(name: str) -> list[str]:
    """Names that pair with ``name`` by turning one of its x into a y (``px_x`` -> ``px_y``)."""
    lower = name.lower()
    return [lower[:i] + "y" + lower[i + 1 :] for i, ch in enumerate(lower) if ch == "x"]


def find_coordinate_columns(obs: Any) -> tuple[str, str] | None:
    """A pair of numeric ``obs`` columns holding x and y, or ``None``.

    Known pairs (:data:`XY_COLUMN_NAMES`) first, then any two numeric columns whose names
    differ only by an x and a y (``CenterX_local_px``/``CenterY_local_px``).
    """
    numeric = {str(c).lower(): str(c) for c in obs.columns if _is_numeric(obs[c])}
    for x, y in XY_COLUMN_NAMES:
        if x.lower() in numeric and y.lower() in numeric:
            return numeric[x.lower()], numeric[y.lower()]
    for lower, column in numeric.items():
        partner = next((p for p in _x_to_y(lower) if p in numeric), None)
        if partner is not None:
            return column, numeric[partner]
    return None


def find_spatial_obsm(obsm: Mapping[str, Any]) -> str | None:
    """The first ``obsm`` key of :data:`SPATIAL_OBSM_NAMES` with at least two columns."""
    for key in SPATIAL_OBSM_NAMES:
        if key in obsm and np.ndim(obsm[key]) == 2 and np.shape(obsm[key])[1] >= 2:
            return key
    return None


def looks_like_pixels(*names: str | None) -> bool:
    """Whether coordinate names say pixels (``CenterX_global_px``, ``imagecol``...)."""
    return any(mark in str(name).lower() for name in names if name for mark in _PIXEL_MARKS)


def _batch_column(obs: Any) -> str | None:
    """A slide/sample column with two or more values (one slide is no batch)."""
    name = first_match(BATCH_NAMES, obs.columns)
    if name is None or obs[name].nunique(dropna=True) < 2:
        return None
    return name


def guess_keys(adata: Any) -> KeyGuesses:
    """Guess the cell-type, domain, batch, counts and coordinate keys of ``adata`` from common names.

    Looks for the names of :data:`CELL_TYPE_NAMES`, :data:`DOMAIN_NAMES`,
    :data:`BATCH_NAMES` (a column with at least two values), :data:`COUNTS_LAYER_NAMES`,
    :data:`SPATIAL_OBSM_NAMES` and :data:`XY_COLUMN_NAMES`, case-insensitively. Nothing is
    validated beyond presence; a face shows the guesses and lets the user override them.
    """
    obs = adata.obs
    spatial_key = find_spatial_obsm(adata.obsm)
    x_column = y_column = None
    if spatial_key is None:
        pair = find_coordinate_columns(obs)
        if pair is not None:
            x_column, y_column = pair
    return KeyGuesses(
        cell_type=first_match(CELL_TYPE_NAMES, obs.columns),
        domain=first_match(DOMAIN_NAMES, obs.columns),
        batch=_batch_column(obs),
        counts_layer=first_match(COUNTS_LAYER_NAMES, adata.layers.keys()),
        spatial_key=spatial_key,
        x_column=x_column,
        y_column=y_column,
        in_pixels=looks_like_pixels(spatial_key, x_column, y_column),
    )


def read_coordinates(
    adata: Any, spatial_key: str | None = None, x_column: str | None = None, y_column: str | None = None
) -> np.ndarray:
    """Cell centres ``(n_obs, 2)`` as float64 (x, y), from ``obsm[spatial_key]`` or two obs columns.

    Raises
    ------
    ValueError
        The key or a column is missing, or the values are not finite numbers.
    """
    if spatial_key is not None:
        if spatial_key not in adata.obsm:
            raise ValueError(f"coordinates key {spatial_key!r} is not in obsm (keys: {sorted(adata.obsm.keys())})")
        xy = np.asarray(adata.obsm[spatial_key])[:, :2]
    else:
        missing = [c for c in (x_column, y_column) if c is None or c not in adata.obs]
        if missing:
            raise ValueError(f"coordinate column {missing[0]!r} is not in obs")
        xy = adata.obs[[x_column, y_column]].to_numpy()
    try:
        xy = xy.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"the coordinates are not numeric: {err}") from None
    if not np.all(np.isfinite(xy)):
        raise ValueError("the coordinates hold NaN or infinite values")
    return xy


def require_coordinates(adata: Any) -> KeyGuesses:
    """:func:`guess_keys`, or a :class:`CoordinatesNotFoundError` saying what was looked for."""
    guess = guess_keys(adata)
    if guess.spatial_key is None and guess.x_column is None:
        pairs = ", ".join(f"{x}/{y}" for x, y in XY_COLUMN_NAMES[:4])
        raise CoordinatesNotFoundError(
            f"no cell coordinates: none of obsm {list(SPATIAL_OBSM_NAMES)} "
            f"(obsm has {sorted(adata.obsm.keys())}), and no pair of numeric obs columns such as "
            f"{pairs}, ... (obs has {list(map(str, adata.obs.columns))[:12]})"
        )
    return guess


def instrument_of(*names: str | None) -> str | None:
    """The instrument whose pixel coordinates carry one of these names (``CenterX_global_px``: CosMx)."""
    return next((INSTRUMENT_COLUMNS[str(n).lower()] for n in names if n and str(n).lower() in INSTRUMENT_COLUMNS), None)


def file_pixel_size(adata: Any) -> float | None:
    """Micrometres per pixel that the file states itself (Space Ranger's ``microns_per_pixel``), or None."""
    libraries = adata.uns.get("spatial", {})
    for library in libraries.values() if isinstance(libraries, Mapping) else ():
        value = (library.get("scalefactors", {}) if isinstance(library, Mapping) else {}).get("microns_per_pixel")
        if value is not None and np.isfinite(float(value)) and float(value) > 0:
            return float(value)
    return None


def median_nearest_distance(xy: np.ndarray, max_queries: int = 20_000, seed: int = 0) -> float:
    """Median distance from a cell to its nearest other cell (NaN for fewer than two cells).

    The tree holds every cell; at most ``max_queries`` cells, drawn at random, are asked,
    so a large tissue costs a fraction of a second. Cells at the very same place are skipped.
    """
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    if len(xy) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    queries = xy if len(xy) <= max_queries else xy[rng.choice(len(xy), max_queries, replace=False)]
    distances = cKDTree(xy).query(queries, k=4)[0][:, 1:]
    nearest = np.where(distances > 0, distances, np.inf).min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    return float(np.median(nearest)) if nearest.size else float("nan")


def units_problem(spacing: float, pixel_size: float, names: Iterable[str | None] = ()) -> str | None:
    """Why coordinates times ``pixel_size`` do not look like micrometres, or None when they do.

    ``spacing`` is the median distance between neighbouring cells in the coordinates' own
    unit (:func:`median_nearest_distance`). Two signals: a spacing far from a cell's size once
    multiplied by the pixel size (:data:`CELL_SPACING_UM`), and names that say pixels
    (``CenterX_global_px``) with a pixel size of 1.
    """
    names = [n for n in names if n]
    spacing_um = float(spacing) * float(pixel_size)
    shown = f"the coordinates ({'/'.join(names)})" if names else "the coordinates"
    instrument = instrument_of(*names)
    hint = (
        f"{instrument} writes its pixel coordinates under these names: {PIXEL_SIZES_UM[instrument]} um per pixel"
        if instrument
        else "choose the instrument's pixel size"
    )
    low, high = CELL_SPACING_UM
    if np.isfinite(spacing_um) and spacing_um > high:
        return (
            f"at a pixel size of {pixel_size:g} um, neighbouring cells would be {spacing_um:.3g} um apart (median), "
            f"far more than a cell's size: are {shown} in pixels? {hint}"
        )
    if np.isfinite(spacing_um) and spacing_um < low:
        return (
            f"at a pixel size of {pixel_size:g} um, neighbouring cells would be {spacing_um:.3g} um apart (median), "
            "far less than a cell's size: are the coordinates in millimetres (pixel size 1000)?"
        )
    if pixel_size == 1.0 and looks_like_pixels(*names):
        return f"the names of {shown} say pixels, but the pixel size is 1 um: {hint}"
    return None
