"""Loss terms of the Cellina objective that scvi-tools does not provide."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

#: how the encoder is pushed to fool the domain discriminator
AdversarialLoss = Literal["uniform", "negative_ce"]
ADVERSARIAL_LOSSES = ("uniform", "negative_ce")


def uniform_target_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` against the uniform distribution over classes.

    This is the adversarial objective the encoder minimises to fool the domain
    discriminator. Its minimum, ``log(n_classes)``, is reached when the discriminator
    is maximally unsure; unlike "flipped labels" it never rewards confidently
    predicting a wrong domain, and it stays bounded away from zero, which keeps the
    loss-normalisation ratio measured over the first epoch finite.

    Parameters
    ----------
    logits
        Unnormalised class scores, shape ``(n_cells, n_classes)``.

    Returns
    -------
    torch.Tensor
        Scalar mean over cells.
    """
    return -F.log_softmax(logits, dim=-1).mean(dim=-1).mean()


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-cell negative-binomial log-likelihood summed over genes.

    The same quantity as ``scvi.distributions.NegativeBinomial(mu, theta).log_prob(x)
    .sum(-1)``, but with a per-gene ``theta`` the terms that depend on ``theta`` alone
    (``theta * log(theta)`` and ``lgamma(theta)``) are evaluated once per gene instead of
    once per cell and gene, and ``lgamma(x + 1)``, a constant, carries no gradient. This
    removes one ``lgamma``/``digamma`` pair and one ``log`` over the minibatch.

    Parameters
    ----------
    x
        Counts, ``(n_cells, n_genes)``.
    mu
        Means, ``(n_cells, n_genes)``.
    theta
        Inverse dispersion, ``(n_genes,)`` or ``(n_cells, n_genes)``.
    eps
        Numerical floor, as in scvi-tools.

    Returns
    -------
    torch.Tensor
        ``(n_cells,)``.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    per_entry = x * (torch.log(mu + eps) - log_theta_mu) - theta * log_theta_mu
    per_entry = per_entry + torch.lgamma(x + theta)
    with torch.no_grad():
        constant = torch.lgamma(x + 1).sum(-1)
    if theta.dim() == 1:
        per_gene = (theta * torch.log(theta + eps) - torch.lgamma(theta)).sum()
        return per_entry.sum(-1) + per_gene - constant
    return (per_entry + theta * torch.log(theta + eps) - torch.lgamma(theta)).sum(-1) - constant


def negative_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the discriminator's cross-entropy: the published encoder objective.

    Minimising it maximises the discriminator's error. It is unbounded below (a
    confidently wrong discriminator keeps lowering it), which is why the project's default
    is :func:`uniform_target_cross_entropy`; this form reproduces the published model.

    Parameters
    ----------
    logits
        Discriminator scores, ``(n_cells, n_domains)``.
    target
        Domain codes, ``(n_cells,)`` integers.

    Returns
    -------
    torch.Tensor
        Scalar mean over cells (negative).
    """
    return -F.cross_entropy(logits, target)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` against a per-cell target distribution, averaged over cells."""
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()
