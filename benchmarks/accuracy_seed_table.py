"""Per-type accuracy over training seeds: the benchmark's run plus ``accuracy_seed.py`` repeats.

A single training run per held-out type is noisy at this tissue size (the top-50 Pearson of
one type moved by up to 0.24 between seeds), so the headline "mean over types" target is also
read on the per-type means over seeds::

    python benchmarks/accuracy.py --csv full.csv
    for s in 1 2 3 4; do for t in Myeloid Epithelial Fibroblast CAF Endothelial T_cell B_cell Plasma_cell; do
        python benchmarks/accuracy_seed.py $t $s --csv seeds.csv                        # the benchmark's variant
        python benchmarks/accuracy_seed.py $t $s --variant type_gated_mean --csv seeds.csv   # to compare with
    done; done
    python benchmarks/accuracy_seed_table.py full.csv seeds.csv

The benchmark's Cellina rows count as seed 0 of its model variant, whose rows of the seed files
make the per-type table. Rows of other variants are compared with it on the seeds (>= 1) that
every variant has. The mean shift and the exact counterfactual (oracle) need no training and
come from the benchmark file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import MARGIN_OVER_MEAN_SHIFT, ROOT, TARGETS, _config, _fmt  # noqa: E402
from docs_section import write_section  # noqa: E402

METRICS = ("pearson", "truth_pearson", "truth_skill", "truth_slope")


def seed_scores(benchmark: pd.DataFrame, repeats: list[pd.DataFrame], variant: str) -> pd.DataFrame:
    """Edge scores of Cellina, one row per (model variant, held-out type, seed)."""
    first = benchmark[benchmark["method"] == "cellina"].assign(seed=0, variant=variant)
    rows = pd.concat([first, *repeats], ignore_index=True)
    missing = [c for c in ("holdout", "seed", "variant", "perturbation", *METRICS) if c not in rows]
    if missing:
        raise ValueError(f"score files lack the column(s) {missing}")
    rows = rows[rows["perturbation"] == "edge"]
    duplicated = rows.duplicated(["variant", "holdout", "seed"])
    if duplicated.any():
        runs = rows.loc[duplicated, ["variant", "holdout", "seed"]].to_records(index=False).tolist()
        raise ValueError(f"more than one run for (variant, held-out type, seed) {runs}")
    return rows


def _per_type_table(rows: pd.DataFrame, refs: pd.DataFrame) -> tuple[list[str], pd.Series]:
    """Table lines, and each type's top-50 Pearson averaged over seeds (types with references only)."""
    per_seed = rows.pivot(index="holdout", columns="seed", values="pearson")
    means = rows.groupby("holdout")[list(METRICS)].mean()
    types = [t for t in per_seed.index if t in refs.index]
    seeds = list(per_seed.columns)
    lines = [
        "| held-out type | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | mean | mean shift | exact (oracle) | truth Pearson | truth skill | truth slope |",
        "|---|" + "---|" * (len(seeds) + 6),
    ]
    for t in sorted(types, key=lambda t: -means.loc[t, "pearson"]):
        lines.append(
            f"| {t} | "
            + " | ".join(_fmt(per_seed.loc[t, s]) for s in seeds)
            + f" | {_fmt(means.loc[t, 'pearson'])} | {_fmt(refs.loc[t, 'mean_shift'])} | {_fmt(refs.loc[t, 'oracle'])}"
            + f" | {_fmt(means.loc[t, 'truth_pearson'])} | {_fmt(means.loc[t, 'truth_skill'])}"
            + f" | {_fmt(means.loc[t, 'truth_slope'])} |"
        )
    complete = per_seed.loc[types].notna().all()
    per_seed_means = per_seed.loc[types].mean()
    lines += [
        "",
        "Mean over the types per seed (seeds with every type): "
        + ", ".join(f"seed {s} {_fmt(per_seed_means[s])}" for s in seeds if complete[s])
        + ".",
    ]
    return lines, means.loc[types, "pearson"]


