"""The graph encoder's GATv2 layer computes torch-geometric's GATv2Conv, with fewer passes over the edges."""

from __future__ import annotations

import pytest
import torch

from cellina.model._gat_kernels import fused_gatv2_available
from cellina.model._graph_encoder import GraphLayer, gatv2


def test_gatv2_equals_torch_geometric_with_gradients():
    torch.manual_seed(0)
    layer = GraphLayer("gat", 7, 5)
    conv = layer.conv
    with torch.no_grad():
        conv.att.normal_()
        conv.bias.normal_()
    x = torch.randn(30, 7)
    n_dst = 12
    edges = torch.stack([torch.randint(0, 30, (90,)), torch.randint(0, n_dst, (90,))])
    edges[1, :n_dst] = torch.arange(n_dst)  # every target reads someone
    expected, (_, expected_alpha) = conv((x, x[:n_dst]), edges, return_attention_weights=True)
    conv.zero_grad()
    expected.square().sum().backward()
    expected_grads = [p.grad.clone() for p in conv.parameters()]
    out, alpha = gatv2(conv, x, x[:n_dst], edges)
    conv.zero_grad()
    out.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(alpha, expected_alpha.reshape(-1), rtol=1e-5, atol=1e-6)
    for grad, param in zip(expected_grads, conv.parameters(), strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-5)
    via_layer, layer_alpha = layer(x, x[:n_dst], edges, return_attention=True)
    torch.testing.assert_close(via_layer, expected, rtol=1e-5, atol=1e-5)
    assert layer(x, x[:n_dst], edges)[1] is None and layer_alpha.shape == (90,)


def _gat_case(n_src=40, n_dst=15, n_edges=160, seed=1):
    torch.manual_seed(seed)
    layer = GraphLayer("gat", 7, 6)
    with torch.no_grad():
        layer.conv.att.normal_()
        layer.conv.bias.normal_()
    x = torch.randn(n_src, 7)
    edges = torch.stack([torch.randint(0, n_src, (n_edges,)), torch.randint(0, n_dst, (n_edges,))])
    edges[1, :3] = 0  # a target with several edges; targets n_dst - 2 and n_dst - 1 read nobody
    edges[1][edges[1] >= n_dst - 2] = 1
    return layer.conv, x, n_dst, edges


def _run(conv, x, n_dst, edges, fused):
    conv.zero_grad()
    out, alpha = gatv2(conv, x, x[:n_dst], edges, fused=fused)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach(), alpha.detach(), [p.grad.clone() for p in conv.parameters()]


def test_the_fused_kernels_compute_the_torch_path_with_gradients():
    """Edges in any order and targets without edges: same output, attention and parameter gradients."""
    assert fused_gatv2_available(torch.zeros(1))
    conv, x, n_dst, edges = _gat_case()
    assert (edges[1][1:] < edges[1][:-1]).any()  # not grouped by target: the kernels sort them
    fast, fast_alpha, fast_grads = _run(conv, x, n_dst, edges, fused=None)
    slow, slow_alpha, slow_grads = _run(conv, x, n_dst, edges, fused=False)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast_alpha, slow_alpha, rtol=1e-5, atol=1e-6)
    assert torch.all(fast[n_dst - 2 :] == conv.bias)  # nobody to read: the bias only
    for a, b in zip(fast_grads, slow_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(gatv2(conv, x, x[:n_dst], edges)[0], slow, rtol=1e-5, atol=1e-5)
    outside = edges.clone()
    outside[1, 5] = n_dst  # a target the layer does not update
    with pytest.raises(ValueError, match="outside the layer"):
        gatv2(conv, x, x[:n_dst], outside)


def test_the_torch_path_runs_where_the_kernels_do_not():
    """float64, or attention dropout in training: torch operations (whose attention keeps a gradient)."""
    conv, x, n_dst, edges = _gat_case()
    fused_out, fused_alpha = gatv2(conv, x, x[:n_dst], edges)
    assert not fused_alpha.requires_grad  # the kernels' attention is for inspection only
    assert not fused_gatv2_available(torch.zeros(1, dtype=torch.float64))
    out, alpha = gatv2(conv.double(), x.double(), x[:n_dst].double(), edges)
    assert out.dtype == torch.float64 and alpha.requires_grad
    torch.testing.assert_close(out.float(), fused_out, rtol=1e-4, atol=1e-4)
    conv = conv.float()
    conv.dropout = 0.5
    assert gatv2(conv, x, x[:n_dst], edges)[1].requires_grad
    conv.eval()  # no dropout outside training: the kernels again
    assert not gatv2(conv, x, x[:n_dst], edges)[1].requires_grad
