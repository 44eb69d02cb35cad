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


def supervised_contrastive_loss(
    s: torch.Tensor,
    n_anchors: int,
    positive_pairs: torch.Tensor,
    domains: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Graph-supervised contrastive loss on ``s`` (a SupCon variant), vectorised.

    The first ``n_anchors`` rows of ``s`` are the anchors (the seed cells); every row is a
    candidate. With ``u`` the L2-normalised rows and ``S = u_a . u_c / temperature``, anchor
    ``a``'s positives ``P(a)`` are given by ``positive_pairs`` (its sampled spatial neighbours)
    and its negatives ``N(a)`` are the candidates of another domain that are not positives; the
    anchor itself is neither. Its loss is

    ``log sum_{c in P(a) | N(a)} exp(S_ac) - mean_{p in P(a)} S_ap``

    and the loss is the mean over anchors that have at least one positive and one negative
    (others are dropped; with none left it is 0).

    Parameters
    ----------
    s
        ``(n_candidates, d)`` spatial latents (posterior means), anchors first.
    n_anchors
        Number of anchors.
    positive_pairs
        ``(2, P)`` rows ``(candidate, anchor)``: candidate is a positive of anchor.
    domains
        ``(n_candidates,)`` domain codes.
    temperature
        Softmax temperature (> 0).

    Returns
    -------
    torch.Tensor
        Scalar.
    """
    u = F.normalize(s, p=2, dim=-1)
    sim = (u[:n_anchors] @ u.T) / temperature
    positive = torch.zeros_like(sim, dtype=torch.bool)
    positive[positive_pairs[1], positive_pairs[0]] = True
    anchors = torch.arange(n_anchors, device=s.device)
    positive[anchors, anchors] = False
    codes = domains.reshape(-1)
    negative = (codes[None, :] != codes[:n_anchors, None]) & ~positive
    negative[anchors, anchors] = False
    n_pos = positive.sum(-1)
    valid = (n_pos > 0) & (negative.sum(-1) > 0)
    if not bool(valid.any()):
        return s.sum() * 0.0
    log_denominator = torch.logsumexp(sim.masked_fill(~(positive | negative), float("-inf")), dim=-1)
    positive_mean = (sim * positive).sum(-1) / n_pos.clamp_min(1)
    return (log_denominator - positive_mean)[valid].mean()
