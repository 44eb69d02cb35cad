"""Error types of cellina.datasets: each is also a ValueError, so callers can catch bad input uniformly."""

from __future__ import annotations


class DatasetTypeError(TypeError, ValueError):
    """An argument has the wrong type."""


class TruthKeyError(KeyError, ValueError):
    """A key, gene, group or stored truth entry is missing."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class PositionError(IndexError, ValueError):
    """A cell position is outside 0..n_obs-1."""
