"""``cellina counterfactual edge|node``: rewire focal cells' neighbourhoods or shift their neighbours."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from cellina.keys import OBSP, UNS

from ._common import (
    TRAINING_RECORD,
    CliError,
    HelpFormatter,
    check_output,
    load_input,
    positive_int,
    quiet_run,
    say,
    select,
)


def _add_edge_options(edge: argparse.ArgumentParser) -> None:
    donors = edge.add_mutually_exclusive_group(required=True)
    donors.add_argument("--donors", default=None, help="obs query of the donor pool")
    donors.add_argument(
        "--donors-neighbours-of",
        default=None,
        help="obs query of target cells whose observed neighbours form the donor pool (the published protocol)",
    )
    edge.add_argument("--exclude", default=None, help="obs query of cells removed from the donor pool")
    edge.add_argument(
        "--connectivity-key",
        default=None,
        help=f"obsp graph of --donors-neighbours-of (default: {OBSP.UNMASKED!r}, the graph with "
        f"held-out cells, when present, else {OBSP.CONNECTIVITIES!r})",
    )
    edge.add_argument(
        "--anchor",
        action="store_true",
        help="anchor mode: each focal cell takes the whole neighbourhood of one cell of the pool, "
        "instead of --n-neighbours donors drawn from it",
    )
    edge.add_argument("--n-neighbours", type=positive_int, default=50, help="donors per focal cell")
    edge.add_argument("--n-draws", type=positive_int, default=1, help="independent donor draws to average")
    edge.add_argument(
        "--uncertainty",
        choices=("donors", "posterior"),
        default="donors",
        help="what the std layer describes: the spread across donor draws, or across draws that also sample "
        "the model's latents from their posterior (the prediction is the same)",
    )
    edge.add_argument(
        "--disattenuate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="divide each draw's change in the niche code s by its split-half reliability for the focal cells' "
        "type, so the response is not shrunk by the noise of the niches it was learnt from (default: the "
        "model's disattenuate_niche setting)",
    )
    edge.add_argument(
        "--borrowed-csv",
        default=None,
        help="also write a per-gene CSV of the focal cells' population change (log2) mixed with the other cell "
        "types' change under the same donors, both with the reliability correction; a bet that the focal type "
        "answers its new niche as the others do (pooled rewiring only)",
    )
    edge.add_argument(
        "--borrow-weight",
        type=float,
        default=None,
        help="share of the other types' change in --borrowed-csv, 0 to 1 (default: 0.3)",
    )
    edge.add_argument(
        "--range-csv",
        default=None,
        help="also write a per-gene CSV of the focal cells' population change (log2) with a range: from the plain "
        "to the reliability-corrected change, widened by two spreads of the draws and of the model's error on the "
        "other cell types it can be checked against among the donors (pooled rewiring only; the range draws "
        "at least 5 times, as it was judged, see docs/benchmarks.md)",
    )
    edge.add_argument(
        "--min-reference-cells",
        type=int,
        default=None,
        help="for --borrowed-csv and --range-csv: the fewest cells another type needs as reference cells (and, "
        "for --range-csv, among the donors) to count (default: 30)",
    )


def _add_node_options(node: argparse.ArgumentParser) -> None:
    node.add_argument(
        "--shifts",
        required=True,
        help="CSV with columns gene,value and optionally senders (';'-separated groups) or group, "
        "and region (true/false); value is a natural-log fold change",
    )
    node.add_argument(
        "--sender-key",
        "--groupby",
        dest="sender_key",
        default=None,
        help="obs column the CSV's senders name (default: the model's cell-type column)",
    )
    node.add_argument("--region", default=None, help="obs query of the cells the CSV's region=true rows apply to")
    node.add_argument(
        "--on-counts",
        action="store_true",
        help="scale neighbours' counts by e**value instead of adding value to their log-normalised expression",
    )
    node.add_argument(
        "--lognorm-layer",
        default=None,
        help="log-normalised layer to shift (default: rebuilt from the counts as the niche features were)",
    )


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``cellina counterfactual edge`` and ``node``."""
    cf = sub.add_parser(
        "counterfactual",
        help="predict expression under a rewired neighbourhood (edge) or shifted neighbours (node)",
        description="Load a trained model, choose focal cells with an obs query, and write an .h5ad "
        "whose layers 'cellina_counterfactual' and 'cellina_factual' hold the focal cells' counterfactual "
        "and factual expected counts, with provenance (the run, the model and its preset) in "
        "uns['cellina']['provenance'].",
    )
    modes = cf.add_subparsers(dest="mode", metavar="MODE")
    modes.required = True
    edge = modes.add_parser(
        "edge", parents=[common], formatter_class=HelpFormatter, help="rewire focal cells' neighbourhoods to donors"
    )
    node = modes.add_parser(
        "node",
        parents=[common],
        formatter_class=HelpFormatter,
        help="shift neighbours' expression of genes listed in a CSV",
    )
    for mode in (edge, node):
        mode.add_argument("model", help="model folder written by 'cellina train'")
        mode.add_argument("output", help="output .h5ad")
        mode.add_argument("--data", default=None, help="AnnData to use (default: the model folder's adata.h5ad)")
        mode.add_argument("--focal", required=True, help="obs query of the focal cells")
        mode.add_argument("--library-size", default="latent", help="'latent' (each cell's own) or a number such as 1e4")
        mode.add_argument("--seed", type=int, default=0, help="seed of the random draws (donors)")
        mode.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
        mode.set_defaults(handler=run_counterfactual)
    _add_edge_options(edge)
    _add_node_options(node)


