"""Where a predicted niche response loses its size: one model on one development world, taken apart.

The leave-one-type-out protocol scores the change of the held-out type's control (healthy) cells when
their niches are replaced by donors from the target domain, which that type never lived in during
training. This tool trains that model once (``benchmarks/world_options.py`` options) and asks, against
the world's exact truth, on the held-out type's responsive genes (slope 1 = the right size):

* ``tumour``: the protocol's own question (donors around the held-out type's tumour cells);
* ``margin``: the same with donors around its margin cells, a niche it did see in training. A slope
  here as low as ``tumour``'s means the response is lost in fitting, not in extrapolation;
* ``reconstruction``: the model's decoded margin-vs-healthy difference of that type (each cell with
  its own z and s) against the exact one, and ``observed`` the same for the raw counts;
* ``margin_swap``: the margin cells decoded with their own z but healthy donors' niches: the part of
  the reconstructed difference that goes through s;
* ``reliability``: for each channel of the world, the cross-validated R^2 with which the 20 leading
  principal components of the niche features predict the level the cell truly senses. Regressing
  expression on a noisy stand-in for the niche shrinks the learnt response by about this factor
  (errors in variables), while the pooled donors of a counterfactual are a clean niche;
* ``ridge_margin`` / ``ridge_tumour``: a ridge regression from those components, fitted on the held-out
  type's training cells, asked the same two questions (the features' own ceiling, model-free);
* ``split_half_reliability`` and ``tumour_disattenuated``: the share of the held-out type's spread in ``s``
  along the protocol's change that is not noise of the niche, by split neighbours
  (:func:`cellina.counterfactual.niche_reliability`), and the protocol's question again with that change in
  ``s`` divided by it (``disattenuate=True``). Under errors in variables, regressing on a niche with
  reliability r learns r times the response; the estimate treats every difference between a cell's
  neighbours as noise, which is only true where the world senses a smoother niche than the graph's.

Usage::

    python benchmarks/slope_decomposition.py dev_two_channels Myeloid
    python benchmarks/slope_decomposition.py dev_two_channels Myeloid m.spatial_kl_weight=0.1

Prints one ``RESULT {json}`` line. Development worlds only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

KEEP = ("truth_pearson", "truth_skill", "truth_slope")


def _scores(pred: np.ndarray, true: np.ndarray, truth, holdout: str) -> dict:
    from cellina.evaluation import truth_scores

    scores = truth_scores(pred, true, truth.responsive(holdout), truth.null_genes())
    return {k: round(float(scores[k]), 3) for k in KEEP}


def _donor_pool(work, cells: np.ndarray, exclude: np.ndarray) -> np.ndarray:
    from cellina.counterfactual import observed_neighbour_pool
    from cellina.keys import OBSP

    return observed_neighbour_pool(work, cells, connectivity_key=OBSP.UNMASKED, exclude=exclude)


def model_parts(model, work, truth, holdout: str, control, margin, healthy, pools) -> dict:
    """The model's slopes: both donor domains, the reconstruction and the niche swap."""
    from cellina.evaluation._truth import population_lfc

    def decode(idx):
        return np.asarray(model.get_expression(adata=work, indices=idx, library_size=1e4))

    def rewired(focal, pool):
        pred, _, donors = model.get_counterfactual_expression(
            indices=focal, neighbour_indices=pool, adata=work, seed=0, precomputed=False,
            n_neighbours=50, n_draws=1, return_std=True, return_donors=True,
        )  # fmt: skip
        return np.asarray(pred), np.asarray(donors)[0]

    out, factual = {}, decode(control)
    true_factual = truth.mean(control)
    for name in ("margin", "tumour"):
        pred, donors = rewired(control, pools[name])
        true = population_lfc(truth.edge(control, donors), true_factual)
        out[name] = _scores(population_lfc(pred, factual), true, truth, holdout)
    # population_lfc compares the mean normalised expression of any two groups of cells
    exact = population_lfc(truth.mean(margin), truth.mean(healthy))
    out["reconstruction"] = _scores(population_lfc(decode(margin), decode(healthy)), exact, truth, holdout)
    counts = work.layers["counts"]
    out["observed"] = _scores(population_lfc(counts[margin], counts[healthy]), exact, truth, holdout)
    pred, donors = rewired(margin, pools["healthy"])
    true = population_lfc(truth.mean(margin), truth.edge(margin, donors))
    out["margin_swap"] = _scores(population_lfc(decode(margin), pred), true, truth, holdout)
    return out


