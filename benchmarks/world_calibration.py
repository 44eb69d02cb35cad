"""Calibration of the edge change with wider, earned spreads, offline, from per-gene changes.

The spread across edge draws describes the donors only; the predicted change's error is mostly bias (a change
predicted too short), so the true change lies within two such spreads on few responsive genes. This script
scores spreads built from parts the model can give without the truth, added in quadrature (:data:`PARTS`):

* ``D``, the spread across edge draws (the protocol's ``pred_change_std``; share 0's also for share 1);
* ``C``, the checked error: the ``checked_error`` of ``Cellina.counterfactual_change_range``, per gene the root mean square of the other
  cell types' observed minus predicted change (their cells among the donors are observed in the new niches);
* ``G``, the correction gap: how far the change moves when divided by the niche's reliability (share 1) or not
  (share 0), the part of the size the features' noise leaves open;
* ``O``, the other types' gap: how far the model's change for the other types lies from the focal type's.

Per pair and spread: calibration (the share of responsive genes whose exact change lies within two spreads of the
prediction, the issue's measure), the null genes' coverage (the same on genes without a niche effect), the width
(median spread on responsive genes over their root-mean-square true change: an interval as wide as the whole
response says little) and "told apart", the share of responsive genes whose interval excludes no change (for
the symmetric spreads: the prediction lies more than two spreads from 0; what a user could act on). Inputs:

* development worlds: ``python benchmarks/world_options.py WORLD TYPE LABEL n_draws=5 strengths=true checked=true
  lfc_csv='"WORLD_TYPE.csv"'`` (columns ``pred_change``, ``change_s<share>``, ``checked_error``,
  ``checked_error_s<share>``);
* held-back worlds: ``python benchmarks/worlds.py --split SPLIT --methods recommended_checked --csv P --no-write``
  (methods ``recommended_checked`` and ``recommended_checked_s<share>``, each with a ``checked_error`` column).

Usage::

    python benchmarks/world_calibration.py --lfc dev_two_channels_Myeloid.csv,...
    python benchmarks/world_calibration.py --genes P_genes.csv,Q_genes.csv
    python benchmarks/world_calibration.py --lfc ... --width 1.5   # every interval with 1.5 spreads a side
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the shares of the reliability correction scored: the preset's prediction (0) and the fully corrected one (1)
SHARES = ("0", "1")
#: the parts a spread adds in quadrature: D the spread across edge draws (share 0's), C the checked error, G the
#: gap between the uncorrected and the corrected change, O the gap to the other types' change (same share)
PARTS = {"D": "draws", "C": "checked error", "G": "correction gap", "O": "other types' gap"}
SPREADS = ("D", "C", "D+C", "D+G", "D+C+G", "D+G+O", "D+C+G+O", "R(D)", "R(D+C)")
TARGET = 0.8


def _parts(pred, corrected, draws, checked, others) -> dict[str, np.ndarray]:
    parts = {"pred": pred, "alt": corrected, "D": draws, "C": checked, "G": np.abs(corrected - pred)}
    if others is not None:
        parts["O"] = np.abs(others - pred)
    return parts


def lfc_pairs(files: list[str]):
    """(world, holdout, {share: parts}, true change) from world_options.py lfc CSVs."""
    from world_borrowing import world_of

    for name in files:
        world, holdout = world_of(name)
        frame = pd.read_csv(name, index_col=0)
        needed = ("pred_change_std", "checked_error", "checked_error_s1", "change_s1")
        missing = [c for c in needed if c not in frame]
        if missing:
            raise SystemExit(
                f"{name} lacks {missing} (run world_options.py with n_draws=5 strengths=true checked=true)"
            )
        col = {
            k: frame[k].to_numpy() if k in frame else None for k in (*needed, "borrowed_change", "borrowed_change_s1")
        }
        p0, p1, draws = frame["pred_change"].to_numpy(), col["change_s1"], col["pred_change_std"]
        shares = {
            "0": _parts(p0, p1, draws, col["checked_error"], col["borrowed_change"]),
            "1": _parts(p1, p0, draws, col["checked_error_s1"], col["borrowed_change_s1"]),
        }
        yield world, holdout, shares, frame["true_change"].to_numpy()


def genes_pairs(genes: pd.DataFrame, method: str):
    """The same from worlds.py per-gene CSVs of the method ``method`` (with ``<method>_s1`` and, when the run
    borrowed, ``<method>_other`` and ``<method>_other_s1``)."""
    edge = genes[genes["perturbation"] == "edge"]
    for (world, holdout), pair in edge.groupby(["world", "holdout"], sort=False):
        got = {m: pair[pair["method"] == f"{method}{m}"] for m in ("", "_s1", "_other", "_other_s1")}
        if got[""].empty or got["_s1"].empty or "checked_error" not in pair:
            continue
        column = {m: None if f.empty else f["pred_change"].to_numpy() for m, f in got.items()}
        draws = got[""]["pred_change_std"].to_numpy()
        shares = {
            "0": _parts(column[""], column["_s1"], draws, got[""]["checked_error"].to_numpy(), column["_other"]),
            "1": _parts(column["_s1"], column[""], draws, got["_s1"]["checked_error"].to_numpy(), column["_other_s1"]),
        }
        yield world, holdout, shares, got[""]["true_change"].to_numpy()


def interval(parts: dict[str, np.ndarray], name: str, width: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's interval for the spread ``name``: the prediction +- ``width`` spreads, or for ``R(parts)`` the range
    from the uncorrected to the corrected change widened by two spreads on either side."""
    ranged = name.startswith("R(")
    spread = np.sqrt(sum(parts[p] ** 2 for p in name.strip("R()").split("+")))
    ends = (parts["pred"], parts["alt"]) if ranged else (parts["pred"], parts["pred"])
    return np.minimum(*ends) - width * spread, np.maximum(*ends) + width * spread


