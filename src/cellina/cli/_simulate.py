"""``cellina simulate`` and ``cellina view``: a synthetic tissue to a file, and napari on a file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from ._common import HelpFormatter, check_output, positive_float, positive_int, say


def run_simulate(args: argparse.Namespace) -> int:
    """Generate the synthetic tissue with a progress bar and write it atomically."""
    from tqdm.auto import tqdm

    from cellina._io import write_h5ad_atomic
    from cellina.datasets import synthetic_tissue

    output = Path(args.output)
    check_output(output, args.overwrite)
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
    say(args, f"wrote {adata.n_obs} cells x {adata.n_vars} genes to {output}")
    return 0


def _has_display() -> bool:
    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def run_view(args: argparse.Namespace) -> int:
    """Open napari with the Cellina docks on a file or the sample tissue."""
    if not _has_display():
        # Qt would abort the whole process with a cryptic message.
        raise SystemExit(
            "cellina view: no display found (DISPLAY is not set); on a headless machine run 'xvfb-run -a cellina view'"
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


def add_parsers(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    """Register ``cellina simulate`` and ``cellina view``."""
    sim = sub.add_parser(
        "simulate",
        parents=[common],
        formatter_class=HelpFormatter,
        help="write a synthetic tissue with exact counterfactual truth to an .h5ad file",
        description="Generate a synthetic spatial tissue (micrometre coordinates, healthy / margin / "
        "tumour domains, fine and coarse cell types, niche effects with exact truth) and write it as "
        ".h5ad. Counts are in X and layers['counts']; the truth is in obs, var, layers and "
        "uns['cellina_truth'].",
    )
    sim.add_argument("output", help="output .h5ad file")
    sim.add_argument("--n-cells", type=positive_int, default=10_000, help="number of cells over all slides")
    sim.add_argument("--n-genes", type=positive_int, default=300, help="number of genes")
    sim.add_argument("--n-slides", type=positive_int, default=1, help="number of slides")
    sim.add_argument("--seed", type=int, default=0, help="random seed (same seed, same tissue)")
    sim.add_argument("--library-size", type=positive_float, default=500.0, help="median counts per cell")
    sim.add_argument(
        "--no-truth-layers",
        action="store_true",
        help="do not store the dense true-mean layers (for very large tissues; truth stays recomputable)",
    )
    sim.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    sim.set_defaults(handler=run_simulate)

    view = sub.add_parser(
        "view",
        parents=[plain],
        help="open napari with the Cellina plugin on an .h5ad file or the built-in sample tissue",
        description="Open napari with the Cellina plugin. Without PATH, the built-in synthetic "
        "tumour section is shown.",
    )
    view.add_argument("path", nargs="?", help=".h5ad file to open (default: the sample tissue)")
    view.set_defaults(handler=run_view)
