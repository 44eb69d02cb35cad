"""One model option set on one development world and held-out type: the tuning tool behind the
"Why niche responses shrink" section of docs/benchmarks.md.

Usage::

    python benchmarks/world_options.py dev_two_channels Myeloid base
    python benchmarks/world_options.py dev_two_channels Myeloid linear m.spatial_encoder='"linear"'
    python benchmarks/world_options.py dev_two_channels Myeloid adversary m.niche_adversary_lambda=1
    python benchmarks/world_options.py dev_two_channels Myeloid wide bandwidth=40 epochs=100
    python benchmarks/world_options.py dev_two_channels Myeloid posterior n_draws=5 uncertainty='"posterior"'

``m.NAME=JSON`` sets a model option on top of the preset, ``p.NAME=JSON`` a training-plan option;
``bandwidth``, ``max_neighbours``, ``epochs``, ``preset``, ``variant`` (``"cellina"`` or ``"gcn"``),
``seed``, ``depth`` and ``n_cells`` (the world's, instead of its specification's), ``borrow`` (with
``lfc_csv``: add the model's change for the other types, ``borrowed_change``), ``strengths`` (with
``lfc_csv``: add the change with each share of the reliability correction of worlds.STRENGTH_GRID,
``change_s<share>``, and with ``borrow`` the other types' too, ``borrowed_change_s<share>``), ``n_draws`` (edge
draws, default 1), ``uncertainty`` (what their spread describes: ``"donors"`` or ``"posterior"``) and
``checked`` (with ``lfc_csv``: add the model's error on the other types it can be checked against,
``checked_error``, and with ``strengths`` at each share, ``checked_error_s<share>``) and
``composition`` (the neighbours' types in the niche features: ``"off"``, ``"added"`` or ``"only"``,
which scores the edge perturbation alone) set the protocol; ``lfc_csv`` writes the edge run's
per-gene changes (true, predicted, spread) to that file. Prints one ``RESULT {json}`` line: edge and
node truth scores (with several draws ``edge_truth_calibration``, the share of responsive genes whose
exact change lies within two spreads of the prediction, and ``edge_change_std``, the median spread on
those genes), the tutorial's top-DEG Pearson, the latent probes (``niche_from_z``: how much of the
niche beyond the type leaks into z) and seconds.
Use development worlds only: the evaluation worlds judge choices made here (benchmarks/worlds.py).
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCORES = ("truth_pearson", "truth_skill", "truth_slope", "truth_auroc", "truth_calibration", "pearson")


def options_config(items: list[str], **defaults) -> tuple[dict, dict, dict, dict]:
    """The tool's options from ``NAME=JSON`` items (on top of ``defaults``): the protocol's options, the
    benchmark configuration ``run_protocol`` takes, and the model and plan options."""
    from worlds import MODEL_SIZE

    opts = {
        "bandwidth": 20.0,
        "max_neighbours": 50,
        "epochs": 40,
        "preset": "recommended",
        "variant": "cellina",
        "seed": 0,
    }
    opts.update({"n_draws": 1, "uncertainty": "donors", "composition": "off", "lfc_csv": None, **defaults})
    opts.update({"depth": None, "n_cells": None, "borrow": False, "strengths": False, "checked": False})
    model, plan = {}, {}
    for item in items:
        key, _, value = item.partition("=")
        target = model if key.startswith("m.") else plan if key.startswith("p.") else opts
        if target is opts and key not in opts:
            raise SystemExit(
                f"unknown option {key!r}; protocol options are {sorted(opts)}, model ones m.NAME, plan ones p.NAME"
            )
        target[key[2:] if key[:2] in ("m.", "p.") else key] = json.loads(value)
    cfg = {
        "bandwidth": opts["bandwidth"],
        "max_neighbours": opts["max_neighbours"],
        "seed": opts["seed"],
        "n_draws": opts["n_draws"],
        "uncertainty": opts["uncertainty"],
        "composition": opts["composition"],
        "model": MODEL_SIZE,
        "train": {"max_epochs": opts["epochs"], "batch_size": 512},
    }
    return opts, cfg, model, plan


def main(argv: list[str]) -> int:
    from worlds import checked_error, extra_edge_frames, run_protocol

    from cellina.datasets import list_worlds, make_world
    from cellina.evaluation import responsive_genes

    world, holdout, label = argv[:3]
    if world not in list_worlds("development"):
        raise SystemExit(f"{world!r} is not a development world; use one of {list_worlds('development')}.")
    opts, cfg, model, plan = options_config(argv[3:])
    adata = make_world(world, depth=opts["depth"], n_cells=opts["n_cells"])
    t0 = time.time()
    res = run_protocol(
        adata,
        holdout,
        "cellina",
        opts["preset"],
        opts["variant"],
        cfg,
        model,
        plan,
        probes=True,
        return_models=bool(opts["borrow"] or opts["strengths"] or opts["checked"]),
    )
    scores = res.scores.set_index("perturbation")
    row = {"label": label, "world": world, "type": holdout, "seconds": round(time.time() - t0)}
    for pert in ("edge", "node"):
        for col in SCORES:
            if pert in scores.index and col in scores and not (pert == "node" and col == "truth_calibration"):
                row[f"{pert}_{col}"] = round(float(scores.loc[pert, col]), 3)
    frame = res.lfc.get(("edge", "cellina"))
    if frame is not None and "pred_change_std" in frame:
        row["edge_change_std"] = round(float(frame["pred_change_std"][responsive_genes(adata, holdout)].median()), 4)
    if frame is not None and opts["lfc_csv"]:
        # the same changes as worlds.py's extra methods, as columns: <label>_s0.5 -> change_s0.5, and so on
        extra = extra_edge_frames(res, frame, cfg, "", bool(opts["borrow"]), bool(opts["strengths"]), opts["checked"])
        columns = {_column(f["method"].iloc[0]): f["pred_change"] for f in extra}
        if opts["checked"]:
            columns["checked_error"] = checked_error(res, cfg)
            columns |= {
                "checked_error" + f["method"].iloc[0]: f["checked_error"] for f in extra if "checked_error" in f
            }
        frame.assign(responsive=responsive_genes(adata, holdout), **columns).to_csv(opts["lfc_csv"])
    row.update({k: round(v, 3) for k, v in res.disentanglement.get("cellina", {}).items()})
    print("RESULT", json.dumps(row), flush=True)
    return 0


def _column(method: str) -> str:
    """The lfc CSV column of an extra method of worlds.extra_edge_frames made with an empty label."""
    return "borrowed_change" + method[len("_other") :] if method.startswith("_other") else "change" + method


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    raise SystemExit(main(sys.argv[1:]))
