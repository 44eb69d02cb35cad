"""One evented state object shared by every Cellina dock (and usable from a notebook).

The session holds the AnnData, the model, the named cell selections, the gene-shift
table and the counterfactual runs. Docks observe its signals instead of finding each
other; a notebook calls the same methods (``preprocess``, ``train``, ``select_polygons``,
``run_edge``, ``run_node``, ``export``) that the docks run in workers. Nothing here
imports Qt or napari.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from psygnal import Signal, SignalGroup

from cellina.plugin._points import CoordinatesNotFoundError, find_coordinates
from cellina.plugin._selection import Engine, points_in_polygons

FOCAL = "focal"
DONORS = "donors"
SHIFT_COLUMNS = ("gene", "value", "senders", "region")
# A log fold change this negative is a knockout: exp(-10) leaves < 0.005% of the expression.
KNOCKOUT_LFC = -10.0


class SessionError(ValueError):
    """A user-facing problem with the session's state or input (shown as a notification)."""


@dataclass
class TissueKeys:
    """Where the tissue's annotations live in the AnnData.

    Coordinates come from ``obsm[spatial_key]`` (x then y) or, when ``spatial_key`` is
    None, from the obs columns ``x_column`` and ``y_column``; ``pixel_size`` is the size of
    one coordinate unit in micrometres.
    """

    spatial_key: str | None = "spatial"
    x_column: str | None = None
    y_column: str | None = None
    pixel_size: float = 1.0
    cell_type_key: str | None = "cell_type"
    domain_key: str | None = "domain"
    batch_key: str | None = None
    counts_layer: str | None = "counts"


@dataclass
class PreprocessParams:
    """QC, gene selection, normalisation and spatial-graph settings."""

    min_counts_cell: int = 3
    min_counts_gene: int = 3
    n_top_genes: int | None = 2000
    target_sum: float = 1e4
    bandwidth_um: float = 20.0
    max_neighbours: int = 50
    cutoff: float = 0.1


