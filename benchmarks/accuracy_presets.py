"""The two presets side by side on every held-out type (leave-one-type-out protocol).

For each coarse type of the synthetic tissue with enough cells in the healthy and the tumour
domain, the published protocol (``cellina.evaluation.leave_one_out``) is run twice with the same
tissue, seed, epochs and graph: once with the ``published`` preset (the published objective:
s-KL weight 1, scvi-tools' 400-epoch KL warm-up, the published adversary, epoch 0 only measuring
loss scales) and once with the ``recommended`` preset, plus the mean-shift baseline. Scores: the
tutorial's Pearson on the top-50 observed DEGs (edge), and against the exact counterfactual on the
niche-responsive genes: Pearson, skill and slope (1 = the right size) for edge and node.

Usage::

    python benchmarks/accuracy_presets.py            # 3,000 cells, 60 epochs: ~20 min on 2 cores
    python benchmarks/accuracy_presets.py --epochs 5 --holdouts Myeloid --no-write   # a trial run

Figures go into the ``accuracy-presets`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import evaluable_types, n_pert_genes  # noqa: E402
from docs_section import write_section  # noqa: E402

PRESET_NAMES = ("published", "recommended")
COLUMNS = ["pearson", "truth_pearson", "truth_skill", "truth_slope"]


def run_type(adata, holdout: str, cfg: dict, preset: str | None, seed: int):
    """One protocol run: Cellina with ``preset``, or only the mean shift when ``preset`` is None."""
    from cellina.evaluation import leave_one_out
    from cellina.model import get_preset

    chosen = get_preset(preset) if preset else None
    return leave_one_out(
        adata,
        holdout,
        labels_key="coarse_type",
        domains_key="domain",
        control_domain="healthy",
        target_domain="tumour",
        methods=("cellina",) if chosen else ("mean_shift",),
        perturbations=("edge", "node"),
        bandwidth=20.0,
        max_neighbours=30,
        model_kwargs=chosen.model_kwargs(**cfg["model"]) if chosen else None,
        plan_kwargs=chosen.plan_kwargs() if chosen else None,
        train_kwargs={"max_epochs": cfg["max_epochs"], "batch_size": cfg["batch_size"]},
        n_deg=50,
        n_deg_node=20,
        n_pert_genes=n_pert_genes(cfg),
        seed=seed,
        probes=False,
    )


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.2f}"


def table(scores: pd.DataFrame, types: list[str]) -> list[str]:
    """One row per held-out type: edge columns then node columns, for each method."""
    methods = ["published", "recommended", "mean_shift"]
    head = "| held-out type | method | edge top-50 r | edge truth r | edge skill | edge slope | node truth r | node skill |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    frame = scores.set_index(["holdout", "method", "perturbation"])

    def get(holdout: str, method: str, pert: str, col: str) -> float:
        if holdout == "mean":
            sub = scores[(scores["method"] == method) & (scores["perturbation"] == pert)]
            return float(sub[col].mean()) if len(sub) else float("nan")
        key = (holdout, method, pert)
        return float(frame.loc[key, col]) if key in frame.index else float("nan")

    wanted = [("edge", c) for c in COLUMNS] + [("node", "truth_pearson"), ("node", "truth_skill")]
    for holdout in [*types, "mean"]:
        for method in methods:
            cells = [get(holdout, method, pert, col) for pert, col in wanted]
            lines.append(f"| {holdout} | {method} | " + " | ".join(_fmt(v) for v in cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--holdouts", default=None, help="comma-separated coarse types (default: every evaluable one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    import torch

    from cellina.datasets import synthetic_tissue

    cfg = {
        "n_cells": 3000,
        "n_genes": 150,
        "max_epochs": args.epochs,
        "batch_size": 256,
        "model": {"n_latent": 10, "n_hidden": 64, "n_layers": 1},
    }
    start = time.perf_counter()
    adata = synthetic_tissue(n_cells=cfg["n_cells"], n_genes=cfg["n_genes"], seed=args.seed)
    types, skipped = evaluable_types(adata)
    if args.holdouts:
        types = [t for t in args.holdouts.split(",") if t in types]
    frames = []
    for holdout in types:
        for preset in (*PRESET_NAMES, None):
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            res = run_type(adata, holdout, cfg, preset, args.seed)
            method = preset or "mean_shift"
            frames.append(res.scores.assign(holdout=holdout, method=method))
            print(f"{holdout} {method}: {time.perf_counter() - t0:.0f} s", flush=True)
            print(res.scores[["perturbation", *[c for c in COLUMNS if c in res.scores]]].to_string(), flush=True)
    scores = pd.concat(frames, ignore_index=True)
    minutes = (time.perf_counter() - start) / 60
    body = [
        "## The two presets on every held-out type",
        "",
        f"`python benchmarks/accuracy_presets.py --epochs {args.epochs}` — measured "
        f"{time.strftime('%Y-%m-%d', time.gmtime())} on {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}, shared), {minutes:.0f} min. Synthetic tissue "
        f"{cfg['n_cells']} cells x {cfg['n_genes']} genes, seed {args.seed}; model {cfg['model']}, "
        f"{cfg['max_epochs']} epochs, batch {cfg['batch_size']}; graph: gaussian, bandwidth 20 um, 30 neighbours.",
        "Each preset as `Cellina.from_preset` builds it and `train` applies its plan options "
        "(`cellina.model.presets`); one training run per type and preset, the same seed for both. "
        "`edge top-50 r` is the tutorial's metric; `truth r`, `skill` (1 - |pred - true|^2 / |true|^2, "
        "0 = predicting no change) and `slope` (1 = the right size) compare with the exact change on the "
        "type's niche-responsive genes."
        + (f" Not evaluable (too few healthy or tumour cells): {', '.join(skipped)}." if skipped else ""),
        "",
        *table(scores, types),
    ]
    text = "\n".join(body)
    if args.no_write:
        print(text)
    else:
        write_section("accuracy-presets", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
