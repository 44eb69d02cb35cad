"""Negative-binomial counts from exact means, drawn block by block with a fixed random stream."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

# Fixed, so counts depend only on the seed and the data size, never on the machine.
_COUNT_CHUNK_ENTRIES = 1_000_000


def sample_counts(
    n: int,
    theta: np.ndarray,
    mean_block: Callable[[slice], np.ndarray],
    seed: np.random.SeedSequence,
    progress: Callable[[float], None] | None = None,
) -> sp.csr_matrix:
    """Counts ~ NB(mean, theta) as a CSR float32 matrix with integer values.

    Parameters
    ----------
    n
        Number of cells.
    theta
        (G,) inverse dispersion of each gene.
    mean_block
        ``mean_block(rows)`` returns the exact expected counts of the cells in slice ``rows``.
    seed
        Spawns one independent stream per block.
    progress
        Called with the fraction of blocks done.
    """
    n_genes = theta.shape[0]
    chunk = max(1, _COUNT_CHUNK_ENTRIES // n_genes)
    starts = list(range(0, n, chunk))
    seeds = seed.spawn(len(starts))
    data_parts, index_parts, row_nnz = [], [], []
    for i, start in enumerate(starts):
        mu = mean_block(slice(start, min(n, start + chunk)))
        rng = np.random.default_rng(seeds[i])
        # NB(mu, theta) as a Gamma-Poisson mixture: the fastest exact sampler numpy offers here
        block = rng.poisson(rng.gamma(theta, mu / theta))
        rows, cols = np.nonzero(block)
        data_parts.append(block[rows, cols].astype(np.float32))
        index_parts.append(cols.astype(np.int32))
        row_nnz.append(np.bincount(rows, minlength=mu.shape[0]))
        if progress is not None:
            progress((i + 1) / len(starts))
    data = np.concatenate(data_parts) if data_parts else np.zeros(0, np.float32)
    indices = np.concatenate(index_parts) if index_parts else np.zeros(0, np.int32)
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(row_nnz))]) if row_nnz else np.zeros(1, np.int64)
    if indptr[-1] < np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    else:
        indices = indices.astype(np.int64)
    return sp.csr_matrix((data, indices, indptr), shape=(n, n_genes))
