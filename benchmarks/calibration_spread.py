"""What the spread of an edge prediction measures, against the exact change of a development world.

Trains the model once (the settings and options of ``benchmarks/world_options.py``), keeps its
``n_draws`` donor draws and decodes each draw at the posterior means (the prediction) and at a
posterior sample of the latents, together with the factual at the same sample of ``z`` and the
library (seeded as ``uncertainty="posterior"`` seeds them). On the held-out type's responsive genes it then scores
several spreads of the predicted population change, each against the exact change (calibration:
the share within two spreads):

* ``cell_donors`` / ``cell_posterior``: the protocol's spread (:func:`cellina.evaluation.log2_change_std`),
  how far one cell's log2 change moves across draws, of the donors only or of the donors and the
  posterior (each sampled counterfactual taken against the factual decoded with the same ``z``, as
  ``uncertainty="posterior"`` does);
* ``cell_posterior_unpaired``: the same with the sampled counterfactual alone, against a fixed factual
  (what moves a cell's level moves it too);
* ``mean_donors`` / ``mean_posterior``: the standard deviation across draws of the focal group's mean
  log2 change itself, the quantity the calibration compares;
* ``cell_posterior_s`` (only for a model that decodes the posterior mean of ``s``): ``cell_posterior``
  with ``s`` drawn from ``q(s | niche)`` as well, although its decoder never saw such draws; the
  variance of that ``q`` is then set by its KL term alone, so this is a diagnostic of what sampling
  it would do, not a method.

It also prints the slope of the prediction on the truth, the median error and spreads, the
calibration of the prediction divided by its slope (a diagnostic of the bias, not a method) and
the mean posterior variances of ``z`` and ``s`` of the focal cells.

Usage::

    python benchmarks/calibration_spread.py dev_two_channels Myeloid n_draws=5 epochs=40

Use development worlds only.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _population_change(pred, factual):
    from cellina.evaluation import mean_normalized_expression, safe_log2_fold_change

    return safe_log2_fold_change(mean_normalized_expression(pred), mean_normalized_expression(factual))


def _draws(model, work, control, donors, seed):
    """Per draw (``(n_draws, n_control, n_genes)`` each): the decoded posterior means, a posterior sample
    of the counterfactual and the factual decoded with the same ``z``, seeded as ``edge_counterfactual``
    seeds them."""
    from cellina.counterfactual import pooled_niche_features, spatial_features_record

    counts = model.registered_counts(work)
    record = spatial_features_record(work, model.spatial_obsm_key)
    latent_rng = np.random.default_rng([1, int(seed)])
    points, samples, factuals = [], [], []
    for drawn in donors:
        phi = pooled_niche_features(counts, drawn, record)
        points.append(model.predict_from_niche(work, control, phi))
        seed_d = int(latent_rng.integers(2**63))  # the same z and library for both niches, each its own s
        samples.append(model.predict_from_niche(work, control, phi, give_mean=False, rng=(seed_d, [seed_d, 1])))
        factuals.append(model.predict_from_niche(work, control, None, give_mean=False, rng=(seed_d, [seed_d, 2])))
    return np.stack(points), np.stack(samples), np.stack(factuals)


def _draws_with_s(model, work, control, donors, seed):
    """As :func:`_draws` with ``s`` drawn from ``q(s | niche)`` even where the decoder reads its mean."""
    module = model.module
    saved = module.spatial_decoding
    module.spatial_decoding = "sample"
    try:
        return _draws(model, work, control, donors, seed)
    finally:
        module.spatial_decoding = saved


def _spreads(model, work, control, donors, seed) -> dict[str, np.ndarray]:
    """The per-gene spreads of the predicted change, in log2 units (see the module's docstring)."""
    from cellina.evaluation import log2_change_std

    points, samples, factuals = _draws(model, work, control, donors, seed)
    factual = model.predict_from_niche(work, control)
    mean = points.mean(0)
    paired = samples * np.divide(factual, factuals, out=np.ones_like(factuals), where=factuals > 0)
    spreads = {
        "cell_donors": log2_change_std(mean, points.std(0)),
        "cell_posterior": log2_change_std(mean, paired.std(0)),
        "cell_posterior_unpaired": log2_change_std(mean, samples.std(0)),
        "mean_donors": np.stack([_population_change(p, factual) for p in points]).std(0),
        "mean_posterior": np.stack([_population_change(p, f) for p, f in zip(samples, factuals)]).std(0),
    }
    if model.module.spatial_decoding == "mean":
        _, samples, factuals = _draws_with_s(model, work, control, donors, seed)
        paired = samples * np.divide(factual, factuals, out=np.ones_like(factuals), where=factuals > 0)
        spreads["cell_posterior_s"] = log2_change_std(mean, paired.std(0))
    return spreads


def main(argv: list[str]) -> int:
    from world_options import options_config
    from worlds import run_protocol

    from cellina.datasets import list_worlds, make_world
    from cellina.evaluation import calibration, responsive_genes

    world, holdout = argv[:2]
    if world not in list_worlds("development"):
        raise SystemExit(f"{world!r} is not a development world; use one of {list_worlds('development')}.")
    opts, cfg, model_opts, plan_opts = options_config(argv[2:], n_draws=5)
    adata = make_world(world)
    t0 = time.time()
    res = run_protocol(
        adata, holdout, "cellina", opts["preset"], "cellina", cfg, model_opts, plan_opts, return_models=True
    )
    model = res.models["cellina"]
    work, control, donors = model.adata, res.indices["control"], np.asarray(res.indices["donors"])
    frame = res.lfc[("edge", "cellina")]
    resp = responsive_genes(adata, holdout)
    true, pred = frame["true_change"].to_numpy()[resp], frame["pred_change"].to_numpy()[resp]
    spreads = _spreads(model, work, control, donors, opts["seed"])
    slope = float(np.sum(pred * true) / np.sum(true**2))
    row = {"world": world, "type": holdout, "preset": opts["preset"], "n_draws": int(donors.shape[0])}
    row.update({"n_control": int(control.size), "n_responsive": int(resp.sum())})
    row.update({"slope": round(slope, 3), "median_abs_error": round(float(np.median(np.abs(true - pred))), 4)})
    row["protocol_calibration"] = round(float(res.scores.set_index("perturbation").loc["edge", "truth_calibration"]), 3)
    if "pred_change_std" in frame:
        row["median_std_protocol"] = round(float(np.median(frame["pred_change_std"].to_numpy()[resp])), 4)
    for name, sd in spreads.items():
        row[f"calibration_{name}"] = round(calibration(pred, true, sd[resp]), 3)
        row[f"median_std_{name}"] = round(float(np.median(sd[resp])), 4)
        row[f"calibration_{name}_unbiased"] = round(calibration(pred / slope, true, sd[resp]), 3)
    _, zvar = model.get_latent_representation(work, indices=control, latent_key="z", return_dist=True)
    _, svar = model.get_latent_representation(work, indices=control, latent_key="s", return_dist=True)
    row.update({"mean_var_z": round(float(zvar.mean()), 4), "mean_var_s": round(float(svar.mean()), 4)})
    row["seconds"] = round(time.time() - t0)
    print("RESULT", json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    raise SystemExit(main(sys.argv[1:]))