def spread_scores(low, high, true, responsive, null) -> dict[str, float]:
    """Calibration, null coverage, width (a quarter of the interval, as a spread, over the responsive genes'
    root-mean-square true change) and the share of responsive genes whose interval excludes no change."""
    inside = (true >= low) & (true <= high)
    rms_true = float(np.sqrt(np.mean(true[responsive] ** 2)))
    return {
        "calibration": float(inside[responsive].mean()),
        "null_coverage": float(inside[null].mean()) if null.size else float("nan"),
        "width": float(np.median((high - low)[responsive]) / 4.0 / rms_true),
        "told_apart": float(np.mean((low[responsive] > 0) | (high[responsive] < 0))),
    }


def score(pairs, width: float = 2.0) -> pd.DataFrame:
    """One row per pair, share of the correction and spread."""
    from cellina.datasets import make_world, truth_for

    rows, truths = [], {}
    for world, holdout, shares, true in pairs:
        if world not in truths:
            truths[world] = truth_for(make_world(world))
        responsive = np.asarray(truths[world].responsive(holdout))
        null = np.asarray(truths[world].null_genes())
        for share, parts in shares.items():
            for name in SPREADS:
                if any(p not in parts for p in name.strip("R()").split("+")):
                    continue
                scores = spread_scores(*interval(parts, name, width), true, responsive, null)
                rows.append({"world": world, "holdout": holdout, "share": share, "spread": name, **scores})
    return pd.DataFrame(rows)


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per share and spread: pairs with calibration >= TARGET, and medians."""
    grouped = scores.groupby(["share", "spread"], sort=False)
    table = pd.DataFrame({"pairs": grouped.size()})
    table[f"calibration >= {TARGET}"] = grouped["calibration"].apply(lambda v: int((v >= TARGET).sum()))
    for col in ("calibration", "null_coverage", "width", "told_apart"):
        table[f"median {col}"] = grouped[col].median().round(3)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lfc", help="comma-separated world_options.py checked=true lfc CSVs (WORLD_TYPE.csv)")
    source.add_argument("--genes", help="comma-separated per-gene CSVs of benchmarks/worlds.py --csv P")
    parser.add_argument("--method", default="recommended_checked", help="with --genes: the method scored")
    parser.add_argument("--per-pair", action="store_true", help="also print every pair's row")
    parser.add_argument("--width", type=float, default=2.0, help="spreads on each side of every interval (default 2)")
    args = parser.parse_args(argv)
    if args.lfc:
        pairs = lfc_pairs(args.lfc.split(","))
    else:
        pairs = genes_pairs(pd.concat([pd.read_csv(f, index_col=0) for f in args.genes.split(",")]), args.method)
    scores = score(pairs, args.width)
    if scores.empty:
        raise SystemExit("no pair with a checked error was found")
    if args.per_pair:
        print(scores.round(3).to_string(index=False))
    print(summary(scores).to_string())


if __name__ == "__main__":
    main()
