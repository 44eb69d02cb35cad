"""Edge counterfactuals with a trained model: draw rewired niches, decode, average over draws."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from cellina.keys import OBSP
from cellina.spatial import check_positions

from ._edge import rewired_neighbourhoods, rewired_niche_features, spatial_features_record
from ._novelty import niche_novelty
from ._reliability import check_strength, disattenuated_niche_latent, focal_cell_types

Output = Literal["expression", "z", "s", "shifted"]
Uncertainty = Literal["donors", "posterior"]
#: what the spread across draws describes: the donors drawn, or the donors and the model's posterior
UNCERTAINTIES = ("donors", "posterior")
#: first word of the seed of the latents' stream, so posterior draws never move the donors drawn
_LATENT_STREAM = 1


def check_uncertainty(uncertainty: str) -> str:
    """``uncertainty`` if it is one of :data:`UNCERTAINTIES`, else a :class:`ValueError` naming it."""
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(
            f"uncertainty={uncertainty!r}: use 'donors' (the spread across donor draws) or 'posterior' "
            "(each draw also samples the latents from their posteriors)."
        )
    return uncertainty


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


def _feature_draws(model: Any, adata: Any, focal: np.ndarray, pool: np.ndarray, rng, layer, options: dict):
    """Draws for models that read niche features: rebuild them, then ``predict_from_niche``."""
    obsm_key = model.spatial_obsm_key
    source, record = _representation_source(adata, model, dict(spatial_features_record(adata, obsm_key)), layer)

    def draw():
        return rewired_niche_features(adata, source, focal, pool, obsm_key=obsm_key, rng=rng, record=record, **options)

    def decode(spatial_x, output, library_size, batch_size, give_mean, latent_rng=None):
        return model.predict_from_niche(
            adata, focal, spatial_x, output, library_size, batch_size, give_mean, rng=latent_rng
        )

    def factual(output, library_size, batch_size, give_mean, latent_rng=None):
        return decode(None, output, library_size, batch_size, give_mean, latent_rng)

    return draw, decode, factual


def _graph_draws(model: Any, adata: Any, focal: np.ndarray, pool: np.ndarray, rng, layer, options: dict):
    """Draws for models that read the graph: rewire the focal cells' neighbourhoods, then predict."""
    options = dict(options)
    if options["connectivity_key"] is None:
        options["connectivity_key"] = OBSP.UNMASKED if OBSP.UNMASKED in adata.obsp else model.graph_key
    if options["exclude"] is not None:
        options["exclude"] = check_positions(options["exclude"], adata.n_obs, "exclude")
    features = None
    if layer is not None:
        if layer not in adata.layers:
            raise ValueError(f"layer={layer!r} is not in adata.layers (have {list(adata.layers.keys())}).")
        features = adata.layers[layer]

    def draw():
        return rewired_neighbourhoods(adata, focal, pool, rng, **options)

    def decode(rows, output, library_size, batch_size, give_mean, latent_rng=None):
        exclude = options["exclude"]
        return model.predict_with_neighbourhoods(
            adata, focal, rows, output, library_size, batch_size, give_mean, exclude, features, rng=latent_rng
        )

    def factual(output, library_size, batch_size, give_mean, latent_rng=None):
        return model.predict_from_graph(
            adata,
            focal,
            None,
            features,
            output,
            library_size,
            batch_size,
            give_mean,
            options["exclude"],
            rng=latent_rng,
        )

    return draw, decode, factual


