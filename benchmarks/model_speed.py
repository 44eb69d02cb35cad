"""Training speed of Cellina against scvi-tools SCVI, and edge-counterfactual latency (CPU).

Both models train on the same synthetic tissue with the same batch size, layer sizes
(``n_hidden``, ``n_latent``, ``n_layers``), likelihood and torch thread count (set with
``torch.set_num_threads`` right before each run). Runs alternate SCVI / Cellina so that
load from other processes on a shared machine hits both alike; the reported ratio is the
median over the repeated pairs of the per-pair ratio of median epoch times (epoch 0, which
pays one-off start-up costs, is left out). No validation runs inside the timed epochs.
SCVI is timed twice: with its default optimiser and with the fused Adam kernel Cellina
uses, so the table separates the optimiser from the rest.

The counterfactual timing is ``get_counterfactual_expression`` for 5,000 focal cells with
50 donors each (pooled rewiring), decoded at their own library size.

Usage::

    python benchmarks/model_speed.py                 # 50k cells x 2,000 genes
    python benchmarks/model_speed.py --quick         # 5k cells x 500 genes, a smoke run

Figures go into the ``model_speed`` section of ``docs/benchmarks.md`` and the plot into
``docs/img/model_speed.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402

# timed Cellina variants: name -> (model settings, label); "cellina" is the published model and
# "cellina_recommended" the Model dock's default (type-gated decoder learning from the mean of s,
# type-aware discriminator)
CELLINA_VARIANTS = {
    "cellina": ({"niche_decoder": "concat"}, "Cellina"),
    "cellina_factorised": ({"niche_decoder": "factorised"}, "Cellina factorised"),
    "cellina_type_gated": ({"niche_decoder": "type_gated"}, "Cellina type-gated"),
    "cellina_recommended": (
        {"niche_decoder": "type_gated", "spatial_decoding": "mean", "type_aware_discriminator": True},
        "Cellina recommended",
    ),
}


def _build_tissue(n_cells: int, n_genes: int, seed: int):
    import scanpy as sc

    from cellina.datasets import synthetic_tissue
    from cellina.spatial import compute_spatial_features, spatial_neighbors

    adata = synthetic_tissue(n_cells=n_cells, n_genes=n_genes, seed=seed, store_means=False)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=30)
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    return adata


def _epoch_timer():
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.times: list[float] = []
            self._t0 = 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self._t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self._t0)

    return EpochTimer()


def _fused_adam(params):
    import torch

    # scvi-tools' own Adam settings (lr 1e-3, eps 0.01, weight decay 1e-6), fused kernel
    return torch.optim.Adam(params, lr=1e-3, eps=0.01, weight_decay=1e-6, fused=True)


def _train_time(cls, adata, batch_size, epochs, threads, arch, plan_kwargs=None, extra=None):
    import torch

    model = cls(adata, **arch, **(extra or {}))
    timer = _epoch_timer()
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model.train(
        max_epochs=epochs,
        batch_size=batch_size,
        train_size=1.0,
        check_val_every_n_epoch=None,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[timer],
        plan_kwargs=plan_kwargs,
    )
    times = timer.times[1:] if len(timer.times) > 1 else timer.times
    return float(np.median(times)), model


def run(args) -> dict:
    import scvi
    import torch

    from cellina.model import Cellina

    t0 = time.perf_counter()
    adata = _build_tissue(args.n_cells, args.n_genes, args.seed)
    build_s = time.perf_counter() - t0
    Cellina.setup_anndata(adata, labels_key="coarse_type", domains_key="domain", layer="counts")
    scvi.model.SCVI.setup_anndata(adata, layer="counts")
    arch = {"n_hidden": 128, "n_latent": 10, "n_layers": 2, "gene_likelihood": "nb"}

    variants = [
        ("scvi", scvi.model.SCVI, None, None),
        ("scvi_fused", scvi.model.SCVI, {"optimizer": "Custom", "optimizer_creator": _fused_adam}, None),
        *((name, Cellina, None, dict(settings)) for name, (settings, _) in CELLINA_VARIANTS.items()),
    ]
    rows = []
    cellina_model = None
    for bs in args.batch_sizes:
        runs = {name: [] for name, *_ in variants}
        for rep in range(args.repeats):
            for name, cls, plan, extra in variants:
                t, model = _train_time(cls, adata, bs, args.epochs, args.threads, arch, plan, extra)
                runs[name].append(t)
                if name == "cellina":
                    cellina_model = model
            print(
                f"batch {bs} rep {rep}: " + ", ".join(f"{k} {v[-1]:.2f} s/epoch" for k, v in runs.items()), flush=True
            )
        r = {k: np.asarray(v) for k, v in runs.items()}
        rows.append(
            {
                "batch_size": bs,
                "scvi": float(np.median(r["scvi"])),
                "scvi_fused": float(np.median(r["scvi_fused"])),
                "ratio_fused": float(np.median(r["cellina"] / r["scvi_fused"])),
                "ratios_fused": (r["cellina"] / r["scvi_fused"]).tolist(),
                **{name: float(np.median(r[name])) for name in CELLINA_VARIANTS},
                **{f"ratio_{name}": float(np.median(r[name] / r["scvi"])) for name in CELLINA_VARIANTS},
                **{f"ratios_{name}": (r[name] / r["scvi"]).tolist() for name in CELLINA_VARIANTS},
            }
        )

    # counterfactual latency: focal healthy cells rewired to tumour donors
    torch.set_num_threads(args.threads)
    domain = adata.obs["domain"].to_numpy()
    focal = np.flatnonzero(domain == "healthy")[: args.n_focal]
    pool = np.flatnonzero(domain == "tumour")
    cf_times = []
    for seed in range(args.cf_repeats):
        t = time.perf_counter()
        out = cellina_model.get_counterfactual_expression(
            focal, pool, precomputed=False, n_neighbours=args.n_donors, seed=seed, batch_size=2048
        )
        cf_times.append(time.perf_counter() - t)
    assert out.shape == (len(focal), adata.n_vars)
    print(f"counterfactual {len(focal)} x {args.n_donors}: {cf_times}", flush=True)
    return {
        "rows": rows,
        "cf_times": cf_times,
        "n_focal": len(focal),
        "n_pool": len(pool),
        "build_s": build_s,
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "versions": {"torch": torch.__version__, "scvi-tools": scvi.__version__},
    }


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
    bars = [("scvi", "SCVI (default Adam)", "#999999"), ("scvi_fused", "SCVI (fused Adam)", "#cccccc")]
    colours = ("#d62728", "#ff9896", "#9467bd", "#2ca02c")
    bars += [(name, label, colour) for (name, (_, label)), colour in zip(CELLINA_VARIANTS.items(), colours)]
    w = 0.8 / len(bars)
    for j, (name, label, colour) in enumerate(bars):
        offset = (j - (len(bars) - 1) / 2) * w
        ax.bar(x + offset, [r[name] for r in rows], w, label=label, color=colour)
        if name in CELLINA_VARIANTS:
            for i, r in enumerate(rows):
                ax.text(i + offset, r[name], f"x{r[f'ratio_{name}']:.2f}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x, [f"batch {r['batch_size']}" for r in rows])
    ax.set_ylabel("seconds per epoch (median)")
    ax.set_title(f"{res['n_obs']:,} cells x {res['n_vars']:,} genes, torch threads: {res['threads']}")
    # below the axes: inside, the five entries would cover the bars
    ax.legend(frameon=False, fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_docs(res: dict, command: str) -> None:
    lines = [
        "## Model speed (CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs while "
        f"measured), torch threads {res['threads']}; torch {res['versions']['torch']}, "
        f"scvi-tools {res['versions']['scvi-tools']}.",
        f"Data: synthetic tissue, {res['n_obs']:,} cells x {res['n_vars']:,} genes "
        f"(niche features over all genes). Both models: n_hidden 128, n_latent 10, n_layers 2, "
        "NB likelihood, no validation; Cellina with classifier and domain adversary on "
        "(the default), with each niche decoder: the published one on [z; s] (`Cellina`), the factorised "
        "one and the type-gated one, and the Model dock's recommended settings (type-gated decoder learning "
        "from the posterior mean of s, type-aware discriminator). "
        f"Median of epochs 1-{res['epochs'] - 1} per run, {res['repeats']} alternating rounds of "
        "SCVI / SCVI-fused / each Cellina variant; ratio = median over rounds.",
        "",
        "| batch size | SCVI s/epoch | SCVI fused-Adam s/epoch | Cellina / SCVI fused (per run) | "
        + " | ".join(f"{label} s/epoch | {label} / SCVI (per run)" for _, label in CELLINA_VARIANTS.values())
        + " | target <= 1.25 |",
        "|---|---|---|---|" + "---|---|" * len(CELLINA_VARIANTS) + "---|",
    ]

    def spread(values) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    for r in res["rows"]:
        ok = "met" if max(r[f"ratio_{name}"] for name in CELLINA_VARIANTS) <= 1.25 else "**missed**"
        per_variant = " | ".join(
            f"{r[name]:.2f} | {r[f'ratio_{name}']:.3f} ({spread(r[f'ratios_{name}'])})" for name in CELLINA_VARIANTS
        )
        lines.append(
            f"| {r['batch_size']} | {r['scvi']:.2f} | {r['scvi_fused']:.2f} | "
            f"{r['ratio_fused']:.3f} ({spread(r['ratios_fused'])}) | {per_variant} | {ok} |"
        )
    lines += [
        "",
        "Cellina does more work per step than SCVI (a second encoder over the niche features, "
        "the classifier, and a discriminator step with its own optimiser). It keeps pace "
        "through three implementation choices: torch's fused Adam kernel (the same update "
        "as the default per-tensor loop), the NB log-likelihood with the "
        "per-gene terms evaluated once per gene (equal to scvi-tools' `log_prob` to float "
        "precision, tested), and training metrics summed on the fly and logged once per "
        "epoch (Lightning's `self.log` costs about 2 ms per call on CPU). The "
        "'SCVI fused Adam' column gives SCVI the same optimiser kernel, isolating the rest.",
    ]
    all_r = [v for r in res["rows"] for name in CELLINA_VARIANTS for v in r[f"ratios_{name}"]]
    all_f = [v for r in res["rows"] for v in r.get("ratios_fused", [r["ratio_fused"]])]
    lines += [
        "",
        "Other jobs shared the cores during the measurement, so single runs vary; the "
        "per-run ratios in brackets show the spread. Against SCVI with its default "
        f"optimiser the per-run ratio of the Cellina variants ranged {min(all_r):.2f}-{max(all_r):.2f}; against SCVI "
        f"with the fused kernel it ranged {min(all_f):.2f}-{max(all_f):.2f}.",
    ]
    cf = res["cf_times"]
    ok = "met" if min(cf) < 5 else "**missed**"
    lines += [
        "",
        f"Edge counterfactual (`get_counterfactual_expression`, pooled rewiring): "
        f"{res['n_focal']:,} focal cells x {res['n_donors']} donors from a pool of "
        f"{res['n_pool']:,}, {res['n_vars']:,} genes: "
        + ", ".join(f"{t:.2f} s" for t in cf)
        + f" over {len(cf)} seeds (first call included); target < 5 s {ok}.",
        "",
        "![Cellina vs SCVI seconds per epoch](img/model_speed.png)",
    ]
    write_section("model_speed", "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5k cells x 500 genes")
    parser.add_argument("--n-cells", type=int, default=50_000)
    parser.add_argument("--n-genes", type=int, default=2_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-focal", type=int, default=5_000)
    parser.add_argument("--n-donors", type=int, default=50)
    parser.add_argument("--cf-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_cells, args.n_genes, args.n_focal = 5_000, 500, 1_000
    res = run(args)
    res.update(threads=args.threads, epochs=args.epochs, repeats=args.repeats, n_donors=args.n_donors)
    if not args.no_docs:
        _plot(res, ROOT / "docs" / "img" / "model_speed.png")
        command = "python benchmarks/model_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        _write_docs(res, command.strip())
    print(res)


if __name__ == "__main__":
    main()
