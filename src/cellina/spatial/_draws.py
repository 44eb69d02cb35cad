"""Many small draws without replacement at once (numpy only)."""

from __future__ import annotations

import numpy as np


def distinct_draws(available: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct integers in ``[0, available[i])`` for every row ``i``, uniformly.

    Robert Floyd's algorithm, vectorised across rows: ``k`` rounds of one random number per row,
    so time and memory are ``O(n_rows * k)`` however large ``available`` is (the repeat check
    adds ``O(n_rows * k^2)`` comparisons).

    Parameters
    ----------
    available
        ``(n_rows,)`` number of choices of each row; every entry must be at least ``k``.
    k
        Draws per row.
    rng
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``(n_rows, k)`` int64 positions.
    """
    available = np.asarray(available, dtype=np.int64)
    n = available.size
    chosen = np.empty((n, k), dtype=np.int64)
    rows = np.arange(n)
    for i in range(k):
        j = available - k + i  # Floyd: draw from [0, j], fall back to j on a repeat
        t = np.floor(rng.random(n) * (j + 1)).astype(np.int64)
        t = np.minimum(t, j)
        if i:
            repeat = (chosen[:, :i] == t[:, None]).any(axis=1)
            t = np.where(repeat, j, t)
        chosen[rows, i] = t
    return chosen