def donor_pool(adata: Any, args: argparse.Namespace) -> np.ndarray:
    """The edge run's donor (or anchor) pool from ``--donors`` or ``--donors-neighbours-of``."""
    from cellina.counterfactual import observed_neighbour_pool, select_cells

    if args.donors is not None:
        pool = select(adata, args.donors, "--donors")
        if args.exclude is not None:
            pool = np.setdiff1d(pool, select_cells(adata, args.exclude, "--exclude"))
    else:
        graph = args.connectivity_key or (OBSP.UNMASKED if OBSP.UNMASKED in adata.obsp else OBSP.CONNECTIVITIES)
        if graph not in adata.obsp:
            raise CliError(f"--connectivity-key {graph!r} is not in obsp (graphs: {sorted(adata.obsp.keys())})")
        pool = observed_neighbour_pool(adata, args.donors_neighbours_of, connectivity_key=graph, exclude=args.exclude)
    if pool.size == 0:
        raise CliError("the donor pool is empty")
    return pool


def run_edge(model: Any, adata: Any, focal: np.ndarray, args: argparse.Namespace, library_size: Any):
    """Expected counts, their std over draws, the draws, the niche novelty and the run's parameters."""
    pool = donor_pool(adata, args)
    predicted, std, donors, novelty = model.get_counterfactual_expression(
        indices=focal,
        neighbour_indices=pool,
        adata=adata,
        precomputed=args.anchor,
        seed=args.seed,
        n_neighbours=args.n_neighbours,
        n_draws=args.n_draws,
        return_std=True,
        return_donors=True,
        uncertainty=args.uncertainty,
        library_size=library_size,
        return_novelty=True,
        disattenuate=args.disattenuate,
    )
    from cellina._io import write_csv_atomic

    # both tables are computed before either is written, so a refusal leaves no file behind
    tables = [borrowed(model, adata, focal, pool, args), change_range(model, adata, focal, pool, args)]
    parameters = {}
    for table, path, record in filter(None, tables):
        write_csv_atomic(table, path)
        parameters |= record
    parameters |= {
        "donors": args.donors,
        "donors_neighbours_of": args.donors_neighbours_of,
        "exclude": args.exclude,
        "anchor": args.anchor,
        "n_neighbours": args.n_neighbours,
        "n_draws": args.n_draws,
        "uncertainty": args.uncertainty,
        "disattenuate": model.disattenuation(args.disattenuate),
        "donor_pool": pool,
    }
    return predicted, std, donors, novelty, parameters


