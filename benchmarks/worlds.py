"""Counterfactual accuracy on the evaluation worlds: tissues the model was not designed on.

For every world of a split (``cellina.datasets.list_worlds``) and every held-out coarse type with
enough cells in the healthy and the tumour domain, the leave-one-type-out protocol
(``cellina.evaluation.leave_one_out``) is run with the same tissue, graph, epochs and seed for:
the ``recommended`` preset, the ``published`` preset, a space-blind scvi-tools SCVI (domain as
batch) and the global mean shift. Scores against the world's exact counterfactual on the type's
responsive genes: Pearson, skill (1 - |pred - true|^2 / |true|^2), slope (1 = the right size),
AUROC of responsive against null genes, calibration (the share of responsive genes whose exact change
lies within two spreads of the prediction: the spread across edge draws, of the donors only or, with
``--uncertainty posterior``, of the donors and the model's posterior); and the tutorial's top-50
Pearson on observed changes.

The evaluation worlds were fixed before the model changes they judge; tune on the development
worlds (``--split development``) and report on the evaluation ones.

Usage::

    python benchmarks/worlds.py --split development --worlds dev_two_channels --types Myeloid --no-write
    python benchmarks/worlds.py --split evaluation --types-per-world 1 --csv /tmp/worlds_eval
    python benchmarks/worlds.py --split evaluation --from-csv /tmp/worlds_eval   # rewrite the docs section

Figures go into the ``worlds-<split>`` section of ``docs/benchmarks.md`` and plots into docs/img/.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import write_section  # noqa: E402

from cellina.counterfactual._borrow import MAX_REFERENCE_CELLS, MIN_REFERENCE_CELLS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: run options that are not model options: the graph's reach ("auto": from the data's validation curve) and
#: the neighbours' cell types in the niche features (cellina.preprocessing.COMPOSITIONS)
REACH = "reach"
COMPOSITION = "composition"
#: a run option: also the trained model's edge change for the other types (``borrowed_change``), written to the
#: per-gene CSV as the method ``<label>_other`` for benchmarks/world_borrowing.py
BORROW = "borrow"
#: a run option: the same trained model's edge change with part of the reliability correction
#: (``disattenuate=STRENGTH``, :data:`STRENGTH_GRID`), written to the per-gene CSV as the methods
#: ``<label>_s<STRENGTH>`` for benchmarks/world_disattenuation.py
STRENGTHS = "strengths"
STRENGTH_GRID = (0.25, 0.5, 0.75, 1.0)
#: a run option: beside the protocol's edge change and (with STRENGTHS) the fully corrected one, the model's
#: error on the other types it can be checked against (the ``checked_error`` of
#: ``Cellina.counterfactual_change_range``), written to the per-gene CSV as the column ``checked_error`` for
#: benchmarks/world_calibration.py
CHECKED = "checked"
#: the tutorial's top observed genes judged against the exact change instead of the observed one (with_top_truth)
TOP_TRUTH = "top_truth_pearson"
METRICS = ["truth_pearson", "truth_skill", "truth_slope", "truth_auroc", "truth_calibration", "pearson", TOP_TRUTH]
#: method label -> (protocol method, preset, model variant, model options on top of the preset)
RUNS = {
    "recommended": ("cellina", "recommended", "cellina", {}),
    # the recommended preset before its niche encoder became linear: the change this run judges
    "recommended_mlp": ("cellina", "recommended", "cellina", {"spatial_encoder": "mlp"}),
    "published": ("cellina", "published", "cellina", {}),
    # the recommended preset as it was before its KL term of s was dropped: the change this run judges
    "recommended_kl01": ("cellina", "recommended", "cellina", {"spatial_kl_weight": 0.1}),
    # the graph's reach chosen from the data (cellina.spatial.niche_reach_curve) instead of 20 um
    "recommended_reach": ("cellina", "recommended", "cellina", {REACH: "auto"}),
    # the neighbours' cell types after their expression in the niche features, or instead of it (edge only)
    "recommended_types": ("cellina", "recommended", "cellina", {COMPOSITION: "added"}),
    "recommended_types_only": ("cellina", "recommended", "cellina", {COMPOSITION: "only"}),
    # the types after the expression, whose 300-1,000 columns the niche encoder reads through 20 principal directions
    "recommended_types_pcs": ("cellina", "recommended", "cellina", {COMPOSITION: "added", "spatial_components": 20}),
    # the same model, each edge counterfactual's change in s divided by its split-half reliability
    "recommended_disattenuated": ("cellina", "recommended", "cellina", {"disattenuate_niche": True}),
    # the preset, and its own change for the other types (the side the borrowed mixture takes; world_borrowing.py)
    "recommended_borrowed": ("cellina", "recommended", "cellina", {BORROW: True}),
    # the preset, and its change with a quarter, half, three quarters and all of the reliability correction
    "recommended_strengths": ("cellina", "recommended", "cellina", {STRENGTHS: True}),
    # both: the own and the other types' change at every share (methods <label>_s<share>, <label>_other_s<share>)
    "recommended_borrowed_strengths": ("cellina", "recommended", "cellina", {BORROW: True, STRENGTHS: True}),
    # the preset's change at every share of the correction, each with the model's error on the checkable types
    "recommended_checked": ("cellina", "recommended", "cellina", {CHECKED: True, STRENGTHS: True}),
    # sampled directional subgraphs, the graph variant's fastest setting (its time against Cellina: gcn_speed)
    "gcn": ("cellina", "recommended", "gcn", {"num_neighbors": [10, 5], "subgraph_type": "directional"}),
    "scvi": ("scvi", None, "cellina", {}),
    "mean_shift": ("mean_shift", None, "cellina", {}),
    # the exact counterfactual means (same donors): what the scores can reach; the top-50 Pearson against the
    # observed change is below 1 wherever the domains differ in more than the niche (confounds, count noise)
    "oracle": ("oracle", None, "cellina", {}),
}
#: the issue's targets for the recommended preset: metric -> (perturbation, lowest, highest)
TARGETS = {
    ("edge", "truth_pearson"): (0.9, None),
    ("edge", "truth_skill"): (0.6, None),
    ("edge", "truth_slope"): (0.7, 1.3),
    ("edge", "truth_auroc"): (0.85, None),
    ("node", "truth_pearson"): (0.8, None),
    ("node", "truth_skill"): (0.5, None),
    ("edge", "truth_calibration"): (0.8, None),
}
MIN_CELLS = 30
#: the model's sizes (also those of benchmarks/world_options.py)
MODEL_SIZE = {"n_latent": 10, "n_hidden": 128, "n_layers": 2}


def holdout_types(adata) -> list[str]:
    """Coarse types with enough cells in both the healthy and the tumour domain."""
    from cellina.datasets import HOLDOUT_TYPES

    counts = pd.crosstab(adata.obs["coarse_type"], adata.obs["domain"])
    return [t for t in HOLDOUT_TYPES if t in counts.index and min(counts.loc[t, ["healthy", "tumour"]]) >= MIN_CELLS]


def world_types(name: str, position: int, types: list[str] | None, per_world: int | None) -> list[str]:
    """The held-out types of the ``position``-th world: ``types``, or ``per_world`` of its evaluable ones in turn."""
    from cellina.datasets import make_world

    if types:
        return types
    evaluable = holdout_types(make_world(name))
    if per_world is None or per_world >= len(evaluable):
        return evaluable
    start = (position * per_world) % len(evaluable)
    return [evaluable[(start + k) % len(evaluable)] for k in range(per_world)]


def run_protocol(
    adata,
    holdout: str,
    method: str,
    preset: str | None,
    variant: str,
    cfg: dict,
    model_options: dict | None = None,
    plan_options: dict | None = None,
    probes: bool = False,
    return_models: bool = False,
):
    """The leave-one-type-out protocol on a world with the benchmark's settings (``cfg``)."""
    from cellina.evaluation import leave_one_out

    return leave_one_out(
        adata,
        holdout,
        methods=(method,),
        preset=preset,
        model=variant,
        batch_key="slide",
        library_key="slide",
        perturbations=("edge",) if cfg.get("composition") == "only" else ("edge", "node"),
        composition=cfg.get("composition", "off"),
        bandwidth=cfg["bandwidth"],
        max_neighbours=cfg["max_neighbours"],
        model_kwargs={**cfg["model"], **(model_options or {})},
        plan_kwargs=plan_options or None,
        train_kwargs=cfg["train"],
        n_deg=50,
        n_deg_node=20,
        n_pert_genes=max(20, adata.n_vars // 10),
        energy=False,
        probes=probes,
        seed=cfg["seed"],
        n_draws=cfg["n_draws"],
        uncertainty=cfg.get("uncertainty", "donors"),
        return_models=return_models,
    )


#: the other types' control cells whose change is averaged: at most this many per type, types with fewer than
#: MIN_OTHER_CELLS left out (the API's reference cells, so the exact and the model's borrowed change agree)
MAX_OTHER_CELLS, MIN_OTHER_CELLS = MAX_REFERENCE_CELLS, MIN_REFERENCE_CELLS


def other_type_cells(labels, domains, holdout: str, domain: str, rng, max_cells: int = MAX_OTHER_CELLS):
    """For each type but ``holdout`` with enough cells in ``domain``: up to ``max_cells`` of them (sorted),
    drawn with ``rng``."""
    for name in np.unique(labels):
        cells = np.flatnonzero((labels == name) & (domains == domain))
        if name == holdout or cells.size < MIN_OTHER_CELLS:
            continue
        yield np.sort(rng.choice(cells, min(max_cells, cells.size), replace=False))


def protocol_options(cfg: dict, disattenuate: float, n_draws: int) -> dict:
    """The counterfactual options of the protocol's edge run (its donors per cell and seed, held-out cells
    excluded) with share ``disattenuate`` of the reliability correction and ``n_draws`` draws."""
    options = {"n_neighbours": 50, "n_draws": n_draws, "seed": cfg["seed"], "batch_size": None}
    return options | {"disattenuate": float(disattenuate), "exclude_indices": "heldout"}


def model_change(res, cells: np.ndarray, cfg: dict, disattenuate: float = 0.0, n_draws: int = 1) -> np.ndarray:
    """The trained model's population edge change of ``cells`` when their niches are pooled from the protocol's
    donor pool (its seed), with share ``disattenuate`` of the reliability correction: the protocol's
    ``pred_change`` for those cells, through the API's own computation."""
    from cellina.counterfactual._borrow import population_change

    (model,) = res.models.values()
    options = protocol_options(cfg, disattenuate, n_draws)
    return population_change(model, model.adata, cells, res.indices["neighbours"], options)


def borrowed_change(res, cfg: dict, max_cells: int = MAX_OTHER_CELLS, disattenuate: float = 0.0):
    """The trained model's edge change for the other types, equal weight per type.

    The reference cells of :meth:`Cellina.borrowed_counterfactual_change` for the protocol's control cells
    (each other type's cells in their domain, at most ``max_cells``, seed 0) get niches pooled from the
    protocol's donor pool, as the control cells do; the population change (the protocol's ``pred_change``)
    is averaged over the types. What the model would predict for the held-out type if it borrowed the other
    types' answer to the tumour's niche, from the same trained model. ``disattenuate``: the share of the
    reliability correction each type's change gets (its own type's reliability).
    """
    from cellina.counterfactual import reference_cells

    (model,) = res.models.values()
    control, pool = res.indices["control"], res.indices["neighbours"]
    groups = reference_cells(model, model.adata, control, pool, max_cells=max_cells, min_cells=MIN_OTHER_CELLS)
    return np.mean([model_change(res, cells, cfg, disattenuate) for cells in groups.values()], axis=0)


def strength_changes(res, cfg: dict, protocol_change, strengths=STRENGTH_GRID) -> dict[float, np.ndarray]:
    """The trained model's edge change for the protocol's controls and donors (its draws and seed) with
    each share of the reliability correction; refuses a run whose share 0 is not ``protocol_change``
    (the protocol's own change)."""
    control, n_draws = res.indices["control"], cfg["n_draws"]
    changes = {share: model_change(res, control, cfg, share, n_draws) for share in (0.0, *strengths)}
    gap = float(np.max(np.abs(changes.pop(0.0) - np.asarray(protocol_change))))
    if gap > 1e-4:
        raise RuntimeError(f"the uncorrected change differs from the protocol's by up to {gap:.2g}")
    return changes


def checked_error(res, cfg: dict, disattenuate: float = 0.0) -> np.ndarray:
    """Per gene, the trained model's root-mean-square error on the other types it can be checked against
    (their observed change from the control domain to the donor pool against their predicted one), with share
    ``disattenuate`` of the reliability correction, through the API's own computation."""
    from cellina.counterfactual._checked import CHECKED_ERROR, checked_errors

    (model,) = res.models.values()
    options = protocol_options(cfg, disattenuate, cfg["n_draws"])
    control, pool = res.indices["control"], res.indices["neighbours"]
    return checked_errors(model, model.adata, control, pool, options)[CHECKED_ERROR].to_numpy()


def extra_edge_frames(
    res, lfc: pd.DataFrame, cfg: dict, label: str, borrow: bool, strengths: bool, checked: bool = False
):
    """The per-gene edge frames the run options add beside the protocol's own (``lfc``): with ``strengths`` the
    change at each share of the correction (methods ``<label>_s<share>``), with ``borrow`` the other types'
    change (``<label>_other``), with both the other types' change at each share (``<label>_other_s<share>``);
    with ``checked`` the fully corrected change's frame has the column ``checked_error``."""
    plain = lfc.drop(columns=["pred_change_std"], errors="ignore")
    changes = {}
    if strengths:
        changes.update({f"{label}_s{k:g}": v for k, v in strength_changes(res, cfg, lfc["pred_change"]).items()})
    if borrow:
        changes[f"{label}_other"] = borrowed_change(res, cfg)
    if borrow and strengths:
        changes.update({f"{label}_other_s{k:g}": borrowed_change(res, cfg, disattenuate=k) for k in STRENGTH_GRID})
    frames = []
    for method, change in changes.items():
        frame = plain.assign(pred_change=change, method=method)
        if checked and method == f"{label}_s1":
            frame["checked_error"] = checked_error(res, cfg, 1.0)
        frames.append(frame)
    return frames


def reach_cfg(adata, holdout: str, cfg: dict) -> dict:
    """``cfg`` with the graph's bandwidth and neighbour cap suggested by the data, held-out cells left out."""
    from cellina.spatial import niche_reach_curve

    held = np.flatnonzero(
        (adata.obs["coarse_type"].to_numpy() == holdout) & (adata.obs["domain"].to_numpy() == "tumour")
    )
    curve = niche_reach_curve(adata, "coarse_type", layer="counts", library_key="slide", test_indices=held)
    print(f"  reach: {curve.describe()}", flush=True)
    if not curve.signal:
        return cfg
    return {**cfg, "bandwidth": curve.suggested_bandwidth, "max_neighbours": curve.suggested_max_neighbours}


def run_world(name: str, types: list[str], cfg: dict, labels: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every requested method on every held-out type of one world: the scores and the per-gene changes."""
    from cellina.datasets import make_world

    adata = make_world(name)
    frames, genes = [], []
    for holdout in types:
        for label in labels:
            method, preset, variant, options = RUNS[label]
            options = dict(options)
            t0 = time.perf_counter()
            run_cfg = reach_cfg(adata, holdout, cfg) if options.pop(REACH, None) == "auto" else cfg
            run_cfg = {**run_cfg, "composition": options.pop(COMPOSITION, "off")}
            borrow = bool(options.pop(BORROW, False))
            strengths = bool(options.pop(STRENGTHS, False))
            checked = bool(options.pop(CHECKED, False))
            res = run_protocol(
                adata,
                holdout,
                method,
                preset,
                variant,
                run_cfg,
                model_options=options,
                return_models=borrow or strengths or checked,
            )
            seconds = time.perf_counter() - t0
            frames.append(res.scores.assign(world=name, holdout=holdout, method=label, seconds=seconds))
            for (pert, _), lfc in res.lfc.items():
                frames_of_pair = [lfc.assign(method=label)]
                if pert == "edge" and checked:
                    frames_of_pair[0]["checked_error"] = checked_error(res, run_cfg)
                if pert == "edge":
                    frames_of_pair += extra_edge_frames(res, lfc, run_cfg, label, borrow, strengths, checked)
                genes.extend(f.assign(world=name, holdout=holdout, perturbation=pert) for f in frames_of_pair)
            print(f"{name} {holdout} {label}: {seconds:.0f} s", flush=True)
            print(res.scores[["perturbation", *[m for m in METRICS if m in res.scores]]].to_string(), flush=True)
    return pd.concat(frames, ignore_index=True), pd.concat(genes)


def with_top_truth(scores: pd.DataFrame, genes: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with :data:`TOP_TRUTH`: on the genes the tutorial's top-50 Pearson reads (the top observed
    changes), the Pearson of the predicted change with the exact one. Where it is high and ``pearson`` low, the
    observed difference holds more than the niche's effect (confounds, count noise), not the model less."""
    keys = ["world", "holdout", "method", "perturbation"]
    if "true_change" not in genes:
        return scores

    def one(frame: pd.DataFrame) -> float:
        top = frame[frame["is_deg"].astype(str) == "True"].dropna(subset=["true_change", "pred_change"])
        if len(top) < 3 or top["pred_change"].std() == 0 or top["true_change"].std() == 0:
            return np.nan
        return float(np.corrcoef(top["pred_change"], top["true_change"])[0, 1])

    values = genes.groupby(keys)[["is_deg", "true_change", "pred_change"]].apply(one).rename(TOP_TRUTH).reset_index()
    return scores.drop(columns=[TOP_TRUTH], errors="ignore").merge(values, on=keys, how="left")


def _fmt(x: float) -> str:
    return "-" if x is None or not np.isfinite(x) else f"{x:.2f}"


def tables(scores: pd.DataFrame) -> list[str]:
    """Per-world edge table (every type and method), the node table, and the means per method."""
    lines = []
    cols = [c for c in METRICS if c in scores]
    for pert in ("edge", "node"):
        sub = scores[scores["perturbation"] == pert]
        if sub.empty:
            continue
        lines += [
            f"### {pert.capitalize()} perturbation",
            "",
            "| world | held-out type | method | " + " | ".join(cols) + " |",
            "|---|---|---|" + "---|" * len(cols),
        ]
        for _, row in sub.sort_values(["world", "holdout", "method"]).iterrows():
            lines.append(
                f"| {row['world']} | {row['holdout']} | {row['method']} | "
                + " | ".join(_fmt(row[c]) for c in cols)
                + " |"
            )
        means = sub.groupby("method")[cols].mean()
        lines += [
            "",
            f"Mean over worlds and types ({pert}):",
            "",
            "| method | " + " | ".join(cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        lines += [f"| {m} | " + " | ".join(_fmt(means.loc[m, c]) for c in cols) + " |" for m in means.index]
        lines.append("")
    return lines


def world_lines(worlds: list[str]) -> list[str]:
    """One line per world: its split and what it is (the registry's description)."""
    from cellina.datasets import world_split
    from cellina.datasets.worlds import world_spec

    lines = ["| world | split | what it is |", "|---|---|---|"]
    lines += [f"| {w} | {world_split(w)} | {world_spec(w).description} |" for w in worlds]
    return [*lines, ""]


def target_lines(scores: pd.DataFrame, method: str = "recommended") -> list[str]:
    """Which (world, held-out type) pairs meet each of the issue's targets with ``method``; with ``oracle`` rows,
    also on how many pairs the exact truth itself meets it (a missed pair marked * is one where the truth misses
    it too, or has no value: no node truth)."""
    with_oracle = "oracle" in set(scores["method"])
    lines = [
        f"### Targets ({method})",
        "",
        "| perturbation | metric | target | met | "
        + ("met by the exact truth (oracle) | " if with_oracle else "")
        + "missed on |",
        "|---|---|---|---|" + ("---|" if with_oracle else "") + "---|",
    ]

    def met(sub: pd.DataFrame, metric: str, low: float, high: float | None) -> tuple[pd.Series, pd.Series]:
        """The values by (world, held-out type) and whether each meets the target."""
        values = sub.set_index(["world", "holdout"])[metric].astype(float)
        return values, np.isfinite(values) & (values >= low) & (values <= (np.inf if high is None else high))

    for (pert, metric), (low, high) in TARGETS.items():
        sub = scores[(scores["method"] == method) & (scores["perturbation"] == pert)]
        if metric not in sub or sub.empty:
            continue
        values, ok = met(sub, metric, low, high)
        oracle_ok = None
        truth = scores[(scores["method"] == "oracle") & (scores["perturbation"] == pert)]
        if with_oracle and truth[metric].notna().any():  # the truth has no spread: no calibration
            oracle_ok = met(truth, metric, low, high)[1].reindex(values.index, fill_value=False)
        missed = [
            f"{w}/{h} ({v:.2f}){'*' if oracle_ok is not None and not oracle_ok[(w, h)] else ''}"
            for (w, h), v in values[~ok].items()
        ]
        target = f">= {low:g}" if high is None else f"{low:g}-{high:g}"
        reach = (
            "" if not with_oracle else "- | " if oracle_ok is None else f"{int(oracle_ok.sum())}/{oracle_ok.size} | "
        )
        lines.append(
            f"| {pert} | {metric} | {target} | {int(ok.sum())}/{ok.size} | {reach}{'; '.join(missed) or '-'} |"
        )
    return [*lines, ""]


#: the graph variant's accuracy target against Cellina (same preset): these edge scores within MARGIN, or better
PEER_METRICS = ("truth_pearson", "truth_skill", "pearson")
MARGIN = 0.03


def peer_lines(scores: pd.DataFrame, method: str = "gcn", baseline: str = "recommended") -> list[str]:
    """``method`` against ``baseline`` on every (world, held-out type) pair both were run on: the edge scores of
    :data:`PEER_METRICS` side by side, their differences, and on how many pairs ``method`` is within
    :data:`MARGIN` of ``baseline`` or better (and, where the scores have it, the :data:`TOP_TRUTH` difference)."""
    edge = scores[scores["perturbation"] == "edge"]
    columns = [*PEER_METRICS, *([TOP_TRUTH] if TOP_TRUTH in edge else [])]
    a, b = (edge[edge["method"] == m].set_index(["world", "holdout"])[columns] for m in (method, baseline))
    pairs = a.index.intersection(b.index).sort_values()
    if pairs.empty:
        return []
    a, b = a.loc[pairs], b.loc[pairs]
    every_diff = a - b
    peer = list(PEER_METRICS)
    a, b, diff = a[peer], b[peer], every_diff[peer]
    close = diff >= -MARGIN
    names = " / ".join(PEER_METRICS)
    lines = [
        f"### {method} against {baseline} (edge)",
        "",
        f"{names}; difference {method} - {baseline}; the scores where {method} is within {MARGIN:g} of "
        f"{baseline} or better.",
        "",
        f"| world | held-out type | {method} | {baseline} | difference | within {MARGIN:g} or better |",
        "|---|---|---|---|---|---|",
    ]

    def cells(row: pd.Series, signed: bool = False) -> str:
        return " / ".join(f"{v:+.2f}" if signed else _fmt(v) for v in row)

    for pair in pairs:
        ok = [m for m in PEER_METRICS if close.loc[pair, m]]
        lines.append(
            f"| {pair[0]} | {pair[1]} | {cells(a.loc[pair])} | {cells(b.loc[pair])} | "
            f"{cells(diff.loc[pair], signed=True)} | {', '.join(ok) or '-'} |"
        )
    lines += [
        f"| **mean** | | {cells(a.mean())} | {cells(b.mean())} | {cells(diff.mean(), signed=True)} | |",
        "",
        f"Within {MARGIN:g} or better on {len(pairs)} pairs: "
        + ", ".join(f"{m} {int(close[m].sum())}" for m in PEER_METRICS)
        + f"; on all three {int(close.all(axis=1).sum())}. Difference over the pairs, median and mean [95% "
        "bootstrap interval of the mean]: "
        + "; ".join(f"{m} {_spread(diff[m].to_numpy())}" for m in PEER_METRICS)
        + ".",
        "",
    ]
    if TOP_TRUTH in every_diff:
        top = every_diff[TOP_TRUTH]
        lines += [
            f"The same top-50 genes against the exact change ({TOP_TRUTH}), {method} - {baseline}: "
            f"{_spread(top.to_numpy())}; within {MARGIN:g} or better on {int((top >= -MARGIN).sum())} of "
            f"{len(pairs)} pairs.",
            "",
        ]
    return lines


def _spread(values: np.ndarray, n_boot: int = 10_000) -> str:
    """Median, mean and a 95% bootstrap interval of the mean of ``values`` (pairs resampled, fixed seed)."""
    values = values[np.isfinite(values)]
    means = np.random.default_rng(0).choice(values, (n_boot, values.size)).mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return f"{np.median(values):+.2f}, {values.mean():+.2f} [{low:+.2f}, {high:+.2f}]"


def plot_world(genes: pd.DataFrame, world: str, method: str = "recommended", prefix: str = "worlds") -> str | None:
    """Observed-vs-predicted and truth-vs-predicted changes of the edge perturbation; the image name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = genes[(genes["world"] == world) & (genes["method"] == method) & (genes["perturbation"] == "edge")]
    if sub.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    panels = [
        ("true_lfc", "pred_lfc", "observed log-fold change (top DEGs)", sub[sub["is_deg"].astype(bool)]),
        ("true_change", "pred_change", "exact true change (log)", sub.dropna(subset=["true_change"])),
    ]
    for ax, (x, y, label, data) in zip(axes, panels):
        for holdout, part in data.groupby("holdout"):
            ax.scatter(part[x], part[y], s=8, alpha=0.6, label=holdout)
        if not data.empty:
            lim = float(np.nanmax(np.abs(data[[x, y]].to_numpy()))) * 1.05
            ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
        ax.axhline(0, color="lightgrey", lw=0.5)
        ax.axvline(0, color="lightgrey", lw=0.5)
        ax.set_xlabel(label)
        ax.set_ylabel(f"predicted ({method})")
    axes[0].legend(fontsize=7, title="held-out type", title_fontsize=7)
    fig.suptitle(f"{world}: edge counterfactual, one point per gene (dashed: the right size)")
    fig.tight_layout()
    name = f"{prefix}_{world}.png"
    fig.savefig(ROOT / "docs" / "img" / name, dpi=110)
    plt.close(fig)
    return name


def main(argv: list[str] | None = None) -> int:
    from cellina.datasets.worlds import SPLITS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=SPLITS, default="evaluation")
    parser.add_argument("--worlds", default=None, help="comma-separated world names (default: the whole split)")
    parser.add_argument("--types", default=None, help="comma-separated held-out types (default: every evaluable one)")
    parser.add_argument(
        "--types-per-world",
        type=int,
        default=None,
        help="hold out only this many of each world's evaluable types, taken in turn across worlds so that "
        "every type comes up (default: all)",
    )
    parser.add_argument("--methods", default=",".join(RUNS), help=f"comma-separated, from {list(RUNS)}")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--n-draws", type=int, default=5, help="donor draws of the edge runs (their spread gives truth_calibration)"
    )
    parser.add_argument(
        "--uncertainty",
        choices=("donors", "posterior"),
        default="donors",
        help="what the edge spread describes: the donors drawn, or the donors and the model's posterior",
    )
    parser.add_argument(
        "--csv", default=None, help="also write the scores and per-gene changes to PREFIX_{scores,genes}.csv"
    )
    parser.add_argument("--from-csv", default=None, help="write the docs section from PREFIX_{scores,genes}.csv")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--section",
        default=None,
        help="docs section (and image prefix) to write (default: worlds-SPLIT; another name keeps that one)",
    )
    args = parser.parse_args(argv)

    from cellina.datasets import list_worlds

    worlds = args.worlds.split(",") if args.worlds else list(list_worlds(args.split))
    section = args.section or f"worlds-{args.split}"
    labels = args.methods.split(",")
    cfg = {
        "bandwidth": 20.0,
        "max_neighbours": 50,
        "seed": args.seed,
        "n_draws": args.n_draws,
        "uncertainty": args.uncertainty,
        "model": MODEL_SIZE,
        "train": {"max_epochs": args.epochs, "batch_size": 512},
    }
    types = args.types.split(",") if args.types else None
    if args.from_csv:
        scores = pd.read_csv(f"{args.from_csv}_scores.csv")
        genes = pd.read_csv(f"{args.from_csv}_genes.csv")
        worlds = list(dict.fromkeys(scores["world"]))
    else:
        runs = []
        for name in worlds:
            position = list_worlds(args.split).index(name)  # the turn of a world does not depend on --worlds
            runs.append(run_world(name, world_types(name, position, types, args.types_per_world), cfg, labels))
            scores = pd.concat([r[0] for r in runs], ignore_index=True)
            genes = pd.concat([r[1] for r in runs])
            if args.csv:  # after every world, so that a long run keeps what it has measured
                scores.to_csv(f"{args.csv}_scores.csv", index=False)
                genes.to_csv(f"{args.csv}_genes.csv")
    scores = with_top_truth(scores, genes)
    minutes = scores.drop_duplicates(["world", "holdout", "method"])["seconds"].sum() / 60
    body = [
        f"## Evaluation worlds ({args.split} split"
        f"{', every held-out type' if args.types_per_world is None and not args.types else ''})",
        "",
        f"`python benchmarks/worlds.py --split {args.split} --epochs {args.epochs}"
        f"{'' if args.types_per_world is None else f' --types-per-world {args.types_per_world}'}"
        f"{'' if args.uncertainty == 'donors' else f' --uncertainty {args.uncertainty}'}` — "
        + (
            f"written {time.strftime('%Y-%m-%d', time.gmtime())} from runs saved with `--csv` (methods run "
            "separately, on the dates the sections above name)"
            if args.from_csv
            else f"measured {time.strftime('%Y-%m-%d', time.gmtime())}"
        )
        + f" on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}, shared), {minutes:.0f} min "
        "of runs; worlds "
        f"{', '.join(worlds)}; model {cfg['model']}, {args.epochs} epochs, batch 512, seed {args.seed}; the model's "
        f"graph: gaussian kernel, bandwidth {cfg['bandwidth']:g} um, {cfg['max_neighbours']} neighbours (the "
        "project's default, whatever the world's true reach); calibration from the spread across "
        f"{args.n_draws} edge draws of {'the donors' if args.uncertainty == 'donors' else 'the donors and the posterior'}. "
        "The worlds are described in docs/worlds.md. "
        "Methods: `recommended` and `published` (Cellina with each preset), `recommended_kl01` (the "
        "recommended preset with the KL term of s at weight 0.1, the preset until 2026-12-06), `recommended_reach` (the "
        "recommended preset on a graph whose bandwidth and neighbour cap the data suggest, "
        "`cellina.spatial.niche_reach_curve` with the held-out cells left out; 20 um when no reach stands "
        "out), `recommended_types` / `recommended_types_only` (the recommended preset whose niche features "
        "hold the neighbours' coarse types after their expression / instead of it; the latter scores the edge "
        "perturbation only), `recommended_types_pcs` (`recommended_types` with the expression columns read "
        "through their 20 leading principal directions, `spatial_components=20`), `gcn` (CellinaGCN, recommended "
        "preset, 10 + 5 sampled neighbours, directional subgraphs), `scvi` (space-blind scvi-tools SCVI, "
        "domain as batch), `mean_shift` (the type's global mean change between domains), `oracle` (the exact "
        "counterfactual means for the same donors: what each score can reach; its top-50 Pearson against the "
        "observed change is below 1 wherever the domains differ in more than the niche).",
        "",
        *world_lines(worlds),
        *tables(scores),
        *(target_lines(scores) if "recommended" in set(scores["method"]) else []),
        *peer_lines(scores),
    ]
    for world in worlds:
        name = None if args.no_write else plot_world(genes, world, prefix=section.replace("-", "_"))
        if name:
            body += [f"![{world}: predicted against observed and exact changes](img/{name})", ""]
    text = "\n".join(body)
    if args.no_write:
        print(text)
    else:
        write_section(section, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