@dataclass
class TrainParams:
    """Model hyper-parameters; the defaults follow the published tutorial, scaled for a desktop."""

    n_latent: int = 10
    n_hidden: int = 128
    n_layers: int = 2
    # the type-gated decoder predicts held-out type-specific niche responses best
    # (docs/benchmarks.md); "concat" is the published decoder on [z; s]
    niche_decoder: str = "type_gated"
    # "mean": the decoder learns from the posterior mean of s, the value counterfactuals
    # decode, so predicted niche responses keep their size (docs/benchmarks.md)
    spatial_decoding: str = "mean"
    # the domain discriminator is told each cell's type, so the adversary removes the niche
    # signal leaking into z rather than the cell type (docs/benchmarks.md)
    type_aware_discriminator: bool = True
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
    ``indices``, columns the AnnData's genes); ``std`` is the spread across donor draws.
    """

    name: str
    kind: str
    indices: np.ndarray
    expression: np.ndarray
    factual: np.ndarray
    params: dict[str, Any]
    std: np.ndarray | None = None
    donors: np.ndarray | None = None
    gene_shifts: pd.DataFrame | None = None
    created: str = ""

    def log_fold_change(self, genes: int | np.ndarray | slice | None = None, eps: float = 1e-6) -> np.ndarray:
        """Per-cell natural-log fold change of the counterfactual over the factual prediction.

        ``genes`` picks columns (an index, indices or a slice) so one gene costs one column.
        """
        cols = slice(None) if genes is None else genes
        return np.log((self.expression[:, cols] + eps) / (self.factual[:, cols] + eps)).astype(np.float32)


def _empty_shift_table() -> pd.DataFrame:
    return pd.DataFrame(
        {"gene": pd.Series(dtype=str), "value": pd.Series(dtype=float),
         "senders": pd.Series(dtype=object), "region": pd.Series(dtype=bool)}
    )


class SessionEvents(SignalGroup):
    """Signals of :class:`CellinaSession`; each carries what changed."""

    adata = Signal(object)
    keys = Signal(object)
    model = Signal(object)
    latents = Signal()
    selection = Signal(str)
    gene_shifts = Signal()
    runs = Signal()
    current_run = Signal(str)
    busy = Signal(bool)


class CellinaSession:
    """State of one Cellina analysis: data, model, selections, gene shifts and runs.

    Parameters
    ----------
    adata
        Cells x genes AnnData; may be set later with :meth:`set_adata`.
    keys
        Where annotations live (:class:`TissueKeys`).

    Examples
    --------
    >>> session = CellinaSession(adata)
    >>> session.preprocess(bandwidth_um=20)
    >>> session.train(max_epochs=20)
    >>> session.select_polygons("focal", [polygon_yx])
    >>> session.run_edge(pool="observed", observed_cell_type="Myeloid", observed_domain="tumour")
    >>> session.export("perturbed.h5ad")
    """

    def __init__(self, adata: ad.AnnData | None = None, keys: TissueKeys | None = None):
        self.events = SessionEvents()
        self.adata: ad.AnnData | None = None
        self.keys = keys or TissueKeys()
        self.model: Any = None
        self.model_source: str | None = None
        self.preprocess_params: PreprocessParams | None = None
        self.train_params: TrainParams | None = None
        self.history: dict[str, list[float]] = {}
        self.selections: dict[str, Selection] = {}
        self.gene_shifts = _empty_shift_table()
        self.runs: dict[str, RunResult] = {}
        self.current_run: str | None = None
        self._busy = False
        self._display: np.ndarray | None = None
        if adata is not None:
            self.set_adata(adata, keys)

    # ------------------------------------------------------------------ data
    @property
    def busy(self) -> bool:
        """True while a background step works on the session's data."""
        return self._busy

    @busy.setter
    def busy(self, value: bool) -> None:
        self._busy = bool(value)
        self.events.busy.emit(self._busy)

    def require_adata(self) -> ad.AnnData:
        """The session's AnnData, or a :class:`SessionError` when none is loaded."""
        if self.adata is None:
            raise SessionError("no tissue loaded: open an .h5ad file or the sample tissue first")
        return self.adata

    def require_model(self) -> Any:
        """The trained or loaded model, or a :class:`SessionError`."""
        if self.model is None:
            raise SessionError("no model: train one or load a model folder first")
        return self.model

    def set_adata(self, adata: ad.AnnData, keys: TissueKeys | None = None) -> None:
        """Replace the tissue; the model, selections and runs belong to the old one and are dropped."""
        if not isinstance(adata, ad.AnnData):
            raise SessionError(f"expected an AnnData, got {type(adata).__name__}")
        if adata.n_obs == 0:
            raise SessionError("the AnnData has no cells")
        if keys is None:
            # the previous tissue's keys carry over only when they fit the new one
            try:
                validate_keys(adata, self.keys)
                keys = self.keys
            except SessionError:
                keys = guess_keys(adata)
        validate_keys(adata, keys)
        self.adata = adata
        self.keys = keys
        self._display = None
        self.model = None
        self.model_source = None
        self.history = {}
        self.selections = {}
        self.gene_shifts = _empty_shift_table()
        self.runs = {}
        self.current_run = None
        self.events.adata.emit(adata)
        self.events.model.emit(None)
        self.events.runs.emit()

    def set_keys(self, keys: TissueKeys) -> None:
        """Change where annotations are read from (validated against the AnnData first)."""
        validate_keys(self.require_adata(), keys)
        self.keys = keys
        self._display = None
        self.events.keys.emit(keys)

    def coordinates_um(self) -> np.ndarray:
        """Cell centres (x, y) in micrometres."""
        return coordinates(self.require_adata(), self.keys) * float(self.keys.pixel_size)

    def display_coordinates(self) -> np.ndarray:
        """Cell centres in napari's (row, column) = (y, x) order, in micrometres (read-only).

        Cached until the tissue or its keys change, because every lasso stroke needs them.
        """
        if self._display is None:
            display = np.ascontiguousarray(self.coordinates_um()[:, ::-1])
            display.flags.writeable = False
            self._display = display
        return self._display

    def obs_values(self, key: str) -> pd.Series:
        """An obs column, with an error naming it when absent."""
        adata = self.require_adata()
        if key not in adata.obs:
            raise SessionError(f"obs column {key!r} not found (available: {list(adata.obs.columns)[:12]})")
        return adata.obs[key]

    # ------------------------------------------------------------------ model
    def set_model(self, model: Any, source: str | None = None, history: dict | None = None) -> None:
        """Attach a trained or loaded model; runs made with another model are dropped."""
        self.model = model
        self.model_source = source
        self.history = dict(history or {})
        self.runs = {}
        self.current_run = None
        self.events.model.emit(model)
        self.events.runs.emit()

    def set_latents(self, latents: dict[str, Any]) -> None:
        """Store ``z``/``s`` in obsm and their clusters in obs (``cellina_z_cluster``, ...)."""
        adata = self.require_adata()
        for name in ("z", "s"):
            if name in latents:
                if len(latents[name]) != adata.n_obs:
                    raise SessionError(f"latent {name!r} has {len(latents[name])} rows, not {adata.n_obs}")
        for name in ("z", "s"):
            if name in latents:
                adata.obsm[f"cellina_{name}"] = np.asarray(latents[name], dtype=np.float32)
            cluster = latents.get(f"{name}_cluster")
            if cluster is not None:
                labels = np.asarray(cluster).astype(str)
                order = sorted(set(labels), key=lambda v: (len(v), v))
                adata.obs[f"cellina_{name}_cluster"] = pd.Categorical(labels, categories=order)
        self.events.latents.emit()

    # ------------------------------------------------------------------ selections
    def select_polygons(
        self,
        name: str,
        polygons: Iterable[np.ndarray],
        cell_types: Sequence[str] = (),
        domains: Sequence[str] = (),
        engine: Engine = "shapely",
    ) -> np.ndarray:
        """Select the cells inside lasso polygons (napari (row, col) = (y, x) micrometres).

        Several polygons combine by union. Returns the refined boolean mask.
        """
        polygons = [np.asarray(p, dtype=np.float64)[:, -2:] for p in polygons]
        base = points_in_polygons(self.display_coordinates(), polygons, engine=engine)
        return self.set_selection(name, base, polygons=polygons, cell_types=cell_types, domains=domains)

    def set_selection(
        self,
        name: str,
        base: np.ndarray,
        polygons: Sequence[np.ndarray] = (),
        cell_types: Sequence[str] = (),
        domains: Sequence[str] = (),
    ) -> np.ndarray:
        """Name a set of cells (boolean mask or integer positions), optionally refined."""
        adata = self.require_adata()
        base = as_mask(base, adata.n_obs, f"selection {name!r}")
        selection = Selection(base=base, polygons=list(polygons))
        mask = self._refine(selection, cell_types, domains)
        self.selections[name] = replace(selection, cell_types=tuple(cell_types), domains=tuple(domains), mask=mask)
        self.events.selection.emit(name)
        return mask

    def refine_selection(self, name: str, cell_types: Sequence[str] = (), domains: Sequence[str] = ()) -> np.ndarray:
        """Keep only cells of the given types and domains (empty means no restriction)."""
        selection = self.selections.get(name)
        if selection is None:
            raise SessionError(f"no selection named {name!r}; draw it first")
        mask = self._refine(selection, cell_types, domains)
        self.selections[name] = replace(selection, cell_types=tuple(cell_types), domains=tuple(domains), mask=mask)
        self.events.selection.emit(name)
        return mask

    def _refine(self, selection: Selection, cell_types: Sequence[str], domains: Sequence[str]) -> np.ndarray:
        mask = selection.base.copy()
        for key, wanted, what in (
            (self.keys.cell_type_key, cell_types, "cell type"),
            (self.keys.domain_key, domains, "domain"),
        ):
            if not wanted:
                continue
            if key is None:
                raise SessionError(f"cannot refine by {what}: no {what} column is set in the tissue dock")
            values = self.obs_values(key).astype(str)
            unknown = sorted(set(map(str, wanted)) - set(values.unique()))
            if unknown:
                raise SessionError(f"unknown {what}(s) {unknown} in obs column {key!r}")
            mask &= values.isin([str(w) for w in wanted]).to_numpy()
        return mask

    def selection_indices(self, name: str) -> np.ndarray:
        """Integer positions of the cells in a named selection."""
        selection = self.selections.get(name)
        if selection is None or selection.mask is None:
            raise SessionError(f"no selection named {name!r}; draw it first")
        return np.flatnonzero(selection.mask)

    def selection_counts(self) -> dict[str, int]:
        """Number of cells in each named selection."""
        return {name: sel.count for name, sel in self.selections.items()}

    def clear_selection(self, name: str) -> None:
        """Forget a named selection."""
        if self.selections.pop(name, None) is not None:
            self.events.selection.emit(name)

    def donor_pool(
        self,
        pool: str = "lasso",
        observed_cell_type: str | None = None,
        observed_domain: str | None = None,
        niche_cluster: str | None = None,
        connectivity_key: str | None = None,
    ) -> np.ndarray:
        """Donor cells for edge perturbation.

        ``"lasso"``: cells of the ``donors`` selection. ``"observed"`` (the tutorial's
        construction): observed neighbours of the cells of type ``observed_cell_type`` in
        domain ``observed_domain``, excluding that type, in the unmasked graph.
        ``"niche"``: cells of niche cluster ``niche_cluster`` of ``s``.
        """
        adata = self.require_adata()
        if pool == "lasso":
            idx = self.selection_indices(DONORS)
        elif pool == "observed":
            from cellina.counterfactual import observed_neighbour_pool

            if self.keys.cell_type_key is None or self.keys.domain_key is None:
                raise SessionError("the observed-neighbour pool needs the cell-type and domain keys")
            is_type = matches(self.obs_values(self.keys.cell_type_key), observed_cell_type)
            in_domain = matches(self.obs_values(self.keys.domain_key), observed_domain)
            if not is_type.any():
                raise SessionError(f"cell type {observed_cell_type!r} not found in obs[{self.keys.cell_type_key!r}]")
            if not in_domain.any():
                raise SessionError(f"domain {observed_domain!r} not found in obs[{self.keys.domain_key!r}]")
            key = connectivity_key or graph_key(adata)
            if key not in adata.obsp:
                raise SessionError(f"no spatial graph obsp[{key!r}]: run preprocessing first")
            try:
                idx = observed_neighbour_pool(adata, is_type & in_domain,
                                              connectivity_key=key, exclude=is_type)
            except ValueError as err:
                raise SessionError(f"the donor pool (observed) is empty: {err}") from err
        elif pool == "niche":
            from cellina.counterfactual import cluster_pool

            if "cellina_s_cluster" not in adata.obs:
                raise SessionError("no niche clusters of s yet: train or load a model first")
            try:
                idx = cluster_pool(adata, "cellina_s_cluster", [str(niche_cluster)])
            except ValueError as err:
                raise SessionError(f"niche cluster {niche_cluster!r} not found in obs['cellina_s_cluster']") from err
        else:
            raise SessionError(f"unknown donor pool {pool!r}; use 'lasso', 'observed' or 'niche'")
        if idx.size == 0:
            raise SessionError(f"the donor pool ({pool}) is empty")
        return idx

    # ------------------------------------------------------------------ gene shifts
    def add_gene_shift(
        self, gene: str, value: float, senders: Sequence[str] = (), region: bool = False
    ) -> None:
        """Shift ``gene`` in the neighbours' expression by ``value`` (natural-log fold change).

        ``senders`` restricts the shift to neighbours of those cell types; ``region`` to
        neighbours inside the focal lasso. A row with the same gene and restrictions is
        replaced; rows whose restrictions overlap add up on the cells they share.
        """
        adata = self.require_adata()
        gene = str(gene)
        if gene not in adata.var_names:
            raise SessionError(f"unknown gene {gene!r}: not in the AnnData's var_names")
        value = float(value)
        if not np.isfinite(value):
            raise SessionError(f"the shift of {gene!r} must be a finite number, got {value}")
        senders = tuple(str(s) for s in senders)
        if senders:
            if self.keys.cell_type_key is None:
                raise SessionError("restricting senders needs the cell-type key")
            known = set(self.obs_values(self.keys.cell_type_key).astype(str).unique())
            unknown = sorted(set(senders) - known)
            if unknown:
                raise SessionError(f"unknown sender cell type(s) {unknown}")
        old = self.gene_shifts
        same = (old["gene"] == gene) & (old["senders"].map(tuple) == senders) & (old["region"] == bool(region))
        table = old[~same.to_numpy(dtype=bool)] if len(old) else old
        row = pd.DataFrame({"gene": [gene], "value": [value], "senders": [senders], "region": [bool(region)]})
        self.gene_shifts = pd.concat([table, row], ignore_index=True) if len(table) else row
        self.events.gene_shifts.emit()

    def remove_gene_shift(self, row: int) -> None:
        """Remove one row of the shift table (by position)."""
        if not 0 <= int(row) < len(self.gene_shifts):
            raise SessionError(f"the shift table has no row {row} (it has {len(self.gene_shifts)})")
        self.gene_shifts = self.gene_shifts.drop(index=self.gene_shifts.index[int(row)]).reset_index(drop=True)
        self.events.gene_shifts.emit()

    def clear_gene_shifts(self) -> None:
        """Empty the shift table."""
        self.gene_shifts = _empty_shift_table()
        self.events.gene_shifts.emit()

    def fill_from_contrast(
        self, control_domain: str, target_domain: str, n_genes: int = 20, holdout: str | None = None
    ) -> pd.DataFrame:
        """Put in the top-``n_genes`` observed pseudobulk shifts per cell type between two domains.

        As in the published tutorial: per sender cell type, its own target-minus-control
        pseudobulk log-fold changes; a ``holdout`` type gets the global shift of all other
        types instead, so its own change never enters the perturbation.
        """
        from cellina.plugin._workflow import contrast_shift_table

        table = contrast_shift_table(self.require_adata(), self.keys, control_domain, target_domain, n_genes, holdout)
        self.gene_shifts = table
        self.events.gene_shifts.emit()
        return table

    # ------------------------------------------------------------------ runs
    def add_run(self, result: RunResult) -> None:
        """Keep a run and make it the current one."""
        self.runs[result.name] = result
        self.current_run = result.name
        self.events.runs.emit()
        self.events.current_run.emit(result.name)

    def set_current_run(self, name: str) -> None:
        """Switch the displayed run."""
        if name not in self.runs:
            raise SessionError(f"no run named {name!r} (runs: {list(self.runs)})")
        self.current_run = name
        self.events.current_run.emit(name)

    def next_run_name(self, kind: str) -> str:
        """``edge 1``, ``node 2``, ...: a name not used yet."""
        i = 1
        while f"{kind} {i}" in self.runs:
            i += 1
        return f"{kind} {i}"

    # ------------------------------------------------------------------ scripting
    def preprocess(self, **params: Any) -> ad.AnnData:
        """Run preprocessing synchronously (see :class:`PreprocessParams` for the arguments)."""
        from cellina.plugin import _workflow as wf

        params = PreprocessParams(**params)
        adata = wf.run_sync(wf.preprocess_steps(self.require_adata(), self.keys, params))
        wf.apply_preprocessed(self, adata, params)
        return adata

    def train(self, **params: Any) -> Any:
        """Train a model synchronously (see :class:`TrainParams`), then compute latents and clusters."""
        from cellina.plugin import _workflow as wf

        params = TrainParams(**params)
        result = wf.run_sync(wf.train_steps(self.require_adata(), self.keys, params))
        wf.apply_trained(self, result, params)
        self.compute_latents()
        return self.model

    def load_model(self, path: str) -> Any:
        """Load a model folder; its genes must match the data's."""
        from cellina.plugin import _workflow as wf

        model = wf.load_model(self.require_adata(), self.keys, path)
        self.set_model(model, source=str(path))
        self.compute_latents()
        return model

    def save_model(self, path: str, overwrite: bool = False) -> None:
        """Save the model folder (scvi-tools layout)."""
        self.require_model().save(str(path), overwrite=overwrite, save_anndata=False)
        self.model_source = str(path)

    def compute_latents(self, method: str = "kmeans", n_clusters: int = 8) -> None:
        """``z`` and ``s`` of every cell and their clusters."""
        from cellina.plugin import _workflow as wf

        latents = wf.run_sync(wf.latent_steps(self.require_model(), self.require_adata(), method, n_clusters))
        self.set_latents(latents)

    def run_edge(self, **params: Any) -> RunResult:
        """Edge perturbation of the focal selection (see :func:`_workflow.edge_steps`)."""
        from cellina.plugin import _workflow as wf

        job = wf.prepare_edge(self, **params)
        result = wf.run_sync(wf.edge_steps(**job))
        self.add_run(result)
        return result

    def run_node(self, **params: Any) -> RunResult:
        """Node perturbation of the focal selection with the gene-shift table."""
        from cellina.plugin import _workflow as wf

        job = wf.prepare_node(self, **params)
        result = wf.run_sync(wf.node_steps(**job))
        self.add_run(result)
        return result

    def export(self, path: str) -> ad.AnnData:
        """Write the perturbed AnnData (atomic) and return what was written."""
        from cellina.plugin import _workflow as wf

        return wf.export(self, path)


