"""How perturbed sender values become niche features, read from the niche-feature record.

:func:`cellina.spatial.compute_spatial_features` records which genes and which transform
(counts -> niche representation) it used. A perturbed niche must use the same, so that it
is comparable with the factual one; these helpers read that record, check the source
against it, and choose the per-row value map that turns perturbed values into features.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ._features import detect_representation
from ._perturb_plan import _Plan
from ._validation import CellinaKeyError, CellinaTypeError, _show

# Target sum assumed when counts are perturbed but no niche-feature record exists.
_DEFAULT_TARGET_SUM = 1e4


def _features_record(adata: Any, features_key: str) -> dict[str, Any] | None:
    if not isinstance(features_key, str) or not features_key:
        raise CellinaTypeError(f"`features_key` must be a non-empty string, got {features_key!r}.")
    rec = adata.uns.get("cellina", {}).get("spatial_features", {}).get(features_key)
    return dict(rec) if rec is not None else None


def _check_representation(plan: _Plan, add_shift: bool, record: dict[str, Any] | None) -> None:
    """Say loudly when the source does not match the shift mode or the niche features."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transform, target_sum = detect_representation(plan.source, plan.source_name)
    if add_shift and transform == "identity":
        warnings.warn(
            f"add_shift=True adds log-fold changes to log-normalised values, but "
            f"{plan.source_name} looks like raw counts. Run sc.pp.normalize_total and "
            "sc.pp.log1p first, or use add_shift=False with counts.",
            UserWarning,
            stacklevel=3,
        )
    elif not add_shift and transform != "identity":
        warnings.warn(
            f"add_shift=False multiplies counts, but {plan.source_name} does not look like "
            "raw counts (non-integer values). Pass layer= naming the counts layer, or use "
            "add_shift=True for log-normalised values.",
            UserWarning,
            stacklevel=3,
        )
    elif (
        add_shift
        and record is not None
        and (
            record["transform"] != transform
            or (transform == "log1p_normalize_total" and not np.isclose(record["target_sum"], target_sum))
        )
    ):
        warnings.warn(
            f"{plan.source_name} looks like {transform!r} (target_sum={target_sum}), but the "
            f"niche features were built from {record['transform']!r} "
            f"(target_sum={record['target_sum']}); the perturbed features will not be "
            "comparable with them.",
            UserWarning,
            stacklevel=3,
        )


def _output_positions(adata: Any, record: dict[str, Any] | None, features_key: str) -> np.ndarray:
    """Gene positions of the perturbed niche features: the record's genes, else all."""
    if record is None:
        return np.arange(adata.n_vars)
    positions = adata.var_names.get_indexer([str(g) for g in record["genes"]])
    if (positions < 0).any():
        raise CellinaKeyError(
            f"The niche-feature record {features_key!r} names genes missing from "
            f"adata.var_names: {_show(np.asarray(record['genes'])[positions < 0])}."
        )
    if int(record.get("n_vars", adata.n_vars)) != adata.n_vars:
        raise ValueError(
            f"The niche features {features_key!r} were computed on {record['n_vars']} genes "
            f"but the AnnData now has {adata.n_vars}; recompute them first."
        )
    return positions


def _neighbor_gene_positions(adata: Any, neighbor_genes: Any) -> np.ndarray:
    """Gene positions of the output features the caller named (the published ``neighbor_genes``)."""
    genes = [neighbor_genes] if isinstance(neighbor_genes, str) else [str(g) for g in neighbor_genes]
    positions = adata.var_names.get_indexer(genes)
    if not genes or (positions < 0).any():
        unknown = [g for g, p in zip(genes, positions) if p < 0]
        raise CellinaKeyError(f"neighbor_genes must name genes of adata.var_names; unknown: {_show(unknown)}.")
    return positions


def _niche_transform(add_shift: bool, record: dict[str, Any] | None, features_key: str) -> tuple[str, float | None]:
    """How perturbed values become niche features: shifted log values are used as they are."""
    if add_shift:
        return "identity", None
    if record is not None:
        return record["transform"], record["target_sum"]
    warnings.warn(
        f"No niche-feature record {features_key!r} in adata.uns['cellina']; the perturbed "
        "counts are transformed with log1p(normalize_total(target_sum=1e4)).",
        UserWarning,
        stacklevel=3,
    )
    return "log1p_normalize_total", _DEFAULT_TARGET_SUM


def _niche_map(
    transform: str, target_sum: float | None, add_shift: bool, r: np.ndarray, new_total: np.ndarray
) -> tuple[str, np.ndarray]:
    """The per-row value map (kind, scale) from perturbed source values to niche values."""
    if add_shift:
        return "log_rescale", r
    if transform == "log1p_normalize_total":
        # log1p(t * r c / (r * new_total)) = log1p(t c / new_total): renormalising counts
        # does not change normalised features.
        scale = np.divide(float(target_sum), new_total, out=np.zeros_like(new_total), where=new_total > 0)
        return "log1p_scale", scale
    if transform == "log1p":
        return "log1p_scale", r
    return "scale", r
