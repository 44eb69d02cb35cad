"""``cellina train``: prepare a tissue if needed and train a model from a preset."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from cellina.io_keys import PIXEL_SIZES_UM
from cellina.keys import LAYERS, OBSM, OBSP, UNS
from cellina.model import CONVOLUTION_TYPES, MODEL_VARIANTS, SUBGRAPH_TYPES
from cellina.model.presets import OPTION_NOTES, PRESETS
from cellina.preprocessing import COMPOSITIONS

from ._common import (
    TRAINING_RECORD,
    CliError,
    HelpFormatter,
    check_output,
    fraction,
    load_input,
    positive_float,
    positive_int,
    quiet_run,
    say,
    select,
)
from ._keys import TrainingKeys, resolve_training_keys, with_micrometre_coordinates
from ._reach import bandwidth_value, choose_reach

#: options of the graph variant only
GRAPH_OVERRIDES = ("num_neighbors", "link_prediction_weight", "convolution_type", "subgraph_type", "seed_patches")
#: options that override a preset's model options (flag name -> constructor argument)
MODEL_OVERRIDES = (
    "n_latent",
    "n_hidden",
    "n_layers",
    "classifier_lambda",
    "discriminator_lambda",
    "niche_decoder",
    "niche_rank",
    "spatial_decoding",
    "type_aware_discriminator",
    "spatial_encoder",
)


def presets_epilog(width: int = 88) -> str:
    """The presets and what each option they set does, for the help text."""
    lines = ["presets:"]
    for preset in PRESETS.values():
        lines.append(f"  {preset.name}: {preset.summary}")
        sets = ", ".join(f"{k}={v!r}" for k, v in {**preset.model, **preset.plan}.items())
        lines += textwrap.wrap(f"sets {sets}", width, initial_indent="    ", subsequent_indent="    ")
    lines.append("")
    lines.append("what the options a preset sets do:")
    for option, note in OPTION_NOTES.items():
        lines += textwrap.wrap(f"{option}: {note}", width, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


def _add_data_options(train: argparse.ArgumentParser) -> None:
    keys = train.add_argument_group("keys (guessed from common names when not given; 'none' turns one off)")
    keys.add_argument("--labels-key", default=None, help="obs column of cell types (classifier on z)")
    keys.add_argument("--domains-key", default=None, help="obs column of spatial domains (adversary on z)")
    keys.add_argument("--batch-key", default=None, help="obs column of slides or samples, used as the batch covariate")
    keys.add_argument("--layer", default=None, help="layer with raw counts (none: counts in X)")
    coords = train.add_argument_group("coordinates (guessed from common names when not given)")
    coords.add_argument("--spatial-key", default=None, help="obsm key of the cell coordinates (x, y)")
    coords.add_argument("--x-column", default=None, help="obs column of the x coordinates")
    coords.add_argument("--y-column", default=None, help="obs column of the y coordinates")
    sizes = ", ".join(f"{k} {v}" for k, v in PIXEL_SIZES_UM.items())
    coords.add_argument(
        "--pixel-size",
        type=positive_float,
        default=None,
        help=f"micrometres per coordinate unit ({sizes}); the coordinates are converted to "
        "micrometres in obsm['spatial'] (default: 1, refused for names that say pixels)",
    )
    graph = train.add_argument_group("graph and niche features")
    graph.add_argument("--spatial-obsm-key", default=OBSM.NICHE_FEATURES, help="obsm key of the niche features")
    graph.add_argument(
        "--bandwidth",
        type=bandwidth_value,
        default=None,
        help="kernel bandwidth in micrometres; builds the graph and niche features. 'auto': chosen from "
        "the data (a validation curve over bandwidths, printed; needs the cell types)",
    )
    graph.add_argument(
        "--max-neighbours",
        type=positive_int,
        default=None,
        help="neighbours per cell in the graph (default: 50, or with --bandwidth auto enough for its reach)",
    )
    graph.add_argument(
        "--library-key", default=None, help="obs column of slides: no edges across slides (default: the batch key)"
    )
    graph.add_argument(
        "--composition",
        choices=COMPOSITIONS,
        default="off",
        help="the neighbours' cell types (--labels-key) in the niche features built with --bandwidth: "
        "'added' after their expression, 'only' instead of it (no gene shift can then move a niche)",
    )
    graph.add_argument(
        "--hold-out",
        default=None,
        help="obs query of cells held out of training and of the graph, e.g. "
        "\"domain == 'tumour' and coarse_type == 'Myeloid'\"",
    )
    graph.add_argument(
        "--validation-size", type=fraction, default=0.1, help="fraction of the other cells used for validation"
    )


def _add_graph_options(train: argparse.ArgumentParser) -> None:
    graph = train.add_argument_group("graph variant (--model gcn)")
    graph.add_argument(
        "--num-neighbors",
        type=int,
        nargs="+",
        default=None,
        help="neighbours sampled per hop in training, one value per layer or one for all (-1: all; default: the "
        "preset's, recommended 10 5, published all)",
    )
    graph.add_argument(
        "--link-prediction-weight", type=float, default=None, help="weight of the contrastive loss on s (0: off)"
    )
    graph.add_argument("--convolution-type", choices=CONVOLUTION_TYPES, default=None, help="graph layer (default gat)")
    graph.add_argument(
        "--subgraph-type",
        choices=SUBGRAPH_TYPES,
        default=None,
        help="induced: every graph edge between sampled cells; directional: only the sampled edges (default: the "
        "preset's, recommended directional, published induced)",
    )
    graph.add_argument(
        "--seed-patches",
        type=int,
        default=None,
        help="take each training minibatch's seed cells from this many spatial patches (faster epochs; default: "
        "seeds at random)",
    )


def _add_model_options(train: argparse.ArgumentParser) -> None:
    model = train.add_argument_group("model (the preset's values unless given)")
    model.add_argument(
        "--model",
        choices=sorted(MODEL_VARIANTS),
        default="cellina",
        help="variant: cellina (niche features, the default) or gcn (GATv2 graph encoder over the spatial graph)",
    )
    model.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="recommended",
        help="named option set the model starts from (see below)",
    )
    model.add_argument("--n-latent", type=positive_int, default=None, help="dimensions of z (and of s)")
    model.add_argument("--n-hidden", type=positive_int, default=None, help="hidden units per layer")
    model.add_argument("--n-layers", type=positive_int, default=None, help="hidden layers of the encoders")
    model.add_argument("--classifier-lambda", type=float, default=None, help="weight of the cell-type classifier on z")
    model.add_argument("--discriminator-lambda", type=float, default=None, help="weight of the domain adversary on z")
    model.add_argument(
        "--niche-decoder",
        choices=("concat", "factorised", "type_gated"),
        default=None,
        help=OPTION_NOTES["niche_decoder"] + " 'factorised': the low-rank part only.",
    )
    model.add_argument("--niche-rank", type=positive_int, default=None, help="rank of the factorised niche response")
    model.add_argument(
        "--spatial-decoding", choices=("sample", "mean"), default=None, help=OPTION_NOTES["spatial_decoding"]
    )
    model.add_argument(
        "--spatial-encoder", choices=("mlp", "linear"), default=None, help=OPTION_NOTES["spatial_encoder"]
    )
    model.add_argument(
        "--type-aware-discriminator",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=OPTION_NOTES["type_aware_discriminator"],
    )
    fit = train.add_argument_group("training")
    fit.add_argument("--max-epochs", type=positive_int, default=100, help="passes over the training cells")
    fit.add_argument("--batch-size", type=positive_int, default=512, help="cells per minibatch")
    fit.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: the plan's)")
    fit.add_argument("--early-stopping", action="store_true", help="stop when the validation loss plateaus")
    fit.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split and the weights")


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register ``cellina train``."""
    train = sub.add_parser(
        "train",
        parents=[common],
        formatter_class=HelpFormatter,
        help="train a Cellina model on an .h5ad file and save it to a folder",
        description="Train Cellina (or, with --model gcn, its graph variant CellinaGCN) from a preset. "
        "Keys not given are guessed from common names and "
        "listed. If the niche features are missing (or --bandwidth is given), the counts are "
        "log-normalised and the spatial graph and niche features are built first. The model folder "
        "also receives the prepared AnnData (adata.h5ad) for later counterfactuals.",
        epilog=presets_epilog(),
    )
    train.add_argument("input", help="input .h5ad with counts and coordinates")
    train.add_argument("output", help="model folder to write")
    _add_data_options(train)
    _add_model_options(train)
    _add_graph_options(train)
    train.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    train.set_defaults(handler=run_train)


