"""Gene shifts for node counterfactuals: one table type shared by every face.

A row shifts one gene in sender cells by ``value`` (a natural-log fold change: log-space add
on log-normalised values, or a factor ``e**value`` on counts). ``senders`` restricts the row
to senders of some groups (values of a sender column, usually the cell type; empty = every
sender), ``region`` to senders inside the focal region (e.g. a lasso).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

COLUMNS = ("gene", "value", "senders", "region")


def _senders(value: Any) -> tuple[str, ...]:
    """A row's sender groups: a tuple of names from a tuple, a list, a ';'-separated string or nothing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ()
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(";") if s.strip())
    return tuple(str(s) for s in value)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{where}: 'region' must be true or false, got {value!r}.")


@dataclass(frozen=True)
class GeneShifts:
    """A table of gene shifts applied to sender cells (columns ``gene, value, senders, region``).

    Build it with :meth:`from_rows`, :meth:`from_mapping`, :meth:`from_csv` or
    :meth:`from_contrast`; :func:`cellina.counterfactual.node_counterfactual` applies it.
    """

    table: pd.DataFrame

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", self._checked(self.table))

    @staticmethod
    def _checked(table: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"GeneShifts needs a DataFrame, got {type(table).__name__}.")
        missing = {"gene", "value"} - set(table.columns)
        if missing:
            raise ValueError(f"the gene-shift table needs columns 'gene' and 'value'; missing {sorted(missing)}.")
        out = pd.DataFrame({"gene": table["gene"].astype(str).to_numpy()})
        values = pd.to_numeric(table["value"], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"gene shift of {out['gene'].iloc[np.argmax(bad)]!r} is not a finite number.")
        out["value"] = values
        senders = table["senders"] if "senders" in table else table.get("group")
        out["senders"] = [_senders(v) for v in senders] if senders is not None else [()] * len(out)
        regions = table["region"] if "region" in table else [False] * len(out)
        out["region"] = [_as_bool(v, f"row {i} ({g!r})") for i, (v, g) in enumerate(zip(regions, out["gene"]))]
        return out.reset_index(drop=True)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> GeneShifts:
        """From records with ``gene``, ``value`` and optionally ``senders`` and ``region``."""
        records = [{"senders": (), "region": False, **dict(row)} for row in rows]
        return cls(pd.DataFrame(records, columns=list(COLUMNS)))

    @classmethod
    def from_mapping(cls, shifts: Mapping[str, Any]) -> GeneShifts:
        """From ``{gene: value}`` (every sender) or ``{group: {gene: value}}`` (the group's senders)."""
        rows = []
        for key, value in shifts.items():
            if isinstance(value, (Mapping, pd.Series)):
                rows += [{"gene": g, "value": v, "senders": (str(key),)} for g, v in dict(value).items()]
            else:
                rows.append({"gene": key, "value": value, "senders": ()})
        return cls.from_rows(rows)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> GeneShifts:
        """From a CSV with columns ``gene, value`` and optionally ``senders`` (';'-separated) or
        ``group``, and ``region`` (true/false)."""
        try:
            table = pd.read_csv(path, dtype={"gene": str})
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise ValueError(f"could not read gene shifts from {str(path)!r}: {err}") from err
        try:
            return cls(table)
        except ValueError as err:
            raise ValueError(f"{str(path)!r}: {err}") from err

    @classmethod
    def from_contrast(
        cls,
        adata: Any,
        labels_key: str,
        domains_key: str,
        control_domain: str,
        target_domain: str,
        n_genes: int = 20,
        holdout: str | None = None,
        layer: str | None = "counts",
    ) -> GeneShifts:
        """Each sender type's observed pseudobulk change from ``control_domain`` to ``target_domain``.

        The ``n_genes`` largest changes per type become rows restricted to that type; a
        ``holdout`` type gets the change of all other types instead of its own (the published
        protocol, so its own response is never shown to the model).
        """
        from cellina.evaluation import global_pseudobulk_lfc, perturbation_table, pseudobulk_lfc

        lfc = pseudobulk_lfc(adata, labels_key, domains_key, control_domain, target_domain, layer=layer)
        global_lfc = None
        if holdout:
            global_lfc = global_pseudobulk_lfc(
                adata, domains_key, control_domain, target_domain, labels_key=labels_key, exclude=holdout, layer=layer
            )
        per_type = perturbation_table(lfc, n_genes=n_genes, holdout=holdout or None, global_lfc=global_lfc)
        rows = [{"gene": g, "value": v, "senders": (str(t),)} for t, s in per_type.items() for g, v in s.items()]
        if not rows:
            raise ValueError(f"no cell type is present in both {control_domain!r} and {target_domain!r}.")
        return cls.from_rows(rows)

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.table)

    @property
    def genes(self) -> list[str]:
        return sorted(set(self.table["gene"]))

    @property
    def uses_senders(self) -> bool:
        return any(len(s) for s in self.table["senders"])

    @property
    def uses_region(self) -> bool:
        return bool(self.table["region"].any())

    def check_genes(self, var_names: Iterable[str]) -> None:
        """Raise naming the genes of the table that are not in ``var_names``."""
        unknown = sorted(set(self.table["gene"]) - {str(g) for g in var_names})
        if unknown:
            raise ValueError(f"unknown gene(s) in the shift table: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}")

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the table as CSV (senders ';'-separated), through a temporary file and a rename."""
        from cellina._io import write_csv_atomic

        write_csv_atomic(self.table.assign(senders=[";".join(s) for s in self.table["senders"]]), path, index=False)

    def sender_groups(
        self, n_cells: int, types: pd.Series | None = None, region: np.ndarray | None = None
    ) -> tuple[pd.Categorical, dict[str, dict[str, float]]]:
        """Per-cell group labels and ``{group: {gene: shift}}`` realising the rows' restrictions.

        Which rows apply to a cell depends only on its sender group (``types``) and on whether
        it lies in ``region``, so rows are resolved once per (group, in-region) pair and cells
        take their pair's group by one integer lookup: no per-cell string work.
        """
        rows = list(self.table.itertuples(index=False))
        if types is None and self.uses_senders:
            raise ValueError("the shift table restricts senders to groups, but no sender column was given.")
        if region is None and self.uses_region:
            gene = self.table.loc[self.table["region"], "gene"].iloc[0]
            raise ValueError(f"the shift of {gene!r} is restricted to the focal region, but no region was given.")
        if types is not None:
            series = types if isinstance(types.dtype, pd.CategoricalDtype) else pd.Series(types).astype("category")
            categories = [str(c) for c in series.cat.categories]
            type_code = series.cat.codes.to_numpy().astype(np.int64) + 1  # 0 = no group
        else:
            categories, type_code = [], np.zeros(int(n_cells), dtype=np.int64)
        if type_code.size != n_cells or (region is not None and len(region) != n_cells):
            raise ValueError(f"the sender column and the region must have one entry per cell ({n_cells}).")
        in_region = np.zeros(type_code.size, dtype=np.int64) if region is None else np.asarray(region, dtype=np.int64)
        key = type_code * 2 + in_region
        n_keys = 2 * (len(categories) + 1)
        present = np.flatnonzero(np.bincount(key, minlength=n_keys))
        names = np.array([None, *categories], dtype=object)
        applies = np.ones((present.size, len(rows)), dtype=bool)
        for j, row in enumerate(rows):
            if len(row.senders):
                applies[:, j] &= np.isin(names[present // 2].astype(str), list(row.senders)) & (present // 2 > 0)
            if row.region:
                applies[:, j] &= (present % 2).astype(bool)
        patterns, pattern_of_key = np.unique(applies, axis=0, return_inverse=True)
        lookup = np.zeros(n_keys, dtype=np.int64)
        lookup[present] = np.asarray(pattern_of_key).ravel()
        perturbations: dict[str, dict[str, float]] = {}
        for g, pattern in enumerate(patterns):
            shifts: dict[str, float] = {}
            for row in (r for r, on in zip(rows, pattern) if on):
                shifts[str(row.gene)] = shifts.get(str(row.gene), 0.0) + float(row.value)
            if shifts:
                perturbations[f"g{g}"] = shifts
        groups = pd.Categorical.from_codes(lookup[key], categories=[f"g{g}" for g in range(len(patterns))])
        return groups, perturbations
