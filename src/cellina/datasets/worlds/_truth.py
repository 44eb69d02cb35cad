"""Exact factual and counterfactual expected counts of a world, read from its AnnData alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy.sparse as sp

from cellina.datasets._errors import TruthKeyError
from cellina.datasets._inputs import as_str_list, donor_rows, positions, shift_rows, shift_table
from cellina.datasets.worlds._mechanism import Shift
from cellina.datasets.worlds._store import WORLD_KEY, read_world


class WorldTruth:
    """Truth of a world made by :func:`cellina.datasets.make_world` (see :func:`cellina.datasets.truth_for`).

    Every sensed level is a normalised weighted mean over senders of a per-sender property. In the
    observed tissue the weights are the channel's kernel of the distance; in an edge intervention
    the donors replace the whole neighbourhood of every channel with weight 1 each (a rewired
    donor has no distance). A node intervention keeps the kernel neighbourhoods and shifts the
    senders' intrinsic expression, which only ligand channels sense.
    """

    def __init__(self, adata: Any) -> None:
        self._adata = adata
        self.model, self.cells = read_world(adata)
        truth = adata.uns[WORLD_KEY]
        self.coarse_types = as_str_list(truth["coarse_types"])
        self.fine_to_coarse = {str(k): str(v) for k, v in truth["fine_to_coarse"].items()}
        self.channel_names = [c.name for c in self.model.channels]
        self._programme = adata.var["cellina_programme"].astype(str).to_numpy()

    @property
    def n_obs(self) -> int:
        return int(self.cells.fine.size)

    def sensed(self, indices: Any = None) -> np.ndarray:
        """(cells, channels) level each cell senses in the observed tissue (NaN: nothing in reach)."""
        idx = np.arange(self.n_obs) if indices is None else positions(indices, self.n_obs, "indices")
        return self.model.sense(self.cells, idx)

    def mean(self, indices: Any = None) -> np.ndarray:
        """Exact expected counts (cells x genes) of the observed tissue; all cells when ``indices`` is None."""
        idx = np.arange(self.n_obs) if indices is None else positions(indices, self.n_obs, "indices")
        return self.model.expected(self.cells, idx, self.model.sense(self.cells, idx))

    def edge(self, focal: Any, donors: Any, *, weights: Any = None) -> np.ndarray:
        """Exact expected counts of focal cells whose neighbourhood is replaced by donor cells.

        ``donors`` is an (n_focal, k) array of positions (one donor set per focal cell, equal
        weights; a donor listed twice counts twice), a 1-D shared pool, a sequence of arrays, or a
        sparse n_focal x n_obs weight matrix; ``weights`` optionally weighs array donors. A focal
        cell keeps its type, state, size and slide; an empty donor set means no niche signal.
        """
        idx = positions(focal, self.n_obs, "focal")
        rows, pool, pool_weights = donor_rows(donors, weights, idx.size, self.n_obs)
        if rows is None:  # one shared pool: every focal cell senses the same levels
            shared = sp.csr_matrix((pool_weights, pool, np.array([0, pool.size])), shape=(1, self.n_obs))
            sensed = np.repeat(self.model.sense_donors(self.cells, shared), idx.size, axis=0)
        else:
            sensed = self.model.sense_donors(self.cells, rows)
        return self.model.expected(self.cells, idx, sensed)

    def node(
        self, focal: Any, perturbations: Mapping[Any, Any], *, groupby: str | None = None, renormalize: bool = False
    ) -> np.ndarray:
        """Exact expected counts of focal cells when their neighbours' expression is shifted.

        Same arguments as :func:`cellina.datasets.true_counterfactual_node`: ``{gene: lfc}`` for
        every sender, or with ``groupby`` ``{group: {gene: lfc}}`` for the senders of each group
        (natural log); ``renormalize`` rescales each shifted sender profile to its original total.
        The focal cells' own expression is not shifted.
        """
        per_group, group_of = shift_table(self._adata, perturbations, groupby)
        idx = positions(focal, self.n_obs, "focal")
        cols, table, row = shift_rows(per_group, group_of, np.arange(self.n_obs))
        shift = Shift(cols, table, row, bool(renormalize))
        return self.model.expected(self.cells, idx, self.model.sense(self.cells, idx, shift))

    def responsive(self, cell_type: str) -> np.ndarray:
        """Boolean mask of the genes whose mean moves with the niche in ``cell_type`` (coarse or fine)."""
        name = str(cell_type)
        coarse = self.fine_to_coarse.get(name, name)
        if coarse not in self.coarse_types:
            raise TruthKeyError(
                f"cell_type {cell_type!r} is neither a coarse nor a fine type of this world "
                f"({self.coarse_types + sorted(self.fine_to_coarse)})"
            )
        k = self.coarse_types.index(coarse)
        out = np.zeros(self.model.n_genes, dtype=bool)
        for channel in self.model.channels:
            out |= channel.response[:, k] != 0
        return out

    def null_genes(self) -> np.ndarray:
        """Boolean mask of the background genes: no niche, type, state or ligand effect in any cell."""
        return self._programme == "null"
