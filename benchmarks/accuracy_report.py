"""The report section of ``benchmarks/accuracy.py``: tables, targets and a reading of the numbers."""

from __future__ import annotations

import os
import platform
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
from accuracy import MARGIN_OVER_MEAN_SHIFT, TARGETS, _fmt, _table, model_kwargs, n_pert_genes


def summarise(run: Any, scores: pd.DataFrame, variant: str) -> SimpleNamespace:
    """The tables of the report: lead type, means over trained types, references, probes, seeds."""
    results, trained, holdouts, every_seed = run.results, run.trained, run.holdouts, run.every_seed
    first = results[0]
    by_seed = every_seed[every_seed["variant"] == variant]
    cols = [
        "pearson",
        "signed_precision",
        "energy_distance",
        "truth_pearson",
        "truth_skill",
        "truth_slope",
        "null_change",
        "null_change_true",
    ]
    cols = [c for c in cols if c in scores]
    lead = scores[scores["holdout"] == first.holdout].set_index(["perturbation", "method"])[cols]
    on_trained = scores[scores["holdout"].isin(trained)]
    mean = on_trained.groupby(["perturbation", "method"])[cols].mean()
    mean.insert(0, "n_types", on_trained.groupby(["perturbation", "method"])["holdout"].nunique())
    refs = scores[scores["method"].isin(["mean_shift", "oracle"])]
    ref_mean = refs.groupby(["perturbation", "method"])[cols].mean()
    ref_types = refs[refs["perturbation"] == "edge"].pivot(index="holdout", columns="method", values="pearson")
    ref_types = ref_types.reindex(holdouts)
    ref_types.index.name = "held-out type"

    probe_rows = []
    for r in results:
        for method, vals in r.disentanglement.items():
            probe_rows.append({"holdout": r.holdout, "method": method, **vals})
    probes = pd.DataFrame(probe_rows).groupby("method").mean(numeric_only=True) if probe_rows else pd.DataFrame()

    seed_cols = [c for c in ("pearson", "truth_pearson", "truth_skill", "truth_slope", "null_change") if c in by_seed]
    seed_mean = by_seed.groupby(["perturbation"])[seed_cols].mean()
    seed_sd = by_seed.groupby(["perturbation"])[seed_cols].std(ddof=1)
    all_mean = every_seed.groupby(["variant", "perturbation"])[seed_cols].mean()
    all_sd = every_seed.groupby(["variant", "perturbation"])[seed_cols].std(ddof=1)
    seed_table = ["| variant | perturbation | " + " | ".join(seed_cols) + " |", "|---|---|" + "---|" * len(seed_cols)]
    for key in all_mean.index:
        cells = [f"{_fmt(all_mean.loc[key, c])} ± {_fmt(all_sd.loc[key, c])}" for c in seed_cols]
        seed_table.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")
    seed_rows = every_seed.set_index(["variant", "perturbation", "seed"])[seed_cols].sort_index()

    return SimpleNamespace(
        first=first,
        cols=cols,
        lead=lead,
        mean=mean,
        ref_mean=ref_mean,
        ref_types=ref_types,
        probes=probes,
        seed_cols=seed_cols,
        seed_mean=seed_mean,
        seed_sd=seed_sd,
        seed_table=seed_table,
        seed_rows=seed_rows,
    )


def _get(frame: pd.DataFrame, key: tuple | str, metric: str) -> float:
    return float(frame.loc[key, metric]) if key in frame.index and metric in frame else float("nan")


