"""Mixing the model's edge change with the other types' mean shift, offline, from per-gene changes.

``python benchmarks/worlds.py --methods recommended,mean_shift --csv P --no-write`` writes each pair's
per-gene predicted change (``P_genes.csv``). This script mixes the two, ``(1 - w) * model + w * mean
shift``, and scores the mixture against the world's exact change like any method (edge truth Pearson,
skill, slope, responsive-vs-null AUROC), in two ways:

* a fixed ``w`` (0, 0.1, ..., 1) for every pair;
* ``w`` per pair from the reliability of the held-out type's own data: the type's training cells are split
  in two random halves (seed 0), a ridge regression from 20 principal components of the niche features
  (``world_ceiling.py``'s, on observed counts) is fitted on each, and the Pearson correlation ``r``
  between the two halves' predicted changes over all genes, stepped up to the whole set
  (Spearman-Brown, ``2 r / (1 + r)``, clipped to 0-1), is the weight of the model; the mean shift gets
  the rest. Nothing of the truth enters the weight: a type whose own cells give a reproducible response
  keeps the model's, one whose cells give noise borrows the other types'.

The other side of the mixture can also be the trained model's own change for the other types: the same
donor pool's niche given to each other type's healthy cells, equal weight per type, so no domain confound
and less count noise enter it. ``python benchmarks/worlds.py --methods recommended_borrowed --csv P`` writes
it as the method ``recommended_borrowed_other`` (mix with ``--own recommended_borrowed --other
recommended_borrowed_other``); on a development world ``python benchmarks/world_options.py WORLD TYPE LABEL
borrow=true lfc_csv='"WORLD_TYPE.csv"'`` writes it as a column, read with ``--borrowed``.

docs/benchmarks.md ("Decision rule ..." paragraphs) holds the rules these mixtures were judged by.

Usage::

    python benchmarks/world_borrowing.py --genes P_genes.csv[,Q_genes.csv] [--reliability-csv R]
    python benchmarks/world_borrowing.py --genes P_genes.csv --own recommended_borrowed --other recommended_borrowed_other
    python benchmarks/world_borrowing.py --borrowed dev_two_channels_Myeloid.csv,...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_ceiling import observed_ridge_change, pair_setup  # noqa: E402

FIXED = np.round(np.arange(0, 1.01, 0.1), 2)
RELIABILITY = "reliability"
#: the issue's edge targets, counted per mixture
COUNTS = {
    "truth Pearson >= 0.9": ("pearson", lambda v: v >= 0.9),
    "skill >= 0.6": ("skill", lambda v: v >= 0.6),
    "slope 0.7-1.3": ("slope", lambda v: (v >= 0.7) & (v <= 1.3)),
    "AUROC >= 0.85": ("auroc", lambda v: v >= 0.85),
}
#: the targets a pair must meet together to count under "all three"
ALL_THREE = ("truth Pearson >= 0.9", "skill >= 0.6", "slope 0.7-1.3")


def split_half_reliability(pair, seed: int = 0) -> float:
    """Spearman-Brown reliability of the type's own response from two random halves of its training cells."""
    rng = np.random.default_rng(seed)
    cells = rng.permutation(pair.fit_cells)
    half = cells.size // 2
    first, second = (
        observed_ridge_change(pair, np.sort(cells[:half])),
        observed_ridge_change(pair, np.sort(cells[half:])),
    )
    r = float(np.corrcoef(first, second)[0, 1])
    return float(np.clip(2 * r / (1 + r), 0.0, 1.0)) if r > -1 else 0.0


