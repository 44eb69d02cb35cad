"""Fused CPU kernels for the edge part of a GATv2 layer (scores, softmax, weighted sum and gradients).

With one head and no self-loops, a GATv2 layer's edge part is, for target ``d`` and its sources
``j`` (``x_l = lin_l(x_src)``, ``x_r = lin_r(x_dst)``)::

    score_dj = att . leaky_relu(x_l[j] + x_r[d])
    alpha_dj = softmax_j(score_dj)
    out_d    = sum_j alpha_dj x_l[j]

Written with torch operations, every step of it reads and writes an edges x channels tensor
(the gathered rows, their sum, the activation, the weighted messages, and as many again in the
backward pass): on a CPU that traffic is most of a training step. The kernels here walk the
edges target by target in compressed sparse row order and keep each edge's channels in
registers, so they store one number per edge (its attention) and nothing of size edges x
channels, forward or backward.

The kernels are compiled with numba on first use (and cached); without numba,
:func:`fused_gatv2_available` is false and the graph encoder uses its torch path, which
computes the same function.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch

_KERNELS: Any = None
_LOCK = threading.Lock()
# reassociation lets the compiler vectorise the per-channel sums; nothing here relies on inf or NaN
_FASTMATH = {"reassoc", "contract"}


def _compile() -> Any:
    """The (forward, backward) pair of compiled kernels, or False without numba."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    jit = numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)

    @jit
    def forward(indptr, src, xl, xr, att, slope, out, alpha):  # pragma: no cover - compiled
        n_dst, n_ch = out.shape
        zero = np.float32(0.0)
        for d in range(n_dst):
            a, b = indptr[d], indptr[d + 1]
            if a == b:
                continue
            top = np.float32(-np.inf)
            for e in range(a, b):
                s = src[e]
                acc = zero
                for c in range(n_ch):
                    v = xl[s, c] + xr[d, c]
                    acc += (v if v > zero else v * slope) * att[c]
                alpha[e] = acc
                top = max(top, acc)
            total = zero
            for e in range(a, b):
                w = np.exp(alpha[e] - top)
                alpha[e] = w
                total += w
            scale = np.float32(1.0) / (total + np.float32(1e-16))
            for e in range(a, b):
                w = alpha[e] * scale
                alpha[e] = w
                s = src[e]
                for c in range(n_ch):
                    out[d, c] += w * xl[s, c]

    @jit
    def backward(indptr, src, xl, xr, att, slope, alpha, grad, gxl, gxr, gatt, dot):  # pragma: no cover
        n_dst, n_ch = grad.shape
        zero = np.float32(0.0)
        for d in range(n_dst):
            a, b = indptr[d], indptr[d + 1]
            if a == b:
                continue
            # d loss / d alpha_e = grad_d . x_l[source]; softmax backward needs their alpha-mean
            mean = zero
            for e in range(a, b):
                s = src[e]
                acc = zero
                for c in range(n_ch):
                    acc += grad[d, c] * xl[s, c]
                dot[e] = acc
                mean += alpha[e] * acc
            for e in range(a, b):
                s = src[e]
                w = alpha[e]
                ds = w * (dot[e] - mean)
                for c in range(n_ch):
                    v = xl[s, c] + xr[d, c]
                    positive = v > zero
                    gatt[c] += ds * (v if positive else v * slope)
                    g = ds * att[c] * (np.float32(1.0) if positive else slope)
                    gxl[s, c] += w * grad[d, c] + g
                    gxr[d, c] += g

    return forward, backward


def _kernels() -> Any:
    global _KERNELS
    if _KERNELS is None:
        with _LOCK:
            if _KERNELS is None:
                _KERNELS = _compile()
    return _KERNELS


def fused_gatv2_available(*tensors: torch.Tensor) -> bool:
    """Whether the fused kernels can run on ``tensors`` (float32 on the CPU, numba present)."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return bool(_kernels())


def csr_order(dst: torch.Tensor, n_dst: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Row pointers of the edges grouped by target, and the permutation that groups them
    (``None`` when they already are)."""
    perm = None
    if dst.numel() > 1 and bool((dst[1:] < dst[:-1]).any()):
        perm = torch.argsort(dst, stable=True)
        dst = dst[perm]
    counts = torch.bincount(dst, minlength=n_dst)
    indptr = torch.zeros(n_dst + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr, perm


class FusedGATv2(torch.autograd.Function):
    """``(out, alpha)`` of a GATv2 layer's edge part from ``x_l``, ``x_r`` and ``att``.

    ``indptr`` and ``src`` list the edges grouped by target (compressed sparse rows); ``alpha``
    comes in that order and carries no gradient (it is returned for inspection only).
    """

    @staticmethod
    def forward(ctx, x_l, x_r, att, indptr, src, slope):
        x_l, x_r, att = x_l.contiguous(), x_r.contiguous(), att.contiguous()
        forward, _ = _kernels()
        out = torch.zeros(x_r.shape[0], x_l.shape[1], dtype=x_l.dtype)
        alpha = torch.empty(src.shape[0], dtype=x_l.dtype)
        slope32 = np.float32(slope)
        forward(indptr.numpy(), src.numpy(), x_l.numpy(), x_r.numpy(), att.numpy(), slope32, out.numpy(), alpha.numpy())
        ctx.save_for_backward(x_l, x_r, att, indptr, src, alpha)
        ctx.slope = slope32
        ctx.mark_non_differentiable(alpha)
        return out, alpha

    @staticmethod
    def backward(ctx, grad_out, _grad_alpha):
        x_l, x_r, att, indptr, src, alpha = ctx.saved_tensors
        _, backward = _kernels()
        grad_out = grad_out.contiguous()
        gxl, gxr, gatt = torch.zeros_like(x_l), torch.zeros_like(x_r), torch.zeros_like(att)
        dot = torch.empty_like(alpha)
        backward(
            indptr.numpy(),
            src.numpy(),
            x_l.numpy(),
            x_r.numpy(),
            att.numpy(),
            ctx.slope,
            alpha.numpy(),
            grad_out.numpy(),
            gxl.numpy(),
            gxr.numpy(),
            gatt.numpy(),
            dot.numpy(),
        )
        return gxl, gxr, gatt, None, None, None


def fused_gatv2(
    x_l: torch.Tensor, x_r: torch.Tensor, att: torch.Tensor, edge_index: torch.Tensor, slope: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The edge part of a GATv2 layer with the fused kernels: the summed messages of each of
    ``x_r``'s rows (no bias) and each edge's attention, in ``edge_index``'s order."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    # the compiled kernels do not check bounds: an edge outside the blocks must not reach them
    if src.numel() and (
        int(src.min()) < 0 or int(dst.min()) < 0 or int(src.max()) >= x_l.shape[0] or int(dst.max()) >= x_r.shape[0]
    ):
        raise ValueError(
            f"edge_index refers to nodes outside the layer's {x_l.shape[0]} sources / {x_r.shape[0]} targets."
        )
    indptr, perm = csr_order(dst, x_r.shape[0])
    if perm is not None:
        src = src[perm]
    out, alpha = FusedGATv2.apply(x_l, x_r, att.reshape(-1), indptr, src.contiguous(), float(slope))
    if perm is not None:
        alpha = torch.empty_like(alpha).index_copy_(0, perm, alpha)
    return out, alpha