class _Disattenuation:
    """Decodes the focal cells with each draw's change in ``s`` divided by its reliability."""

    def __init__(
        self, model: Any, adata: Any, focal: np.ndarray, factual_codes: np.ndarray, batch_size, strength: float
    ) -> None:
        self.model, self.adata, self.focal, self.batch_size = model, adata, focal, batch_size
        self.strength = strength
        self.factual = factual_codes
        self.types = focal_cell_types(model, adata, focal)
        # measured on the training data when the model finished training, else now (and kept)
        self.reliability = model.stored_niche_reliability(batch_size)

    def expression(self, codes: np.ndarray, library_size: Any) -> np.ndarray:
        moved = disattenuated_niche_latent(self.factual, codes, self.types, self.reliability, self.strength)
        return self.model.predict_with_niche_latent(self.adata, self.focal, moved, library_size, self.batch_size)


def _relative_to_factual(sample: np.ndarray, own_factual: np.ndarray, factual_mean: np.ndarray) -> np.ndarray:
    """A sampled counterfactual taken relative to the factual decoded with the same posterior sample, at
    the level of the factual's posterior mean: ``sample * factual_mean / own_factual``."""
    ratio = np.divide(factual_mean, own_factual, out=np.ones_like(own_factual), where=own_factual > 0)
    return sample * ratio


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
    uncertainty: Uncertainty = "donors",
    exclude: np.ndarray | None = None,
    connectivity_key: str | None = None,
    layer: str | None = None,
    library_size: Any = "latent",
    batch_size: int | None = None,
    return_std: bool = False,
    return_donors: bool = False,
    give_mean: bool = True,
    return_novelty: bool = False,
    novelty_options: dict[str, Any] | None = None,
    disattenuate: bool | float = False,
):
    """Decode focal cells after rewiring their neighbourhoods, averaged over donor draws.

    Each draw rebuilds the focal cells' niche features (:func:`rewired_niche_features`:
    pooled donors, or the neighbourhood of an anchor in anchor mode), and the model decodes
    them with each cell's own ``z`` and library (``model.predict_from_niche``). For a model that
    reads the graph (:class:`~cellina.model.CellinaGCN`), the same draws become the focal cells'
    only neighbours in the graph (:func:`rewired_neighbourhoods`; donor -> focal edges only, the
    focal cells nobody else's neighbour) and the model predicts on that graph
    (``model.predict_with_neighbourhoods``).

    The prediction is the mean over draws of the decoded posterior means (``give_mean``), whatever
    ``uncertainty`` says. The std (``return_std``) is, per focal cell and value, a standard
    deviation across draws. With ``uncertainty="donors"``, of the decoded posterior means: it
    measures only which donors were drawn. With ``"posterior"``, every draw also decodes a
    posterior sample of ``z`` (and of ``s`` and the library where the model decodes samples of
    them, see ``CellinaModule.draw_latents``) with its donors, and, for expression, the cell's
    factual niche with the same ``z`` and library (and its own draw of ``s``); the spread is that
    of ``sample * factual / own factual``, the draw's change put back at the level of the factual
    prediction, so what moves a cell's counterfactual and factual alike (its level) cancels and the
    std is that of the niche's change for that cell, as it is with donors alone. It is a spread of
    one cell's prediction, not the uncertainty of a mean over focal cells. Posterior draws come
    from their own stream of ``seed``: the donors drawn are the same for both settings.

    Parameters
    ----------
    model
        A trained :class:`~cellina.model.Cellina` or :class:`~cellina.model.CellinaGCN`.
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
    uncertainty
        What the std describes: ``"donors"`` (default) the donors drawn, ``"posterior"`` the donors
        and a posterior sample of the latents in every draw (two more decodings per draw for
        expression, the counterfactual and the factual; one for latents).
    exclude
        Cells that may never reach a rebuilt niche (held-out cells): removed from the donor
        pool, or from every anchor's neighbourhood.
    connectivity_key
        ``obsp`` key of the graph anchors' neighbourhoods come from.
    layer
        Aggregate ``adata.layers[layer]`` as it is (the published ``layer``), instead of the
        model's counts through the representation recorded with the niche features (graph
        models: every cell's node features come from this layer).
    library_size, batch_size
        As in ``model.predict_from_niche``.
    return_std, return_donors
        Also return the per-value standard deviation across draws, and the draws themselves.
    give_mean
        Decode posterior means (default) or one posterior sample per draw (seeded by ``seed``); then
        the prediction itself is the mean over sampled draws.
    return_novelty
        Also return a :class:`~cellina.counterfactual.NicheNovelty`: how far each focal cell's
        counterfactual niche code ``s`` (every draw) lies from the training cells' codes (one
        more encoder pass per draw and a nearest-neighbour search).
    novelty_options
        Options of :func:`~cellina.counterfactual.niche_novelty` (``n_neighbours``,
        ``quantile``, ``reference``, ...).
    disattenuate
        Expression only: divide each draw's change in ``s`` by the reliability of the focal cells'
        niche codes along it (per cell type; :func:`~cellina.counterfactual.niche_reliability`), so
        the response learnt from noisy niches is not shrunk by their noise. The latents, the
        novelty and, with ``uncertainty="posterior"``, the spread stay those of the uncorrected codes.
        A number from 0 to 1 applies part of the correction: the change is divided by the
        reliability raised to it (True is 1).

    Returns
    -------
    numpy.ndarray or tuple
        The mean over draws ``(n_focal, dim)``; then the std, the draws and the novelty when asked.
    """
    if int(n_draws) < 1:
        raise ValueError(f"n_draws={n_draws} must be >= 1.")
    sampled = check_uncertainty(uncertainty) == "posterior" and give_mean
    rng = np.random.default_rng(seed)
    latent_rng = np.random.default_rng([_LATENT_STREAM, int(seed)])
    draw_kwargs = {
        "precomputed": anchor,
        "n_neighbours": n_neighbours,
        "connectivity_key": connectivity_key,
        "exclude": exclude,
    }
    if getattr(model, "niche_input", "features") == "graph":
        draw, decode, factual = _graph_draws(model, adata, focal, pool, rng, layer, draw_kwargs)
    else:
        draw, decode, factual = _feature_draws(model, adata, focal, pool, rng, layer, draw_kwargs)
    paired = sampled and output == "expression"
    factual_mean = factual(output, library_size, batch_size, True) if paired else None
    corrected, strength = None, check_strength(disattenuate)
    if strength > 0 and output == "expression":
        if not give_mean:
            raise ValueError("disattenuate=True corrects posterior means; it cannot be combined with give_mean=False.")
        factual_codes = factual("s", "latent", batch_size, True)
        corrected = _Disattenuation(model, adata, focal, factual_codes, batch_size, strength)
    stats, spread, draws, codes = _Welford(), _Welford(), [], []
    for _ in range(int(n_draws)):
        niche, drawn = draw()
        if corrected is None:
            stats.add(decode(niche, output, library_size, batch_size, give_mean, None if give_mean else latent_rng))
        else:
            stats.add(corrected.expression(decode(niche, "s", "latent", batch_size, True), library_size))
        if sampled:
            # z and the library: one draw for both niches; s: each niche's own draw
            seed_d = int(latent_rng.integers(2**63))
            sample = decode(niche, output, library_size, batch_size, False, (seed_d, [seed_d, 1]))
            if paired:
                own = factual(output, library_size, batch_size, False, (seed_d, [seed_d, 2]))
                sample = _relative_to_factual(sample, own, factual_mean)
            spread.add(sample)
        draws.append(drawn)
        if return_novelty:
            codes.append(decode(niche, "s", "latent", batch_size, True))
    out: list[Any] = [stats.mean.astype(np.float32)]
    if return_std:
        out.append((spread if sampled else stats).std().astype(np.float32))
    if return_donors:
        out.append(np.stack(draws, axis=0))
    if return_novelty:
        options = {"batch_size": batch_size, **dict(novelty_options or {})}
        out.append(niche_novelty(model, adata, focal, np.stack(codes, axis=0), **options))
    return out[0] if len(out) == 1 else tuple(out)