def check_population_tables(args: argparse.Namespace) -> None:
    """Refuse options of the per-gene population tables (--borrowed-csv, --range-csv) that cannot apply, before
    anything runs."""
    from cellina.counterfactual._borrow import check_weight

    if getattr(args, "borrowed_csv", None) is None and getattr(args, "borrow_weight", None) is not None:
        raise CliError("--borrow-weight needs --borrowed-csv")
    if getattr(args, "borrow_weight", None) is not None:
        try:
            check_weight(args.borrow_weight)
        except ValueError as err:
            raise CliError(f"--borrow-weight: {err}") from None
    tables = [getattr(args, name, None) for name in ("borrowed_csv", "range_csv")]
    fewest = getattr(args, "min_reference_cells", None)
    if fewest is not None and fewest < 1:
        raise CliError(f"--min-reference-cells {fewest} must be at least 1")
    if fewest is not None and not any(tables):
        raise CliError("--min-reference-cells needs --borrowed-csv or --range-csv")
    if all(tables) and Path(tables[0]).resolve() == Path(tables[1]).resolve():
        raise CliError(f"--borrowed-csv and --range-csv both name {tables[0]!r}; give each table its own file")
    for name in ("borrowed_csv", "range_csv"):
        path = getattr(args, name, None)
        if path is None:
            continue
        flag = "--" + name.replace("_", "-")
        if args.anchor:
            raise CliError(f"{flag} works with pooled rewiring only; leave out --anchor")
        if not str(path).endswith(".csv"):
            raise CliError(f"{flag} {path!r} must end in '.csv'")
        check_output(Path(path), args.overwrite)


def borrowed(model: Any, adata: Any, focal: np.ndarray, pool: np.ndarray, args: argparse.Namespace):
    """With ``--borrowed-csv``: the borrowed per-gene change, where it goes and the run parameters that say so
    (None without the option)."""
    from cellina.counterfactual import BORROW_WEIGHT

    if args.borrowed_csv is None:
        return None
    weight = BORROW_WEIGHT if args.borrow_weight is None else args.borrow_weight
    try:
        table = model.borrowed_counterfactual_change(
            focal, pool, adata=adata, weight=weight, n_neighbours=args.n_neighbours, n_draws=args.n_draws,
            seed=args.seed, min_reference_cells=_fewest_reference_cells(args),
        )  # fmt: skip
    except ValueError as err:
        raise CliError(f"--borrowed-csv: {err}") from None
    return (
        table,
        args.borrowed_csv,
        {
            "borrowed_csv": str(args.borrowed_csv),
            "borrow_weight": weight,
            "borrowed_reference_cells": table.attrs["reference_cells"],
        },
    )


def change_range(model: Any, adata: Any, focal: np.ndarray, pool: np.ndarray, args: argparse.Namespace):
    """With ``--range-csv``: each gene's change and range, where it goes and the run parameters that say so
    (None without the option)."""
    if args.range_csv is None:
        return None
    from cellina.counterfactual import RANGE_DRAWS

    try:
        table = model.counterfactual_change_range(
            focal, pool, adata=adata, n_neighbours=args.n_neighbours, n_draws=max(args.n_draws, RANGE_DRAWS), seed=args.seed,
            min_reference_cells=_fewest_reference_cells(args),
        )  # fmt: skip
    except ValueError as err:
        raise CliError(f"--range-csv: {err}") from None
    return (
        table,
        args.range_csv,
        {
            "range_csv": str(args.range_csv),
            "range_n_draws": table.attrs["n_draws"],
            "range_checked_types": table.attrs["checked_types"],
        },
    )


def _fewest_reference_cells(args: argparse.Namespace) -> int:
    from cellina.counterfactual._borrow import MIN_REFERENCE_CELLS

    return MIN_REFERENCE_CELLS if args.min_reference_cells is None else args.min_reference_cells


