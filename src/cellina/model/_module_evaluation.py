"""Model evaluation of the Cellina module: posterior-predictive samples and the marginal likelihood."""

from __future__ import annotations

import math

import torch
from scvi import REGISTRY_KEYS
from scvi.distributions import Poisson
from torch.distributions import Normal

from ._constants import CELLINA_MODULE_KEYS as MK


def standard_normal(q: Normal) -> Normal:
    """N(0, I) on the device and shape of the posterior ``q``."""
    return Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))


class ModuleEvaluationMixin:
    """scvi-tools' ``sample`` and ``marginal_ll`` contracts for :class:`~cellina.model.CellinaModule`."""

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
