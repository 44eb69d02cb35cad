"""Whom CellinaGCN's attention favours on the synthetic tissue, over training seeds.

In the synthetic tissue the ligand genes are made by CAFs (the strongest sender), one Myeloid
subtype and endothelial cells, and Myeloid cells respond most to the ligand (and to the tumour
composition of their niche, Malignant cells and CAFs). The expectation (issue 15) is that Myeloid
cells attend to their CAF neighbours more than uniform attention would
(``attention_by_group(...).loc["Myeloid", "CAF"] > 1``). This script trains the graph variant with
several seeds, with one and two GATv2 layers, with and without its contrastive loss, and reports
that value for every layer and the sender each model favours most; the plot shows the receiver x
sender table of the first one-layer model with the contrastive loss.

Usage::

    python benchmarks/gcn_attention.py                # 3,000 cells, 5 seeds, 30 epochs, 1 and 2 layers
    python benchmarks/gcn_attention.py --quick        # 1,500 cells, 2 seeds, 5 epochs

Figures go into the ``gcn_attention`` section of ``docs/benchmarks.md`` and the plot into
``docs/img/gcn_attention.png``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402
from gcn_speed import build_tissue  # noqa: E402

RECEIVER, SENDER = "Myeloid", "CAF"


def train_one(adata, seed: int, link_prediction_weight: float, n_layers: int, args):
    """A graph-variant model trained with ``seed``; its attention table per layer."""
    import torch

    from cellina.model import CellinaGCN

    data = adata.copy()
    CellinaGCN.setup_anndata(data, batch_key="slide", labels_key="coarse_type", domains_key="domain", layer="counts")
    torch.manual_seed(seed)
    model = CellinaGCN(
        data,
        n_hidden=64,
        n_latent=10,
        n_layers=n_layers,
        num_neighbors=[10] * n_layers,
        link_prediction_weight=link_prediction_weight,
    )
    model.train(max_epochs=args.epochs, batch_size=256, enable_progress_bar=False, plan_kwargs={"lr": 3e-3})
    return [model.attention_by_group("coarse_type", layer=layer) for layer in range(n_layers)]


def run(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    adata = build_tissue(args.n_cells, args.n_genes, 0)
    rows, example = [], None
    for n_layers in args.n_layers:
        for weight in (0.0, 1.0):
            for seed in range(args.seeds):
                t = time.perf_counter()
                tables = train_one(adata, seed, weight, n_layers, args)
                if example is None and weight == 1.0:
                    example = tables[0]
                for layer, table in enumerate(tables):
                    favoured = table.mean(axis=0).idxmax()
                    rows.append(
                        {
                            "n_layers": n_layers,
                            "link_prediction_weight": weight,
                            "seed": seed,
                            "layer": layer,
                            "pair": float(table.loc[RECEIVER, SENDER]),
                            "sender_mean": float(table[SENDER].mean()),
                            "favoured": favoured,
                            "favoured_mean": float(table[favoured].mean()),
                        }
                    )
                print(
                    f"{n_layers} layer(s), weight {weight}, seed {seed}: {rows[-n_layers:]} "
                    f"({time.perf_counter() - t:.0f} s)",
                    flush=True,
                )
    return {"rows": rows, "example": example}


def _plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = res["example"]
    fig, ax = plt.subplots(figsize=(6.2, 5.0))
    values = np.log2(table.to_numpy(dtype=float))
    bound = np.nanmax(np.abs(values))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound)
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=60, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    ax.set_xlabel("sender (neighbour)")
    ax.set_ylabel("receiver")
    ax.set_title("log2 attention relative to uniform (1 GATv2 layer, contrastive loss, seed 0)", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary(rows: list[dict]) -> list[str]:
    lines = [
        f"| GATv2 layers | contrastive weight | layer | {RECEIVER} <- {SENDER} per seed | > 1 in | "
        "most favoured sender per seed |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["n_layers"], r["link_prediction_weight"], r["layer"]) for r in rows})
    for n_layers, weight, layer in keys:
        group = [
            r for r in rows if (r["n_layers"], r["link_prediction_weight"], r["layer"]) == (n_layers, weight, layer)
        ]
        pairs = ", ".join(f"{r['pair']:.2f}" for r in group)
        above = sum(r["pair"] > 1 for r in group)
        favoured = ", ".join(f"{r['favoured']} ({r['favoured_mean']:.2f})" for r in group)
        lines.append(f"| {n_layers} | {weight:g} | {layer} | {pairs} | {above}/{len(group)} | {favoured} |")
    return lines


def _write_docs(res: dict, args, command: str) -> None:
    lines = [
        "## Whom CellinaGCN attends to (synthetic tissue)",
        "",
        f"Command: `{command}`",
        "",
        f"Synthetic tissue, {args.n_cells:,} cells on two slides, {args.n_genes} genes; graph: gaussian kernel, "
        f"bandwidth 20 um, 30 nearest cells. CellinaGCN with 1 or 2 GATv2 layers, 10 neighbours per hop, "
        f"n_hidden 64, n_latent 10, {args.epochs} epochs, batch 256, learning rate 3e-3, with and without its "
        f"contrastive loss; {args.seeds} training seeds each. Values: mean attention per edge relative to "
        "uniform attention (`attention_by_group`, 1 = uniform); 'most favoured sender': the sender type with "
        "the highest mean over receivers. Ligand senders in this tissue: CAFs (strongest), one Myeloid subtype "
        "and endothelial cells.",
        "",
        *_summary(res["rows"]),
        "",
        "![receiver x sender attention](img/gcn_attention.png)",
    ]
    write_section("gcn_attention", "\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n-cells", type=int, default=3_000)
    parser.add_argument("--n-genes", type=int, default=100)
    parser.add_argument("--n-layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_cells, args.seeds, args.epochs = 1_500, 2, 5
    res = run(args)
    if not args.no_docs:
        _plot(res, ROOT / "docs" / "img" / "gcn_attention.png")
        command = "python benchmarks/gcn_attention.py " + " ".join(argv if argv is not None else sys.argv[1:])
        _write_docs(res, args, command.strip())
    print(res["rows"])


if __name__ == "__main__":
    main()
