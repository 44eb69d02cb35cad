"""``cellina train --bandwidth auto``: the graph's reach chosen from the data's validation curve."""

from __future__ import annotations

import argparse
from typing import Any

from cellina.keys import OBSM

from ._common import CliError, positive_float, say

#: the word that asks for a bandwidth chosen from the data
AUTO = "auto"
#: bandwidth (um) and neighbour cap used when the data show no niche signal at any reach
FALLBACK_BANDWIDTH = 20.0
FALLBACK_NEIGHBOURS = 50


def bandwidth_value(text: str) -> float | str:
    """An argparse type: a positive number of micrometres, or ``auto``."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        return positive_float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of micrometres or 'auto', got {text!r}") from None


def choose_reach(
    adata: Any, args: argparse.Namespace, keys: Any, library_key: str | None, held_out: Any
) -> tuple[float, int, dict]:
    """Bandwidth and neighbour cap for the graph, and the record of how they were chosen.

    ``keys`` are the resolved training keys (cell types and the counts layer). With
    ``--bandwidth auto`` the reach comes from :func:`cellina.spatial.niche_reach_curve` (its
    suggestion, or 20 um and 50 neighbours when no reach stands out); ``--max-neighbours`` given
    explicitly always wins over the suggested cap.
    """
    from cellina.spatial import niche_reach_curve

    if args.bandwidth != AUTO:
        return float(args.bandwidth), args.max_neighbours or FALLBACK_NEIGHBOURS, {}
    if keys.labels_key is None:
        raise CliError("--bandwidth auto needs the cell types: pass --labels-key")
    curve = niche_reach_curve(
        adata,
        keys.labels_key,
        layer=keys.layer,
        spatial_key=OBSM.SPATIAL,
        library_key=library_key,
        test_indices=held_out,
        random_state=args.seed,
    )
    for row in curve.to_frame().itertuples():
        mark = "  <- suggested" if row.suggested else ""
        say(
            args,
            f"cellina train: bandwidth {row.bandwidth:8.3g} um  ~{row.median_neighbours:5.0f} neighbours  "
            f"explained {100 * row.score:6.3f} % +- {100 * row.score_se:.3f}{mark}",
            err=True,
        )
    say(args, f"cellina train: {curve.describe()}", err=True)
    if curve.signal:
        bandwidth, cap = curve.suggested_bandwidth, curve.suggested_max_neighbours
    else:
        bandwidth, cap = FALLBACK_BANDWIDTH, FALLBACK_NEIGHBOURS
    return bandwidth, args.max_neighbours or cap, curve.as_record()
