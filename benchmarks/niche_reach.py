"""The niche reach from data (``cellina.spatial.niche_reach_curve``) on every world of the family.

For each development and evaluation world: the validation curve over graph bandwidths (the default
nine candidates, 0.5-8 cell spacings), its suggested and best bandwidth, and the reach of each of
the world's own niche channels expressed as the Gaussian bandwidth with the same mean squared
distance in two dimensions (Gaussian sigma: sigma; exponential decay l: l*sqrt(3); contact radius r:
r/2), so that a suggestion can be read against what the world really does. The held-out cells of
the protocol (each world's tumour cells of the first held-out type) are left out of the scan, as
they are left out of the model's graph. No model is trained here: the curve is cheap by design.

Usage::

    python benchmarks/niche_reach.py            # all worlds and the 100k-cell timing; writes the docs
    python benchmarks/niche_reach.py --sizes 100000,300000 --no-write

The timing scans a synthetic tissue of each size (300 genes, two slides) with the defaults: above
twice ``max_cells`` (30,000) cells only windows of the tissue are scanned, so time and memory stay
bounded. Peak memory is the largest resident set size during the scan minus the size before it.

Figures go into the ``niche-reach`` section of ``docs/benchmarks.md``; the curves into
``docs/img/niche_reach.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: squared-distance equivalence of each world kernel to a Gaussian bandwidth (2-D)
EQUIVALENT = {"gaussian": 1.0, "exponential": float(np.sqrt(3.0)), "contact": 0.5}


def equivalent_bandwidths(name: str) -> list[tuple[str, float]]:
    from cellina.datasets import world_spec

    return [(f"{c.name} ({c.kernel} {c.scale:g})", c.scale * EQUIVALENT[c.kernel]) for c in world_spec(name).channels]


def scan_world(name: str):
    from worlds import holdout_types

    from cellina.datasets import make_world
    from cellina.spatial import niche_reach_curve

    adata = make_world(name)
    first = holdout_types(adata)[0]
    held = np.flatnonzero((adata.obs["coarse_type"].to_numpy() == first) & (adata.obs["domain"].to_numpy() == "tumour"))
    t0 = time.perf_counter()
    curve = niche_reach_curve(adata, "coarse_type", layer="counts", library_key="slide", test_indices=held)
    return adata, curve, time.perf_counter() - t0


def scale_rows(sizes: list[int]) -> list[str]:
    """Seconds and extra peak memory of a default scan on synthetic tissues of each size."""
    from gcn_speed import _Peak

    from cellina.datasets import synthetic_tissue
    from cellina.spatial import niche_reach_curve

    rows = []
    for n in sizes:
        adata = synthetic_tissue(n_cells=n, n_genes=300, n_slides=2, seed=0, store_means=False)
        t0 = time.perf_counter()
        with _Peak() as peak:
            curve = niche_reach_curve(adata, "cell_type", layer="counts", library_key="slide")
        seconds = time.perf_counter() - t0
        rows.append(
            f"| {n:,} | {curve.n_cells:,} | {seconds:.1f} | {(peak.peak - peak.start) / 2**30:.2f} | "
            f"{curve.suggested_bandwidth:.3g} |"
        )
        print(rows[-1], flush=True)
        del adata
    return rows


def plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    cols = 4
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, curve) in zip(axes.ravel(), curves.items(), strict=False):
        curve.plot(ax)
        for label, value in equivalent_bandwidths(name):
            ax.axvline(value, color="#c03030", linewidth=1.0, alpha=0.7)
            ax.text(value, ax.get_ylim()[1], label.split(" ")[0], color="#c03030", fontsize=6, rotation=90, va="top")
        ax.set_title(name, fontsize=9)
        if ax.get_legend() is not None:
            ax.get_legend().set_visible(False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    fig.suptitle("niche reach from data: orange = suggested, grey = best, red = the world's own reach", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--sizes", default="100000", help="comma-separated tissue sizes to time (empty: none)")
    args = parser.parse_args(argv)
    from cellina.datasets import list_worlds

    rows, curves = [], {}
    for split in ("development", "evaluation"):
        for name in list_worlds(split):
            adata, curve, seconds = scan_world(name)
            curves[name] = curve
            truth = equivalent_bandwidths(name)
            i = int(np.flatnonzero(curve.bandwidths == curve.suggested_bandwidth)[0])
            rows.append(
                f"| {name} | {split} | {adata.n_obs} | "
                f"{'; '.join(f'{label}: {value:.3g}' for label, value in truth)} | "
                f"{f'{curve.suggested_bandwidth:.3g}' if curve.signal else '- (no signal)'} | "
                f"{curve.best_bandwidth:.3g} | {curve.suggested_max_neighbours} | {100 * curve.score[i]:.2f} | "
                f"{'yes' if curve.signal else 'no'} | {seconds:.1f} |"
            )
            print(rows[-1], flush=True)
    body = [
        "## Niche reach from data",
        "",
        f"`python benchmarks/niche_reach.py` — measured {time.strftime('%Y-%m-%d', time.gmtime())} on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}, shared). "
        "`cellina.spatial.niche_reach_curve` (also `cellina train --bandwidth auto` and the Tissue dock's "
        "*Suggest bandwidth from data*) builds the model's own graph at nine bandwidths, averages the "
        "neighbours' expression (10 principal components) and scores how much of each cell's expression "
        "beyond its type and slide (20 principal components) a per-type ridge regression predicts on "
        "spatial tiles held out of the fit (5 folds, tiles wider than the largest kernel's reach). The "
        "suggestion is the smallest bandwidth within one paired standard error of the best. The world's "
        "own reach is given per channel as the equivalent Gaussian bandwidth (same mean squared distance "
        "in 2-D). The scan never reads the truth; the held-out cells are left out.",
        "",
        "| world | split | cells | world's channels: equivalent Gaussian bandwidth (um) | suggested (um) | "
        "best (um) | max neighbours | explained at suggestion (%) | signal | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    sizes = [int(v) for v in args.sizes.split(",") if v]
    if sizes:
        body += [
            "Time and memory of one scan with the defaults (nine bandwidths, synthetic tumour section, 300 "
            "genes, two slides; the sample tissue's own niche is a Gaussian of 20 um):",
            "",
            "| cells | cells scored | seconds | extra peak memory (GiB) | suggested (um) |",
            "|---|---|---|---|---|",
            *scale_rows(sizes),
            "",
        ]
    if not args.no_write:
        plot(curves, ROOT / "docs" / "img" / "niche_reach.png")
        body += ["![validation curves of every world](img/niche_reach.png)", ""]
        write_section("niche-reach", "\n".join(body))
    else:
        print("\n".join(body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