def feature_parts(tissue, truth, holdout: str, control, pools) -> dict:
    """Model-free: how well the niche features stand for the sensed levels, and a ridge's slopes."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.model_selection import cross_val_predict
    from world_ridge import _change, _log_normalised

    from cellina.counterfactual import pooled_niche_features, sample_donors, spatial_features_record
    from cellina.evaluation._truth import population_lfc

    counts = tissue.work.layers["counts"]
    phi = np.asarray(tissue.work.obsm["spatial_x"])
    cells = np.setdiff1d(np.flatnonzero(tissue.labels == holdout), tissue.target)
    pca = PCA(20, random_state=0).fit(phi[tissue.train])
    ridge = Ridge(alpha=1.0).fit(pca.transform(phi[cells]), _log_normalised(counts[cells]))
    out = {}
    for name in ("margin", "tumour"):
        donors = sample_donors(control, pools[name], 50, np.random.default_rng(0))
        moved = pca.transform(pooled_niche_features(counts, donors, spatial_features_record(tissue.work, "spatial_x")))
        change = _change(ridge.predict(moved), ridge.predict(pca.transform(phi[control])))
        true = population_lfc(truth.edge(control, donors), truth.mean(control))
        out[f"ridge_{name}"] = _scores(change, true, truth, holdout)
    sensed = truth.sensed(cells)
    out["reliability"] = {}
    for j, channel in enumerate(truth.channel_names):
        ok = np.isfinite(sensed[:, j])
        pred = cross_val_predict(LinearRegression(), pca.transform(phi[cells][ok]), sensed[ok, j], cv=5)
        out["reliability"][channel] = round(float(np.corrcoef(pred, sensed[ok, j])[0, 1] ** 2), 3)
    return out


def disattenuation(model, work, truth, holdout: str, control, pool) -> dict:
    """The split-half reliability of the held-out type's ``s`` along the protocol's change, and the
    protocol's question again with that change divided by it (``cellina.counterfactual.niche_reliability``)."""
    from cellina.counterfactual import (
        disattenuated_niche_latent,
        niche_reliability,
        pooled_niche_features,
        sample_donors,
        spatial_features_record,
    )
    from cellina.evaluation._truth import population_lfc

    donors = sample_donors(control, pool, 50, np.random.default_rng(0))
    moved = pooled_niche_features(work.layers["counts"], donors, spatial_features_record(work, model.spatial_obsm_key))
    factual = model.get_latent_representation(adata=work, indices=control, latent_key="s")
    rewired = np.asarray(model.predict_from_niche(adata=work, indices=control, spatial_x=moved, output="s"))
    reliability = niche_reliability(model, work, [holdout])
    types = np.full(control.size, holdout, dtype=object)
    corrected = disattenuated_niche_latent(factual, rewired, types, reliability)
    decoded = model.predict_with_niche_latent(work, control, corrected, library_size=1e4)
    true = population_lfc(truth.edge(control, donors), truth.mean(control))
    return {
        "split_half_reliability": round(reliability.along(holdout, (rewired - factual).mean(axis=0)), 3),
        "tumour_disattenuated": _scores(
            population_lfc(decoded, model.get_expression(adata=work, indices=control, library_size=1e4)),
            true,
            truth,
            holdout,
        ),
    }


def main(argv: list[str]) -> int:
    from world_options import options_config
    from worlds import run_protocol

    from cellina.datasets import list_worlds, make_world, truth_for
    from cellina.evaluation import LeaveOneOutConfig
    from cellina.evaluation._holdout import prepare_holdout

    world, holdout = argv[:2]
    if world not in list_worlds("development"):
        raise SystemExit(f"{world!r} is not a development world; use one of {list_worlds('development')}.")
    opts, cfg, model_opts, plan_opts = options_config(argv[2:])
    adata = make_world(world)
    truth = truth_for(adata)
    res = run_protocol(
        adata, holdout, "cellina", opts["preset"], opts["variant"], cfg, model_opts, plan_opts, return_models=True
    )
    model = res.models["cellina"]
    work = model.adata
    labels = adata.obs["coarse_type"].astype(str).to_numpy()
    domains = adata.obs["domain"].astype(str).to_numpy()
    is_type = labels == holdout
    cells = {d: np.flatnonzero(is_type & (domains == d)) for d in ("healthy", "margin", "tumour")}
    pools = {d: _donor_pool(work, cells[d], is_type) for d in cells}
    control = res.indices["control"]
    row = {"world": world, "type": holdout, "options": argv[2:]}
    row.update(model_parts(model, work, truth, holdout, control, cells["margin"], cells["healthy"], pools))
    row.update(disattenuation(model, work, truth, holdout, control, pools["tumour"]))
    config = LeaveOneOutConfig(
        batch_key="slide", library_key="slide", bandwidth=opts["bandwidth"], max_neighbours=opts["max_neighbours"]
    )
    row.update(feature_parts(prepare_holdout(adata, holdout, config), truth, holdout, control, pools))
    print("RESULT " + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