# ---------------------------------------------------------------------- helpers
def validate_keys(adata: ad.AnnData, keys: TissueKeys) -> None:
    """Check that every key of ``keys`` exists in ``adata``; raise naming the first missing one."""
    if keys.spatial_key is not None:
        if keys.spatial_key not in adata.obsm:
            raise SessionError(
                f"coordinates key {keys.spatial_key!r} not found in obsm (available: {sorted(adata.obsm.keys())})"
            )
    else:
        for column in (keys.x_column, keys.y_column):
            if column is None or column not in adata.obs:
                raise SessionError(f"coordinate column {column!r} not found in obs")
    if not (np.isfinite(keys.pixel_size) and keys.pixel_size > 0):
        raise SessionError(f"pixel size must be a positive number of micrometres, got {keys.pixel_size}")
    for what, column in (("cell-type", keys.cell_type_key), ("domain", keys.domain_key), ("batch", keys.batch_key)):
        if column is not None and column not in adata.obs:
            raise SessionError(f"{what} column {column!r} not found in obs")
    if keys.counts_layer is not None and keys.counts_layer not in adata.layers:
        raise SessionError(f"counts layer {keys.counts_layer!r} not found (layers: {list(adata.layers.keys())})")


def guess_keys(adata: ad.AnnData, pixel_size: float = 1.0) -> TissueKeys:
    """Sensible keys for an AnnData: common scverse/squidpy names, coordinates by :func:`find_coordinates`.

    Raises
    ------
    SessionError
        No coordinates were found; the message says what was looked for.
    """
    def first(candidates, where):
        return next((c for c in candidates if c in where), None)

    try:
        spatial_key, x_column, y_column = find_coordinates(adata)
    except CoordinatesNotFoundError as err:
        raise SessionError(str(err)) from None
    return TissueKeys(
        spatial_key=spatial_key,
        x_column=x_column,
        y_column=y_column,
        pixel_size=pixel_size,
        cell_type_key=first(("cell_type", "coarse_type", "celltype", "cell_types", "leiden"), adata.obs),
        domain_key=first(("domain", "domains", "region", "typ"), adata.obs),
        batch_key=None,
        counts_layer="counts" if "counts" in adata.layers else None,
    )


