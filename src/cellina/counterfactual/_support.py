"""How much a model saw of the focal cells' own type: training cells and the counts they carry.

A counterfactual for cells of one type rests on what the model learnt about how that type answers
its niche, and it learnt that from the type's training cells. On the evaluation worlds the
direction of a held-out type's predicted change was limited by the count noise in those cells, not
by how far the counterfactual niche lay from training: with the world's exact expected counts in
place of the observed ones, a linear fit on the same cells found the direction on most pairs where
the model missed it (docs/benchmarks.md, "What a held-out type's own cells identify"). The number
of training cells of the type and their counts are the plain measure of that support;
:func:`type_support` reports them, and where the type ranks among the tissue's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.spatial import check_positions

from ._novelty import registered_cell_types, training_reference

#: at most this many focal types are named in the message
MESSAGE_TYPES = 3


@dataclass(frozen=True)
class TypeSupport:
    """The training support of each cell type among the focal cells.

    Attributes
    ----------
    types
        The focal cells' types, most frequent first.
    n_focal
        Focal cells of each type.
    n_training
        Training cells of each type (the model's training cells: every cell but those it held out).
    median_counts
        Median total counts of a type's training cells (NaN without any).
    total_counts
        Total counts over a type's training cells.
    rank
        Each type's place among all types of the tissue by ``total_counts`` (1: the most).
    n_types
        Number of types in the tissue.
    """

    types: tuple[str, ...]
    n_focal: np.ndarray
    n_training: np.ndarray
    median_counts: np.ndarray
    total_counts: np.ndarray
    rank: np.ndarray
    n_types: int

    def message(self) -> str:
        """Sentences for the user: what the model learnt each focal type's response from."""
        parts = []
        for i, name in enumerate(self.types[:MESSAGE_TYPES]):
            if self.n_training[i] == 0:
                parts.append(
                    f"{name} ({self.n_focal[i]} focal cells) has no training cells of its own: its answer to "
                    "the niche comes from the other types only."
                )
                continue
            parts.append(
                f"{name} ({self.n_focal[i]} focal cells): learnt from {self.n_training[i]:,} training cells of "
                f"that type, median {self.median_counts[i]:,.0f} counts ({self.total_counts[i]:,.0f} in all, "
                f"{_ordinal(int(self.rank[i]))} of {self.n_types} types)."
            )
        if len(self.types) > MESSAGE_TYPES:
            parts.append(f"{len(self.types) - MESSAGE_TYPES} more type(s) among the focal cells.")
        parts.append("Fewer cells and counts of a type make the direction of its predicted change noisier.")
        return " ".join(parts)

    def record(self) -> dict[str, Any]:
        """A plain summary for provenance."""
        return {
            "types": list(self.types),
            "n_focal": self.n_focal.astype(np.int64),
            "n_training": self.n_training.astype(np.int64),
            "median_counts": self.median_counts.astype(np.float64),
            "total_counts": self.total_counts.astype(np.float64),
            "rank": self.rank.astype(np.int64),
            "n_types": int(self.n_types),
        }


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _library_sizes(model: Any, adata: Any) -> np.ndarray:
    """Total counts of every cell, from the layer the model was set up on."""
    try:
        layer = model.adata_manager.registry["setup_args"].get("layer")
    except (AttributeError, KeyError, TypeError):
        layer = None
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"adata.layers[{layer!r}] (the model's counts layer) is missing.")
    counts = adata.X if layer is None else adata.layers[layer]
    totals = counts.sum(axis=1) if sp.issparse(counts) else np.asarray(counts).sum(axis=1)
    return np.asarray(totals, dtype=np.float64).ravel()


def type_support(model: Any, adata: Any, focal: Any) -> TypeSupport | None:
    """The training support of the focal cells' types (None when the model knows no cell types).

    Parameters
    ----------
    model
        A trained ``Cellina`` or ``CellinaGCN`` set up with a ``labels_key``.
    adata
        The AnnData the counterfactual runs on (the model's own, or one with its cells in order).
    focal
        Positions of the focal cells.

    Returns
    -------
    TypeSupport or None

    Raises
    ------
    ValueError
        Focal positions out of range.
    KeyError
        The model's counts layer is missing from ``adata``.
    """
    types = registered_cell_types(model, adata)
    if types is None:
        return None
    focal = check_positions(focal, adata.n_obs, "focal")
    training = np.zeros(adata.n_obs, dtype=bool)
    training[training_reference(model, adata)] = True
    sizes = _library_sizes(model, adata)
    names, inverse = np.unique(types, return_inverse=True)
    n_training = np.bincount(inverse[training], minlength=names.size)
    total = np.bincount(inverse[training], weights=sizes[training], minlength=names.size)
    # rank 1 = the type whose training cells carry the most counts
    rank_of = np.empty(names.size, dtype=np.int64)
    rank_of[np.argsort(-total, kind="stable")] = np.arange(1, names.size + 1)
    focal_codes, n_focal = np.unique(inverse[focal], return_counts=True)
    order = np.argsort(-n_focal, kind="stable")
    focal_codes, n_focal = focal_codes[order], n_focal[order]
    medians = np.array(
        [np.median(sizes[training & (inverse == c)]) if n_training[c] else np.nan for c in focal_codes],
        dtype=np.float64,
    )
    return TypeSupport(
        types=tuple(str(names[c]) for c in focal_codes),
        n_focal=n_focal.astype(np.int64),
        n_training=n_training[focal_codes].astype(np.int64),
        median_counts=medians,
        total_counts=total[focal_codes],
        rank=rank_of[focal_codes],
        n_types=int(names.size),
    )
