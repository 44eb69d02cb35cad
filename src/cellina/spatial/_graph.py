"""Kernel-weighted k-nearest-neighbour graph over cell coordinates."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from ._validation import (
    CellinaTypeError,
    check_bool,
    check_int,
    check_nonempty,
    check_obs_key,
    check_positive_finite,
    check_test_indices,
    get_coordinates,
)

__all__ = ["spatial_neighbors", "KERNELS"]

KERNELS = ("gaussian", "exponential", "linear")


def _kernel_weights(dist: np.ndarray, bandwidth: float, kernel: str) -> np.ndarray:
    # float32 halves memory traffic and lets numpy vectorise exp; weights are stored
    # as float32 anyway.
    scaled = (dist * (1.0 / bandwidth)).astype(np.float32)
    if kernel == "gaussian":
        scaled *= scaled
        scaled *= -0.5
        return np.exp(scaled, out=scaled)
    if kernel == "exponential":
        np.negative(scaled, out=scaled)
        return np.exp(scaled, out=scaled)
    np.subtract(1.0, scaled, out=scaled)
    return np.maximum(scaled, 0.0, out=scaled)


def _reach(bandwidth: float, cutoff: float, kernel: str) -> float:
    """Distance from which on every kernel weight is <= cutoff (inf if none)."""
    if kernel == "linear":
        return bandwidth * (1.0 - cutoff)
    if cutoff <= 0.0:
        return np.inf
    if kernel == "gaussian":
        return bandwidth * float(np.sqrt(-2.0 * np.log(cutoff)))
    return -bandwidth * float(np.log(cutoff))


def _knn_excluding_self(coords: np.ndarray, k: int, reach: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """k nearest other points of every point of ``coords``.

    Returns ``(idx, dist)`` of shape ``(m, min(k, m - 1))`` with local positions. The
    point itself is removed by position rather than by distance 0, so duplicated
    coordinates still connect to each other. Neighbours at ``reach`` or farther may be
    left out (their slots hold index ``m`` and distance inf): the search stops there,
    which saves most of the work when the kernel dies off well inside the k-th neighbour.
    """
    m = coords.shape[0]
    kq = min(k + 1, m)
    if kq <= 1:
        return np.zeros((m, 0), dtype=np.int64), np.zeros((m, 0), dtype=np.float64)
    # An unbalanced tree without compacted nodes builds faster on tissue coordinates,
    # and querying in the tree's own point order keeps neighbouring queries on the same
    # leaves in cache (about twice as fast as querying in input order at 1M cells).
    tree = cKDTree(coords, leafsize=16, balanced_tree=False, compact_nodes=False)
    order = tree.indices
    # a hair beyond the reach so that float rounding never drops a kept edge
    bound = reach * (1.0 + 1e-9) if np.isfinite(reach) else np.inf
    dist_o, idx_o = tree.query(coords[order], k=kq, workers=-1, distance_upper_bound=bound)
    # Usually the point itself is the first hit (distance 0); only rows with duplicated
    # coordinates need the general path. The point is removed by position, never by
    # distance, and with more than k duplicates it may be missing from its own k+1
    # results: then the farthest hit is dropped so every row keeps k neighbours.
    self_first = idx_o[:, 0] == order
    idx_k = idx_o[:, 1:]
    dist_k = dist_o[:, 1:]
    if not self_first.all():
        bad = np.flatnonzero(~self_first)
        hit = idx_o[bad] == order[bad, None]
        hit[~hit.any(axis=1), -1] = True
        idx_k[bad] = idx_o[bad][~hit].reshape(bad.size, kq - 1)
        dist_k[bad] = dist_o[bad][~hit].reshape(bad.size, kq - 1)
    idx = np.empty((m, kq - 1), dtype=np.int32 if m < 2**31 - 1 else np.int64)
    dist = np.empty((m, kq - 1), dtype=dist_o.dtype)
    idx[order] = idx_k
    dist[order] = dist_k
    return idx, dist


def spatial_neighbors(
    adata: Any,
    bandwidth: float,
    cutoff: float = 0.1,
    max_neighbours: int = 100,
    kernel: str = "gaussian",
    standardize: bool = False,
    spatial_key: str = "spatial",
    key_added: str = "spatial",
    library_key: str | None = None,
    test_indices: Any = None,
    inplace: bool = True,
) -> sp.csr_matrix | None:
    """Build a kernel-weighted k-nearest-neighbour graph of the cells.

    Each cell is connected to its ``max_neighbours`` nearest other cells (Euclidean
    distance in coordinate units). Each edge gets the kernel weight of its length
    ``d``; edges whose weight is ``<= cutoff`` are dropped.

    Parameters
    ----------
    adata
        AnnData with coordinates in ``adata.obsm[spatial_key]`` (n_obs x 2 or 3).
    bandwidth
        Kernel length scale ``l``, in coordinate units (> 0).
    cutoff
        Edges with weight ``<= cutoff`` are dropped; in ``[0, 1)``. With the gaussian
        kernel the default 0.1 keeps edges shorter than ``l * sqrt(2 ln 10) ~ 2.15 l``.
    max_neighbours
        Number of nearest neighbours ``k`` considered per cell (the cell itself excluded).
    kernel
        ``"gaussian"``: ``exp(-d^2 / (2 l^2))``; ``"exponential"``: ``exp(-d / l)``;
        ``"linear"``: ``max(0, 1 - d / l)``.
    standardize
        If True, divide each row's weights by their sum so every cell with neighbours has
        weights summing to 1 (a weighted mean operator). The niche features
        ``D^-1 W X`` are the same either way; only the stored weights differ.
    spatial_key
        Key of the coordinates in ``adata.obsm``.
    key_added
        Prefix of the output keys: ``obsp[f"{key_added}_connectivities"]``,
        ``obsp[f"{key_added}_distances"]`` and ``uns[f"{key_added}_neighbors"]``
        (squidpy's layout, which keeps ``uns["spatial"]`` free for scanpy's images).
    library_key
        Column of ``adata.obs`` naming the slide of each cell; one graph is built per
        slide and no edge crosses slides.
    test_indices
        Held-out cells (integer positions or boolean mask). They are left out of the
        search tree, so they are nobody's neighbour, and get no neighbours themselves;
        every other cell still gets its ``k`` nearest non-held-out neighbours.
    inplace
        If True, write the graph into ``adata`` and return None; if False, write
        nothing and return the connectivities.

    Returns
    -------
    scipy.sparse.csr_matrix or None
        With ``inplace=False``, the n_obs x n_obs connectivities ``W`` (float32, sorted
        indices): row ``i`` holds the weights of cell ``i``'s neighbours. ``W`` is
        directed (k-NN is not symmetric).

    Notes
    -----
    The distances matrix stores the length of each kept edge with the same sparsity
    pattern as the connectivities, so duplicated coordinates give explicitly stored
    zero distances.

    Raises
    ------
    ValueError
        Empty AnnData, missing ``spatial_key`` or ``library_key``, non-numeric, NaN or
        infinite coordinates, out-of-range ``test_indices``, ``bandwidth <= 0``,
        ``cutoff`` outside ``[0, 1)``, ``max_neighbours < 1`` or an unknown kernel. The
        AnnData is not modified.
    """
    bandwidth, cutoff, k, standardize, inplace = _check_parameters(
        adata, bandwidth, cutoff, max_neighbours, kernel, standardize, inplace, key_added
    )
    coords = get_coordinates(adata, spatial_key)
    n = coords.shape[0]
    held_out = np.zeros(0, dtype=np.int64) if test_indices is None else check_test_indices(test_indices, n)
    codes = _library_codes(adata, library_key, n)

    active = np.ones(n, dtype=bool)
    active[held_out] = False
    row_counts, indices, w, d = _kernel_edges(coords, codes, active, k, bandwidth, cutoff, kernel)
    if standardize:
        row_sum = np.bincount(np.repeat(np.arange(n), row_counts), weights=w, minlength=n)
        w = (w / np.repeat(row_sum, row_counts)).astype(np.float32)
    conn, dist = _sorted_graph(row_counts, indices, w, d, with_distances=inplace)
    if not inplace:
        return conn
    params = {
        "method": "knn_kernel",
        "coord_type": "generic",
        "n_neighbors": k,
        "bandwidth": bandwidth,
        "cutoff": cutoff,
        "kernel": kernel,
        "standardize": standardize,
        "spatial_key": spatial_key,
        "library_key": library_key,
        "test_indices": held_out,
    }
    _store_graph(adata, key_added, conn, dist, params)
    return None


def _check_parameters(
    adata: Any,
    bandwidth: Any,
    cutoff: Any,
    max_neighbours: Any,
    kernel: Any,
    standardize: Any,
    inplace: Any,
    key_added: Any,
) -> tuple[float, float, int, bool, bool]:
    """Checked ``(bandwidth, cutoff, k, standardize, inplace)``; raises before any work."""
    check_nonempty(adata)
    bandwidth = check_positive_finite("bandwidth", bandwidth)
    if isinstance(cutoff, (bool, np.bool_)) or not isinstance(cutoff, (int, float, np.number)):
        raise CellinaTypeError(f"`cutoff` must be a number in [0, 1), got {cutoff!r}.")
    cutoff = float(cutoff)
    if not (0.0 <= cutoff < 1.0):
        raise ValueError(f"`cutoff` must be in [0, 1), got {cutoff!r}.")
    k = check_int("max_neighbours", max_neighbours, minimum=1)
    if kernel not in KERNELS:
        raise ValueError(f"Unknown kernel={kernel!r}; choose one of {KERNELS}.")
    standardize = check_bool("standardize", standardize)
    inplace = check_bool("inplace", inplace)
    if not isinstance(key_added, str) or not key_added:
        raise CellinaTypeError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    return bandwidth, cutoff, k, standardize, inplace


def _library_codes(adata: Any, library_key: str | None, n: int) -> np.ndarray:
    """Integer slide code of every cell (all 0 without ``library_key``)."""
    if library_key is None:
        return np.zeros(n, dtype=np.int64)
    libs = check_obs_key(adata, library_key, "library_key")
    return np.asarray(libs.astype("category").cat.codes.to_numpy(), dtype=np.int64)


def _kernel_edges(
    coords: np.ndarray,
    codes: np.ndarray,
    active: np.ndarray,
    k: int,
    bandwidth: float,
    cutoff: float,
    kernel: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Kept edges of every slide, in global row order: ``(row_counts, columns, weights, lengths)``.

    Inactive (held-out) cells are searched for by nobody and search for nobody.
    """
    n = coords.shape[0]
    reach = _reach(bandwidth, cutoff, kernel)
    row_counts = np.zeros(n, dtype=np.int64)
    parts_members, parts_cols, parts_w, parts_d = [], [], [], []
    for code in np.unique(codes[active]):
        members = np.flatnonzero(active & (codes == code))
        loc_idx, loc_dist = _knn_excluding_self(coords[members], k, reach)
        weights = _kernel_weights(loc_dist, bandwidth, kernel)
        keep = weights > cutoff
        row_counts[members] = keep.sum(axis=1)
        parts_members.append(members)
        parts_cols.append(members[loc_idx[keep]])
        parts_w.append(weights[keep])
        parts_d.append(loc_dist[keep])
        del loc_idx, loc_dist, weights, keep
    nnz = int(row_counts.sum())
    idx_dtype = _index_dtype(n, nnz)
    indices = np.concatenate(parts_cols).astype(idx_dtype) if parts_cols else np.zeros(0, idx_dtype)
    w = np.concatenate(parts_w) if parts_w else np.zeros(0, np.float32)
    d = np.concatenate(parts_d) if parts_d else np.zeros(0, np.float64)
    del parts_cols, parts_w, parts_d
    all_members = np.concatenate(parts_members) if parts_members else np.zeros(0, np.int64)
    if all_members.size > 1 and not np.all(np.diff(all_members) > 0):
        # Slides interleave in obs order: bring edges into global row order.
        rows = np.repeat(all_members, row_counts[all_members])
        order = np.argsort(rows, kind="stable")
        indices, w, d = indices[order], w[order], d[order]
    return row_counts, indices, w, d


