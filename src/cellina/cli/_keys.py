"""Which obs columns, layer and coordinates ``cellina train`` uses: given, or guessed and said so."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
from typing import Any

from cellina.io_keys import PIXEL_SIZES_UM, guess_keys, looks_like_pixels, read_coordinates
from cellina.keys import OBSM

from ._common import NO_KEY, CliError


@dataclass(frozen=True)
class TrainingKeys:
    """The keys a training run uses, and which of them were guessed."""

    labels_key: str | None
    domains_key: str | None
    batch_key: str | None
    layer: str | None
    spatial_key: str | None = None
    x_column: str | None = None
    y_column: str | None = None
    pixel_size: float = 1.0
    guessed: tuple[str, ...] = field(default_factory=tuple)

    def record(self) -> dict[str, Any]:
        """The keys as a plain dict for provenance (``None`` as ``""``, ``guessed`` as a list of names)."""
        return {k: ("" if v is None else list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def describe_guesses(self) -> str:
        """The guessed keys as the options that would choose them, e.g. ``--labels-key 'ist'``."""
        return ", ".join(f"--{name.replace('_', '-')} {getattr(self, name)!r}" for name in self.guessed)


def _obs_key(adata: Any, given: str | None, guess: str | None, option: str, what: str, guessed: list[str]):
    """An obs column: the given one (checked), ``none`` for no column, else the guess."""
    if given is not None:
        if given.lower() == NO_KEY:
            return None
        if given not in adata.obs:
            columns = list(map(str, adata.obs.columns))[:15]
            raise CliError(f"{option} {given!r} is not an obs column (columns: {columns})")
        return given
    if guess is not None:
        guessed.append(option[2:].replace("-", "_"))
        return guess
    if what:
        raise CliError(f"no {what} column found under the usual names; pass {option} COLUMN (or {option} none)")
    return None


def _layer(adata: Any, given: str | None, guess: str | None, guessed: list[str]) -> str | None:
    if given is not None:
        if given.lower() == NO_KEY:
            return None
        if given not in adata.layers:
            raise CliError(f"--layer {given!r} is not a layer (layers: {list(adata.layers.keys())})")
        return given
    if guess is not None:
        guessed.append("layer")
    return guess


def _coordinates(adata: Any, args: argparse.Namespace, guess: Any, guessed: list[str]) -> dict[str, Any]:
    """Where the coordinates are: ``--x-column/--y-column``, ``--spatial-key`` or the guess."""
    if (args.x_column is None) != (args.y_column is None):
        raise CliError("pass both --x-column and --y-column, or neither")
    if args.x_column is not None:
        for option, column in (("--x-column", args.x_column), ("--y-column", args.y_column)):
            if column not in adata.obs:
                raise CliError(f"{option} {column!r} is not an obs column")
        return {"spatial_key": None, "x_column": args.x_column, "y_column": args.y_column}
    if args.spatial_key is not None:
        if args.spatial_key not in adata.obsm:
            raise CliError(f"--spatial-key {args.spatial_key!r} is not in obsm (keys: {sorted(adata.obsm.keys())})")
        return {"spatial_key": args.spatial_key, "x_column": None, "y_column": None}
    if guess.spatial_key is None and guess.x_column is not None:
        guessed += ["x_column", "y_column"]
    return {"spatial_key": guess.spatial_key, "x_column": guess.x_column, "y_column": guess.y_column}


def _pixel_size(args: argparse.Namespace, coords: dict[str, Any]) -> float:
    if args.pixel_size is not None:
        return float(args.pixel_size)
    names = (coords["spatial_key"], coords["x_column"], coords["y_column"])
    if args.bandwidth is not None and looks_like_pixels(*names):
        sizes = ", ".join(f"{k} {v}" for k, v in PIXEL_SIZES_UM.items())
        shown = "/".join(n for n in names if n)
        raise CliError(
            f"the coordinates {shown!r} look like pixels; pass --pixel-size in micrometres per pixel "
            f"({sizes}), or --pixel-size 1 if they are micrometres"
        )
    return 1.0


def resolve_training_keys(adata: Any, args: argparse.Namespace) -> TrainingKeys:
    """The keys of a training run from the options, guessing (and listing) what was not given.

    Cell types and domains must exist, given or guessed, unless turned off with ``none``.
    """
    guess = guess_keys(adata)
    guessed: list[str] = []
    labels = _obs_key(adata, args.labels_key, guess.cell_type, "--labels-key", "cell-type", guessed)
    domains = _obs_key(adata, args.domains_key, guess.domain, "--domains-key", "domain", guessed)
    batch = _obs_key(adata, args.batch_key, guess.batch, "--batch-key", "", guessed)
    layer = _layer(adata, args.layer, guess.counts_layer, guessed)
    coords = _coordinates(adata, args, guess, guessed)
    return TrainingKeys(
        labels, domains, batch, layer, pixel_size=_pixel_size(args, coords), guessed=tuple(guessed), **coords
    )


def with_micrometre_coordinates(adata: Any, keys: TrainingKeys) -> None:
    """Write the coordinates, times the pixel size, to ``obsm["spatial"]`` (micrometres)."""
    if keys.spatial_key is None and keys.x_column is None:
        return
    xy = read_coordinates(adata, keys.spatial_key, keys.x_column, keys.y_column)
    if keys.spatial_key == OBSM.SPATIAL and keys.pixel_size == 1.0:
        return
    adata.obsm[OBSM.SPATIAL] = xy * keys.pixel_size
