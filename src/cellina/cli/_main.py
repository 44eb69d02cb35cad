"""The ``cellina`` entry point: the parser and one-line error reports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _counterfactual, _simulate, _train
from ._common import common_options

#: exit status of a problem with the user's input (as argparse uses for bad options)
EXIT_INPUT = 2
#: exit status of a failure while computing (e.g. an error raised by torch)
EXIT_FAILURE = 1
_INPUT_ERRORS = (ValueError, KeyError, IndexError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    """The ``cellina`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="cellina",
        description="Tissue-graph counterfactuals with Cellina: simulate tissues, train models, "
        "rewire neighbourhoods and shift neighbours' expression.",
        epilog="Run 'cellina COMMAND --help' for the options of one command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    common = common_options()
    _simulate.add_parsers(sub, common, common_options(quiet=False))
    _train.add_parser(sub, common)
    _counterfactual.add_parser(sub, common)
    return parser


def error_line(err: BaseException) -> str:
    """The error's message on one line (a KeyError's without its quotes)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return " ".join(lines) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cellina`` command; errors become one line on stderr and a non-zero exit status.

    With ``--debug`` the error propagates with its traceback instead.
    """
    args = build_parser().parse_args(argv)
    command = " ".join(filter(None, (args.command, getattr(args, "mode", None))))
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"cellina {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure is reported, not only the expected kinds
        if getattr(args, "debug", False):
            raise
        hint = "" if isinstance(err, _INPUT_ERRORS) else f" ({type(err).__name__}; run with --debug for the traceback)"
        print(f"cellina {command}: error: {error_line(err)}{hint}", file=sys.stderr)
        return EXIT_INPUT if isinstance(err, _INPUT_ERRORS) else EXIT_FAILURE
