"""Pieces every subcommand shares: argument types, input and output files, quiet runs, messages."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: ``uns["cellina"]`` entry where ``cellina train`` records how the model was trained
TRAINING_RECORD = "training"
#: loggers that print progress and summaries while a model trains
_CHATTY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "scvi")
#: a value of the key options that turns a key off instead of guessing it
NO_KEY = "none"


class CliError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""


class HelpFormatter(argparse.HelpFormatter):
    """Shows an option's default when it has one, and keeps texts with line breaks as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not hidden and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def positive_int(text: str) -> int:
    """An argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text!r}")
    return value


def common_options(quiet: bool = True) -> argparse.ArgumentParser:
    """A parent parser with ``--debug`` and, for commands that print progress, ``-q``."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--debug", action="store_true", help="show the full traceback when something fails")
    if quiet:
        parent.add_argument(
            "-q", "--quiet", action="store_true", help="no progress bars, training summaries or closing message"
        )
    return parent


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless ``--overwrite`` was given."""
    if path.exists() and not overwrite:
        raise CliError(f"{str(path)!r} exists; pass --overwrite to replace it")


def load_input(path: str | Path):
    """Read an .h5ad file (errors name the file)."""
    from cellina._io import read_h5ad

    return read_h5ad(path)


def say(args: argparse.Namespace, message: str, *, err: bool = False) -> None:
    """Print ``message`` unless ``-q`` was given (to stderr with ``err``)."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr if err else sys.stdout)


def select(adata: Any, query: str, option: str):
    """Positions of the cells an obs query selects; an empty selection is an error."""
    from cellina.counterfactual import select_cells

    cells = select_cells(adata, query, option)
    if cells.size == 0:
        raise CliError(f"{option} {query!r} selects no cells")
    return cells


@contextlib.contextmanager
def quiet_run(enabled: bool) -> Iterator[dict[str, Any]]:
    """Silence Lightning's and scvi-tools' bars, summaries, notes and warnings while ``enabled``.

    Yields the trainer options that switch the progress bar and the model summary off
    (empty when not quiet).
    """
    if not enabled:
        yield {}
        return
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            for module in ("lightning", "pytorch_lightning", "torch", "scvi"):
                warnings.filterwarnings("ignore", module=module)
            yield {"enable_progress_bar": False, "enable_model_summary": False}
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
