"""Edge counterfactuals as model methods: thin faces over :mod:`cellina.counterfactual`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from anndata import AnnData

from ._validation import LibrarySize, as_indices, check_library_size

#: ``exclude_indices`` default: the cells held out when the model was trained
HELDOUT = "heldout"


def _merged(name: str, value: Any, alias: str, alias_value: Any, default: Any) -> Any:
    """One value from a parameter and its published alias, refusing two different values."""
    if alias_value is None:
        return default if value is None else value
    if value is not None and value != alias_value:
        raise ValueError(f"{name}={value!r} and {alias}={alias_value!r} disagree; pass one of them.")
    return alias_value


class CellinaCounterfactualMixin:
    """Edge counterfactuals of a trained :class:`~cellina.model.Cellina`."""

    def _exclusion(self, adata: AnnData, exclude_indices: Any) -> np.ndarray | None:
        if isinstance(exclude_indices, str):
            if exclude_indices != HELDOUT:
                raise ValueError(f"exclude_indices={exclude_indices!r}: use {HELDOUT!r}, None or cell positions.")
            held = getattr(self, "heldout_indices_", None)
            if held is None or len(held) == 0 or adata.n_obs != self.adata.n_obs:
                return None
            return np.asarray(held, dtype=np.int64)
        if exclude_indices is None:
            return None
        values = np.asarray(exclude_indices)
        if values.ndim != 1 or (values.size and not np.issubdtype(values.dtype, np.integer)):
            raise ValueError("exclude_indices must be a 1-D integer array of cell positions.")
        return as_indices(values, adata.n_obs, "exclude_indices", allow_empty=True)

    def _edge(
        self,
        output: str,
        indices,
        neighbour_indices,
        adata,
        batch_size,
        seed,
        precomputed,
        n_neighbours,
        n_draws,
        return_std,
        library_size,
        connectivity_key,
        return_donors,
        anchor_donors,
        n_neighbors,
        exclude_indices,
        layer,
        give_mean=True,
        return_novelty=False,
        uncertainty="donors",
        disattenuate=None,
    ):
        from cellina.counterfactual import edge_counterfactual

        self._check_if_trained(warn=False)
        if output == "expression":
            check_library_size(library_size)
        adata = self._validate_anndata(adata)
        anchor = bool(_merged("precomputed", precomputed, "anchor_donors", anchor_donors, True))
        k = int(_merged("n_neighbours", n_neighbours, "n_neighbors", n_neighbors, 50))
        return edge_counterfactual(
            self,
            adata,
            as_indices(indices, adata.n_obs, "indices"),
            as_indices(neighbour_indices, adata.n_obs, "neighbour_indices"),
            output=output,
            anchor=anchor,
            n_neighbours=k,
            n_draws=n_draws,
            seed=seed,
            uncertainty=uncertainty,
            exclude=self._exclusion(adata, exclude_indices),
            connectivity_key=connectivity_key,
            layer=layer,
            library_size=library_size,
            batch_size=batch_size,
            return_std=return_std,
            return_donors=return_donors,
            give_mean=give_mean,
            return_novelty=return_novelty,
            disattenuate=self.disattenuation(disattenuate),
        )

    def measure_niche_reliability(self, batch_size: int | None = None):
        """Estimate how much of each cell type's spread in ``s`` is noise of its niche, on the training data.

        Runs when training ends for a model built with ``disattenuate_niche=True``, else on the first
        counterfactual that asks for ``disattenuate``; kept with the model (``niche_reliability_``,
        saved with it). See :func:`cellina.counterfactual.niche_reliability`.

        Returns
        -------
        cellina.counterfactual.NicheReliability
        """
        from cellina.counterfactual import niche_reliability

        self._check_if_trained(warn=False)
        reliability = niche_reliability(self, self.adata, batch_size=batch_size)
        self.niche_reliability_ = reliability.to_record()
        return reliability

    def stored_niche_reliability(self, batch_size: int | None = None):
        """The statistics :meth:`measure_niche_reliability` kept, measured now if there are none."""
        from cellina.counterfactual import NicheReliability

        record = getattr(self, "niche_reliability_", None)
        if record is None:
            return self.measure_niche_reliability(batch_size)
        return NicheReliability.from_record(record)

    def disattenuation(self, disattenuate: bool | float | None = None) -> bool | float:
        """Whether an edge counterfactual called with ``disattenuate`` divides the change in ``s`` by its
        reliability: the value given, or the model's ``disattenuate_niche`` for None. A number from 0
        to 1 is the share of the correction (the exponent of the reliability)."""
        from cellina.counterfactual._reliability import check_strength

        if disattenuate is None:
            return bool(getattr(self, "disattenuate_niche", False))
        strength = check_strength(disattenuate)
        return bool(disattenuate) if isinstance(disattenuate, bool | np.bool_) else strength

    def get_counterfactual_expression(
        self,
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        precomputed: bool | None = None,
        n_neighbours: int | None = None,
        n_draws: int = 1,
        return_std: bool = False,
        library_size: LibrarySize = "latent",
        connectivity_key: str | None = None,
        return_donors: bool = False,
        *,
        anchor_donors: bool | None = None,
        n_neighbors: int | None = None,
        exclude_indices: Any = HELDOUT,
        layer: str | None = None,
        return_novelty: bool = False,
        uncertainty: Literal["donors", "posterior"] = "donors",
        disattenuate: bool | None = None,
    ):
        """Expected counts of focal cells after rewiring their neighbourhoods.

        Anchor mode (default, ``precomputed=True``, published name ``anchor_donors``): each
        focal cell inherits the neighbourhood of a random anchor from ``neighbour_indices`` in
        ``obsp[connectivity_key]`` (kernel weights), leaving the focal cell itself out. Pooled
        rewiring (``precomputed=False``, the published tutorial's choice): each focal cell gets ``n_neighbours`` donors drawn without
        replacement from ``neighbour_indices`` (never itself), weighted equally since rewired
        donors have no distance; its niche features are rebuilt from the donors' counts with
        the representation :func:`cellina.spatial.compute_spatial_features` recorded. In both
        modes the held-out cells the model was trained without never enter a rebuilt niche
        (``exclude_indices``); anchors left with no neighbour are dropped with a warning. ``z``
        and the library come from each cell's own counts; ``adata`` is never modified; results
        are deterministic for a ``seed``.

        Parameters
        ----------
        indices
            Focal cells (positions or boolean mask).
        neighbour_indices
            Donor pool (pooled mode) or anchor pool (anchor mode).
        adata
            Registered AnnData (``None``: the training data).
        batch_size
            Minibatch size for the network.
        seed
            Seed of the draws.
        precomputed, anchor_donors
            Anchor mode (default) or pooled rewiring (two names for one option).
        n_neighbours, n_neighbors
            Donors per focal cell in pooled mode (default 50); clipped, with a warning, to the pool.
        n_draws
            Independent draws to average over.
        return_std
            Also return the standard deviation across draws of each focal cell's expected counts
            per gene (zero with one draw): the spread of one cell's prediction, not the
            uncertainty of a mean over the focal cells.
        library_size
            ``"latent"``/``"observed"``: at each cell's own library; a number: scaled to it.
        connectivity_key
            ``obsp`` key of the graph anchors' neighbourhoods come from (default: the unmasked
            ``spatial_connectivities_orig`` when present, else the graph the niche features
            were computed on).
        return_donors
            Also return the draws: donors ``(n_draws, n_focal, k)`` or anchors ``(n_draws, n_focal)``.
        exclude_indices
            Cells kept out of every rebuilt niche: ``"heldout"`` (the test cells of the
            training's ``external_indexing``), ``None`` (none) or positions.
        layer
            Aggregate ``adata.layers[layer]`` as it is instead of rebuilding the recorded
            representation from the model's counts (the published argument).
        return_novelty
            Also return a :class:`~cellina.counterfactual.NicheNovelty`: how far each focal
            cell's counterfactual niche lies from the niches of the training cells, and which
            lie outside training (:func:`cellina.counterfactual.niche_novelty`).
        uncertainty
            What the std describes. ``"donors"`` (default): which donors (or anchors) were drawn;
            every draw decodes posterior means. ``"posterior"``: the donors and the model's
            posterior: every draw also decodes a seeded sample of ``z`` (and of ``s`` and the
            library where the model decodes samples of them) with its donors and, with the same
            ``z`` and library, the cell's factual niche; the std is then that of the draw's change put back
            at the factual prediction's level (``sample * factual / own factual``), so the cell's
            own level, which moves both alike, cancels. The prediction is the same for both: the
            mean over draws of the decoded posterior means (:func:`cellina.counterfactual.edge_counterfactual`).
        disattenuate
            Divide each draw's change in ``s`` by the reliability of the focal cells' niche codes
            along it, per cell type, so the response is not shrunk by the noise of the niches it was
            learnt from (:func:`cellina.counterfactual.niche_reliability`). ``None`` (default): the
            model's ``disattenuate_niche`` (off unless the model was built with it). A number from 0
            to 1 applies that share of the correction on a log scale: the change is divided by the
            reliability raised to it.

        Returns
        -------
        numpy.ndarray or tuple
            Mean expected counts ``(n_focal, n_genes)``; then the std (``return_std``), the
            draws (``return_donors``) and the novelty (``return_novelty``).
        """
        return self._edge(
            "expression",
            indices,
            neighbour_indices,
            adata,
            batch_size,
            seed,
            precomputed,
            n_neighbours,
            n_draws,
            return_std,
            library_size,
            connectivity_key,
            return_donors,
            anchor_donors,
            n_neighbors,
            exclude_indices,
            layer,
            return_novelty=return_novelty,
            uncertainty=uncertainty,
            disattenuate=disattenuate,
        )

    def get_counterfactual_latents(
        self,
        indices: Sequence[int],
        neighbour_indices: Sequence[int],
        adata: AnnData | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        precomputed: bool | None = None,
        n_neighbours: int | None = None,
        n_draws: int = 1,
        return_std: bool = False,
        connectivity_key: str | None = None,
        return_donors: bool = False,
        *,
        latent_key: Literal["s", "z", "shifted"] = "s",
        give_mean: bool = True,
        anchor_donors: bool | None = None,
        n_neighbors: int | None = None,
        exclude_indices: Any = HELDOUT,
        layer: str | None = None,
        uncertainty: Literal["donors", "posterior"] = "donors",
    ):
        """Latents of focal cells with rewired niches.

        The same draws as :meth:`get_counterfactual_expression` for the same arguments and
        ``seed``. ``latent_key``: ``"s"`` (default), ``"z"`` (unchanged by rewiring) or
        ``"shifted"`` (``[z; s]``); ``give_mean``: posterior means (default) or one sample per
        draw (seeded by ``seed``); ``uncertainty`` as in :meth:`get_counterfactual_expression`.

        Returns
        -------
        numpy.ndarray or tuple
            ``(n_focal, dim)``; then std and draws when asked.
        """
        if latent_key not in ("s", "z", "shifted"):
            raise ValueError(f"latent_key must be 's', 'z' or 'shifted', got {latent_key!r}.")
        return self._edge(
            latent_key,
            indices,
            neighbour_indices,
            adata,
            batch_size,
            seed,
            precomputed,
            n_neighbours,
            n_draws,
            return_std,
            "latent",
            connectivity_key,
            return_donors,
            anchor_donors,
            n_neighbors,
            exclude_indices,
            layer,
            give_mean,
            uncertainty=uncertainty,
        )

    def _make_counterfactual_adata(self, indices, neighbour_indices, seed: int = 0, **kwargs) -> AnnData:
        """The published helper's AnnData of focal cells with rewired niche features.

        See :func:`cellina.counterfactual.make_counterfactual_adata`; ``adata`` defaults to the
        training data and the niche features to the registered ones.
        """
        from cellina.counterfactual import make_counterfactual_adata

        adata = self._validate_anndata(kwargs.pop("adata", None))
        kwargs.setdefault("random_state", seed)
        kwargs.setdefault("anchor_donors", True)
        return make_counterfactual_adata(adata, indices, neighbour_indices, self.spatial_obsm_key, **kwargs)
