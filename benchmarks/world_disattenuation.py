"""Scoring the edge change with each share of the reliability correction, offline, from per-gene changes.

The correction divides a counterfactual's change in ``s`` by the niche code's reliability
(``disattenuate=True``); ``disattenuate=STRENGTH`` divides it by the reliability raised to
``STRENGTH``, a share of the correction on a log scale. One trained model gives every share:

* development worlds: ``python benchmarks/world_options.py WORLD TYPE LABEL strengths=true
  lfc_csv='"WORLD_TYPE.csv"'`` writes the columns ``change_s<share>`` beside ``pred_change`` (share 0);
* evaluation worlds: ``python benchmarks/worlds.py --methods recommended_strengths,mean_shift --csv P
  --no-write`` writes the methods ``recommended_strengths`` (share 0) and ``recommended_strengths_s<share>``.

Each share is scored against the world's exact change like any method (edge truth Pearson, skill, slope,
responsive-vs-null AUROC), and the pairs meeting the skill and slope targets together are counted.

With ``borrow=true`` too, world_options.py also writes the model's change for the other types at each share
(``borrowed_change``, ``borrowed_change_s<share>``); ``--mix`` then scores ``(1 - w) * own + w * borrowed``
at every share and every ``w`` of world_borrowing.FIXED, and counts the pairs meeting all three edge targets
(truth Pearson, skill, slope). On held-back worlds, ``python benchmarks/worlds.py --split confirmation
--methods recommended_borrowed_strengths,mean_shift --csv P --no-write`` writes both sides at every share
(methods ``recommended_borrowed_strengths_s<share>`` and ``recommended_borrowed_strengths_other_s<share>``),
mixed with ``world_borrowing.py --genes ... --own A --other B``.

Usage::

    python benchmarks/world_disattenuation.py --lfc dev_two_channels_Myeloid.csv,...
    python benchmarks/world_disattenuation.py --lfc dev_two_channels_Myeloid.csv,... --mix
    python benchmarks/world_disattenuation.py --genes P_genes.csv,Q_genes.csv [--compare mean_shift]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_borrowing import COUNTS, summary  # noqa: E402

BOTH = "skill >= 0.6 and slope 0.7-1.3"


def read_lfc(files: list[str]):
    """(world, holdout, frame) of each world_options.py lfc CSV (named ``WORLD_TYPE.csv``)."""
    from world_borrowing import world_of

    for name in files:
        yield (*world_of(name), pd.read_csv(name, index_col=0))


def shares_of(frame: pd.DataFrame, prefix: str, name: str) -> dict[str, np.ndarray]:
    """``{share: change}`` from the columns ``<prefix>`` (share 0) and ``<prefix>_s<share>``."""
    if prefix not in frame:
        raise SystemExit(f"{name} has no {prefix} column (run world_options.py with strengths=true and borrow=true)")
    columns = {m["share"]: c for c in frame if (m := re.fullmatch(rf"{prefix}_s(?P<share>[0-9.]+)", c))}
    if not columns:
        raise SystemExit(f"{name} has no {prefix}_s<share> columns (run world_options.py with strengths=true)")
    return {"0": frame[prefix].to_numpy(), **{k: frame[c].to_numpy() for k, c in columns.items()}}


def pairs_from_lfc(files: list[str]):
    """(world, holdout, {share: change}, true change) from world_options.py strengths=true lfc CSVs."""
    for world, holdout, frame in read_lfc(files):
        own = shares_of(frame.rename(columns={"pred_change": "change"}), "change", f"{world}_{holdout}")
        yield world, holdout, own, frame["true_change"].to_numpy()


def mixed_pairs(files: list[str]):
    """(world, holdout, {"w=W p=P": change}, true change): own and borrowed change at share P, mixed at W."""
    from world_borrowing import FIXED

    for world, holdout, frame in read_lfc(files):
        name = f"{world}_{holdout}"
        own = shares_of(frame.rename(columns={"pred_change": "change"}), "change", name)
        borrowed = shares_of(frame, "borrowed_change", name)
        mixed = {f"w={w:g} p={k}": (1 - w) * own[k] + w * borrowed[k] for k in own for w in FIXED}
        yield world, holdout, mixed, frame["true_change"].to_numpy()


def _met(scores: pd.DataFrame, *targets: str) -> pd.Series:
    """Whether each row meets every one of world_borrowing.COUNTS' ``targets``."""
    met = pd.Series(True, index=scores.index)
    for target in targets:
        column, ok = COUNTS[target]
        met &= ok(scores[column])
    return met


