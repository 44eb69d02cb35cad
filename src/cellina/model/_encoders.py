"""Encoders of the niche latent ``s`` beyond scvi-tools' MLP ``Encoder``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.distributions import Normal

#: floor of the posterior variance, as scvi-tools' Encoder uses
VAR_EPS = 1e-4


class LinearGaussianEncoder(torch.nn.Module):
    """A Gaussian posterior whose mean is linear in the (standardised) input.

    ``q(s | x) = N(W [bn(x); b] + c, exp(U [bn(x); b] + d))`` with ``bn`` a batch normalisation
    (an affine, per-feature standardisation once trained) and ``b`` the one-hot batch. A niche
    beyond the range seen in training moves ``s`` along the learnt directions instead of
    saturating in a hidden layer, so, with a decoder linear in ``s``, the niche response keeps
    its size when extrapolated. Same call and outputs as scvi-tools' ``Encoder`` with
    ``return_dist=True``: ``(distribution, sample)``.
    """

    def __init__(self, n_input: int, n_output: int, n_cat: int = 0):
        super().__init__()
        self.n_cat = int(n_cat)
        self.norm = torch.nn.BatchNorm1d(n_input, momentum=0.01, eps=1e-3)
        self.mean = torch.nn.Linear(n_input + self.n_cat, n_output)
        self.log_var = torch.nn.Linear(n_input + self.n_cat, n_output)

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> tuple[Normal, torch.Tensor]:
        h = self.norm(x)
        if self.n_cat > 0 and cat_list:
            h = torch.cat([h, F.one_hot(cat_list[0].view(-1).long(), self.n_cat).to(h.dtype)], dim=-1)
        elif self.n_cat > 0:
            h = torch.cat([h, h.new_zeros(h.shape[0], self.n_cat)], dim=-1)
        dist = Normal(self.mean(h), (torch.exp(self.log_var(h)) + VAR_EPS).sqrt())
        return dist, dist.rsample()
