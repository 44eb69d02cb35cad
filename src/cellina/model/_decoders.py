"""Niche-aware decoders: counts from the intrinsic latent ``z`` and the niche latent ``s``."""

from __future__ import annotations

import torch
from scvi.nn import DecoderSCVI


class FactorisedNicheDecoder(torch.nn.Module):
    """Decoder whose log expression is an intrinsic term plus a low-rank niche response.

    ``log rho = f(z, batch) + V [(A z + a) * (B s + b)]`` before the softmax over genes: ``f`` is
    scvi-tools' ``DecoderSCVI`` on ``z`` alone, and the niche enters only through ``rank``
    products of a cell-state direction and a niche direction. Expanding the product gives a
    niche effect shared by all cells (``V (a * B s)``) plus one that depends on the cell's state
    (``V (A z * B s)``), so each cell type can answer the same niche with its own genes, and the
    answer is linear in ``s``: a niche beyond the training range moves expression along the
    learnt direction instead of saturating. Outputs match ``DecoderSCVI``'s.

    Parameters
    ----------
    n_latent, n_latent_spatial
        Dimensions of ``z`` and ``s``.
    n_output
        Number of genes.
    n_cat
        Number of batches (categories injected into ``f``).
    rank
        Number of niche response directions.
    n_layers, n_hidden
        Layers and width of ``f``.
    n_types
        With ``n_types > 0`` a type-gated niche term ``sum_t p_t W_t s`` is added, where ``p``
        are the cell-type probabilities passed to :meth:`forward` and each ``W_t`` is a full
        ``n_latent_spatial x n_output`` map, zero at the start. It lets every cell type answer
        the niche with its own genes at full rank, which the shared low-rank term cannot do
        for a type whose response genes nobody else uses.
    """

    def __init__(
        self,
        n_latent: int,
        n_latent_spatial: int,
        n_output: int,
        n_cat: int,
        rank: int = 8,
        n_layers: int = 2,
        n_hidden: int = 128,
        n_types: int = 0,
    ):
        super().__init__()
        if rank < 1:
            raise ValueError(f"niche_rank={rank} must be >= 1.")
        self.n_latent = n_latent
        self.intrinsic = DecoderSCVI(n_latent, n_output, n_cat_list=[n_cat], n_layers=n_layers, n_hidden=n_hidden)
        self.state_directions = torch.nn.Linear(n_latent, rank)
        self.niche_directions = torch.nn.Linear(n_latent_spatial, rank)
        self.gene_loadings = torch.nn.Linear(rank, n_output, bias=False)
        # start from the intrinsic decoder alone; the niche response grows from zero
        torch.nn.init.zeros_(self.gene_loadings.weight)
        self.n_types = n_types
        # (type, niche dimension) -> gene; row t * n_latent_spatial + j belongs to type t
        self.type_niche_loadings = (
            torch.nn.Parameter(torch.zeros(n_types * n_latent_spatial, n_output)) if n_types > 0 else None
        )

    def forward(
        self,
        dispersion: str,
        z_s: torch.Tensor,
        library: torch.Tensor,
        *cat_list: torch.Tensor,
        type_probs: torch.Tensor | None = None,
    ):
        # Leading dimensions (cells, or posterior samples x cells) pass through unchanged.
        z, s = z_s[..., : self.n_latent], z_s[..., self.n_latent :]
        px_scale, px_r, _, px_dropout = self.intrinsic(dispersion, z, library, *cat_list)
        niche = self.gene_loadings(self.state_directions(z) * self.niche_directions(s))
        if self.type_niche_loadings is not None:
            expected = (*z.shape[:-1], self.n_types)
            if type_probs is None or tuple(type_probs.shape) != expected:
                got = None if type_probs is None else tuple(type_probs.shape)
                raise ValueError(f"type_probs must have shape {expected}, got {got}.")
            gated = (type_probs.unsqueeze(-1) * s.unsqueeze(-2)).flatten(-2)
            niche = niche + gated @ self.type_niche_loadings
        px_scale = torch.softmax(torch.log(px_scale + 1e-12) + niche, dim=-1)
        return px_scale, px_r, torch.exp(library) * px_scale, px_dropout