def coordinates(adata: ad.AnnData, keys: TissueKeys) -> np.ndarray:
    """(x, y) coordinates in the data's own unit, from obsm or two obs columns."""
    if keys.spatial_key is not None:
        if keys.spatial_key not in adata.obsm:
            raise SessionError(f"coordinates key {keys.spatial_key!r} not found in obsm")
        xy = np.asarray(adata.obsm[keys.spatial_key])[:, :2]
    else:
        for column in (keys.x_column, keys.y_column):
            if column not in adata.obs:
                raise SessionError(f"coordinate column {column!r} not found in obs")
        xy = adata.obs[[keys.x_column, keys.y_column]].to_numpy()
    try:
        xy = xy.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise SessionError(f"coordinates are not numeric: {err}") from None
    if not np.all(np.isfinite(xy)):
        raise SessionError("coordinates hold NaN or infinite values")
    return xy


def matches(series: pd.Series, value: Any) -> np.ndarray:
    """Cells whose value, read as text, equals ``value``: compared on category codes when possible.

    Turning 500k categorical values into strings costs a noticeable pause on the main
    thread; comparing the few category names and then the integer codes does not.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        names = np.asarray(series.cat.categories.astype(str))
        return np.isin(series.cat.codes.to_numpy(), np.flatnonzero(names == str(value)))
    return series.astype(str).to_numpy() == str(value)


def graph_key(adata: ad.AnnData) -> str:
    """The unmasked spatial graph: ``spatial_connectivities_orig`` when present, else the plain one."""
    return "spatial_connectivities_orig" if "spatial_connectivities_orig" in adata.obsp else "spatial_connectivities"


def as_mask(values: Any, n: int, what: str) -> np.ndarray:
    """Boolean mask of length ``n`` from a mask or integer positions."""
    arr = np.asarray(values)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise SessionError(f"{what}: mask has shape {arr.shape}, expected ({n},)")
        return arr.copy()
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SessionError(f"{what}: expected a boolean mask or integer positions, got {arr.dtype}")
    arr = arr.astype(np.int64).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise SessionError(f"{what}: positions out of range 0..{n - 1}")
    mask = np.zeros(n, dtype=bool)
    mask[arr] = True
    return mask


def params_dict(params: Any) -> dict[str, Any]:
    """Dataclass parameters as a plain dict (for provenance)."""
    return asdict(params)