def _sender_key(model: Any, shifts: Any, given: str | None) -> str | None:
    if given is not None or not shifts.uses_senders:
        return given
    key = model.adata_manager.registry["setup_args"].get("labels_key")
    if key is None:
        raise CliError("the shift table names sender groups: pass --sender-key with the obs column they refer to")
    return key


def run_node(model: Any, adata: Any, focal: np.ndarray, args: argparse.Namespace, library_size: Any):
    """Expected counts with shifted neighbours, the shift table, the niche novelty and the run's parameters."""
    from cellina.counterfactual import GeneShifts, niche_novelty, node_counterfactual, node_niche_codes

    shifts = GeneShifts.from_csv(args.shifts)
    sender_key = _sender_key(model, shifts, args.sender_key)
    region = None
    if args.region is not None:
        region = np.zeros(adata.n_obs, dtype=bool)
        region[select(adata, args.region, "--region")] = True
    result = node_counterfactual(
        model,
        adata,
        shifts,
        focal,
        sender_key=sender_key,
        region=region,
        layer=args.lognorm_layer,
        add_shift=not args.on_counts,
        renormalize=True,
        random_state=args.seed,
        library_size=library_size,
    )
    parameters = {
        "shifts": args.shifts,
        "sender_key": sender_key,
        "region": args.region,
        "add_shift": not args.on_counts,
        "renormalize": True,
        "lognorm_layer": args.lognorm_layer,
    }
    novelty = niche_novelty(model, adata, focal, node_niche_codes(model, adata, focal, result.spatial_x))
    return result.expression, shifts.table, novelty, parameters


def _library_size(text: str) -> Any:
    if text in ("latent", "observed"):
        return text
    try:
        return float(text)
    except ValueError:
        raise CliError(f"--library-size must be 'latent', 'observed' or a number, got {text!r}") from None


def run_counterfactual(args: argparse.Namespace) -> int:
    """Load the model, run the edge or node counterfactual and write the perturbed AnnData."""
    from cellina._io import write_h5ad_atomic
    from cellina.counterfactual import type_support
    from cellina.export import CurrentRun, perturbed_anndata, run_record
    from cellina.model import load_model, variant_name

    output = Path(args.output)
    check_output(output, args.overwrite)
    check_population_tables(args)
    model_dir = Path(args.model)
    data_path = Path(args.data) if args.data else model_dir / "adata.h5ad"
    adata = load_input(data_path)
    with quiet_run(args.quiet):
        model = load_model(str(model_dir), adata=adata)
        focal = select(adata, args.focal, "--focal")
        library_size = _library_size(args.library_size)
        factual = model.get_expression(adata=adata, indices=focal, library_size=library_size)
        if args.mode == "edge":
            predicted, std, donors, novelty, extra = run_edge(model, adata, focal, args, library_size)
            shifts = None
        else:
            predicted, shifts, novelty, extra = run_node(model, adata, focal, args, library_size)
            std = donors = None
    parameters = {
        "focal": args.focal,
        "model": str(model_dir),
        "data": str(data_path),
        "library_size": args.library_size,
        "preset": model.preset or "",
        "model_variant": variant_name(model),
        **extra,
    }
    run_name = f"{args.mode} 1"
    support = type_support(model, adata, focal)
    record = run_record(
        args.mode,
        parameters,
        focal=focal,
        seed=args.seed,
        donors=donors,
        gene_shifts=shifts,
        novelty=novelty,
        support=support,
    )
    training = dict(adata.uns.get(UNS.ROOT, {}).get(TRAINING_RECORD, {}))
    out = perturbed_anndata(
        adata,
        runs={run_name: record},
        current=CurrentRun(run_name, focal, np.asarray(predicted), np.asarray(factual), std, novelty),
        model=model,
        model_source=str(model_dir),
        keys=training.get("keys"),
    )
    write_h5ad_atomic(out, output)
    if novelty.n_outside:
        print(f"warning: {novelty.message()}", file=sys.stderr)
    say(args, f"wrote {args.mode} counterfactuals for {focal.size} focal cells to {output}")
    if support is not None:
        say(args, support.message())
    return 0