def all_three(scores: pd.DataFrame) -> pd.DataFrame:
    """Per label: pairs meeting truth Pearson >= 0.9, skill >= 0.6 and slope 0.7-1.3 together, and medians."""
    met = _met(scores, "truth Pearson >= 0.9", "skill >= 0.6", "slope 0.7-1.3")
    grouped = scores.assign(met=met).groupby("mixture", sort=False)
    out = grouped.agg(all_three=("met", "sum"), pearson=("pearson", "median"), skill=("skill", "median"))
    return out.assign(slope=grouped["slope"].median()).round(3)


def pairs_from_genes(genes: pd.DataFrame, label: str, compare: list[str]):
    """(world, holdout, {share or method: change}, true change) from worlds.py per-gene CSVs."""
    edge = genes[genes["perturbation"] == "edge"]
    prefix = f"{label}_s"
    for (world, holdout), pair in edge.groupby(["world", "holdout"], sort=False):
        methods = {m: frame for m, frame in pair.groupby("method", sort=False)}
        if label not in methods:
            continue
        changes = {"0": methods[label]["pred_change"].to_numpy()}
        changes.update(
            {m[len(prefix) :]: f["pred_change"].to_numpy() for m, f in methods.items() if m.startswith(prefix)}
        )
        changes.update({m: methods[m]["pred_change"].to_numpy() for m in compare if m in methods})
        index = methods[label].index
        if any(not (methods[m].index == index).all() for m in methods):
            raise ValueError(f"{world}/{holdout}: the methods' genes differ")
        yield world, holdout, changes, methods[label]["true_change"].to_numpy()


def share_scores(pairs) -> pd.DataFrame:
    """Truth scores of every pair for every share (the ``mixture`` column, as world_borrowing.summary reads)."""
    from cellina.datasets import make_world, truth_for
    from cellina.evaluation import truth_scores

    rows, truths = [], {}
    for world, holdout, changes, true in pairs:
        if world not in truths:
            truths[world] = truth_for(make_world(world))
        truth = truths[world]
        for label, change in changes.items():
            s = truth_scores(change, true, truth.responsive(holdout), truth.null_genes())
            rows.append(
                {"world": world, "holdout": holdout, "mixture": label, **{k[6:]: s[k] for k in s if k[:6] == "truth_"}}
            )
    return pd.DataFrame(rows)


def table(scores: pd.DataFrame) -> pd.DataFrame:
    """world_borrowing.summary with the pairs meeting skill and slope together."""
    out = summary(scores)
    both = _met(scores, "skill >= 0.6", "slope 0.7-1.3")
    out.insert(4, BOTH, both.groupby(scores["mixture"], sort=False).sum().astype(int))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lfc", help="comma-separated world_options.py strengths=true lfc CSVs (WORLD_TYPE.csv)")
    source.add_argument("--genes", help="comma-separated per-gene CSVs of benchmarks/worlds.py --csv P")
    parser.add_argument("--label", default="recommended_strengths", help="with --genes: the run's method label")
    parser.add_argument("--compare", default="", help="with --genes: comma-separated methods scored beside it")
    parser.add_argument("--mix", action="store_true", help="with --lfc: mix each share with the borrowed change")
    args = parser.parse_args(argv)
    if args.mix and not args.lfc:
        parser.error("--mix reads world_options.py lfc CSVs: give them with --lfc")
    if args.mix:
        scores = share_scores(mixed_pairs(args.lfc.split(",")))
        print(f"pairs: {scores[['world', 'holdout']].drop_duplicates().shape[0]}")
        print(all_three(scores).sort_values(["all_three", "skill"], ascending=False).to_string())
        return
    if args.lfc:
        pairs = pairs_from_lfc(args.lfc.split(","))
    else:
        genes = pd.concat([pd.read_csv(f, index_col=0) for f in args.genes.split(",")])
        pairs = pairs_from_genes(genes, args.label, [m for m in args.compare.split(",") if m])
    scores = share_scores(pairs)
    print(f"pairs: {scores[['world', 'holdout']].drop_duplicates().shape[0]}")
    print(table(scores).to_string())


if __name__ == "__main__":
    main()