def target_checks(t: SimpleNamespace, n_seeds: int) -> list[str]:
    """One table row per target of the issue, with the measured value and whether it is met."""
    first, mean, seed_mean, ref_mean, lead, probes = t.first, t.mean, t.seed_mean, t.ref_mean, t.lead, t.probes
    get = _get
    checks = []

    def check(label: str, threshold: float, value: float, on: str) -> None:
        met = "yes" if value is not None and np.isfinite(value) and value >= threshold else "no"
        checks.append(f"| {label} | >= {threshold} | {on} | {_fmt(value)} | {met} |")

    # The Pearson target is an average over held-out types; the exact-truth targets are read on
    # the headline type (types without niche response have no truth change to score).
    for pert, targets in TARGETS.items():
        for metric, threshold in targets.items():
            if metric == "pearson":
                check(
                    f"{pert}: {metric} on top-50 DEGs",
                    threshold,
                    get(mean, (pert, "cellina"), metric),
                    "mean over trained types",
                )
            else:
                check(
                    f"{pert}: {metric} on responsive genes",
                    threshold,
                    get(seed_mean, pert, metric),
                    f"{first.holdout}, mean of {n_seeds} seeds",
                )
    gap = get(mean, ("edge", "cellina"), "pearson") - get(mean, ("edge", "mean_shift"), "pearson")
    check("edge: pearson, Cellina minus mean shift", MARGIN_OVER_MEAN_SHIFT, gap, "mean over trained types")
    for label, frame, on in (("edge: pearson, exact truth (ceiling)", ref_mean, "all coarse types"),):
        checks.append(f"| (reference) {label} | - | {on} | {_fmt(get(frame, ('edge', 'oracle'), 'pearson'))} | - |")
    ceiling = get(ref_mean, ("edge", "oracle"), "pearson") - get(ref_mean, ("edge", "mean_shift"), "pearson")
    checks.append(
        f"| (reference) edge: pearson, exact truth minus mean shift | - | all coarse types | {_fmt(ceiling)} | - |"
    )
    lead_gap = get(lead, ("edge", "oracle"), "pearson") - get(lead, ("edge", "mean_shift"), "pearson")
    checks.append(
        f"| (reference) edge: pearson, exact truth minus mean shift | - | {first.holdout} | {_fmt(lead_gap)} | - |"
    )
    if "cellina" in probes.index:
        p = probes.loc["cellina"]
        ok_z = abs(p["domain_from_z"] - p["domain_chance"]) <= 0.1
        checks.append(
            f"| latents: domain from z, within 0.1 of chance ({_fmt(p['domain_chance'])}) | "
            f"<= {_fmt(p['domain_chance'] + 0.1)} | mean over runs | {_fmt(p['domain_from_z'])} | "
            f"{'yes' if ok_z else 'no'} |"
        )
        check(
            "latents: domain from s, well above chance",
            round(p["domain_chance"] + 0.1, 3),
            p["domain_from_s"],
            "mean over runs",
        )
        check("latents: cell type from z", 0.9, p["celltype_from_z"], "mean over runs")

    return checks


