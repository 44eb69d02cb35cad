"""What a held-out type's own training cells can tell about its tumour response, and what borrowing could.

The leave-one-type-out protocol asks for the change of a type's healthy cells when their niches are
pooled from tumour donors, with none of that type's tumour cells in training. Any model that learns the
type's response from the type's own training cells (healthy and margin) has to find it in how those
cells vary with their niche. These measurements say how much they hold, and how much the other types'
answer could stand in, with no model trained:

* **coverage**: for each channel that moves the type's genes, the share of control cells whose level
  under the tumour donors (the world's own sensed level, from its truth) lies within the 1st-99th
  percentile of the levels the type's training cells sense. Below that range the question is an
  extrapolation for any learner; with a saturating or threshold dose-response it has no answer in the
  data.
* **ridges with and without count noise**: a ridge regression from 20 principal components of the niche
  features to log-normalised expression, fitted on the type's training cells as in ``world_ridge.py``,
  and scored against the exact change like the model (truth Pearson, skill, slope). Four fits: the
  features (the neighbours' expression they average) and the targets (the cells' own expression) each
  from the observed counts or from the world's exact expected counts (infinite depth). Exact features
  and exact targets is the ceiling of a learner linear in the niche features' leading components: where it
  misses, the features do not carry the answer; where it meets a target the model misses, count noise
  stands between the data and the answer, and the two mixed fits say whether in the features (errors in
  variables, which shrink the response) or in the targets (estimation noise on the type's few cells).

* **the other types' exact change**: the average over the other types (equal weight) of their exact
  population change when their healthy cells get niches pooled from the same donor pool. Scored as the
  held-out type's prediction, it is what borrowing from the other types (the global mean shift) could
  give at best, without count noise or confounds: how much their answer resembles the held-out type's.

These are diagnostics of the data, not a method: nothing here is tuned, so they may be reported on the
evaluation worlds to say why a target is missed (docs/benchmarks.md, "What a held-out type's own
cells identify").

Usage::

    python benchmarks/world_ceiling.py --split evaluation --csv ceilings.csv
    python benchmarks/world_ceiling.py --worlds dev_two_channels --types Myeloid
    python benchmarks/world_ceiling.py --from-csv ceilings.csv --model-scores P_scores.csv --section worlds-ceiling
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_ridge import _change, _log_normalised  # noqa: E402
from worlds import MAX_OTHER_CELLS, holdout_types, other_type_cells  # noqa: E402

N_DONORS = 50
N_COMPONENTS = 20


def _donor_rows(donors: np.ndarray, n_obs: int) -> sp.csr_matrix:
    """One row per focal cell with weight 1 on each of its donors (a donor drawn twice counts twice)."""
    n, k = donors.shape
    rows = sp.csr_matrix((np.ones(n * k), donors.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_obs))
    rows.sum_duplicates()
    return rows


def coverage(truth, holdout: str, train_cells: np.ndarray, control: np.ndarray, donors: np.ndarray) -> dict:
    """Per responding channel, the share of control cells whose donor level lies in the training range."""
    k = truth.coarse_types.index(holdout)
    seen = truth.sensed(train_cells)
    moved = truth.model.sense_donors(truth.cells, _donor_rows(donors, truth.n_obs))
    out = {}
    for c, channel in enumerate(truth.model.channels):
        if not np.any(channel.response[:, k] != 0):
            continue
        levels = seen[:, c][np.isfinite(seen[:, c])]
        if levels.size == 0:
            out[channel.name] = 0.0
            continue
        low, high = np.quantile(levels, [0.01, 0.99])
        asked = moved[:, c]
        out[channel.name] = float(np.mean((asked >= low) & (asked <= high)))
    return out


def _ridge_change(features, features_cf, expression, fit_cells, feature_cells, control) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge

    pca = PCA(N_COMPONENTS, random_state=0).fit(features[feature_cells])
    ridge = Ridge(alpha=1.0).fit(pca.transform(features[fit_cells]), expression[fit_cells])
    factual = ridge.predict(pca.transform(features[control]))
    moved = ridge.predict(pca.transform(features_cf))
    return _change(moved, factual)


@dataclass
class Pair:
    """One world and held-out type as the protocol splits it, with 50 pooled tumour donors per control cell."""

    tissue: Any
    truth: Any
    donors: np.ndarray
    record: Any
    fit_cells: np.ndarray  # the held-out type's training cells
    true_change: np.ndarray  # the exact population log2 change of the control cells


def pair_setup(adata, holdout: str) -> Pair:
    """The protocol's split and graph for ``holdout``, donors (seed 0) and the exact change they cause."""
    from cellina.counterfactual import sample_donors, spatial_features_record
    from cellina.datasets import truth_for
    from cellina.evaluation import LeaveOneOutConfig
    from cellina.evaluation._holdout import prepare_holdout  # the protocol's own split and graph

    cfg = LeaveOneOutConfig(batch_key="slide", library_key="slide", bandwidth=20.0, max_neighbours=50)
    tissue = prepare_holdout(adata, holdout, cfg)
    truth = truth_for(adata)
    donors = sample_donors(tissue.control, tissue.pool, N_DONORS, np.random.default_rng(0))
    true_change = _population_change(truth, tissue.control, donors)
    fit_cells = np.setdiff1d(np.flatnonzero(tissue.labels == holdout), tissue.target)
    record = spatial_features_record(tissue.work, "spatial_x")
    return Pair(tissue, truth, donors, record, fit_cells, true_change)