def _paired_table(rows: pd.DataFrame) -> list[str]:
    """Variants compared on the (type, seed) runs every variant has: same seeds, same initial weights."""
    variants = sorted(rows["variant"].unique())
    keys = rows.groupby(["holdout", "seed"])["variant"].nunique()
    shared = keys[keys == len(variants)].index
    if len(variants) < 2 or len(shared) == 0:
        return []
    paired = rows.set_index(["holdout", "seed"]).loc[shared].reset_index()
    means = paired.groupby(["holdout", "variant"])[["pearson", "truth_skill", "truth_slope"]].mean().unstack()
    n_seeds = paired.groupby("holdout")["seed"].nunique()
    head = " | ".join(f"{m} `{v}`" for m in ("pearson", "truth skill", "truth slope") for v in variants)
    lines = [
        "Model variants on the same `accuracy_seed.py` runs (each type with the seeds >= 1 that every variant "
        "has; a seed fixes the donor draws and the initial weights of every layer the variants share):",
        "",
        f"| held-out type | seeds | {head} |",
        "|---|---|" + "---|" * (3 * len(variants)),
    ]
    cols = [(m, v) for m in ("pearson", "truth_skill", "truth_slope") for v in variants]
    for t in means.index:
        lines.append(f"| {t} | {n_seeds[t]} | " + " | ".join(_fmt(means.loc[t, c]) for c in cols) + " |")
    lines.append("| mean over types | - | " + " | ".join(_fmt(means[c].mean()) for c in cols) + " |")
    return lines


def section(rows: pd.DataFrame, benchmark: pd.DataFrame, variant: str, command: str) -> str:
    edge = benchmark[benchmark["perturbation"] == "edge"]
    refs = edge[edge["method"].isin(["mean_shift", "oracle"])].pivot(
        index="holdout", columns="method", values="pearson"
    )
    own = rows[rows["variant"] == variant]
    lines, type_means = _per_type_table(own, refs)
    mean = float(type_means.mean())
    shift = float(refs.loc[type_means.index, "mean_shift"].mean())
    target, margin = TARGETS["edge"]["pearson"], MARGIN_OVER_MEAN_SHIFT
    return "\n".join(
        [
            "## Counterfactual accuracy over training seeds",
            "",
            f"Command: `{command}` — written {time.strftime('%Y-%m-%d', time.gmtime())}. Edge perturbation, "
            f"Cellina `{variant}` with the settings of the section above; seed 0 is that section's run, the other "
            "seeds repeat it with `benchmarks/accuracy_seed.py` (same tissue, graph, model and training settings). "
            "`mean shift` and `exact (oracle)` need no training. Truth columns: exact-truth Pearson, skill and "
            "slope on the niche-responsive genes, mean over seeds.",
            "",
            *lines,
            "",
            "| target | threshold | measured | met |",
            "|---|---|---|---|",
            f"| edge: pearson on top-50 DEGs, mean over {len(type_means)} types of the mean over seeds | >= {target} | "
            f"{_fmt(mean)} | {'yes' if mean >= target else 'no'} |",
            f"| edge: that mean minus the mean shift ({_fmt(shift)}) | >= {margin} | {_fmt(mean - shift)} | "
            f"{'yes' if mean - shift >= margin else 'no'} |",
            "",
            *_paired_table(rows[rows["seed"] > 0]),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("benchmark_csv", help="scores written by `accuracy.py --csv` (seed 0 and the references)")
    parser.add_argument("seed_csvs", nargs="+", help="scores appended by `accuracy_seed.py --csv`")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args(argv)
    for path in [args.benchmark_csv, *args.seed_csvs]:
        if not Path(path).is_file():
            parser.error(f"no such score file: {path}")
    variant = _config(quick=False)["variant"]
    benchmark = pd.read_csv(args.benchmark_csv)
    rows = seed_scores(benchmark, [pd.read_csv(p) for p in args.seed_csvs], variant)
    if not (rows["variant"] == variant).any():
        raise SystemExit(f"no edge scores of variant {variant!r} in the given files")
    command = "python benchmarks/accuracy_seed_table.py full.csv seeds.csv"
    text = section(rows, benchmark, variant, command)
    if args.no_write:
        print(text)
    else:
        write_section("accuracy_seeds", text, Path(args.out))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
