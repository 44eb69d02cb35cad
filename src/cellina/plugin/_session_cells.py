"""The session's cells: named selections, donor pools and the gene-shift table.

A mixin of :class:`~cellina.plugin._session.CellinaSession`: quick main-thread state
changes, each emitting the session event for what it changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from cellina.counterfactual import GeneShifts
from cellina.plugin._selection import Engine, points_in_polygons
from cellina.plugin._state import CLUSTER_COLUMNS, DONORS, FOCAL, Selection, SessionError, TissueKeys
from cellina.plugin._tissue import as_mask, coordinates, counts_layer_of, graph_key, matches


class CellsMixin:
    """Selections, donor pools and gene shifts of :class:`~cellina.plugin._session.CellinaSession`."""

    adata: Any
    keys: TissueKeys
    events: Any
    selections: dict[str, Selection]
    gene_shifts: GeneShifts

    # ------------------------------------------------------------------ coordinates
    def cell_spacing(self, keys: TissueKeys | None = None) -> float:
        """Median distance between neighbouring cells in the coordinates' own unit, read through
        ``keys`` (default: the session's); measured once per tissue and coordinates."""
        from cellina import io_keys

        adata = self.require_adata()
        keys = keys or self.keys
        where = (id(adata), adata.n_obs, keys.spatial_key, keys.x_column, keys.y_column)
        cached = getattr(self, "_spacing", None)
        if cached is None or cached[0] != where:
            cached = (where, io_keys.median_nearest_distance(coordinates(adata, keys)))
            self._spacing = cached
        return cached[1]

    def units_problem(self, keys: TissueKeys | None = None) -> str | None:
        """Why the coordinates read through ``keys`` (default: the session's) do not look like
        micrometres (pixels with a pixel size of 1, usually), or None (:func:`cellina.io_keys.units_problem`)."""
        from cellina import io_keys

        keys = keys or self.keys
        names = (keys.x_column, keys.y_column) if keys.spatial_key is None else (keys.spatial_key,)
        return io_keys.units_problem(self.cell_spacing(keys), keys.pixel_size, names)

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

    def focal_indices(self) -> np.ndarray:
        """The focal cells, or a :class:`SessionError` when none are selected."""
        focal = self.selection_indices(FOCAL) if FOCAL in self.selections else None
        if focal is None or focal.size == 0:
            raise SessionError("no focal cells: draw a focal lasso (or relax its cell-type/domain filter)")
        return focal

    # ------------------------------------------------------------------ donor pools
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
        if pool == "lasso":
            idx = self.selection_indices(DONORS)
        elif pool == "observed":
            idx = self._observed_pool(observed_cell_type, observed_domain, connectivity_key)
        elif pool == "niche":
            idx = self._niche_pool(niche_cluster)
        else:
            raise SessionError(f"unknown donor pool {pool!r}; use 'lasso', 'observed' or 'niche'")
        if idx.size == 0:
            raise SessionError(f"the donor pool ({pool}) is empty")
        return idx

    def _observed_pool(self, cell_type: str | None, domain: str | None, connectivity_key: str | None) -> np.ndarray:
        from cellina.counterfactual import observed_neighbour_pool

        adata = self.require_adata()
        if self.keys.cell_type_key is None or self.keys.domain_key is None:
            raise SessionError("the observed-neighbour pool needs the cell-type and domain keys")
        is_type = matches(self.obs_values(self.keys.cell_type_key), cell_type)
        in_domain = matches(self.obs_values(self.keys.domain_key), domain)
        if not is_type.any():
            raise SessionError(f"cell type {cell_type!r} not found in obs[{self.keys.cell_type_key!r}]")
        if not in_domain.any():
            raise SessionError(f"domain {domain!r} not found in obs[{self.keys.domain_key!r}]")
        key = connectivity_key or graph_key(adata)
        if key not in adata.obsp:
            raise SessionError(f"no spatial graph obsp[{key!r}]: run preprocessing first")
        try:
            return observed_neighbour_pool(adata, is_type & in_domain, connectivity_key=key, exclude=is_type)
        except ValueError as err:
            raise SessionError(f"the donor pool (observed) is empty: {err}") from err

    def _niche_pool(self, niche_cluster: str | None) -> np.ndarray:
        from cellina.counterfactual import cluster_pool

        column = CLUSTER_COLUMNS["s"]
        if column not in self.require_adata().obs:
            raise SessionError("no niche clusters of s yet: train or load a model first")
        try:
            return cluster_pool(self.adata, column, [str(niche_cluster)])
        except ValueError as err:
            raise SessionError(f"niche cluster {niche_cluster!r} not found in obs[{column!r}]") from err

    # ------------------------------------------------------------------ gene shifts
    def add_gene_shift(self, gene: str, value: float, senders: Sequence[str] = (), region: bool = False) -> None:
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
        row = {"gene": gene, "value": value, "senders": senders, "region": bool(region)}
        same = ("gene", "senders", "region")
        kept = [r for r in self.gene_shifts.table.to_dict("records") if any(r[k] != row[k] for k in same)]
        self.gene_shifts = GeneShifts.from_rows([*kept, row])
        self.events.gene_shifts.emit()

    def remove_gene_shift(self, row: int) -> None:
        """Remove one row of the shift table (by position)."""
        table = self.gene_shifts.table
        if not 0 <= int(row) < len(table):
            raise SessionError(f"the shift table has no row {row} (it has {len(table)})")
        self.gene_shifts = GeneShifts(table.drop(index=table.index[int(row)]))
        self.events.gene_shifts.emit()

    def clear_gene_shifts(self) -> None:
        """Empty the shift table."""
        self.gene_shifts = GeneShifts.from_rows([])
        self.events.gene_shifts.emit()

    def set_gene_shifts(self, shifts: GeneShifts | pd.DataFrame) -> None:
        """Replace the shift table (e.g. one read with :meth:`GeneShifts.from_csv`); genes must exist."""
        shifts = shifts if isinstance(shifts, GeneShifts) else GeneShifts(shifts)
        try:
            shifts.check_genes(self.require_adata().var_names)
        except ValueError as err:
            raise SessionError(str(err)) from err
        self.gene_shifts = shifts
        self.events.gene_shifts.emit()

    def fill_from_contrast(
        self, control_domain: str, target_domain: str, n_genes: int = 20, holdout: str | None = None
    ) -> GeneShifts:
        """Put in the top-``n_genes`` observed pseudobulk shifts per cell type between two domains.

        As in the published tutorial: per sender cell type, its own target-minus-control
        pseudobulk log-fold changes; a ``holdout`` type gets the global shift of all other
        types instead, so its own change never enters the perturbation.
        """
        adata = self.require_adata()
        keys = self.keys
        if keys.cell_type_key is None or keys.domain_key is None:
            raise SessionError("filling from a contrast needs the cell-type and domain keys")
        layer = counts_layer_of(adata, keys)
        try:
            shifts = GeneShifts.from_contrast(
                adata,
                keys.cell_type_key,
                keys.domain_key,
                control_domain,
                target_domain,
                n_genes=n_genes,
                holdout=holdout,
                layer=layer,
            )
        except ValueError as err:
            raise SessionError(str(err)) from err
        self.gene_shifts = shifts
        self.events.gene_shifts.emit()
        return shifts

    def sender_inputs(self, shifts: GeneShifts) -> tuple[str | None, np.ndarray | None]:
        """The sender column and focal lasso region a table needs (a :class:`SessionError` if missing)."""
        key = self.keys.cell_type_key
        sender_key = key if key is not None and key in self.require_adata().obs else None
        region = self.selections[FOCAL].base.copy() if FOCAL in self.selections else None
        if region is None and shifts.uses_region:
            gene = shifts.table.loc[shifts.table["region"], "gene"].iloc[0]
            raise SessionError(f"the shift of {gene!r} is restricted to the lasso region, but no focal lasso is drawn")
        if sender_key is None and shifts.uses_senders:
            raise SessionError("restricting senders needs the cell-type key")
        return sender_key, region

    def sender_groups(self, shifts: GeneShifts | pd.DataFrame | None = None):
        """Per-cell sender groups and ``{group: {gene: shift}}`` for a table (default: the session's)."""
        shifts = self.gene_shifts if shifts is None else shifts
        shifts = shifts if isinstance(shifts, GeneShifts) else GeneShifts(shifts)
        sender_key, region = self.sender_inputs(shifts)
        types = self.adata.obs[sender_key] if sender_key is not None else None
        return shifts.sender_groups(self.adata.n_obs, types, region)
