"""What a trained Cellina model answers: latents and expected expression, factual or perturbed.

The scvi-tools getters (``get_normalized_expression``, ``get_elbo``, ``get_marginal_ll``,
``get_reconstruction_error``, ...) come from scvi-tools' own mixins; this mixin adds the
latents of both encoders and decoding with niche features other than the registered ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.distributions import Poisson

from cellina.keys import OBSM

from ._constants import CELLINA_MODULE_KEYS as MK
from ._constants import CELLINA_REGISTRY_KEYS as RK
from ._validation import LatentRng, LibrarySize, as_indices, check_library_size, latent_streams

LatentKey = Literal["z", "s", "shifted", "s_perturbed"]
LATENT_KEYS = ("z", "s", "shifted", "s_perturbed")
Output = Literal["expression", "z", "s", "shifted"]


def rows_of(matrix: Any, idx: np.ndarray) -> np.ndarray:
    """Dense float32 rows ``idx`` of a dense, sparse or DataFrame matrix."""
    if isinstance(matrix, pd.DataFrame):
        return matrix.iloc[idx].to_numpy(dtype=np.float32)
    if sp.issparse(matrix):
        return sp.csr_matrix(matrix)[idx].toarray().astype(np.float32, copy=False)
    return np.asarray(matrix[idx], dtype=np.float32)


class CellinaGettersMixin:
    """Latents and expected expression of a trained :class:`~cellina.model.Cellina`."""

    # ------------------------------------------------------------------ minibatches
    def _minibatches(
        self,
        adata: AnnData,
        indices: np.ndarray,
        batch_size: int | None,
        spatial_x: np.ndarray | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        """scvi-tools minibatches of ``indices`` in order; ``spatial_x`` (rows aligned with
        ``indices``) replaces the registered niche features without touching ``adata``."""
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size or 1024, shuffle=False)
        start = 0
        for tensors in loader:
            n = tensors[REGISTRY_KEYS.X_KEY].shape[0]
            if spatial_x is not None:
                tensors = dict(tensors)
                tensors[RK.SPATIAL_KEY] = torch.as_tensor(spatial_x[start : start + n], dtype=torch.float32)
            start += n
            yield tensors

    def _check_spatial_x(self, spatial_x: Any, n_rows: int, where: str) -> np.ndarray:
        if sp.issparse(spatial_x):
            spatial_x = spatial_x.toarray()
        spatial_x = np.asarray(spatial_x, dtype=np.float32)
        expected = (n_rows, self.module.n_spatial)
        if spatial_x.shape != expected:
            raise ValueError(
                f"{where} must have shape {expected} to match the niche features the model was "
                f"trained on, got {spatial_x.shape}."
            )
        if not np.all(np.isfinite(spatial_x)):
            raise ValueError(f"{where} holds NaN or infinite values.")
        return spatial_x

    def _obsm_features(self, adata: AnnData, key: str, idx: np.ndarray) -> np.ndarray:
        if key not in adata.obsm:
            raise ValueError(
                f"adata.obsm[{key!r}] does not exist; write it first (e.g. with "
                "cellina.make_neighbor_perturbation(..., obsm_key_out=...))."
            )
        full = adata.obsm[key]
        if full.shape[0] != adata.n_obs:
            raise ValueError(f"adata.obsm[{key!r}] has {full.shape[0]} rows, expected {adata.n_obs}.")
        return self._check_spatial_x(rows_of(full, idx), len(idx), f"adata.obsm[{key!r}]")

    # ------------------------------------------------------------------ decoding
    @torch.inference_mode()
    def predict_from_niche(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        spatial_x: Any = None,
        output: Output = "expression",
        library_size: LibrarySize = "latent",
        batch_size: int | None = None,
        give_mean: bool = True,
        *,
        rng: LatentRng = None,
    ) -> np.ndarray:
        """Decode cells with their own ``z`` and library but the niche features ``spatial_x``.

        This is the step every counterfactual ends with: ``z`` and the library come from the
        registered counts, ``s`` is encoded from ``spatial_x`` (``None``: the registered niche
        features), and ``adata`` is left untouched.

        Parameters
        ----------
        adata
            Registered AnnData (``None``: the training data).
        indices
            Cells (positions or a boolean mask; ``None``: all).
        spatial_x
            ``(n_cells, n_spatial)`` niche features, rows aligned with ``indices``.
        output
            ``"expression"`` (expected counts), ``"z"``, ``"s"`` or ``"shifted"`` (``[z; s]``).
        library_size
            ``"latent"``/``"observed"``: each cell's own library; a number: counts scaled to
            that total per cell.
        batch_size
            Minibatch size.
        give_mean
            Posterior means (``True``) or one posterior sample.
        rng
            With ``give_mean=False``, where the sample's noise comes from: a
            :class:`numpy.random.Generator` or a seed, so the sample is reproducible
            (:meth:`~cellina.model.CellinaModule.draw_latents`), or a pair of them, the second
            drawing ``s`` apart from ``z`` and the library; ``None``: torch's global generator.

        Returns
        -------
        numpy.ndarray
            float32, one row per cell.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = as_indices(indices, adata.n_obs, "indices")
        if spatial_x is not None:
            spatial_x = self._check_spatial_x(spatial_x, len(idx), "spatial_x")
        return self._decode(adata, idx, batch_size, spatial_x, output, library_size, give_mean, rng)

    @torch.inference_mode()
    def predict_with_niche_latent(
        self,
        adata: AnnData | None,
        indices: Sequence[int] | np.ndarray | None,
        niche_latent: Any,
        library_size: LibrarySize = "latent",
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Expected counts of cells decoded with their own ``z`` and library and the niche latent given.

        Parameters
        ----------
        adata, indices
            As in :meth:`predict_from_niche`.
        niche_latent
            ``(n_cells, n_latent_spatial)`` values of ``s``, rows aligned with ``indices``; what a
            corrected counterfactual decodes (:func:`cellina.counterfactual.disattenuated_niche_latent`).
        library_size, batch_size
            As in :meth:`predict_from_niche`.
        """
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = as_indices(indices, adata.n_obs, "indices")
        values = np.asarray(niche_latent, dtype=np.float32)
        width = self.module.n_latent_spatial
        if values.shape != (idx.size, width):
            raise ValueError(f"niche_latent must have shape ({idx.size}, {width}), got {values.shape}.")
        if not np.isfinite(values).all():
            raise ValueError("niche_latent has NaN or infinite values.")
        return self._decode(adata, idx, batch_size, None, "expression", library_size, True, niche_latent=values)

    def _decode(
        self, adata, idx, batch_size, spatial_x, output, library_size, give_mean, rng=None, niche_latent=None
    ) -> np.ndarray:
        if output not in ("expression", "z", "s", "shifted"):
            raise ValueError(f"output={output!r}: use 'expression', 'z', 's' or 'shifted'.")
        scale = check_library_size(library_size) if output == "expression" else None
        streams = None if give_mean else latent_streams(rng)
        seeded = streams is not None
        self.module.eval()
        out, start = [], 0
        with torch.inference_mode():
            for tensors in self._minibatches(adata, idx, batch_size, spatial_x):
                inf = self.module.inference(**self.module._get_inference_input(tensors), give_mean=give_mean or seeded)
                if seeded:
                    inf = self.module.draw_latents(inf, *streams)
                if niche_latent is not None:
                    z = inf[MK.Z_KEY]
                    s = torch.as_tensor(niche_latent[start : start + z.shape[0]], dtype=z.dtype, device=z.device)
                    start += z.shape[0]
                    inf = {**inf, MK.S_KEY: s, MK.SHIFTED_KEY: torch.cat([z, s], dim=-1)}
                if output != "expression":
                    key = {"z": MK.Z_KEY, "s": MK.S_KEY, "shifted": MK.SHIFTED_KEY}[output]
                    out.append(inf[key].cpu().numpy())
                    continue
                gen = self.module.generative(**self.module._get_generative_input(tensors, inf))
                px = gen[MK.PX_KEY]
                # NB/ZINB expose the mean as ``mu``, Poisson as ``rate``; for ZINB this is the
                # mean of the negative-binomial part, as in scvi-tools' normalised expression.
                mean = px.rate if isinstance(px, Poisson) else px.mu
                values = mean if scale is None else px.scale * scale
                out.append(values.cpu().numpy())
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ latents
    @torch.inference_mode()
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        give_mean: bool = True,
        mc_samples: int = 5000,
        batch_size: int | None = None,
        return_dist: bool = False,
        latent_key: LatentKey = "shifted",
        perturbed_obsm_key: str = OBSM.PERTURBED_NICHE,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Posterior of the intrinsic latent ``z``, the spatial latent ``s``, or both joined.

        Parameters
        ----------
        adata
            Registered AnnData (``None``: the training data).
        indices
            Cells to use (``None``: all).
        give_mean
            Posterior mean (``True``) or one posterior sample. With ``spatial_decoding="mean"``
            ``s`` is its posterior mean either way.
        mc_samples
            Accepted for scvi-tools compatibility; the posteriors are Gaussian, so the mean is
            exact and no sampling is needed.
        batch_size
            Minibatch size.
        return_dist
            Return the posterior means and variances instead of a point.
        latent_key
            ``"shifted"`` (default, as published): ``[z; s]``, what the decoder reads; ``"z"``;
            ``"s"``; ``"s_perturbed"``: ``s`` encoded from the perturbed niche features in
            ``obsm[perturbed_obsm_key]`` (written by :func:`cellina.make_neighbor_perturbation`),
            i.e. where a node perturbation moves each cell.
        perturbed_obsm_key
            ``obsm`` key read by ``latent_key="s_perturbed"``.

        Returns
        -------
        numpy.ndarray or tuple
            ``(n_cells, dim)``; with ``return_dist`` the means and the variances.
        """
        if latent_key not in LATENT_KEYS:
            raise ValueError(f"latent_key must be one of {LATENT_KEYS}, got {latent_key!r}.")
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = as_indices(indices, adata.n_obs, "indices")
        spatial_x = self._obsm_features(adata, perturbed_obsm_key, idx) if latent_key == "s_perturbed" else None
        if not return_dist:
            output = "s" if latent_key == "s_perturbed" else latent_key
            return self._decode(adata, idx, batch_size, spatial_x, output, "latent", give_mean)
        self.module.eval()
        means, variances = [], []
        for tensors in self._minibatches(adata, idx, batch_size, spatial_x):
            inf = self.module.inference(**self.module._get_inference_input(tensors))
            parts = {"z": ("qzm", "qzv"), "s": ("qsm", "qsv"), "s_perturbed": ("qsm", "qsv")}
            pairs = [parts["z"], parts["s"]] if latent_key == "shifted" else [parts[latent_key]]
            means.append(torch.cat([inf[m] for m, _ in pairs], dim=-1).cpu().numpy())
            variances.append(torch.cat([inf[v] for _, v in pairs], dim=-1).cpu().numpy())
        return np.concatenate(means), np.concatenate(variances)

    # ------------------------------------------------------------------ factual and node perturbation
    def get_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        library_size: LibrarySize = "latent",
    ) -> np.ndarray:
        """Factual expected counts: each cell decoded from its own ``z`` and its own niche.

        This is the reference against which counterfactual changes are measured.

        Parameters
        ----------
        adata, indices, batch_size, library_size
            As in :meth:`predict_from_niche`.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_genes)`` float32.
        """
        return self.predict_from_niche(adata, indices, None, "expression", library_size, batch_size)

    def get_perturbed_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        spatial_obsm_key: str = OBSM.PERTURBED_NICHE,
        batch_size: int | None = None,
        library_size: LibrarySize = "latent",
    ) -> np.ndarray:
        """Expected counts when the niche features are read from ``obsm[spatial_obsm_key]``.

        ``z`` and the library still come from the registered counts; the registered niche
        features and ``adata`` itself are left untouched.

        Parameters
        ----------
        adata, indices, batch_size, library_size
            As in :meth:`predict_from_niche`.
        spatial_obsm_key
            ``obsm`` key of the perturbed niche features (same width as the trained ones).

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_genes)`` float32.
        """
        return self._from_obsm(adata, indices, spatial_obsm_key, "expression", library_size, batch_size)

    def get_perturbed_latents(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        spatial_obsm_key: str = OBSM.PERTURBED_NICHE,
        batch_size: int | None = None,
        give_mean: bool = True,
    ) -> np.ndarray:
        """Spatial latent ``s`` of the niche features in ``obsm[spatial_obsm_key]``.

        Returns
        -------
        numpy.ndarray
            ``(n_cells, n_latent_spatial)``.
        """
        return self._from_obsm(adata, indices, spatial_obsm_key, "s", "latent", batch_size, give_mean)

    def _from_obsm(self, adata, indices, key, output, library_size, batch_size, give_mean=True) -> np.ndarray:
        self._check_if_trained(warn=False)
        adata = self._validate_anndata(adata)
        idx = as_indices(indices, adata.n_obs, "indices")
        spatial_x = self._obsm_features(adata, key, idx)
        return self._decode(adata, idx, batch_size, spatial_x, output, library_size, give_mean)