def reliabilities(pairs: pd.DataFrame) -> pd.DataFrame:
    """``pairs`` (world, holdout) with the split-half reliability of each."""
    from cellina.datasets import make_world

    rows = []
    for world, group in pairs.groupby("world", sort=False):
        adata = make_world(world)
        for holdout in group["holdout"]:
            rows.append(
                {"world": world, "holdout": holdout, RELIABILITY: split_half_reliability(pair_setup(adata, holdout))}
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def pairs_from_genes(genes: pd.DataFrame, own: str = "recommended", other: str = "mean_shift"):
    """(world, holdout, ``own``'s change, ``other``'s change, true change) from worlds.py per-gene CSVs."""
    edge = genes[genes["perturbation"] == "edge"]
    for world in edge["world"].unique():
        for holdout in edge.loc[edge["world"] == world, "holdout"].unique():
            pair = edge[(edge["world"] == world) & (edge["holdout"] == holdout)]
            model, shift = pair[pair["method"] == own], pair[pair["method"] == other]
            if model.empty or shift.empty:
                continue
            if not (model.index == shift.index).all():
                raise ValueError(f"{world}/{holdout}: the two methods' genes differ")
            yield (
                world,
                holdout,
                model["pred_change"].to_numpy(),
                shift["pred_change"].to_numpy(),
                model["true_change"].to_numpy(),
            )


def pairs_from_borrowed(files: list[str]):
    """(world, holdout, model change, the model's change for the other types, true change) from
    ``world_options.py ... borrow=true lfc_csv=WORLD_TYPE.csv`` files (named by world and type)."""
    for name in files:
        world, holdout = world_of(name)
        frame = pd.read_csv(name, index_col=0)
        if "borrowed_change" not in frame:
            raise SystemExit(f"{name} has no borrowed_change column (run world_options.py with borrow=true)")
        own, other = frame["pred_change"].to_numpy(), frame["borrowed_change"].to_numpy()
        yield world, holdout, own, other, frame["true_change"].to_numpy()


def world_of(name: str) -> tuple[str, str]:
    """(world, held-out type) from a world_options.py lfc CSV named ``WORLD_TYPE.csv``."""
    from cellina.datasets import list_worlds

    stem = Path(name).stem
    world = next((w for w in list_worlds() if stem.startswith(w + "_")), None)
    if world is None:
        raise SystemExit(f"{name}: the file name must start with a world name and '_'")
    return world, stem[len(world) + 1 :]


def mixture_scores(pairs, weights: pd.DataFrame | None = None) -> pd.DataFrame:
    """Scores of every pair at each fixed ``w`` and, with ``weights``, at the reliability's ``w``."""
    from cellina.datasets import make_world, truth_for
    from cellina.evaluation import truth_scores

    rows, truths = [], {}
    for world, holdout, own, other, true in pairs:
        if world not in truths:
            truths[world] = truth_for(make_world(world))
        truth = truths[world]
        ws = {str(w): w for w in FIXED}
        if weights is not None:
            hit = weights[(weights["world"] == world) & (weights["holdout"] == holdout)]
            ws[RELIABILITY] = 1.0 - float(hit[RELIABILITY].iloc[0])
        for label, w in ws.items():
            s = truth_scores((1 - w) * own + w * other, true, truth.responsive(holdout), truth.null_genes())
            scores = {k[6:]: s[k] for k in s if k.startswith("truth_")}
            rows.append({"world": world, "holdout": holdout, "mixture": label, "w": w, **scores})
    return pd.DataFrame(rows)


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per mixture: pairs within each target and the median truth Pearson, skill and slope."""
    grouped = scores.groupby("mixture", sort=False)
    table = pd.DataFrame(
        {name: grouped[col].apply(lambda v, ok=ok: int(ok(v).sum())) for name, (col, ok) in COUNTS.items()}
    )
    met = pd.concat([ok(scores[col]) for col, ok in (COUNTS[name] for name in ALL_THREE)], axis=1).all(axis=1)
    table.insert(3, "all three", met.groupby(scores["mixture"], sort=False).sum().astype(int))
    for col in ("pearson", "skill", "slope"):
        table[f"median {col}"] = grouped[col].median().round(3)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--genes", help="comma-separated per-gene CSVs of benchmarks/worlds.py --csv P")
    source.add_argument("--borrowed", help="comma-separated world_options.py borrow=true lfc CSVs (WORLD_TYPE.csv)")
    parser.add_argument("--own", default="recommended", help="with --genes: the method whose change is mixed")
    parser.add_argument(
        "--other", default="mean_shift", help="with --genes: what it is mixed with (e.g. recommended_borrowed_other)"
    )
    parser.add_argument("--reliability-csv", help="read the per-pair reliabilities here if it exists, else write them")
    parser.add_argument("--no-reliability", action="store_true", help="fixed w only")
    parser.add_argument("--worlds", default="", help="comma-separated worlds to count (default: every one scored)")
    args = parser.parse_args(argv)
    if args.borrowed:
        scores = mixture_scores(pairs_from_borrowed(args.borrowed.split(",")))
    else:
        genes = pd.concat([pd.read_csv(f, index_col=0) for f in args.genes.split(",")])
        weights = None if args.no_reliability else _weights(genes, args.reliability_csv)
        scores = mixture_scores(pairs_from_genes(genes, args.own, args.other), weights)
    if args.worlds:
        chosen = args.worlds.split(",")
        missing = sorted(set(chosen) - set(scores["world"]))
        if missing:
            parser.error(f"--worlds {missing} have no scored pairs (scored: {sorted(scores['world'].unique())})")
        scores = scores[scores["world"].isin(chosen)]
    print(f"pairs: {scores[['world', 'holdout']].drop_duplicates().shape[0]}")
    print(summary(scores).to_string())


def _weights(genes: pd.DataFrame, cache: str | None) -> pd.DataFrame:
    """The per-pair reliabilities, read from ``cache`` if it exists, else measured (and written there)."""
    path = Path(cache) if cache else None
    if path is not None and path.exists():
        return pd.read_csv(path)
    weights = reliabilities(genes[["world", "holdout"]].drop_duplicates())
    if path is not None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        weights.to_csv(tmp, index=False)
        tmp.replace(path)
    return weights


if __name__ == "__main__":
    main()