def reading_lines(t: SimpleNamespace, n_seeds: int, skipped: list[str]) -> list[str]:
    """A reading of the numbers, generated from them so it cannot drift from the tables."""
    first, seed_mean, seed_sd, ref_mean, lead = t.first, t.seed_mean, t.seed_sd, t.ref_mean, t.lead
    get = _get
    lead_gap = get(lead, ("edge", "oracle"), "pearson") - get(lead, ("edge", "mean_shift"), "pearson")
    ceiling = get(ref_mean, ("edge", "oracle"), "pearson") - get(ref_mean, ("edge", "mean_shift"), "pearson")
    reading = []
    if "edge" in seed_mean.index:
        tp, sl, sk = (get(seed_mean, "edge", m) for m in ("truth_pearson", "truth_slope", "truth_skill"))
        reading.append(
            f"* Over {n_seeds} training seeds, Cellina's edge change for held-out {first.holdout} correlates "
            f"{_fmt(tp)} with the exact change on the genes that respond to the niche in that type; its size is "
            f"{_fmt(sl)} of the true size (least-squares slope), skill {_fmt(sk)} (sd "
            f"{_fmt(get(seed_sd, 'edge', 'truth_skill'))})."
        )
    oracle_all = get(ref_mean, ("edge", "oracle"), "pearson")
    verdict = "no predictor can reach" if oracle_all < TARGETS["edge"]["pearson"] else "a perfect predictor reaches"
    reading.append(
        f"* The exact counterfactual itself scores a top-50 Pearson of {_fmt(oracle_all)} averaged over all "
        f"coarse types ({_fmt(get(lead, ('edge', 'oracle'), 'pearson'))} for {first.holdout}), so "
        f"{verdict} 0.85 on average here; it beats the mean shift by {_fmt(lead_gap)} on {first.holdout} and "
        f"{_fmt(ceiling)} over all types, the ceiling for the {MARGIN_OVER_MEAN_SHIFT}-margin target. "
        "Part of each type's niche response is shared with the other types (which the mean shift captures) "
        "and part is its own."
        + (f" Not evaluable (too few cells in the healthy or tumour domain): {', '.join(skipped)}." if skipped else "")
    )
    if ("edge", "scvi") in lead.index:
        reading.append(
            f"* Space-blind SCVI (domain as batch) on {first.holdout}: tutorial Pearson "
            f"{_fmt(get(lead, ('edge', 'scvi'), 'pearson'))}, exact-truth Pearson "
            f"{_fmt(get(lead, ('edge', 'scvi'), 'truth_pearson'))}, "
            f"slope {_fmt(get(lead, ('edge', 'scvi'), 'truth_slope'))}; "
            f"ablation without the auxiliary losses: {_fmt(get(lead, ('edge', 'cellina_no_aux'), 'truth_pearson'))}, "
            f"slope {_fmt(get(lead, ('edge', 'cellina_no_aux'), 'truth_slope'))}."
        )
    reading.append(
        "* Each type here is one training run, and one run's top-50 Pearson is noisy: the next section "
        "(`benchmarks/accuracy_seed_table.py`) averages every type over several training seeds."
    )

    return reading


def intro_lines(run: Any, cfg: dict, args: Any) -> list[str]:
    """The section's title, the command, the tissue and the protocol."""
    trained, holdouts, total_s = run.trained, run.holdouts, run.total_s
    mode = "quick mode" if args.quick else "full mode"
    cmd = "python benchmarks/accuracy.py" + (" --quick" if args.quick else "")
    text = [
        "## Counterfactual accuracy (leave one type out)",
        "",
        f"**{mode} figures.** Command: `{cmd}` — measured {time.strftime('%Y-%m-%d', time.gmtime())} on "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}, shared), "
        f"{total_s / 60:.1f} min in total.",
        f"Synthetic tissue: {cfg['n_cells']} cells, {cfg['n_genes']} genes, seed {args.seed}; held-out types "
        f"with trained models: {', '.join(trained)}"
        f"{' (every other coarse type: references only)' if len(trained) < len(holdouts) else ''}; "
        f"{cfg['max_epochs']} epochs, batch {cfg['batch_size']}, "
        f"model {model_kwargs(cfg)}; graph: gaussian, bandwidth 20 um, 30 neighbours (the tissue's own "
        "niche scale).",
        "",
        "Protocol (`cellina.evaluation.leave_one_out`): the held-out type's tumour cells are masked "
        "from the training graph and split; its healthy cells are the controls. Edge: controls get 50 donors "
        "from the observed non-held-out neighbours of the held-out tumour cells. Node: neighbours are shifted "
        f"by their type's pseudobulk healthy->tumour change (top {n_pert_genes(cfg)} genes, the tutorial's 10 %; the "
        "held-out type gets the shift of all other types). `pearson` and `signed_precision` are on the top-50 "
        "observed DEGs for edge and top-20 for node (log2, the tutorial's "
        "metric); `energy_distance` is between predicted and observed tumour cells (log1p CP10K, 30 PCs). "
        "`truth_*` compare the predicted change (counterfactual vs the same predictor's factual prediction "
        "for the same cells, log2 of mean CP10K) with the exact change (same donors) on the niche-responsive "
        "genes (`truth_slope`: least-squares slope of predicted on true change, 1 = right size); "
        "`null_change` is the RMS predicted change on null genes (`null_change_true`: the exact one, "
        "non-zero only through normalisation). Methods: `cellina` (both lambdas 1, normalised losses, the "
        "model settings above), "
        "`cellina_no_aux` (both lambdas 0; the type-gated decoder reads the classifier, so the ablation uses the "
        "factorised one), `scvi` (scvi-tools SCVI, no niche input, domain as batch, "
        "counterfactual = `transform_batch='tumour'`), `mean_shift` (control + mean log shift of the other "
        "types, equal weight per type), `oracle` (the exact counterfactual means: the ceiling that count noise "
        "leaves to the observed-lfc scores). "
        f"Held-out {holdouts[0]}: methods {', '.join(cfg['lead_methods'])}; other trained types: "
        f"{', '.join(cfg['other_methods'])}.",
        "",
    ]
    return text


