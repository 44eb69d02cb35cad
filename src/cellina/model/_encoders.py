"""Encoders of the niche latent ``s`` beyond scvi-tools' MLP ``Encoder``."""

from __future__ import annotations

import numpy as np
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

    With ``n_components``, the first ``n_input - n_passthrough`` columns (the neighbours'
    expression) are first projected on their ``n_components`` leading principal directions,
    fixed by :meth:`fit_projection`, and the last ``n_passthrough`` (the neighbours' cell-type
    shares) are read as they are: standardising hundreds of noisy expression columns lets the
    encoder lean on their noise.
    """

    def __init__(
        self, n_input: int, n_output: int, n_cat: int = 0, n_components: int | None = None, n_passthrough: int = 0
    ):
        super().__init__()
        self.n_cat = int(n_cat)
        self.n_components = None if n_components is None else int(n_components)
        self.n_passthrough = int(n_passthrough)
        self.n_projected = int(n_input) - self.n_passthrough
        n_read = int(n_input)
        if self.n_components is not None:
            if not 1 <= self.n_components <= self.n_projected:
                raise ValueError(
                    f"spatial_components={n_components} must be between 1 and the {self.n_projected} expression "
                    "columns of the niche features."
                )
            self.register_buffer("projection_mean", torch.zeros(self.n_projected))
            self.register_buffer("projection", torch.eye(self.n_projected, self.n_components))
            n_read = self.n_components + self.n_passthrough
        self.norm = torch.nn.BatchNorm1d(n_read, momentum=0.01, eps=1e-3)
        self.mean = torch.nn.Linear(n_read + self.n_cat, n_output)
        self.log_var = torch.nn.Linear(n_read + self.n_cat, n_output)

    @torch.no_grad()
    def fit_projection(self, features: np.ndarray) -> float:
        """Fix the projection to the leading principal directions of ``features``' expression columns,
        over the rows that have a niche (cells without neighbours have all-zero features).

        Returns the share of their variance the directions keep.
        """
        if self.n_components is None:
            raise ValueError("this encoder was built without spatial_components; it has no projection.")
        X = np.asarray(features, dtype=np.float64)
        X = X[np.abs(X).sum(axis=1) > 0, : self.n_projected]
        if X.shape[0] <= self.n_components:
            raise ValueError(f"{X.shape[0]} cells cannot fix {self.n_components} principal directions.")
        mean = X.mean(axis=0)
        _, singular, vt = np.linalg.svd(X - mean, full_matrices=False)
        self.projection_mean.copy_(torch.as_tensor(mean, dtype=self.projection_mean.dtype))
        self.projection.copy_(torch.as_tensor(vt[: self.n_components].T, dtype=self.projection.dtype))
        total = float((singular**2).sum())
        return float((singular[: self.n_components] ** 2).sum() / total) if total > 0 else 0.0

    def forward(self, x: torch.Tensor, *cat_list: torch.Tensor) -> tuple[Normal, torch.Tensor]:
        if self.n_components is not None:
            head = (x[:, : self.n_projected] - self.projection_mean) @ self.projection
            x = torch.cat([head, x[:, self.n_projected :]], dim=-1)
        h = self.norm(x)
        if self.n_cat > 0 and cat_list:
            h = torch.cat([h, F.one_hot(cat_list[0].view(-1).long(), self.n_cat).to(h.dtype)], dim=-1)
        elif self.n_cat > 0:
            h = torch.cat([h, h.new_zeros(h.shape[0], self.n_cat)], dim=-1)
        dist = Normal(self.mean(h), (torch.exp(self.log_var(h)) + VAR_EPS).sqrt())
        return dist, dist.rsample()
