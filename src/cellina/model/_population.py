"""Population answers beside the edge counterfactual: the other types' borrowed change, and a range per gene."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from anndata import AnnData

from ._counterfactual import HELDOUT
from ._validation import as_indices


class PopulationChangeMixin:
    """Per-gene population changes of a trained model's focal cells that go beyond one counterfactual call."""

    def _population_inputs(self, adata, indices, neighbour_indices, reference_indices, exclude_indices):
        """The registered AnnData, focal cells, donors, reference candidates (or None) and excluded cells."""
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        reference = None
        if reference_indices is not None:
            reference = as_indices(reference_indices, adata.n_obs, "reference_indices")
        focal = as_indices(indices, adata.n_obs, "indices")
        donors = as_indices(neighbour_indices, adata.n_obs, "neighbour_indices")
        return adata, focal, donors, reference, self._exclusion(adata, exclude_indices)

    def borrowed_counterfactual_change(
        self,
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None = None,
        weight: float = 0.3,
        disattenuate: bool | float = True,
        reference_indices: Sequence[int] | None = None,
        n_neighbours: int = 50,
        n_draws: int = 5,
        seed: int = 0,
        batch_size: int | None = None,
        exclude_indices: Any = HELDOUT,
        max_reference_cells: int = 500,
        min_reference_cells: int = 30,
    ):
        """The focal cells' population change under pooled donors, partly borrowed from the other cell types.

        Opt-in: it bets that the focal cells' type answers the new niche as the other types do. Each other
        registered type's reference cells (up to ``max_reference_cells`` per type, in the focal cells'
        domains when the model has domains, never focal cells, donors or excluded cells) get niches pooled
        from the same donors; their population changes are averaged with equal weight per type and mixed
        with the focal cells' own change: ``(1 - weight) * own + weight * others``. Both changes get share
        ``disattenuate`` of the reliability correction, each type with its own reliability. On held-back
        synthetic worlds ``weight=0.3`` with the full correction met the size and direction targets on
        more held-out types than the model's own change and the observed mean shift between domains; on a
        harder held-back set, no more than the correction alone, and it lost skill where types answer with
        their own genes (docs/benchmarks.md). A tissue whose types answer differently would be misled by it.

        Parameters
        ----------
        indices
            Focal cells (positions or boolean mask).
        neighbour_indices
            Donor pool: each focal and reference cell gets ``n_neighbours`` donors drawn from it.
        adata
            Registered AnnData (``None``: the training data).
        weight
            Share of the other types' change, 0 (the model's own change) to 1 (theirs alone).
        disattenuate
            Share of the reliability correction (True = 1), as in :meth:`get_counterfactual_expression`.
        reference_indices
            Candidate reference cells (default: every cell); grouped by registered type, focal types left out.
        n_neighbours, n_draws, seed, batch_size, exclude_indices
            As in :meth:`get_counterfactual_expression` (pooled rewiring).
        max_reference_cells, min_reference_cells
            Reference cells per type at most; types with fewer candidates are left out.

        Returns
        -------
        pandas.DataFrame
            Per gene, log2 changes of the mean library-normalised expression: ``own_lfc``, ``others_lfc``
            and ``borrowed_lfc``; ``attrs`` records the weight, the correction and the reference cells per
            type.
        """
        from cellina.counterfactual import borrowed_change

        adata, focal, donors, reference, exclude = self._population_inputs(
            adata, indices, neighbour_indices, reference_indices, exclude_indices
        )
        return borrowed_change(
            self,
            adata,
            focal,
            donors,
            weight=weight,
            disattenuate=disattenuate,
            reference=reference,
            exclude=exclude,
            n_neighbours=n_neighbours,
            n_draws=n_draws,
            seed=seed,
            batch_size=batch_size,
            max_reference_cells=max_reference_cells,
            min_reference_cells=min_reference_cells,
        )

    def counterfactual_change_range(
        self,
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None = None,
        n_neighbours: int = 50,
        n_draws: int = 5,
        seed: int = 0,
        batch_size: int | None = None,
        exclude_indices: Any = HELDOUT,
        reference_indices: Sequence[int] | None = None,
        max_reference_cells: int = 500,
        min_reference_cells: int = 30,
        width: float = 2.0,
    ):
        """A range for each gene's population change under pooled donors: what the model cannot settle.

        A predicted niche response is mostly off by its size: noisy niche features shrink it, and dividing
        the change in ``s`` by the niche's reliability restores it on some tissues and overshoots on others.
        The range spans both answers (``lfc`` without the correction, ``lfc_corrected`` with it) and widens
        each end by ``width`` times a spread adding in quadrature ``draw_spread`` (how far one focal cell's
        log2 change moves across the donor draws) and ``checked_error``: the model's error on the other cell
        types it can be checked against. A type is checked when it has reference cells (as in
        :meth:`borrowed_counterfactual_change`) and at least ``min_reference_cells`` cells among the donors,
        which live in the new niches: per gene, the root mean square over those types of their observed
        change (reference cells to donor cells) minus the model's change for the reference cells under the
        same donors. It holds the model's bias on the niche and what the observed change holds besides it
        (count noise, the domains' other differences). On two sets of held-back synthetic worlds the range held
        the exact change on at least 80 % of the responsive genes for 19 of 24 held-out types in each (the
        draws' spread: 8 and 7), but excluded no change on a median fifth and a tenth of those genes: it bounds
        the size better than the direction (docs/benchmarks.md, "A range for each gene's change").

        Parameters
        ----------
        indices
            Focal cells (positions or boolean mask).
        neighbour_indices
            Donor pool: each focal and reference cell gets ``n_neighbours`` donors drawn from it.
        adata
            Registered AnnData (``None``: the training data).
        n_neighbours, n_draws, seed, batch_size, exclude_indices
            As in :meth:`get_counterfactual_expression` (pooled rewiring).
        reference_indices, max_reference_cells, min_reference_cells
            As in :meth:`borrowed_counterfactual_change`; ``min_reference_cells`` also bounds a checked
            type's donor cells.
        width
            Spreads on each side of the range.

        Returns
        -------
        pandas.DataFrame
            Per gene, log2 changes of the mean library-normalised expression: ``lfc``, ``lfc_corrected``,
            ``draw_spread``, ``checked_error``, ``low`` and ``high``; ``attrs`` records the width and each
            checked type's reference and donor cells.
        """
        from cellina.counterfactual import change_range

        adata, focal, donors, reference, exclude = self._population_inputs(
            adata, indices, neighbour_indices, reference_indices, exclude_indices
        )
        options = {"n_neighbours": n_neighbours, "n_draws": n_draws, "seed": seed, "batch_size": batch_size}
        return change_range(
            self,
            adata,
            focal,
            donors,
            {**options, "exclude_indices": exclude},
            exclude=exclude,
            reference=reference,
            max_cells=max_reference_cells,
            min_cells=min_reference_cells,
            width=width,
        )
