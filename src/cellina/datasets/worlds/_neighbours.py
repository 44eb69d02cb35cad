"""Kernel-weighted means of per-sender properties: the sensed levels of every channel.

Written here, on scipy's k-d tree, and never taken from ``cellina.spatial``: the truth must not
share the construction of the model it judges. The neighbourhood of a receiver is every other
cell of its slide within the kernel's reach; the reach differs per channel, so one radius search
at the largest reach serves every channel of a world.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

# receivers per radius search: bounds the pairs held at once (~ chunk x neighbours within reach)
_PAIRS_PER_CHUNK = 3_000_000


def kernel_weight(kernel: str, scale: float, reach: float, dist: np.ndarray) -> np.ndarray:
    """Weight of senders at distances ``dist`` (0 beyond ``reach``)."""
    if kernel == "contact":
        w = np.ones_like(dist)
    elif kernel == "gaussian":
        w = np.exp(-0.5 * (dist / scale) ** 2)
    else:
        w = np.exp(-dist / scale)
    w[dist > reach] = 0.0
    return w


def kernel_means(
    coords: np.ndarray,
    slide: np.ndarray,
    receivers: np.ndarray,
    kernels: Sequence[tuple[str, float, float]],
    properties: np.ndarray,
) -> np.ndarray:
    """Weighted mean of ``properties[:, c]`` around each receiver, under kernel c.

    Parameters
    ----------
    coords
        (n, 2) coordinates in um of every cell.
    slide
        (n,) slide code; senders on another slide are never sensed.
    receivers
        (m,) positions of the receiving cells.
    kernels
        One (kernel, scale, reach) per column of ``properties``.
    properties
        (n, C) per-sender property of every cell.

    Returns
    -------
    numpy.ndarray
        (m, C); NaN where a receiver has no sender within reach (the caller decides what that means).
    """
    n_channels = len(kernels)
    out = np.full((receivers.size, n_channels), np.nan)
    if receivers.size == 0:
        return out
    reach = max(r for _, _, r in kernels)
    tree = cKDTree(coords)
    density = coords.shape[0] / max(np.prod(np.ptp(coords, axis=0) + reach), 1.0)
    expected = max(1.0, density * np.pi * reach * reach)
    chunk = int(max(64, _PAIRS_PER_CHUNK // expected))
    for start in range(0, receivers.size, chunk):
        part = receivers[start : start + chunk]
        pairs = cKDTree(coords[part]).sparse_distance_matrix(tree, reach, output_type="ndarray")
        i, j, d = pairs["i"], pairs["j"], pairs["v"]
        # the receiver is removed by position, not by distance 0, so stacked cells still sense each other
        keep = (j != part[i]) & (slide[j] == slide[part[i]])
        i, j, d = i[keep], j[keep], d[keep]
        for c, (kernel, scale, r) in enumerate(kernels):
            w = kernel_weight(kernel, scale, r, d)
            total = np.bincount(i, weights=w, minlength=part.size)
            sensed = np.bincount(i, weights=w * properties[j, c], minlength=part.size)
            has = total > 0
            out[start : start + part.size, c][has] = sensed[has] / total[has]
    return out


def donor_means(rows: sp.csr_matrix, properties: np.ndarray) -> np.ndarray:
    """Weighted mean of ``properties`` over each row's donors (NaN for a row without weight)."""
    rows = sp.csr_matrix(rows, dtype=np.float64)
    total = np.asarray(rows.sum(axis=1)).ravel()
    sensed = np.asarray(rows @ properties)
    out = np.full(sensed.shape, np.nan)
    has = total > 0
    out[has] = sensed[has] / total[has, None]
    return out
