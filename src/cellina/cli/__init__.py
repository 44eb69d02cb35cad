"""The ``cellina`` command line.

Each subcommand is a thin shell over the library: it parses arguments, calls the same
functions a notebook and the plugin call (``train_model``, the model's edge counterfactuals,
``node_counterfactual``, ``perturbed_anndata``), shows progress and writes files atomically.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
