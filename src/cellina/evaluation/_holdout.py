"""The protocol's tissue: checked inputs, the held-out split, the masked graph, donors and shifts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np

from cellina.keys import LAYERS, OBSM, OBSP

from ._config import LeaveOneOutConfig


@dataclass
class HoldoutTissue:
    """A tissue prepared for one held-out type.

    Attributes
    ----------
    work
        Prepared copy (counts layer, log-normalised layer, masked graph, unmasked graph, niche
        features); models are trained and decoded on it.
    holdout
        The held-out type; ``labels`` and ``domains`` every cell's type and domain.
    train, validation, target, control
        Cell positions: the training split, the held-out target-domain cells (the test part),
        and the same type's control-domain cells whose change is predicted.
    pool
        The edge donor pool: observed neighbours of the target cells (unmasked graph), minus
        the held-out type.
    shifts, table
        The node perturbation as a :class:`~cellina.counterfactual.GeneShifts` table and as
        ``{type: {gene: shift}}`` (``None`` without a node perturbation).
    counts_layer
        The layer of ``work`` holding counts.
    """

    work: ad.AnnData
    holdout: str
    labels: np.ndarray
    domains: np.ndarray
    train: np.ndarray
    validation: np.ndarray
    target: np.ndarray
    control: np.ndarray
    pool: np.ndarray
    shifts: Any = None
    table: dict[str, dict[str, float]] | None = None
    counts_layer: str = LAYERS.COUNTS

    @property
    def counts(self) -> Any:
        return self.work.layers[self.counts_layer]

    @property
    def control_counts(self) -> Any:
        return self.counts[self.control]

    @property
    def target_counts(self) -> Any:
        return self.counts[self.target]

    def indices(self) -> dict[str, np.ndarray]:
        """The positions the result reports."""
        return {
            "train": self.train,
            "validation": self.validation,
            "test": self.target,
            "control": self.control,
            "target": self.target,
            "neighbours": self.pool,
        }


def check_inputs(adata: Any, holdout: str, config: LeaveOneOutConfig) -> tuple[np.ndarray, np.ndarray]:
    """Every cell's type and domain, after checking the keys, domains and held-out type exist."""
    for key, what in ((config.labels_key, "labels"), (config.domains_key, "domains")):
        if key not in adata.obs:
            raise ValueError(f"{what} key {key!r} not found in adata.obs (columns: {list(adata.obs.columns)}).")
    if config.layer is not None and config.layer not in adata.layers:
        raise ValueError(f"counts layer {config.layer!r} not found in adata.layers ({list(adata.layers.keys())}).")
    labels = adata.obs[config.labels_key].astype(str).to_numpy()
    domains = adata.obs[config.domains_key].astype(str).to_numpy()
    for d in (config.control_domain, config.target_domain):
        if d not in set(domains):
            raise ValueError(
                f"domain {d!r} not found in adata.obs[{config.domains_key!r}] (values: {sorted(set(domains))})."
            )
    if config.control_domain == config.target_domain:
        raise ValueError(f"`control_domain` and `target_domain` are both {config.control_domain!r}.")
    if str(holdout) not in set(labels):
        raise ValueError(
            f"held-out type {holdout!r} not found in adata.obs[{config.labels_key!r}] (values: {sorted(set(labels))})."
        )
    for d in (config.control_domain, config.target_domain):
        if not np.any((labels == str(holdout)) & (domains == d)):
            raise ValueError(f"held-out type {holdout!r} has no cells in domain {d!r}.")
    if OBSM.SPATIAL not in adata.obsm:
        raise ValueError(f"adata.obsm[{OBSM.SPATIAL!r}] (cell coordinates) is missing.")
    return labels, domains


def _prepared(adata: Any, config: LeaveOneOutConfig, target: np.ndarray) -> ad.AnnData:
    """The tissue prepared as every face prepares it, with the target cells out of the training graph."""
    from cellina.preprocessing import composition_arguments, prepare_tissue

    counts = adata.X if config.layer is None else adata.layers[config.layer]
    # a light AnnData sharing the caller's matrices: prepare_tissue makes the one copy
    base = ad.AnnData(
        X=counts,
        obs=adata.obs,
        var=adata.var,
        obsm={OBSM.SPATIAL: adata.obsm[OBSM.SPATIAL]},
        layers={config.counts_layer: counts},
    )
    return prepare_tissue(
        base,
        bandwidth=config.bandwidth,
        counts_layer=config.counts_layer,
        max_neighbours=config.max_neighbours,
        cutoff=config.cutoff,
        library_key=config.library_key,
        test_indices=target,
        **composition_arguments(config.composition, config.labels_key),
    )


def _node_shifts(work: ad.AnnData, holdout: str, config: LeaveOneOutConfig):
    """Pseudobulk shifts per sender type; the held-out type gets the shift of all other types."""
    from cellina.counterfactual import GeneShifts

    shifts = GeneShifts.from_contrast(
        work,
        config.labels_key,
        config.domains_key,
        config.control_domain,
        config.target_domain,
        n_genes=config.n_pert_genes,
        holdout=holdout,
        layer=config.counts_layer,
    )
    table: dict[str, dict[str, float]] = {}
    for row in shifts.table.itertuples(index=False):
        table.setdefault(row.senders[0], {})[row.gene] = row.value
    return shifts, table


def prepare_holdout(adata: Any, holdout: str, config: LeaveOneOutConfig) -> HoldoutTissue:
    """Check the inputs, split off the held-out cells, build the graphs and the perturbations."""
    from cellina.counterfactual import observed_neighbour_pool
    from cellina.model import holdout_split

    labels, domains = check_inputs(adata, holdout, config)
    holdout = str(holdout)
    is_holdout = labels == holdout
    target = np.flatnonzero(is_holdout & (domains == config.target_domain))
    control = np.flatnonzero(is_holdout & (domains == config.control_domain))
    train, validation, _ = holdout_split(adata.n_obs, target, config.validation_size, config.seed)
    work = _prepared(adata, config, target)
    try:
        pool = observed_neighbour_pool(work, target, connectivity_key=OBSP.UNMASKED, exclude=is_holdout)
    except ValueError:
        raise ValueError(
            f"the held-out {holdout!r} cells in {config.target_domain!r} have no neighbours of another type."
        ) from None
    shifts, table = _node_shifts(work, holdout, config) if "node" in config.perturbations else (None, None)
    return HoldoutTissue(
        work,
        holdout,
        labels,
        domains,
        train,
        validation,
        target,
        control,
        pool,
        shifts,
        table,
        counts_layer=config.counts_layer,
    )
