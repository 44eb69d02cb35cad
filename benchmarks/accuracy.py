"""Accuracy of tissue-graph counterfactuals on the synthetic tissue (leave-one-type-out protocol).

For each held-out coarse type (Myeloid first, then the others) the published protocol is run
with Cellina, an ablation with both auxiliary weights at 0, a space-blind scvi-tools SCVI
(domain as batch covariate, counterfactual by ``transform_batch``) and the mean-shift
baseline. Scores: the tutorial's Pearson on the top-50 observed DEGs, signed precision@50,
energy distance to the observed target cells, and the exact-truth Pearson / skill on the
niche-responsive genes and the change on null genes. Disentanglement probes (balanced
accuracy of a logistic regression on held-out cells) come from the same runs.

Usage::

    python benchmarks/accuracy.py --quick          # small tissue, few epochs, a few minutes
    python benchmarks/accuracy.py                  # full mode

Figures go into the ``accuracy`` section of ``docs/benchmarks.md`` and the scatter plots
into ``docs/img/``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402

TARGETS = {
    "edge": {"pearson": 0.85, "truth_pearson": 0.9, "truth_skill": 0.5},
    "node": {"truth_pearson": 0.8, "truth_skill": 0.5},
}
# edge top-50 Pearson, mean over held-out types: Cellina's lead over the mean-shift baseline
MARGIN_OVER_MEAN_SHIFT = 0.15


ALL_METHODS = ("cellina", "cellina_no_aux", "scvi", "mean_shift", "oracle")
# Model variants compared on the headline type over several seeds: the niche decoder, what the
# decoder learns from during training (samples of s, or its posterior mean), and whether the
# domain discriminator is told the cell type.
VARIANTS = {
    "concat": {"niche_decoder": "concat", "spatial_decoding": "sample"},
    "factorised": {"niche_decoder": "factorised", "spatial_decoding": "sample"},
    "type_gated": {"niche_decoder": "type_gated", "spatial_decoding": "sample"},
    "type_gated_mean": {"niche_decoder": "type_gated", "spatial_decoding": "mean"},
    "type_gated_mean_aware": {
        "niche_decoder": "type_gated",
        "spatial_decoding": "mean",
        "type_aware_discriminator": True,
    },
}


def _config(quick: bool) -> dict:
    if quick:
        # Every method on the lead type; the other types only Cellina and the references, so the
        # run stays within minutes on 2 shared cores (well under one when the cores are free).
        return {
            "n_cells": 3000,
            "n_genes": 150,
            "max_epochs": 60,
            "batch_size": 256,
            "holdouts": None,
            "lead_methods": ALL_METHODS,
            "other_methods": ("cellina", "mean_shift", "oracle"),
            "model_kwargs": {"n_latent": 10, "n_hidden": 64, "n_layers": 1},
            "variant": "type_gated_mean_aware",
            "lead_seeds": 3,
        }
    return {
        "n_cells": 20000,
        "n_genes": 300,
        "max_epochs": 100,
        "batch_size": 512,
        "holdouts": None,  # every coarse type
        "lead_methods": ALL_METHODS,
        "other_methods": ("cellina", "mean_shift", "oracle"),
        "model_kwargs": {"n_latent": 16, "n_hidden": 128, "n_layers": 2},
        "variant": "type_gated_mean_aware",
        "lead_seeds": 3,
    }


def model_kwargs(cfg: dict, variant: str | None = None) -> dict:
    """The mode's model settings with a variant's (default: the mode's own) decoder settings."""
    return {**cfg["model_kwargs"], **VARIANTS[variant or cfg["variant"]]}


def run_holdout(adata, holdout: str, cfg: dict, methods, seed: int, variant: str | None = None):
    """The leave-one-type-out protocol with this benchmark's graph, DEG and training settings."""
    from cellina.evaluation import leave_one_out

    return leave_one_out(
        adata,
        holdout,
        labels_key="coarse_type",
        domains_key="domain",
        control_domain="healthy",
        target_domain="tumour",
        methods=tuple(methods),
        perturbations=("edge", "node"),
        bandwidth=20.0,
        max_neighbours=30,
        model_kwargs=model_kwargs(cfg, variant),
        train_kwargs={"max_epochs": cfg["max_epochs"], "batch_size": cfg["batch_size"]},
        n_deg=50,
        n_deg_node=20,
        n_pert_genes=n_pert_genes(cfg),
        seed=seed,
    )


def n_pert_genes(cfg: dict) -> int:
    """Genes shifted by the node perturbation: the tutorial perturbs 200 of 2,000, keep that fraction."""
    return max(20, cfg["n_genes"] // 10)


# a held-out type needs this many cells in the control and in the target domain
MIN_CELLS_PER_DOMAIN = 20


def evaluable_types(adata, control: str = "healthy", target: str = "tumour") -> tuple[list[str], list[str]]:
    """Coarse types with enough cells in both domains for the protocol, and the others."""
    counts = pd.crosstab(adata.obs["coarse_type"], adata.obs["domain"])
    ok = (counts[control] >= MIN_CELLS_PER_DOMAIN) & (counts[target] >= MIN_CELLS_PER_DOMAIN)
    order = [str(t) for t in adata.obs["coarse_type"].cat.categories]
    return [t for t in order if ok[t]], [t for t in order if not ok[t]]


def plot_lfc(frame: pd.DataFrame, title: str, path: Path, n_labels: int = 8) -> None:
    """Observed vs predicted log-fold-change scatter in the style of the tutorial's figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import pearsonr

    t = frame["true_lfc"].to_numpy()
    p = frame["pred_lfc"].to_numpy()
    deg = np.flatnonzero(frame["is_deg"].to_numpy())
    rest = np.setdiff1d(np.arange(t.size), deg)
    r = pearsonr(t[deg], p[deg])[0] if deg.size > 1 else float("nan")
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.scatter(t[rest], p[rest], s=8, alpha=0.3, color="lightgray", linewidths=0, label="other genes")
    up, down = deg[t[deg] >= 0], deg[t[deg] < 0]
    ax.scatter(t[up], p[up], s=40, color="#d62728", edgecolor="white", linewidths=0.5, zorder=3, label="up in tumour")
    ax.scatter(
        t[down], p[down], s=40, color="#1f77b4", edgecolor="white", linewidths=0.5, zorder=3, label="down in tumour"
    )
    # Label only the largest observed changes; small offsets keep the text off the markers.
    for i in deg[np.argsort(-np.abs(t[deg]))][:n_labels]:
        ax.annotate(frame.index[i], (t[i], p[i]), xytext=(4, 4), textcoords="offset points", fontsize=7)
    lo = float(min(t.min(), p.min()))
    hi = float(max(t.max(), p.max()))
    pad = 0.05 * (hi - lo if hi > lo else 1.0)
    lims = [lo - pad, hi + pad]
    ax.plot(lims, lims, "k--", lw=1, alpha=0.6, zorder=1)
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_aspect("equal")
    ax.set_xlabel("Observed logFC (healthy -> tumour)")
    ax.set_ylabel("Predicted logFC (counterfactual)")
    ax.set_title(f"{title} (Pearson r = {r:.2f} on top {deg.size})", fontsize=9)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_truth(frames: dict[str, pd.DataFrame], responsive: np.ndarray, title: str, path: Path) -> None:
    """Predicted vs exact change (each against its own factual) per method: the right size is the identity line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(frames), figsize=(3.6 * len(frames), 3.8), squeeze=False)
    for ax, (name, frame) in zip(axes[0], frames.items()):
        t = frame["true_change"].to_numpy()
        p = frame["pred_change"].to_numpy()
        ax.scatter(t[~responsive], p[~responsive], s=6, color="lightgray", label="other genes")
        ax.scatter(t[responsive], p[responsive], s=14, color="#d62728", label="niche-responsive")
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, alpha=0.6)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("exact change (log2)")
    axes[0][0].set_ylabel("predicted change (log2)")
    axes[0][0].legend(frameon=False, fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(x: float) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def _table(df: pd.DataFrame, cols: list[str]) -> str:
    head = "| " + " | ".join(df.index.names + cols) + " |"
    sep = "|" + "---|" * (len(df.index.names) + len(cols))
    lines = [head, sep]
    for idx, row in df.iterrows():
        idx = idx if isinstance(idx, tuple) else (idx,)
        vals = [str(int(row[c])) if c == "n_types" else _fmt(row[c]) for c in cols]
        lines.append("| " + " | ".join([str(i) for i in idx] + vals) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small tissue and few epochs (minutes on 2 CPU cores)")
    parser.add_argument(
        "--holdouts",
        default=None,
        help="comma-separated coarse types trained on (default: the mode's list); every other "
        "coarse type still gets the untrained references (mean shift, exact truth)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the tissue and of the first training run")
    parser.add_argument(
        "--lead-seeds",
        type=int,
        default=None,
        help="training seeds for Cellina on the headline type (default 3), with each variant; the "
        "exact-truth targets are read on their mean",
    )
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--csv", default=None, help="also write every score to this CSV file")
    return parser.parse_args(argv)


@dataclass
class BenchmarkRun:
    """Everything one benchmark run measured, for the report."""

    adata: Any
    results: list
    trained: list[str]
    holdouts: list[str]
    skipped: list[str]
    every_seed: pd.DataFrame
    n_seeds: int
    total_s: float


def run_benchmark(args: argparse.Namespace, cfg: dict) -> BenchmarkRun:
    """Every held-out type once, then the headline type over seeds with each model variant."""
    import torch

    from cellina.datasets import synthetic_tissue

    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    adata = synthetic_tissue(n_cells=cfg["n_cells"], n_genes=cfg["n_genes"], seed=args.seed)
    all_types, skipped = evaluable_types(adata)
    trained = (args.holdouts.split(",") if args.holdouts else cfg["holdouts"]) or all_types
    # Myeloid leads (the headline type); trained types first, then the reference-only ones.
    trained = sorted(trained, key=lambda t: t != "Myeloid")
    holdouts = trained + [t for t in all_types if t not in trained]
    results = []
    for i, ct in enumerate(holdouts):
        t0 = time.perf_counter()
        lead_or_other = cfg["lead_methods"] if i == 0 else cfg["other_methods"]
        methods = lead_or_other if ct in trained else ("mean_shift", "oracle")
        res = run_holdout(adata, ct, cfg, methods, seed=args.seed)
        results.append(res)
        print(f"[{i + 1}/{len(holdouts)}] {ct}: {time.perf_counter() - t0:.0f} s", flush=True)
        print(res.scores.to_string(), flush=True)
    # The headline type again with other training seeds: seed-to-seed spread is large at this size.
    lead_type = holdouts[0]
    n_seeds = args.lead_seeds if args.lead_seeds is not None else cfg["lead_seeds"]
    # The other model variants (the published decoder on [z; s] among them) over the same seeds.
    variant = cfg["variant"]
    first_scores = results[0].scores[results[0].scores["method"] == "cellina"]
    seed_frames = [first_scores.assign(seed=args.seed, variant=variant)]
    runs = [(variant, k) for k in range(1, n_seeds)]
    runs += [(other, k) for other in VARIANTS if other != variant for k in range(n_seeds)]
    for name, k in runs:
        t0 = time.perf_counter()
        res = run_holdout(adata, lead_type, cfg, ("cellina",), seed=args.seed + k, variant=name)
        seed_frames.append(res.scores.assign(seed=args.seed + k, variant=name))
        print(f"[seed {args.seed + k}, {name}] {lead_type}: {time.perf_counter() - t0:.0f} s", flush=True)
        print(res.scores.to_string(), flush=True)
    every_seed = pd.concat(seed_frames, ignore_index=True)
    return BenchmarkRun(adata, results, trained, holdouts, skipped, every_seed, n_seeds, time.perf_counter() - t_start)


def make_plots(run: BenchmarkRun, cfg: dict, img_dir: Path, suffix: str) -> list[tuple[str, str]]:
    """The lead type's logFC scatter plots and its exact-change plot; (caption, file name) of each."""
    from cellina.evaluation import responsive_genes

    first = run.results[0]
    plots = []
    for pert in ("edge", "node"):
        if (pert, "cellina") in first.lfc:
            name = f"accuracy_lfc_{first.holdout}_{pert}{suffix}.png"
            plot_lfc(first.lfc[(pert, "cellina")], f"{first.holdout}, {pert} perturbation, Cellina", img_dir / name)
            plots.append((f"{first.holdout} {pert} perturbation: observed vs predicted logFC", name))
    truth_frames = {
        m: first.lfc[("edge", m)]
        for m in cfg["lead_methods"]
        if ("edge", m) in first.lfc and "true_change" in first.lfc[("edge", m)]
    }
    if truth_frames:
        name = f"accuracy_truth_{first.holdout}_edge{suffix}.png"
        responsive = responsive_genes(run.adata, first.holdout)
        plot_truth(
            truth_frames, responsive, f"{first.holdout}, edge perturbation: predicted vs exact change", img_dir / name
        )
        plots.append((f"{first.holdout} edge perturbation: predicted vs exact change per method", name))
    return plots


def main(argv: list[str] | None = None) -> int:
    from accuracy_report import report

    args = parse_args(argv)
    cfg = _config(args.quick)
    if args.epochs is not None:
        cfg["max_epochs"] = args.epochs
    run = run_benchmark(args, cfg)
    scores = pd.concat([r.to_frame() for r in run.results], ignore_index=True)
    # A trial run (--no-write) must not overwrite the figures the written section points to.
    img_dir = Path(tempfile.mkdtemp(prefix="accuracy_img_")) if args.no_write else ROOT / "docs" / "img"
    plots = make_plots(run, cfg, img_dir, "_quick" if args.quick else "")
    section = report(run, scores, cfg, args, plots)
    if args.no_write:
        print(section)
        print(f"(figures of this trial run: {img_dir})")
    else:
        write_section("accuracy", section, Path(args.out))
        print(f"wrote {args.out}")
    if args.csv:
        scores.to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
