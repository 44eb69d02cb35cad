"""Edge counterfactuals with a trained model: draw rewired niches, decode, average over draws."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from ._edge import rewired_niche_features, spatial_features_record

Output = Literal["expression", "z", "s", "shifted"]


def _representation_source(adata: Any, model: Any, record: dict, layer: str | None) -> tuple[Any, dict]:
    """Where rebuilt niches read expression from: the model's counts through the recorded
    transform, or ``adata.layers[layer]`` taken as the representation itself."""
    if layer is None:
        return model.registered_counts(adata), record
    if layer not in adata.layers:
        raise ValueError(f"layer={layer!r} is not in adata.layers (have {list(adata.layers.keys())}).")
    return adata.layers[layer], {**record, "transform": "identity", "target_sum": None}


class _Welford:
    """Running mean and spread of the draws, exact without holding every draw."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, values: np.ndarray) -> None:
        values = values.astype(np.float64)
        self.n += 1
        if self.mean is None:
            self.mean, self.m2 = values, np.zeros_like(values)
            return
        delta = values - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (values - self.mean)

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / self.n)


def edge_counterfactual(
    model: Any,
    adata: Any,
    focal: np.ndarray,
    pool: np.ndarray,
    *,
    output: Output = "expression",
    anchor: bool = False,
    n_neighbours: int = 50,
    n_draws: int = 1,
    seed: int = 0,
    exclude: np.ndarray | None = None,
    connectivity_key: str | None = None,
    layer: str | None = None,
    library_size: Any = "latent",
    batch_size: int | None = None,
    return_std: bool = False,
    return_donors: bool = False,
    give_mean: bool = True,
):
    """Decode focal cells after rewiring their neighbourhoods, averaged over donor draws.

    Each draw rebuilds the focal cells' niche features (:func:`rewired_niche_features`:
    pooled donors, or the neighbourhood of an anchor in anchor mode), and the model decodes
    them with each cell's own ``z`` and library (``model.predict_from_niche``).

    Parameters
    ----------
    model
        A trained :class:`~cellina.model.Cellina`.
    adata
        The model's registered AnnData (never modified).
    focal, pool
        Focal cell positions; donor pool (pooled mode) or anchor pool (anchor mode).
    output
        ``"expression"`` (expected counts) or a latent (``"z"``, ``"s"``, ``"shifted"``).
    anchor
        Anchor mode instead of pooled rewiring.
    n_neighbours
        Donors per focal cell (pooled mode).
    n_draws
        Independent draws to average over.
    seed
        Seed of the draws (results are deterministic for a seed).
    exclude
        Cells that may never reach a rebuilt niche (held-out cells): removed from the donor
        pool, or from every anchor's neighbourhood.
    connectivity_key
        ``obsp`` key of the graph anchors' neighbourhoods come from.
    layer
        Aggregate ``adata.layers[layer]`` as it is (the published ``layer``), instead of the
        model's counts through the representation recorded with the niche features.
    library_size, batch_size
        As in ``model.predict_from_niche``.
    return_std, return_donors
        Also return the per-value standard deviation across draws, and the draws themselves.
    give_mean
        Decode posterior means (default) or one posterior sample per draw.

    Returns
    -------
    numpy.ndarray or tuple
        The mean over draws ``(n_focal, dim)``; then the std and the draws when asked.
    """
    if int(n_draws) < 1:
        raise ValueError(f"n_draws={n_draws} must be >= 1.")
    obsm_key = model.spatial_obsm_key
    record = spatial_features_record(adata, obsm_key)
    source, record = _representation_source(adata, model, dict(record), layer)
    rng = np.random.default_rng(seed)
    stats, draws = _Welford(), []
    for _ in range(int(n_draws)):
        spatial_x, drawn = rewired_niche_features(
            adata,
            source,
            focal,
            pool,
            obsm_key=obsm_key,
            rng=rng,
            precomputed=anchor,
            n_neighbours=n_neighbours,
            connectivity_key=connectivity_key,
            exclude=exclude,
            record=record,
        )
        stats.add(model.predict_from_niche(adata, focal, spatial_x, output, library_size, batch_size, give_mean))
        draws.append(drawn)
    out: list[Any] = [stats.mean.astype(np.float32)]
    if return_std:
        out.append(stats.std().astype(np.float32))
    if return_donors:
        out.append(np.stack(draws, axis=0))
    return out[0] if len(out) == 1 else tuple(out)
