"""A small tissue where the niche effect is a mean over one sender type only (attention is identified).

In :func:`cellina.datasets.synthetic_tissue` every niche effect is a weighted mean over *all* of a
cell's neighbours, which uniform attention computes exactly, so a graph-attention model has no
reason to attend to one neighbour type more than to another. Here receivers respond to the mean
ligand level of their *sender* neighbours only: the response does not depend on how many
non-sender neighbours a receiver has, and the number of senders per neighbourhood varies (their
share changes across the slide). Decoy cells make the same ligand genes, at random levels, and
receivers ignore them, so a uniform mean over the neighbours mixes the senders' ligand with the
decoys' and with the fraction of senders around a receiver. Receivers sit on a jittered grid, so
none is among another's neighbours and none can read the response off another receiver: the
senders' ligand is the only source of it in a receiver's neighbourhood.

Generative model (per cell ``i``, gene ``g``)::

    log mu_ig = b_g + marker_g(type_i) + ligand_g * level_i + response_g * [i is a receiver] * r_i
    r_i       = mean of level_j over the sender cells j among i's neighbours (0 if there are none)
    counts    ~ NegativeBinomial(mean = library_i * softmax_g(log mu_i), theta)

``level`` is a per-cell ligand level for senders and decoys (0 otherwise), uniform on ``[0, 1]``;
with ``domain_contrast = c`` the senders' level is ``(1 - c) u + c [upper half]`` instead, so the
response differs between the two domains. The neighbours are the ``n_neighbours`` nearest cells
of the same slide (the graph is stored in ``obsp["spatial_connectivities"]``, row ``i`` listing
the cells that reach cell ``i``). Nothing here imports ``cellina.spatial`` or ``cellina.model``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.datasets._graph import true_graph
from cellina.datasets._inputs import check_int, check_positive, check_real

#: cell types of :func:`sender_receiver_tissue`
SENDER_TISSUE_TYPES = ("Receiver", "Sender", "Decoy", "Bystander")
_N_MARKERS, _N_LIGAND, _N_RESPONSE = 5, 3, 8


def _layout(n: int, side: float, receiver_share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions and types of one slide's ``n`` cells.

    Receivers sit on a jittered square grid (one per ``1 / receiver_share`` cells' area), so that
    they are not among one another's nearest neighbours and none can read the response from
    another receiver; the other cells are placed uniformly at random. Along x the senders' share
    of the non-receivers grows from 5% to 50% and the decoys' falls from 35% to 10%.
    """
    spacing = 10.0 / np.sqrt(receiver_share)
    m = max(1, int(side // spacing))
    grid = (np.stack(np.meshgrid(np.arange(m), np.arange(m)), axis=-1).reshape(-1, 2) + 0.5) * (side / m)
    grid = grid[: min(len(grid), n // 2)] + rng.uniform(-0.1, 0.1, size=(min(len(grid), n // 2), 2)) * spacing
    others = rng.uniform(0.0, side, size=(n - len(grid), 2))
    x = others[:, 0] / side
    probabilities = np.stack([0.05 + 0.45 * x, 0.35 - 0.25 * x], axis=1)
    probabilities = np.c_[probabilities, 1.0 - probabilities.sum(axis=1)]
    other_types = 1 + (rng.random(x.size)[:, None] > np.cumsum(probabilities, axis=1)).sum(axis=1)
    return np.concatenate([grid, others]), np.concatenate([np.zeros(len(grid), dtype=np.int64), other_types])


def _sender_mean(graph: sp.csr_matrix, level: np.ndarray, is_sender: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ligand level over each cell's sender neighbours (0 without any), and their number."""
    adjacency = (graph != 0).astype(np.float64)
    n_senders = np.asarray(adjacency @ is_sender.astype(np.float64)).ravel()
    total = np.asarray(adjacency @ (level * is_sender)).ravel()
    return np.divide(total, n_senders, out=np.zeros_like(total), where=n_senders > 0), n_senders


def sender_receiver_tissue(
    n_cells: int = 2000,
    n_genes: int = 40,
    n_neighbours: int = 10,
    n_slides: int = 2,
    response: float = 2.0,
    library_size: float = 2000.0,
    theta: float = 20.0,
    receiver_share: float = 0.1,
    domain_contrast: float = 0.0,
    seed: int = 0,
):
    """A tissue whose receivers respond to the mean ligand level of their sender neighbours.

    See the module docstring for the generative model. The attention of a graph model is
    identified here: receivers should attend to their sender neighbours more than uniformly.

    Parameters
    ----------
    n_cells
        Number of cells, split evenly over the slides.
    n_genes
        Number of genes (at least 31: 5 markers per type, 3 ligand and 8 response genes).
    n_neighbours
        Neighbours per cell in the graph (k nearest cells of the same slide).
    n_slides
        Number of slides (``obs["slide"]``); no edge crosses slides.
    response
        Log-fold change of the response genes in a receiver whose sender neighbours all have
        ligand level 1.
    library_size
        Median total counts per cell.
    theta
        Negative-binomial inverse dispersion.
    receiver_share
        Receivers' share of the cells (at most 0.15, so that they stay out of one another's neighbourhoods).
    domain_contrast
        How much the senders' ligand level depends on the domain (0: not at all; see above).
    seed
        Seed of everything random.

    Returns
    -------
    anndata.AnnData
        Counts in ``X`` and ``layers["counts"]``; ``obs``: ``cell_type``, ``slide``, ``domain``
        (the lower and upper halves of each slide, of the same
        composition: the senders' share changes along x), ``ligand_level``,
        ``n_sender_neighbours`` and ``sender_ligand_mean`` (the receivers' ``r``);
        ``obsm["spatial"]``; ``obsp["spatial_connectivities"]``; ``var["role"]``.
    """
    import anndata as ad

    n_cells = check_int(n_cells, "n_cells", 10)
    n_genes = check_int(n_genes, "n_genes", 4 * _N_MARKERS + _N_LIGAND + _N_RESPONSE)
    n_neighbours = check_int(n_neighbours, "n_neighbours", 1)
    n_slides = check_int(n_slides, "n_slides", 1)
    domain_contrast = check_real(domain_contrast, "domain_contrast", 0.0, 1.0)
    receiver_share = check_real(receiver_share, "receiver_share", 0.0, 0.15, open_low=True)
    response = check_real(response, "response", 0.0, np.inf)
    library_size = check_positive(library_size, "library_size")
    theta = check_positive(theta, "theta")
    rng = np.random.default_rng(seed)
    side = 10.0 * np.sqrt(n_cells / n_slides)  # about one cell per 100 um^2
    slide = np.arange(n_cells) * n_slides // n_cells
    layouts = [_layout(int((slide == k).sum()), side, receiver_share, rng) for k in range(n_slides)]
    coords = np.concatenate([c for c, _ in layouts])
    types = np.concatenate([t for _, t in layouts])
    is_sender = types == 1
    upper = coords[:, 1] >= side / 2
    level = np.where(np.isin(types, (1, 2)), rng.random(n_cells), 0.0)
    level[is_sender] = (1.0 - domain_contrast) * level[is_sender] + domain_contrast * upper[is_sender]
    graph = true_graph(coords, slide, bandwidth=side, max_neighbours=n_neighbours, cutoff=0.0)
    r, n_senders = _sender_mean(graph, level, is_sender)

    role = np.array(["background"] * n_genes, dtype=object)
    for t in range(len(SENDER_TISSUE_TYPES)):
        role[t * _N_MARKERS : (t + 1) * _N_MARKERS] = f"marker_{SENDER_TISSUE_TYPES[t]}"
    start = len(SENDER_TISSUE_TYPES) * _N_MARKERS
    ligand = np.arange(start, start + _N_LIGAND)
    responsive = np.arange(start + _N_LIGAND, start + _N_LIGAND + _N_RESPONSE)
    role[ligand], role[responsive] = "ligand", "response"

    log_mu = np.broadcast_to(rng.uniform(0.0, 1.5, n_genes), (n_cells, n_genes)).copy()
    log_mu[np.arange(n_cells)[:, None], types[:, None] * _N_MARKERS + np.arange(_N_MARKERS)] += 2.5
    log_mu[:, ligand] += 3.0 * level[:, None] - 1.0
    log_mu[:, responsive] += response * (r * (types == 0))[:, None]
    probs = np.exp(log_mu - log_mu.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    library = library_size * np.exp(rng.normal(0.0, 0.2, n_cells))
    mean = probs * library[:, None]
    counts = rng.poisson(rng.gamma(theta, mean / theta)).astype(np.float32)

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(np.asarray(SENDER_TISSUE_TYPES)[types], categories=SENDER_TISSUE_TYPES),
            "slide": pd.Categorical([f"slide{s}" for s in slide]),
            "domain": pd.Categorical(np.where(upper, "upper", "lower")),
            "ligand_level": level,
            "n_sender_neighbours": n_senders.astype(np.int64),
            "sender_ligand_mean": np.where(types == 0, r, 0.0),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=obs,
        var=pd.DataFrame({"role": pd.Categorical(role)}, index=[f"gene{g}" for g in range(n_genes)]),
    )
    adata.layers["counts"] = adata.X.copy()
    adata.obsm["spatial"] = coords
    adata.obsp["spatial_connectivities"] = graph
    return adata
