"""How much of the edge skill and slope targets a prediction's size alone could reach: the reading
behind "Size against direction" in docs/benchmarks.md.

Skill is fixed by a prediction's direction and size: ``skill = 2 b - b^2 / c^2`` with ``b`` the slope
and ``c`` the cosine with the true change (``cellina.evaluation.rescaled_skill``). So ``c`` follows from
any pair's skill and slope, and with it what the best rescaling of that pair's prediction would score.

Usage::

    python benchmarks/size_direction.py                      # the committed every-type edge table
    python benchmarks/size_direction.py --csv P1 --csv P2    # add methods from worlds.py --csv runs

The committed table holds two decimals; cosines derived from it are good to about 0.01. Rows read from
CSVs use their exact skill and slope.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cellina.evaluation import rescaled_skill

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
SECTION = "## Evaluation worlds (evaluation split, every held-out type)"
SKILL_TARGET, SLOPE_RANGE = 0.6, (0.7, 1.3)


def committed_edge_scores(path: Path = DOCS) -> pd.DataFrame:
    """The edge rows (world, type, method, truth_skill, truth_slope) of the every-type section."""
    lines = path.read_text().splitlines()
    start = lines.index(SECTION)
    header, rows = None, []
    in_edge = False
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("### "):
            in_edge = line == "### Edge perturbation"
            continue
        if in_edge and line.startswith("| world |"):
            header = [c.strip() for c in line.strip("|").split("|")]
        elif in_edge and header and line.startswith("| eval_"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    if not rows:
        raise ValueError(f"no edge table under {SECTION!r} in {path}")
    table = pd.DataFrame(rows, columns=header).rename(columns={"held-out type": "holdout"})
    for col in ("truth_skill", "truth_slope"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return table[["world", "holdout", "method", "truth_skill", "truth_slope"]]


def csv_edge_scores(prefix: str) -> pd.DataFrame:
    scores = pd.read_csv(f"{prefix}_scores.csv")
    scores = scores[scores["perturbation"] == "edge"]
    return scores[["world", "holdout", "method", "truth_skill", "truth_slope"]]


def with_direction(scores: pd.DataFrame) -> pd.DataFrame:
    """Adds the squared cosine implied by skill and slope, and the best skill any size would give."""
    out = scores.copy()
    b, s = out["truth_slope"], out["truth_skill"]
    denom = 2 * b - s
    # 2 b - s = b^2 / c^2 > 0 for any prediction with a positive slope; otherwise no rescaling helps
    out["cos2"] = np.where((b > 0) & (denom > 0), b**2 / denom.where(denom > 0), np.nan)
    cosine = np.sqrt(out["cos2"])
    out["best_skill"] = out["cos2"]  # the parabola's top, at slope cos^2
    out["best_skill_in_range"] = rescaled_skill(cosine, out["cos2"].clip(*SLOPE_RANGE))
    return out


def summary(scores: pd.DataFrame) -> pd.DataFrame:
    rows = []
    lo, hi = SLOPE_RANGE
    for method, g in scores.groupby("method", sort=False):
        skill_met = g["truth_skill"] >= SKILL_TARGET
        slope_met = g["truth_slope"].between(lo, hi)
        rows.append(
            {
                "method": method,
                "pairs": len(g),
                "skill met": int(skill_met.sum()),
                "slope met": int(slope_met.sum()),
                "both met": int((skill_met & slope_met).sum()),
                "both reachable by size": int((g["best_skill_in_range"] >= SKILL_TARGET).sum()),
                "median cosine": float(np.sqrt(g["cos2"]).median()),
                "median skill": float(g["truth_skill"].median()),
                "median best skill": float(g["best_skill"].median()),
                "median slope / cos^2": float((g["truth_slope"] / g["cos2"]).median()),
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", action="append", default=[], help="a worlds.py --csv prefix (repeatable)")
    parser.add_argument("--methods", default=None, help="comma-separated methods to keep")
    args = parser.parse_args(argv)
    scores = pd.concat([committed_edge_scores(), *(csv_edge_scores(p) for p in args.csv)], ignore_index=True)
    if args.methods:
        scores = scores[scores["method"].isin(args.methods.split(","))]
    table = summary(with_direction(scores))
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    print("\n".join("| " + " | ".join(row) + " |" for row in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