def _prepared(
    adata: Any, args: argparse.Namespace, keys: TrainingKeys, held_out: Any
) -> tuple[Any, str | None, dict[str, Any]]:
    """The AnnData to train on, its counts layer and the record of a reach chosen from the data."""
    from cellina.preprocessing import composition_arguments, prepare_tissue

    graph_variant = args.model == "gcn"
    if graph_variant and args.composition != "off":
        raise CliError("--composition shapes the niche features, which the graph variant (--model gcn) does not read")
    # the graph variant reads the spatial graph, Cellina the niche features
    ready = OBSP.CONNECTIVITIES in adata.obsp if graph_variant else args.spatial_obsm_key in adata.obsm
    if ready and args.bandwidth is None:
        if args.composition != "off":
            raise CliError("--composition builds the niche features, so it needs --bandwidth")
        if held_out is not None:
            raise CliError("--hold-out needs --bandwidth, so the graph is rebuilt without the held-out cells")
        return adata, keys.layer, {}
    if args.bandwidth is None:
        missing = (
            f"adata.obsp[{OBSP.CONNECTIVITIES!r}] (spatial graph)"
            if graph_variant
            else f"adata.obsm[{args.spatial_obsm_key!r}] (niche features)"
        )
        raise CliError(
            f"{missing} is missing; pass --bandwidth (in micrometres) to build the spatial graph and niche features"
        )
    if OBSM.SPATIAL not in adata.obsm:
        raise CliError("no cell coordinates found; pass --spatial-key or --x-column and --y-column")
    if args.spatial_obsm_key != OBSM.NICHE_FEATURES:
        raise CliError(
            f"--bandwidth writes the niche features to obsm[{OBSM.NICHE_FEATURES!r}]; leave out --spatial-obsm-key"
        )

    def progress(fraction: float, message: str) -> None:
        if fraction >= 1.0:  # the coordinates are micrometres by now
            say(args, f"cellina train: spatial graph {message.removeprefix('done: ')} um", err=True)

    layer = keys.layer or LAYERS.COUNTS
    library_key = args.library_key or keys.batch_key
    bandwidth, max_neighbours, reach = choose_reach(adata, args, keys, library_key, held_out)
    try:
        composition = composition_arguments(args.composition, keys.labels_key)
    except ValueError as err:
        raise CliError(f"--composition: {err}") from None
    prepared = prepare_tissue(
        adata,
        bandwidth=bandwidth,
        counts_layer=layer,
        max_neighbours=max_neighbours,
        library_key=library_key,
        test_indices=held_out,
        progress=progress,
        **composition,
    )
    return prepared, layer, reach


