"""The graph encoder's GATv2 layer computes torch-geometric's GATv2Conv, with fewer passes over the edges."""

from __future__ import annotations

import torch

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