def _index_dtype(n: int, nnz: int) -> type:
    """int32 sparse indices whenever they fit (half the memory of int64)."""
    return np.int32 if max(n, nnz) < np.iinfo(np.int32).max else np.int64


def _sorted_graph(
    row_counts: np.ndarray, indices: np.ndarray, w: np.ndarray, d: np.ndarray, with_distances: bool
) -> tuple[sp.csr_matrix, sp.csr_matrix | None]:
    """Connectivities (and distances) as CSR with sorted column indices."""
    n = row_counts.size
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    nnz = int(indptr[-1])
    indptr = indptr.astype(_index_dtype(n, nnz))
    # Sort column indices once through a permutation and apply it to both weights and
    # distances, instead of sorting two matrices.
    perm = sp.csr_matrix((np.arange(nnz, dtype=np.int64), indices, indptr), shape=(n, n))
    perm.sort_indices()
    order = perm.data
    conn = sp.csr_matrix((w[order], perm.indices, indptr), shape=(n, n))
    conn.has_sorted_indices = True
    if not with_distances:
        return conn, None
    dist = sp.csr_matrix((d[order], perm.indices.copy(), indptr.copy()), shape=(n, n))
    dist.has_sorted_indices = True
    return conn, dist


def _store_graph(adata: Any, key_added: str, conn: sp.csr_matrix, dist: sp.csr_matrix, params: dict[str, Any]) -> None:
    """Write the graph under squidpy's keys."""
    conns_key = f"{key_added}_connectivities"
    dists_key = f"{key_added}_distances"
    adata.obsp[conns_key] = conn
    adata.obsp[dists_key] = dist
    adata.uns[f"{key_added}_neighbors"] = {
        "connectivities_key": conns_key,
        "distances_key": dists_key,
        "params": params,
    }