def overrides(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model and plan options given on the command line (on top of the preset)."""
    model = {name: getattr(args, name) for name in MODEL_OVERRIDES if getattr(args, name) is not None}
    graph = {name: getattr(args, name) for name in GRAPH_OVERRIDES if getattr(args, name, None) is not None}
    if graph and getattr(args, "model", "cellina") != "gcn":
        flags = ", ".join("--" + name.replace("_", "-") for name in graph)
        raise CliError(f"{flags} only apply to the graph variant; add --model gcn")
    if "num_neighbors" in graph and len(graph["num_neighbors"]) == 1:
        graph["num_neighbors"] = graph["num_neighbors"][0]
    plan = {"lr": args.lr} if args.lr is not None else {}
    return {**model, **graph}, plan


def run_train(args: argparse.Namespace) -> int:
    """Resolve the keys, prepare the tissue if needed, train through ``train_model`` and save."""
    from cellina.export import to_h5ad_value
    from cellina.model import train_model

    output = Path(args.output)
    check_output(output, args.overwrite)
    adata = load_input(args.input)
    keys = resolve_training_keys(adata, args)
    if keys.guessed:
        say(args, f"cellina train: guessed {keys.describe_guesses()} (pass the options to choose others)", err=True)
    with_micrometre_coordinates(adata, keys)
    held_out = select(adata, args.hold_out, "--hold-out") if args.hold_out else None
    adata, layer, reach = _prepared(adata, args, keys, held_out)
    model_kwargs, plan_kwargs = overrides(args)
    extra = {"early_stopping_monitor": "vae_loss_validation"} if args.early_stopping else {}
    with quiet_run(args.quiet) as trainer_kwargs:
        model = train_model(
            adata,
            labels_key=keys.labels_key,
            domains_key=keys.domains_key,
            batch_key=keys.batch_key,
            layer=layer,
            spatial_obsm_key=args.spatial_obsm_key,
            heldout=held_out,
            validation_size=args.validation_size,
            seed=args.seed,
            preset=args.preset,
            model=args.model,
            model_kwargs=model_kwargs,
            plan_kwargs=plan_kwargs,
            max_epochs=args.max_epochs,
            batch_size=args.batch_size,
            early_stopping=args.early_stopping,
            accelerator=args.accelerator,
            **extra,
            **trainer_kwargs,
        )
    model.adata.uns.setdefault(UNS.ROOT, {})[TRAINING_RECORD] = to_h5ad_value(
        {
            "model": args.model,
            "preset": args.preset,
            "keys": {**keys.record(), "layer": layer or ""},
            "model_overrides": model_kwargs,
            "plan_overrides": plan_kwargs,
            "hold_out": args.hold_out or "",
            "seed": args.seed,
            "max_epochs": args.max_epochs,
            "batch_size": args.batch_size,
            **({"niche_reach": reach} if reach else {}),
        }
    )
    model.save(str(output), save_anndata=True, overwrite=args.overwrite)
    say(args, f"saved the model ({args.model}, {args.preset} preset) and its prepared AnnData to {output}")
    return 0
