"""The ``cellina`` command line.

Each subcommand is a thin shell over the library: it parses arguments, calls the
same functions a notebook would, shows a progress bar and writes files atomically.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _run_simulate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from cellina._io import write_h5ad_atomic
    from cellina.datasets import synthetic_tissue

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise SystemExit(f"cellina simulate: {str(output)!r} exists; pass --overwrite to replace it")
    with tqdm(total=100, desc="simulating", unit="%", disable=args.quiet) as bar:

        def progress(fraction: float, message: str) -> None:
            bar.set_postfix_str(message, refresh=False)
            bar.update(round(100 * fraction) - bar.n)

        adata = synthetic_tissue(
            n_cells=args.n_cells,
            n_genes=args.n_genes,
            n_slides=args.n_slides,
            seed=args.seed,
            library_size_median=args.library_size,
            store_means=not args.no_truth_layers,
            progress=progress,
        )
        bar.set_postfix_str("writing", refresh=True)
        write_h5ad_atomic(adata, output)
        bar.update(100 - bar.n)
    if not args.quiet:
        print(f"wrote {adata.n_obs} cells x {adata.n_vars} genes to {output}")
    return 0


def _load_input(path: str):
    from cellina._io import read_h5ad

    return read_h5ad(path)


def _check_output(path: Path, overwrite: bool, command: str) -> None:
    if path.exists() and not overwrite:
        raise SystemExit(f"cellina {command}: {str(path)!r} exists; pass --overwrite to replace it")


def _run_train(args: argparse.Namespace) -> int:
    from cellina.counterfactual import select_cells
    from cellina.model import Cellina, holdout_split
    from cellina.preprocessing import prepare_tissue

    output = Path(args.output)
    _check_output(output, args.overwrite, "train")
    adata = _load_input(args.input)
    held_out = None
    if args.hold_out:
        held_out = select_cells(adata, args.hold_out, "--hold-out")
        if held_out.size == 0:
            raise ValueError(f"--hold-out {args.hold_out!r} selects no cells")
    if args.spatial_obsm_key not in adata.obsm or args.bandwidth is not None:
        if args.bandwidth is None:
            raise ValueError(
                f"adata.obsm[{args.spatial_obsm_key!r}] (niche features) is missing; pass --bandwidth "
                "(in coordinate units) to build the spatial graph and niche features"
            )
        adata = prepare_tissue(
            adata,
            bandwidth=args.bandwidth,
            counts_layer=args.layer,
            max_neighbours=args.max_neighbours,
            library_key=args.library_key,
            test_indices=held_out,
        )
    Cellina.setup_anndata(
        adata,
        batch_key=args.batch_key,
        labels_key=args.labels_key if args.classifier_lambda > 0 or args.type_aware_discriminator else None,
        domains_key=args.domains_key if args.discriminator_lambda > 0 else None,
        spatial_obsm_key=args.spatial_obsm_key,
        layer=args.layer,
    )
    model = Cellina(
        adata,
        n_latent=args.n_latent,
        n_hidden=args.n_hidden,
        n_layers=args.n_layers,
        classifier_lambda=args.classifier_lambda,
        discriminator_lambda=args.discriminator_lambda,
        niche_decoder=args.niche_decoder,
        niche_rank=args.niche_rank,
        spatial_decoding=args.spatial_decoding,
        type_aware_discriminator=args.type_aware_discriminator,
    )
    datasplitter_kwargs = None
    if held_out is not None:
        datasplitter_kwargs = {
            "external_indexing": holdout_split(adata.n_obs, held_out, args.validation_size, args.seed)
        }
    model.train(
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        early_stopping=args.early_stopping,
        early_stopping_monitor="vae_loss_validation",
        accelerator=args.accelerator,
        datasplitter_kwargs=datasplitter_kwargs,
        plan_kwargs={"lr": args.lr, "normalize_losses": True},
    )
    model.save(str(output), save_anndata=True, overwrite=args.overwrite)
    if not args.quiet:
        print(f"saved the model and its prepared AnnData to {output}")
    return 0


def _read_shifts(path: str) -> tuple[dict, str | None]:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError) as err:
        raise ValueError(f"could not read gene shifts from {path!r}: {err}") from err
    missing = {"gene", "value"} - set(table.columns)
    if missing:
        raise ValueError(f"{path!r} needs columns 'gene' and 'value' (and optionally 'group'); missing {sorted(missing)}")
    if not pd.api.types.is_numeric_dtype(table["value"]):
        raise ValueError(f"column 'value' of {path!r} must be numeric")
    if "group" in table.columns:
        shifts = {
            str(group): dict(zip(rows["gene"].astype(str), rows["value"].astype(float)))
            for group, rows in table.groupby("group", sort=False)
        }
        return shifts, "group"
    return dict(zip(table["gene"].astype(str), table["value"].astype(float))), None


def _run_counterfactual(args: argparse.Namespace) -> int:
    import numpy as np

    from cellina._io import write_h5ad_atomic
    from cellina.counterfactual import observed_neighbour_pool, select_cells
    from cellina.export import CurrentRun, perturbed_anndata, run_record
    from cellina.model import Cellina

    output = Path(args.output)
    _check_output(output, args.overwrite, "counterfactual")
    model_dir = Path(args.model)
    data_path = Path(args.data) if args.data else model_dir / "adata.h5ad"
    adata = _load_input(data_path)
    model = Cellina.load(str(model_dir), adata=adata)
    focal = select_cells(adata, args.focal, "--focal")
    if focal.size == 0:
        raise ValueError(f"--focal {args.focal!r} selects no cells")
    library_size = args.library_size if args.library_size == "latent" else float(args.library_size)
    factual = model.get_expression(indices=focal, library_size=library_size)
    parameters = {"focal": args.focal, "model": str(model_dir), "data": str(data_path), "library_size": args.library_size}
    std = donors = gene_shifts = None
    if args.mode == "edge":
        if args.donors is not None:
            pool = select_cells(adata, args.donors, "--donors")
        else:
            pool = observed_neighbour_pool(
                adata, args.donors_neighbours_of, connectivity_key=args.connectivity_key, exclude=args.exclude
            )
        if pool.size == 0:
            raise ValueError("the donor pool is empty")
        result = model.get_counterfactual_expression(
            indices=focal,
            neighbour_indices=pool,
            precomputed=False,
            seed=args.seed,
            n_neighbours=args.n_neighbours,
            n_draws=args.n_draws,
            return_std=True,
            return_donors=True,
            library_size=library_size,
        )
        predicted, std, donors = result
        parameters.update(
            donors=args.donors, donors_neighbours_of=args.donors_neighbours_of, exclude=args.exclude,
            n_neighbours=args.n_neighbours, n_draws=args.n_draws, donor_pool=pool,
        )
    else:
        from cellina.spatial import make_neighbor_perturbation

        shifts, group_column = _read_shifts(args.shifts)
        groupby = args.groupby if group_column else None
        if group_column and not groupby:
            raise ValueError(f"{args.shifts!r} has a 'group' column: pass --groupby with the obs column it refers to")
        work = adata.copy()
        make_neighbor_perturbation(
            work,
            shifts,
            groupby=groupby,
            layer=args.counts_layer if args.on_counts else args.lognorm_layer,
            obsm_key_out="spatial_x_cf",
            add_shift=not args.on_counts,
            renormalize=True,
            random_state=args.seed,
        )
        predicted = model.get_perturbed_expression(
            adata=work, indices=focal, spatial_obsm_key="spatial_x_cf", library_size=library_size
        )
        parameters.update(shifts=args.shifts, groupby=groupby, add_shift=not args.on_counts, renormalize=True)
        gene_shifts = shifts
    run_name = f"{args.mode} 1"
    record = run_record(args.mode, parameters, focal=focal, seed=args.seed, donors=donors, gene_shifts=gene_shifts)
    out = perturbed_anndata(
        adata,
        runs={run_name: record},
        current=CurrentRun(run_name, focal, np.asarray(predicted), np.asarray(factual), std),
        model=model,
        model_source=str(model_dir),
    )
    write_h5ad_atomic(out, output)
    if not args.quiet:
        print(f"wrote {args.mode} counterfactuals for {focal.size} focal cells to {output}")
    return 0


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _run_view(args: argparse.Namespace) -> int:
    if not _has_display():
        # Qt would abort the whole process with a cryptic message.
        raise SystemExit(
            "cellina view: no display found (DISPLAY is not set); on a headless machine run "
            "'xvfb-run -a cellina view'"
        )
    if args.path and not Path(args.path).exists():
        raise SystemExit(f"cellina view: no such file: {args.path!r}")
    import napari

    from cellina.plugin.widgets import add_cellina_docks

    viewer = napari.Viewer(title="napari-cellina")
    # docks first, so the tissue dock adopts the tissue as soon as its layer appears
    add_cellina_docks(viewer)
    if args.path:
        viewer.open(args.path, plugin="napari-cellina")
    else:
        viewer.open_sample("napari-cellina", "synthetic_tumour_section")
    napari.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellina",
        description="Tissue-graph counterfactuals with Cellina: simulate tissues, train models, "
        "rewire neighbourhoods and shift neighbours' expression.",
        epilog="Run 'cellina COMMAND --help' for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    sim = sub.add_parser(
        "simulate",
        help="write a synthetic tissue with exact counterfactual truth to an .h5ad file",
        description="Generate a synthetic spatial tissue (micrometre coordinates, healthy / margin / "
        "tumour domains, fine and coarse cell types, niche effects with exact truth) and write it as "
        ".h5ad. Counts are in X and layers['counts']; the truth is in obs, var, layers and "
        "uns['cellina_truth'].",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sim.add_argument("output", help="output .h5ad file")
    sim.add_argument("--n-cells", type=_positive_int, default=10_000, help="number of cells over all slides")
    sim.add_argument("--n-genes", type=_positive_int, default=300, help="number of genes")
    sim.add_argument("--n-slides", type=_positive_int, default=1, help="number of slides")
    sim.add_argument("--seed", type=int, default=0, help="random seed (same seed, same tissue)")
    sim.add_argument("--library-size", type=_positive_float, default=500.0, help="median counts per cell")
    sim.add_argument(
        "--no-truth-layers",
        action="store_true",
        help="do not store the dense true-mean layers (for very large tissues; truth stays recomputable)",
    )
    sim.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    sim.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    sim.set_defaults(handler=_run_simulate)

    train = sub.add_parser(
        "train",
        help="train a Cellina model on an .h5ad file and save it to a folder",
        description="Train Cellina. If the niche features are missing (or --bandwidth is given), the "
        "counts are log-normalised and the spatial graph and niche features are built first. The "
        "model folder also receives the prepared AnnData (adata.h5ad) for later counterfactuals.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("input", help="input .h5ad with counts and coordinates")
    train.add_argument("output", help="model folder to write")
    train.add_argument("--layer", default="counts", help="layer with raw counts")
    train.add_argument("--labels-key", default="coarse_type", help="obs column of cell types (classifier on z)")
    train.add_argument("--domains-key", default="domain", help="obs column of spatial domains (adversary on z)")
    train.add_argument("--batch-key", default=None, help="obs column of technical batches")
    train.add_argument("--spatial-obsm-key", default="spatial_x", help="obsm key of the niche features")
    train.add_argument("--bandwidth", type=_positive_float, default=None, help="kernel bandwidth in coordinate units; builds graph and niche features")
    train.add_argument("--max-neighbours", type=_positive_int, default=50, help="neighbours per cell in the graph")
    train.add_argument("--library-key", default=None, help="obs column of slides (no edges across slides)")
    train.add_argument("--hold-out", default=None, help="obs query of cells to hold out of training and of the graph, e.g. \"domain == 'tumour' and coarse_type == 'Myeloid'\"")
    train.add_argument("--validation-size", type=float, default=0.1, help="fraction of the other cells used for validation with --hold-out")
    train.add_argument("--n-latent", type=_positive_int, default=10)
    train.add_argument("--n-hidden", type=_positive_int, default=128)
    train.add_argument("--n-layers", type=_positive_int, default=2)
    train.add_argument("--niche-decoder", choices=("concat", "factorised", "type_gated"), default="concat",
                       help="concat: the published decoder on [z; s]; factorised: a decoder on z plus a low-rank, "
                            "cell-state-dependent response to s; type_gated: factorised plus a full niche map per "
                            "cell type, weighted by the classifier on z (needs --labels-key and a classifier "
                            "weight > 0). See docs/benchmarks.md for their accuracy on held-out types")
    train.add_argument("--niche-rank", type=_positive_int, default=8, help="rank of the factorised niche response")
    train.add_argument("--spatial-decoding", choices=("sample", "mean"), default="sample",
                       help="sample: the decoder learns from samples of s (published); mean: from the posterior "
                            "mean of s, the value counterfactuals decode, so predicted niche responses are not "
                            "shrunk by posterior noise")
    train.add_argument("--type-aware-discriminator", action="store_true",
                       help="tell the domain discriminator each cell's type (needs --labels-key), so the adversary "
                            "removes only what z knows about the domain beyond the cell type")
    train.add_argument("--classifier-lambda", type=float, default=1.0)
    train.add_argument("--discriminator-lambda", type=float, default=1.0)
    train.add_argument("--max-epochs", type=_positive_int, default=100)
    train.add_argument("--batch-size", type=_positive_int, default=512)
    train.add_argument("--lr", type=_positive_float, default=1e-3)
    train.add_argument("--early-stopping", action="store_true", help="stop when the validation loss plateaus")
    train.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    train.add_argument("-q", "--quiet", action="store_true")
    train.set_defaults(handler=_run_train)

    cf = sub.add_parser(
        "counterfactual",
        help="predict expression under a rewired neighbourhood (edge) or shifted neighbours (node)",
        description="Load a trained model, choose focal cells with an obs query, and write an .h5ad "
        "whose layers 'cellina_counterfactual' and 'cellina_factual' hold the focal cells' counterfactual "
        "and factual expected counts, with provenance in uns['cellina']['provenance'].",
    )
    cf_modes = cf.add_subparsers(dest="mode", metavar="MODE")
    cf_modes.required = True
    edge = cf_modes.add_parser(
        "edge",
        help="rewire focal cells' neighbourhoods to donors",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    node = cf_modes.add_parser(
        "node",
        help="shift neighbours' expression of genes listed in a CSV (gene,value[,group])",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for mode_parser in (edge, node):
        mode_parser.add_argument("model", help="model folder written by 'cellina train'")
        mode_parser.add_argument("output", help="output .h5ad")
        mode_parser.add_argument("--data", default=None, help="AnnData to use (default: the model folder's adata.h5ad)")
        mode_parser.add_argument("--focal", required=True, help="obs query of the focal cells")
        mode_parser.add_argument("--library-size", default="latent", help="'latent' (each cell's own) or a number such as 1e4")
        mode_parser.add_argument("--seed", type=int, default=0)
        mode_parser.add_argument("--overwrite", action="store_true")
        mode_parser.add_argument("-q", "--quiet", action="store_true")
        mode_parser.set_defaults(handler=_run_counterfactual)
    donors = edge.add_mutually_exclusive_group(required=True)
    donors.add_argument("--donors", default=None, help="obs query of the donor pool")
    donors.add_argument(
        "--donors-neighbours-of", default=None,
        help="obs query of target cells whose observed neighbours form the donor pool (the published protocol)",
    )
    edge.add_argument("--exclude", default=None, help="obs query of cells removed from the donor pool")
    edge.add_argument("--connectivity-key", default="spatial_connectivities_orig", help="graph used for --donors-neighbours-of")
    edge.add_argument("--n-neighbours", type=_positive_int, default=50, help="donors per focal cell")
    edge.add_argument("--n-draws", type=_positive_int, default=1, help="independent donor draws to average")
    node.add_argument("--shifts", required=True, help="CSV with columns gene,value and optionally group")
    node.add_argument("--groupby", default=None, help="obs column that the CSV's group column refers to")
    node.add_argument(
        "--on-counts",
        action="store_true",
        help="scale neighbours' counts by e**value instead of adding value to their log-normalised expression",
    )
    node.add_argument("--lognorm-layer", default="cellina_lognorm", help="log-normalised layer shifted by default")
    node.add_argument("--counts-layer", default="counts", help="counts layer scaled with --on-counts")

    view = sub.add_parser(
        "view",
        help="open napari with the Cellina plugin on an .h5ad file or the built-in sample tissue",
        description="Open napari with the Cellina plugin. Without PATH, the built-in synthetic "
        "tumour section is shown.",
    )
    view.add_argument("path", nargs="?", help=".h5ad file to open (default: the sample tissue)")
    view.set_defaults(handler=_run_view)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"cellina {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
