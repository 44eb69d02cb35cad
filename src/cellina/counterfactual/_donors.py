"""Donor and anchor sampling for edge counterfactuals (numpy only)."""

from __future__ import annotations

import warnings

import numpy as np

from cellina.spatial import distinct_draws


def _unique_pool(pool: np.ndarray, name: str = "neighbour_indices") -> np.ndarray:
    pool = np.unique(np.asarray(pool, dtype=np.int64).ravel())
    if pool.size == 0:
        raise ValueError(f"{name} is empty: there are no cells to draw donors from.")
    return pool


def sample_donors(
    focal: np.ndarray,
    pool: np.ndarray,
    n_neighbours: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw ``n_neighbours`` distinct donors from ``pool`` for every focal cell, never itself.

    Each row is a uniformly random subset of the pool minus the focal cell, drawn with
    Robert Floyd's algorithm vectorised across focal cells: ``n_neighbours`` rounds of
    one random integer per row, so memory is ``O(n_focal * n_neighbours)`` however large
    the pool is.

    Parameters
    ----------
    focal
        Focal cell positions, shape ``(n_focal,)``.
    pool
        Candidate donor positions (duplicates are ignored).
    n_neighbours
        Donors per focal cell. If some focal cell has fewer candidates, every row uses
        the largest feasible number and a :class:`UserWarning` says so.
    rng
        Source of randomness (the caller seeds it).

    Returns
    -------
    numpy.ndarray
        ``(n_focal, k)`` int64 donor positions, ``k = min(n_neighbours, feasible)``.

    Raises
    ------
    ValueError
        If ``n_neighbours < 1`` or the pool has no cell other than a focal cell itself.
    """
    if int(n_neighbours) < 1:
        raise ValueError(f"n_neighbours={n_neighbours} must be >= 1.")
    focal = np.asarray(focal, dtype=np.int64).ravel()
    pool = _unique_pool(pool)
    n = focal.size
    self_pos = np.searchsorted(pool, focal)
    in_pool = (self_pos < pool.size) & (pool[np.minimum(self_pos, pool.size - 1)] == focal)
    avail = pool.size - in_pool.astype(np.int64)
    k = int(min(int(n_neighbours), int(avail.min()) if n else int(n_neighbours)))
    if k < 1:
        raise ValueError(
            "neighbour_indices holds only the focal cell itself for some focal cells; "
            "a focal cell can never be its own donor."
        )
    if k < int(n_neighbours):
        warnings.warn(
            f"n_neighbours={n_neighbours} exceeds the donors available to some focal cells; "
            f"drawing {k} donors per cell.",
            UserWarning,
            stacklevel=3,
        )
    chosen = distinct_draws(avail, k, rng)
    # Positions index the pool with the focal cell removed; shift past it.
    chosen += (in_pool[:, None] & (chosen >= self_pos[:, None])).astype(np.int64)
    return pool[chosen]


def sample_anchors(focal: np.ndarray, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw one anchor per focal cell from ``pool``, never the focal cell itself.

    Parameters
    ----------
    focal
        Focal cell positions.
    pool
        Candidate anchors.
    rng
        Source of randomness.

    Returns
    -------
    numpy.ndarray
        ``(n_focal,)`` int64 anchor positions.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return sample_donors(focal, pool, 1, rng)[:, 0]