def observed_ridge_change(pair: Pair, fit_cells: np.ndarray | None = None) -> np.ndarray:
    """The ridge's change on observed counts, fitted on ``fit_cells`` (default: all the type's training cells)."""
    from cellina.counterfactual import pooled_niche_features

    counts = pair.tissue.work.layers["counts"]
    return _ridge_change(
        np.asarray(pair.tissue.work.obsm["spatial_x"]),
        pooled_niche_features(counts, pair.donors, pair.record),
        _log_normalised(counts),
        pair.fit_cells if fit_cells is None else fit_cells,
        pair.tissue.train,
        pair.tissue.control,
    )


def _population_change(truth, cells: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """Exact population log2 change of ``cells`` when their niches are pooled from ``donors``, as the
    protocol defines the true change (so the ridges and the model are scored against the same truth)."""
    from cellina.evaluation._truth import population_lfc

    return population_lfc(truth.edge(cells, donors), truth.mean(cells))


def other_types_change(pair: Pair, holdout: str, max_cells: int = MAX_OTHER_CELLS) -> np.ndarray:
    """The other types' exact change under the same kind of donors, equal weight per type.

    What borrowing from the other types could give at best: no count noise and no confound, only
    how much their answer to the tumour's niche resembles the held-out type's.
    """
    from cellina.counterfactual import sample_donors

    tissue, rng = pair.tissue, np.random.default_rng(1)
    control_domain = tissue.domains[tissue.control[0]]
    changes = [
        _population_change(pair.truth, cells, sample_donors(cells, tissue.pool, N_DONORS, rng))
        for cells in other_type_cells(tissue.labels, tissue.domains, holdout, control_domain, rng, max_cells)
    ]
    return np.mean(changes, axis=0)


def pair_ceilings(world: str, adata, holdout: str) -> dict:
    """Coverage and the four ridges for one world and held-out type."""
    from cellina.counterfactual import pooled_niche_features
    from cellina.evaluation import truth_scores
    from cellina.spatial._features import aggregate_neighbours, expression_representation

    pair = pair_setup(adata, holdout)
    tissue, truth, donors, record, fit_cells = pair.tissue, pair.truth, pair.donors, pair.record, pair.fit_cells
    graph = tissue.work.obsp[record["connectivity_key"]]
    resp, null = truth.responsive(holdout), truth.null_genes()
    row: dict = {"world": world, "holdout": holdout, "n_fit": int(fit_cells.size)}

    counts = tissue.work.layers["counts"]
    exact_counts = truth.mean()
    features = {
        "observed": (np.asarray(tissue.work.obsm["spatial_x"]), pooled_niche_features(counts, donors, record)),
        "exact": (
            aggregate_neighbours(graph, expression_representation(exact_counts, record)),
            pooled_niche_features(exact_counts, donors, record),
        ),
    }
    targets = {"observed": _log_normalised(counts), "exact": _log_normalised(exact_counts)}
    for (f_label, (phi, phi_cf)), (t_label, expression) in product(features.items(), targets.items()):
        change = _ridge_change(phi, phi_cf, expression, fit_cells, tissue.train, tissue.control)
        scores = truth_scores(change, pair.true_change, resp, null)
        for metric in ("truth_pearson", "truth_skill", "truth_slope"):
            row[f"{f_label}_{t_label}_{metric[6:]}"] = float(scores[metric])
    scores = truth_scores(other_types_change(pair, holdout), pair.true_change, resp, null)
    for metric in ("truth_pearson", "truth_skill", "truth_slope"):
        row[f"borrowed_{metric[6:]}"] = float(scores[metric])
    cover = coverage(truth, holdout, fit_cells, tissue.control, donors)
    row["coverage_min"] = min(cover.values()) if cover else np.nan
    row["coverage"] = "; ".join(f"{name} {share:.2f}" for name, share in cover.items())
    return row


FITS = {
    "observed_observed": "ridge, observed",
    "exact_observed": "ridge, exact features",
    "observed_exact": "ridge, exact targets",
    "exact_exact": "ridge, exact (ceiling)",
    "borrowed": "other types' exact change",
}
#: the issue's edge targets: truth Pearson, skill, slope
TARGETS = {"pearson": lambda v: v >= 0.9, "skill": lambda v: v >= 0.6, "slope": lambda v: (v >= 0.7) & (v <= 1.3)}


def _triple(row, prefix: str) -> str:
    return " / ".join(f"{row[f'{prefix}_{m}']:.2f}" for m in TARGETS)


def with_model(table: pd.DataFrame, score_files: list[str], method: str = "recommended") -> pd.DataFrame:
    """``table`` with the edge truth Pearson, skill and slope of ``method`` from ``benchmarks/worlds.py`` score CSVs."""
    scores = pd.concat([pd.read_csv(f) for f in score_files])
    scores = scores[(scores["perturbation"] == "edge") & (scores["method"] == method)]
    if scores.empty:
        raise SystemExit(f"no edge rows of method {method!r} in {score_files}")
    model = scores.set_index(["world", "holdout"])[[f"truth_{m}" for m in TARGETS]]
    model.columns = [f"model_{m}" for m in TARGETS]
    return table.join(model, on=["world", "holdout"], how="left")


def markdown(table: pd.DataFrame, command: str, split: str) -> str:
    """The section: the table, one row per pair, and how many pairs each fit brings within each target."""
    fits = ({"model": "model (recommended)"} if "model_pearson" in table else {}) | FITS
    lines = [
        f"## What a held-out type's own cells identify ({split} worlds)",
        "",
        f"`{command}` (no training; the protocol's split, graph and 50 pooled tumour donors, donor seed 0). "
        "Each cell: edge truth Pearson / skill / slope of the change predicted by a ridge regression from 20 "
        "principal components of the niche features, fitted on the held-out type's training cells; "
        "'exact' replaces observed counts by the world's exact expected counts in the features (the neighbours' "
        "expression they average), the targets (the cells' own expression) or both. 'coverage' is the smallest "
        "share, over the channels that move the type, of control cells whose level under the tumour donors lies "
        "within the 1st-99th percentile of what the type's training cells sense. 'other types' exact change' is "
        "the other types' exact change under the same donor pool (equal weight per type), taken as the held-out "
        "type's prediction: what borrowing their answer could give at best.",
        "",
        "| world | held-out type | " + " | ".join(fits.values()) + " | coverage |",
        "|---|---|" + "---|" * (len(fits) + 1),
    ]
    for _, row in table.iterrows():
        cells = " | ".join(_triple(row, prefix) for prefix in fits)
        lines.append(f"| {row['world']} | {row['holdout']} | {cells} | {row['coverage_min']:.2f} |")
    lines += ["", "Pairs (of " + str(len(table)) + ") within each target:", ""]
    lines += ["| fit | " + " | ".join(["truth Pearson >= 0.9", "skill >= 0.6", "slope 0.7-1.3"]) + " |"]
    lines += ["|---|---|---|---|"]
    for prefix, name in fits.items():
        met = [int(ok(table[f"{prefix}_{m}"]).sum()) for m, ok in TARGETS.items()]
        lines.append(f"| {name} | " + " | ".join(str(n) for n in met) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, split: str) -> str:
    """Each pair's truth Pearson: the model and the noisy ridges against the ceiling; the image name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fits = (["model"] if "model_pearson" in table else []) + ["observed_observed", "observed_exact"]
    labels = {"model": "model (recommended)", **FITS}
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    for prefix, marker in zip(fits, ("o", "s", "^"), strict=False):
        x, y = table["exact_exact_pearson"], table[f"{prefix}_pearson"]
        ax.scatter(x, y, s=22, marker=marker, alpha=0.75, label=labels[prefix])
    ax.plot([-1, 1], [-1, 1], color="grey", lw=0.8, ls="--")
    ax.axhline(0.9, color="lightgrey", lw=0.8)
    ax.axvline(0.9, color="lightgrey", lw=0.8)
    shown = table[["exact_exact_pearson", *[f"{p}_pearson" for p in fits]]].to_numpy(dtype=float)
    low = min(-0.6, float(np.nanmin(shown)) - 0.05)
    ax.set_xlim(low, 1.02)
    ax.set_ylim(low, 1.02)
    ax.set_xlabel("ceiling: ridge on exact features and exact targets")
    ax.set_ylabel("edge truth Pearson")
    ax.set_title(f"{split} worlds, one point per world and held-out type", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    name = f"worlds_ceiling_{split}.png"
    fig.savefig(Path(__file__).resolve().parents[1] / "docs" / "img" / name, dpi=110)
    plt.close(fig)
    return name


def measure(names: list[str], types: list[str] | None) -> pd.DataFrame:
    from cellina.datasets import make_world

    rows = []
    for name in names:
        adata = make_world(name)
        for holdout in types or holdout_types(adata):
            rows.append(pair_ceilings(name, adata, holdout))
            print(pd.DataFrame(rows[-1:]).round(2).to_string(index=False, header=len(rows) == 1), flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    from cellina.datasets import list_worlds
    from cellina.datasets.worlds import SPLITS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="evaluation", choices=SPLITS)
    parser.add_argument("--worlds", help="comma-separated world names (default: every world of the split)")
    parser.add_argument("--types", help="comma-separated held-out types (default: every evaluable type)")
    parser.add_argument("--csv", help="write the rows here (a temporary file, then renamed)")
    parser.add_argument("--from-csv", help="read the rows from this CSV (written by --csv) instead of measuring")
    parser.add_argument("--model-scores", help="comma-separated score CSVs of benchmarks/worlds.py --csv P")
    parser.add_argument("--section", help="write the table to this section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.from_csv:
        table = pd.read_csv(args.from_csv)
    else:
        names = args.worlds.split(",") if args.worlds else list_worlds(args.split)
        unknown = [n for n in names if n not in list_worlds()]
        if unknown:
            raise SystemExit(f"unknown world(s) {unknown}; known: {list_worlds()}")
        table = measure(names, args.types.split(",") if args.types else None)
    if args.csv:
        path = Path(args.csv)
        tmp = path.with_suffix(path.suffix + ".tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(path)
    if args.model_scores:
        table = with_model(table, args.model_scores.split(","))
    if args.section:
        from docs_section import write_section

        body = markdown(table, f"python benchmarks/world_ceiling.py --split {args.split}", args.split)
        image = plot(table, args.split)
        write_section(args.section, body + f"\n\n![Edge truth Pearson against the ceiling, per pair](img/{image})")


if __name__ == "__main__":
    main()