def report(run: Any, scores: pd.DataFrame, cfg: dict, args: Any, plots: list[tuple[str, str]]) -> str:
    """The ``accuracy`` section of ``docs/benchmarks.md``."""
    variant, n_seeds = cfg["variant"], run.n_seeds
    t = summarise(run, scores, variant)
    first, cols, lead, mean, ref_mean = t.first, t.cols, t.lead, t.mean, t.ref_mean
    ref_types, probes = t.ref_types, t.probes
    seed_cols, seed_table, seed_rows, trained = t.seed_cols, t.seed_table, t.seed_rows, run.trained
    reading = reading_lines(t, n_seeds, run.skipped)
    checks = target_checks(t, n_seeds)
    text = [
        *intro_lines(run, cfg, args),
        "### Reading",
        "",
        *reading,
        "",
        "### Targets (issue 3)",
        "",
        "| target | threshold | on | measured | met |",
        "|---|---|---|---|---|",
        *checks,
        "",
        f"### Held-out {first.holdout}",
        "",
        _table(lead, cols),
        "",
        f"Cellina on held-out {first.holdout} over {n_seeds} training seeds (mean ± sd) with each model variant: "
        f"`{variant}` is the benchmark's setting (the exact-truth targets are read on it), `concat` the published "
        "decoder on [z; s], `factorised` a decoder on z plus a low-rank niche response modulated by z, "
        "`type_gated` the factorised one plus a full niche map per cell type weighted by the classifier's type "
        "probabilities from z; these three learn from samples of s, `type_gated_mean` is `type_gated` learning "
        "from the posterior mean of s (`spatial_decoding='mean'`), the value counterfactuals decode, and "
        "`type_gated_mean_aware` adds the type-aware domain discriminator (`type_aware_discriminator=True`: "
        "told each cell's type, the adversary removes only what z knows about the domain beyond it):",
        "",
        *seed_table,
        "",
        _table(seed_rows, seed_cols),
        "",
        f"### Mean over the held-out types with trained models ({', '.join(trained)})",
        "",
        _table(mean, ["n_types", *cols]),
        "",
        "### References over every coarse type (no training: mean shift and the exact counterfactual)",
        "",
        "What the observed-lfc metric can reach: `oracle` decodes the exact expected expression, so its "
        "top-50 Pearson is limited only by count noise.",
        "",
        _table(ref_mean, cols),
        "",
        "Edge-perturbation top-50 Pearson per held-out type:",
        "",
        _table(ref_types, list(ref_types.columns)),
        "",
        "### Disentanglement (balanced accuracy of a logistic regression, 30 % held-out training cells; "
        "mean over runs)",
        "",
        _table(probes, list(probes.columns)) if len(probes) else "(no latent models run)",
        "",
    ]
    for caption, name in plots:
        text += [f"![{caption}](img/{name})", ""]
    return "\n".join(text)
