"""Training speed and memory of CellinaGCN against Cellina, and its counterfactual latency (CPU).

Both models train on the same synthetic tissue and graph (gaussian kernel, bandwidth 20 um, 30
nearest cells: the tissue's own niche scale) with the same batch size, layer sizes (``n_hidden``,
``n_latent``, ``n_layers``), likelihood, heads and torch thread count, in one process; runs
alternate Cellina / each CellinaGCN setting so that load from other processes hits all alike.
Time per epoch is the median of epochs 1.. (epoch 0 pays one-off costs); no validation. Peak memory
is the largest resident set size sampled every 20 ms while a model trains, minus the size just
before (the tissue itself is not counted).

The counterfactual timing is ``get_counterfactual_expression`` for 5,000 healthy focal cells with
50 donors each from the tumour cells (pooled rewiring), decoded at their own library size, on the
largest tissue.

Usage::

    python benchmarks/gcn_speed.py                    # 20k and 100k cells x 300 genes
    python benchmarks/gcn_speed.py --quick            # 3k cells, a smoke run

Figures go into the ``gcn_speed`` section of ``docs/benchmarks.md`` and the plot into
``docs/img/gcn_speed.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402

ARCH = {"n_hidden": 128, "n_latent": 10, "n_layers": 2, "gene_likelihood": "nb"}
# timed settings: name -> (class name, options, label)
SETTINGS = {
    "cellina": ("Cellina", {}, "Cellina"),
    "gcn_all": ("CellinaGCN", {"num_neighbors": None}, "CellinaGCN, all neighbours (default)"),
    "gcn_10_5": ("CellinaGCN", {"num_neighbors": [10, 5]}, "CellinaGCN, 10 + 5 neighbours"),
    "gcn_10_5_dir": (
        "CellinaGCN",
        {"num_neighbors": [10, 5], "subgraph_type": "directional"},
        "CellinaGCN, 10 + 5 neighbours, directional",
    ),
}


def build_tissue(n_cells: int, n_genes: int, seed: int):
    """A two-slide synthetic tissue with the graph and niche features, counts in X."""
    import scanpy as sc

    from cellina.datasets import synthetic_tissue
    from cellina.spatial import compute_spatial_features, spatial_neighbors

    adata = synthetic_tissue(n_cells=n_cells, n_genes=n_genes, n_slides=2, seed=seed, store_means=False)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=30, library_key="slide")
    compute_spatial_features(adata)
    adata.X = adata.layers["counts"].copy()
    return adata


class _Peak:
    """Largest resident set size of this process while the block runs (sampled)."""

    def __init__(self, every: float = 0.02):
        import psutil

        self.process, self.every = psutil.Process(), every
        self.peak = self.start = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every)

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


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


def train_time(adata, name: str, args) -> tuple[float, float, object]:
    """Median seconds per epoch, peak extra memory (GiB) and the trained model."""
    import torch

    import cellina.model

    cls_name, options, _ = SETTINGS[name]
    cls = getattr(cellina.model, cls_name)
    model = cls(adata, **ARCH, **options)
    timer = _epoch_timer()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    with _Peak() as peak:
        model.train(
            max_epochs=args.epochs,
            batch_size=args.batch_size,
            train_size=1.0,
            check_val_every_n_epoch=None,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            callbacks=[timer],
        )
    times = timer.times[1:] if len(timer.times) > 1 else timer.times
    return float(np.median(times)), (peak.peak - peak.start) / 2**30, model


def _counterfactual_times(model, adata, args) -> list[float]:
    import torch

    torch.set_num_threads(args.threads)
    domain = adata.obs["domain"].to_numpy()
    focal = np.flatnonzero(domain == "healthy")[: args.n_focal]
    pool = np.flatnonzero(domain == "tumour")
    times = []
    for seed in range(args.cf_repeats):
        t = time.perf_counter()
        out = model.get_counterfactual_expression(
            focal, pool, precomputed=False, n_neighbours=args.n_donors, seed=seed, batch_size=2048
        )
        times.append(time.perf_counter() - t)
    assert out.shape == (focal.size, adata.n_vars)
    return times


def _measure_size(n_cells: int, args) -> dict:
    from cellina.model import Cellina, CellinaGCN

    t0 = time.perf_counter()
    adata = build_tissue(n_cells, args.n_genes, args.seed)
    build_s = time.perf_counter() - t0
    setup = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}
    Cellina.setup_anndata(adata, **setup)
    gcn_data = adata.copy()
    CellinaGCN.setup_anndata(gcn_data, **setup)
    names = [n for n in SETTINGS if n != "gcn_all" or n_cells in args.all_neighbours_sizes]
    times = {n: [] for n in names}
    memory, models = {}, {}
    for rep in range(args.repeats):
        for name in names:
            data = adata if SETTINGS[name][0] == "Cellina" else gcn_data
            t, mem, models[name] = train_time(data, name, args)
            times[name].append(t)
            memory[name] = max(memory.get(name, 0.0), mem)
            print(f"{n_cells} cells, round {rep}: {name} {t:.2f} s/epoch, +{mem:.2f} GiB", flush=True)
    degree = float(np.diff(adata.obsp["spatial_connectivities"].indptr).mean())
    row = {"n_cells": n_cells, "build_s": build_s, "degree": degree, "settings": names}
    for name in names:
        row[name] = float(np.median(times[name]))
        row[f"mem_{name}"] = memory[name]
        if name != "cellina":
            row[f"ratio_{name}"] = float(np.median(np.asarray(times[name]) / np.asarray(times["cellina"])))
    if n_cells == max(args.sizes):
        row["cf_gcn"] = _counterfactual_times(models[args.cf_setting], gcn_data, args)
        row["cf_cellina"] = _counterfactual_times(models["cellina"], adata, args)
        row["n_pool"] = int((adata.obs["domain"] == "tumour").sum())
    return row


def run(args) -> dict:
    import scvi
    import torch

    rows = [_measure_size(n, args) for n in args.sizes]
    return {"rows": rows, "versions": {"torch": torch.__version__, "scvi-tools": scvi.__version__}}


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    colours = {"cellina": "#d62728", "gcn_all": "#1f77b4", "gcn_10_5": "#6baed6", "gcn_10_5_dir": "#c6dbef"}
    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    w = 0.8 / len(SETTINGS)
    for j, (name, (_, _, label)) in enumerate(SETTINGS.items()):
        xs = [i for i, r in enumerate(rows) if name in r["settings"]]
        offset = (j - (len(SETTINGS) - 1) / 2) * w
        ax.bar([x + offset for x in xs], [rows[i][name] for i in xs], w, label=label, color=colours[name])
        for i in xs:
            if name != "cellina":
                ratio = rows[i][f"ratio_{name}"]
                ax.text(i + offset, rows[i][name], f"x{ratio:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [f"{r['n_cells']:,} cells" for r in rows])
    ax.set_ylabel("seconds per epoch (median, log scale)")
    ax.set_title(f"{res['n_genes']} genes, batch {res['batch_size']}, torch threads {res['threads']}")
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(res: dict) -> list[str]:
    lines = [
        "| cells | mean neighbours | setting | s/epoch | / Cellina | extra memory while training (GiB) | target <= 5x |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        for name in r["settings"]:
            label = SETTINGS[name][2]
            ratio = r.get(f"ratio_{name}")
            met = "" if ratio is None else ("met" if ratio <= 5 else "**missed**")
            ratio_text = "1" if ratio is None else f"{ratio:.2f}"
            lines.append(
                f"| {r['n_cells']:,} | {r['degree']:.1f} | {label} | {r[name]:.2f} | {ratio_text} | "
                f"{r[f'mem_{name}']:.2f} | {met} |"
            )
    return lines


def _write_docs(res: dict, command: str) -> None:
    largest = res["rows"][-1]
    lines = [
        "## CellinaGCN speed and memory (CPU)",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs while measured), "
        f"torch threads {res['threads']}; torch {res['versions']['torch']}, scvi-tools {res['versions']['scvi-tools']}.",
        f"Data: synthetic tissue on two slides, {res['n_genes']} genes; graph: gaussian kernel, bandwidth 20 um, 30 "
        "nearest cells (the tissue's niche scale; Cellina's niche features are built on it and CellinaGCN reads "
        f"it). Both models: n_hidden 128, n_latent 10, n_layers 2 (two GATv2 layers), NB likelihood, classifier "
        f"and adversary on, batch {res['batch_size']}, no validation; CellinaGCN with its default contrastive "
        f"loss. Median of epochs 1-{res['epochs'] - 1}, {res['repeats']} alternating round(s); ratio = median of "
        "the per-round ratios. Extra memory: peak resident set size while training minus the size before.",
        "",
        *_table(res),
        "",
    ]
    cf = largest.get("cf_gcn")
    if cf:
        ok = "met" if min(cf) < 10 else "**missed**"
        lines += [
            f"Edge counterfactual (`get_counterfactual_expression`, pooled rewiring) with "
            f"{SETTINGS[res['cf_setting']][2]} on {largest['n_cells']:,} cells: {res['n_focal']:,} focal cells x "
            f"{res['n_donors']} donors from a pool of {largest['n_pool']:,}: "
            + ", ".join(f"{t:.2f} s" for t in cf)
            + f" over {len(cf)} seeds (first call included); target < 10 s {ok}. Cellina on the same cells: "
            + ", ".join(f"{t:.2f} s" for t in largest["cf_cellina"])
            + ".",
            "",
        ]
    lines += ["![CellinaGCN vs Cellina seconds per epoch](img/gcn_speed.png)"]
    write_section("gcn_speed", "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3k cells, 100 genes, 500 focal cells")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--all-neighbours-sizes", type=int, nargs="*", default=[20_000])
    parser.add_argument("--n-genes", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-focal", type=int, default=5_000)
    parser.add_argument("--n-donors", type=int, default=50)
    parser.add_argument("--cf-repeats", type=int, default=2)
    parser.add_argument("--cf-setting", choices=[n for n in SETTINGS if n != "cellina"], default="gcn_10_5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.all_neighbours_sizes, args.n_genes, args.n_focal = [3_000], [3_000], 100, 500
    res = run(args)
    res.update(
        threads=args.threads,
        epochs=args.epochs,
        repeats=args.repeats,
        n_genes=args.n_genes,
        batch_size=args.batch_size,
        n_focal=args.n_focal,
        n_donors=args.n_donors,
        cf_setting=args.cf_setting,
    )
    if not args.no_docs:
        _plot(res, ROOT / "docs" / "img" / "gcn_speed.png")
        command = "python benchmarks/gcn_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])
        _write_docs(res, command.strip())
    print(res)


if __name__ == "__main__":
    main()
