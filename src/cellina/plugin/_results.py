"""Summaries of a counterfactual run for the Results dock: pure functions of explicit inputs."""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from cellina.keys import LAYERS
from cellina.plugin._state import RunResult, SessionError


def top_changed_genes(var_names: pd.Index, run: RunResult, n: int = 20) -> pd.DataFrame:
    """Genes whose mean predicted expression changes most against the factual prediction.

    Population log2 fold change of the focal cells' mean CP10K-normalised counterfactual
    over their factual prediction (the model's own reference, so the change is the niche's),
    and ``std``: how far one focal cell's log2 change moves across the draws, averaged over the
    focal cells (:func:`cellina.evaluation.log2_change_std`; the draws vary the donors, and with
    ``uncertainty="posterior"`` the model's latents too; NaN for a run without several draws).
    A run that borrowed adds the other types' change and the mixture (``others_log2fc``,
    ``borrowed_log2fc``), and its genes are those the mixture changes most. A run with a range adds its
    ends (``low``, ``high``; :meth:`Cellina.counterfactual_change_range`).
    """
    from cellina.evaluation import log2_change_std, mean_normalized_expression, safe_log2_fold_change

    lfc = safe_log2_fold_change(mean_normalized_expression(run.expression), mean_normalized_expression(run.factual))
    std = log2_change_std(run.expression, run.std) if run.std is not None else np.full(lfc.shape, np.nan)
    borrowed = None if run.borrowed is None else run.borrowed["borrowed_lfc"].to_numpy()
    order = np.argsort(-np.abs(lfc if borrowed is None else borrowed), kind="stable")[: int(n)]
    table = pd.DataFrame(
        {
            "gene": var_names[order].astype(str),
            "log2fc": lfc[order].astype(float),
            "std": std[order].astype(float),
            "factual": run.factual[:, order].mean(axis=0),
            "counterfactual": run.expression[:, order].mean(axis=0),
        }
    )
    if borrowed is not None:
        table["others_log2fc"] = run.borrowed["others_lfc"].to_numpy()[order]
        table["borrowed_log2fc"] = borrowed[order]
    if run.change_range is not None:
        table["low"] = run.change_range["low"].to_numpy()[order]
        table["high"] = run.change_range["high"].to_numpy()[order]
    return table


def trust_summary(run: RunResult) -> tuple[str, str]:
    """What the Results dock says about how much to trust ``run``: (draws line, warning or "").

    The draws line also says when the change in ``s`` was divided by its reliability, and how many
    training cells and counts the model had of the focal cells' types (their noise, more than a niche
    outside training, limited the direction of predictions on the evaluation worlds). The warning
    names how many focal cells got a counterfactual niche outside what the model saw in training,
    and what that means.
    """
    n_draws = int(run.params.get("n_draws", 1)) if run.kind == "edge" else 1
    if run.std is not None and n_draws > 1 and run.params.get("uncertainty") == "posterior":
        draws = (
            f"{n_draws} draws of donors and of the model's posterior; ± is how far one cell's log2FC moves across them."
        )
    elif run.std is not None and n_draws > 1:
        draws = f"{n_draws} donor draws; ± is how far one cell's log2FC moves across them."
    elif run.kind == "edge":
        draws = "1 donor draw: no spread; run with several draws to see how much the donors matter."
    else:
        draws = "node run: one deterministic perturbation, no spread across draws."
    if run.kind == "edge" and run.params.get("disattenuate"):
        draws += " The change in s was divided by its split-half reliability (niche noise)."
    if run.borrowed is not None:
        cells = run.borrowed.attrs.get("reference_cells", {})
        draws += (
            f" Borrowed: {run.borrowed.attrs.get('weight', 0):.0%} of the other types' change under the same "
            f"donors ({len(cells)} types, {sum(cells.values())} cells), a bet that the focal type answers as "
            "they do; compare its own column with theirs."
        )
    if run.change_range is not None:
        checked = run.change_range.attrs.get("checked_types", {})
        draws += (
            " Range: from the plain to the reliability-corrected own change, widened by two spreads of "
            f"{run.change_range.attrs.get('n_draws', n_draws)} donor draws and of the model's error on "
            f"{len(checked)} other type(s) checked among the donors ({', '.join(checked)})."
        )
    elif run.range_note:
        draws += f" {run.range_note}"
    if run.support is not None:
        draws += " " + run.support.message()
    warning = run.novelty.message() if run.novelty is not None and run.novelty.n_outside else ""
    return draws, warning


def observed_vs_predicted(
    adata: ad.AnnData,
    cell_type_key: str | None,
    domain_key: str | None,
    run: RunResult,
    target_cell_type: str,
    target_domain: str,
    n_deg: int = 50,
) -> dict[str, Any]:
    """The tutorial's figure data: observed (target vs focal) and predicted (counterfactual vs focal) log2FC.

    Returns ``true_lfc``, ``pred_lfc``, ``deg`` (top genes by |observed|), ``pearson`` on
    them and ``n_target``.
    """
    from cellina.evaluation import get_lfc, pearson_top_k

    if cell_type_key is None or domain_key is None:
        raise SessionError("the observed-versus-predicted plot needs the cell-type and domain keys")
    types = adata.obs[cell_type_key].astype(str).to_numpy()
    doms = adata.obs[domain_key].astype(str).to_numpy()
    target = np.flatnonzero((types == str(target_cell_type)) & (doms == str(target_domain)))
    if target.size == 0:
        raise SessionError(f"no cells of type {target_cell_type!r} in domain {target_domain!r} to compare with")
    counts = adata.layers[LAYERS.COUNTS] if LAYERS.COUNTS in adata.layers else adata.X
    true_lfc, pred_lfc, deg = get_lfc(counts[run.indices], counts[target], run.expression, n_deg=n_deg)
    pearson = pearson_top_k(true_lfc, pred_lfc, features=deg) if len(deg) > 2 else float("nan")
    return {"true_lfc": true_lfc, "pred_lfc": pred_lfc, "deg": deg, "pearson": pearson, "n_target": int(target.size)}
