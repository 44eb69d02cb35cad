"""Model evaluation of the Cellina module: posterior draws, posterior-predictive samples and the
marginal likelihood."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import Poisson
from torch.distributions import Normal

from ._constants import CELLINA_MODULE_KEYS as MK


def standard_normal(q: Normal) -> Normal:
    """N(0, I) on the device and shape of the posterior ``q``."""
    return Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))


def _draw(q: Normal, noise: np.ndarray) -> torch.Tensor:
    """``q``'s draw for standard-normal ``noise`` (moved to ``q``'s device and type)."""
    return q.loc + q.scale * torch.as_tensor(noise, dtype=q.loc.dtype, device=q.loc.device)


class ModuleEvaluationMixin:
    """scvi-tools' ``sample`` and ``marginal_ll`` contracts for :class:`~cellina.model.CellinaModule`,
    and seeded posterior draws of the latents."""

    def draw_latents(
        self,
        inference_outputs: dict[str, Any],
        rng: np.random.Generator,
        niche_rng: np.random.Generator | None = None,
    ) -> dict[str, Any]:
        """The inference outputs with one posterior draw of every latent the decoder reads as a sample.

        ``z`` is drawn from ``q(z | x)``; ``s`` from ``q(s | niche)`` when the module decodes samples of
        ``s`` (``spatial_decoding="sample"``), else it stays the posterior mean the decoder was
        trained on (with ``"mean"`` the variance of ``q(s)`` is set by its KL term alone and says
        nothing about the decoded niche); a learnt library is drawn from ``q(l | x)``. The noise
        comes from ``rng``, one row of ``dim z + 1`` (``z``, library) standard normals per cell in
        order, then ``dim s`` for ``s`` (from ``niche_rng`` when given: the same cells' ``z`` with
        other niches' independent ``s``), so a seed gives the same draws on every device and
        whatever the minibatches. ``[z; s]`` and the classifier's logits follow the drawn ``z``.
        """
        out = dict(inference_outputs)
        qz, qs = out[MK.QZ_KEY], out[MK.QS_KEY]
        n, n_z, n_s = qz.loc.shape[0], qz.loc.shape[-1], qs.loc.shape[-1]
        if niche_rng is None:
            noise = rng.standard_normal((n, n_z + 1 + n_s))
            s_noise = noise[:, n_z + 1 :]
        else:
            noise, s_noise = rng.standard_normal((n, n_z + 1)), niche_rng.standard_normal((n, n_s))
        z = _draw(qz, noise[:, :n_z])
        out[MK.Z_KEY] = z
        if self.spatial_decoding == "sample":
            out[MK.S_KEY] = _draw(qs, s_noise)
        if out.get(MK.QL_KEY) is not None:
            out[MK.LIBRARY_KEY] = _draw(out[MK.QL_KEY], noise[:, n_z : n_z + 1])
        out[MK.SHIFTED_KEY] = torch.cat([z, out[MK.S_KEY]], dim=-1)
        if out.get(MK.CLASSIFIER_LOGITS_KEY) is not None:
            out[MK.CLASSIFIER_LOGITS_KEY] = self.classifier(z)
        if out.get(MK.DISCRIMINATOR_LOGITS_KEY) is not None:
            out[MK.DISCRIMINATOR_LOGITS_KEY] = self.discriminator(z)
        return out

    @torch.inference_mode()
    def sample(
        self,
        tensors: dict[str, torch.Tensor],
        n_samples: int = 1,
        max_poisson_rate: float = 1e8,
        generative_kwargs: dict | None = None,
    ) -> torch.Tensor:
        """Counts drawn from the posterior predictive distribution (scvi-tools' contract).

        Returns
        -------
        torch.Tensor
            On the CPU, ``(n_cells, n_input)`` for one sample, else ``(n_cells, n_input, n_samples)``.
        """
        _, gen = self.forward(
            tensors,
            inference_kwargs={"n_samples": n_samples},
            generative_kwargs=generative_kwargs,
            compute_loss=False,
        )
        dist = gen[MK.PX_KEY]
        if self.gene_likelihood == "poisson":
            dist = Poisson(torch.clamp(dist.rate, max=max_poisson_rate))
        samples = dist.sample()
        return (samples.permute(1, 2, 0) if n_samples > 1 else samples).cpu()

    @torch.inference_mode()
    def marginal_ll(
        self,
        tensors: dict[str, torch.Tensor],
        n_mc_samples: int,
        return_mean: bool = False,
        n_mc_samples_per_pass: int = 1,
    ) -> torch.Tensor | float:
        """Importance-sampling estimate of ``log p(x)`` per cell.

        ``z``, ``s`` (and a learnt library) are drawn from their posteriors; each draw weighs
        ``p(x | z, s, l) p(z) p(s) p(l) / (q(z) q(s) q(l))``. With ``spatial_decoding="mean"``
        the decoder reads the posterior mean of ``s``, which is then not integrated over.

        Parameters
        ----------
        tensors
            Minibatch (registry keys).
        n_mc_samples
            Importance samples per cell.
        return_mean
            Return the mean over cells as a float.
        n_mc_samples_per_pass
            Samples drawn per forward pass (memory).

        Returns
        -------
        torch.Tensor or float
            ``(n_cells,)`` log-likelihoods on the CPU, or their mean.
        """
        if n_mc_samples < 1:
            raise ValueError(f"n_mc_samples={n_mc_samples} must be >= 1.")
        per_pass = max(1, min(int(n_mc_samples_per_pass), int(n_mc_samples)))
        x = tensors[REGISTRY_KEYS.X_KEY]
        terms = []
        for start in range(0, n_mc_samples, per_pass):
            k = min(per_pass, n_mc_samples - start)
            inf, gen = self.forward(tensors, inference_kwargs={"n_samples": k}, compute_loss=False)
            z, s = inf[MK.Z_KEY], inf[MK.S_KEY]
            if k == 1:
                z, s = z.unsqueeze(0), s.unsqueeze(0)
            log_px = self._reconstruction_loss(x, gen).neg().reshape(k, -1)
            qz, qs = inf[MK.QZ_KEY], inf[MK.QS_KEY]
            log_w = log_px + standard_normal(qz).log_prob(z).sum(-1) - qz.log_prob(z).sum(-1)
            if self.spatial_decoding == "sample":
                log_w = log_w + standard_normal(qs).log_prob(s).sum(-1) - qs.log_prob(s).sum(-1)
            if not self.use_observed_lib_size:
                lib = inf[MK.LIBRARY_KEY].reshape(k, -1, 1)
                log_w = log_w + gen[MK.PL_KEY].log_prob(lib).sum(-1) - inf[MK.QL_KEY].log_prob(lib).sum(-1)
            terms.append(log_w)
        log_lkl = torch.logsumexp(torch.cat(terms, dim=0), dim=0) - math.log(n_mc_samples)
        return float(log_lkl.mean()) if return_mean else log_lkl.cpu()
