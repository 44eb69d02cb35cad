"""One truth interface over every generator of cellina.datasets.

``truth_for(adata)`` returns an object with ``mean``, ``edge``, ``node``, ``responsive`` and
``null_genes`` whether ``adata`` is a tissue from :func:`synthetic_tissue` or a world from
:func:`make_world`, so an evaluation needs no knowledge of which generator made its data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from cellina.datasets._errors import DatasetTypeError, TruthKeyError
from cellina.datasets._inputs import as_str_list
from cellina.datasets._params import SHARED_RESPONSE_PROGRAMMES
from cellina.datasets._synthetic import TRUTH_KEY
from cellina.datasets._truth import true_counterfactual_edge, true_counterfactual_node, true_mean
from cellina.datasets.worlds._store import WORLD_KEY
from cellina.datasets.worlds._truth import WorldTruth

PROGRAMME_COLUMN = "cellina_programme"


class Truth(Protocol):
    """What every exact truth offers (positions are 0..n_obs-1 or boolean masks)."""

    def mean(self, indices: Any = None) -> np.ndarray: ...

    def edge(self, focal: Any, donors: Any, *, weights: Any = None) -> np.ndarray: ...

    def node(
        self, focal: Any, perturbations: Mapping[Any, Any], *, groupby: str | None = None, renormalize: bool = False
    ) -> np.ndarray: ...

    def responsive(self, cell_type: str) -> np.ndarray: ...

    def null_genes(self) -> np.ndarray: ...


class TissueTruth:
    """Truth of a tissue made by :func:`synthetic_tissue`, behind the interface of :class:`Truth`."""

    def __init__(self, adata: Any) -> None:
        if TRUTH_KEY not in adata.uns or PROGRAMME_COLUMN not in adata.var:
            raise TruthKeyError(f"adata needs uns[{TRUTH_KEY!r}] and var[{PROGRAMME_COLUMN!r}] of synthetic_tissue")
        self._adata = adata

    def mean(self, indices: Any = None) -> np.ndarray:
        return true_mean(self._adata, indices)

    def edge(self, focal: Any, donors: Any, *, weights: Any = None) -> np.ndarray:
        return true_counterfactual_edge(self._adata, focal, donors, weights=weights)

    def node(
        self, focal: Any, perturbations: Mapping[Any, Any], *, groupby: str | None = None, renormalize: bool = False
    ) -> np.ndarray:
        return true_counterfactual_node(self._adata, focal, perturbations, groupby=groupby, renormalize=renormalize)

    def responsive(self, cell_type: str) -> np.ndarray:
        """The shared response programmes plus ``cell_type``'s own block (another label: the shared ones only)."""
        programme = self._adata.var[PROGRAMME_COLUMN].astype(str).to_numpy()
        responsive = np.isin(programme, SHARED_RESPONSE_PROGRAMMES)
        truth = self._adata.uns[TRUTH_KEY]
        coarse = as_str_list(truth.get("coarse_types", []))
        key = truth.get("type_response_key")
        if key is not None and str(cell_type) in coarse:
            responsive |= np.asarray(self._adata.varm[str(key)])[:, coarse.index(str(cell_type))] != 0
        return responsive

    def null_genes(self) -> np.ndarray:
        return self._adata.var[PROGRAMME_COLUMN].astype(str).to_numpy() == "null"


def has_truth(adata: Any) -> bool:
    """True when ``adata`` carries the exact truth of a cellina.datasets tissue or world."""
    uns, var = getattr(adata, "uns", None), getattr(adata, "var", None)
    if uns is None or var is None:
        return False
    return (TRUTH_KEY in uns or WORLD_KEY in uns) and PROGRAMME_COLUMN in var


def truth_for(adata: Any) -> TissueTruth | WorldTruth:
    """The exact truth of ``adata`` (a whole tissue or world, possibly read back from .h5ad).

    Returns an object with ``mean(indices=None)``, ``edge(focal, donors, *, weights=None)``,
    ``node(focal, perturbations, *, groupby=None, renormalize=False)`` (expected counts, cells x
    genes), ``responsive(cell_type)`` and ``null_genes()`` (boolean masks over genes).
    """
    if not hasattr(adata, "uns") or not hasattr(adata, "var"):
        raise DatasetTypeError(f"expected an AnnData, got {type(adata).__name__}")
    if WORLD_KEY in adata.uns:
        return WorldTruth(adata)
    if TRUTH_KEY in adata.uns:
        return TissueTruth(adata)
    raise TruthKeyError(
        f"adata has neither uns[{WORLD_KEY!r}] (make_world) nor uns[{TRUTH_KEY!r}] "
        "(synthetic_tissue): it carries no exact truth"
    )
