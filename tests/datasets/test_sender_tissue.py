"""sender_receiver_tissue: receivers respond to the mean ligand of their sender neighbours only."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellina.datasets import SENDER_TISSUE_TYPES, sender_receiver_tissue


@pytest.fixture(scope="module")
def tissue():
    return sender_receiver_tissue(n_cells=2500, seed=0)


def _r2(x: np.ndarray, y: np.ndarray) -> float:
    design = np.c_[x, np.ones(len(x))]
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(1.0 - np.mean((y - design @ beta) ** 2) / np.var(y))


def test_layout_counts_and_truth(tissue):
    obs = tissue.obs
    assert tissue.shape == (2500, 40) and list(obs["cell_type"].cat.categories) == list(SENDER_TISSUE_TYPES)
    counts = tissue.layers["counts"].toarray()
    assert np.array_equal(counts, np.round(counts)) and counts.min() >= 0
    assert set(obs["slide"]) == {"slide0", "slide1"} and set(obs["domain"]) == {"lower", "upper"}
    types = obs["cell_type"].to_numpy()
    graph = (sp.csr_matrix(tissue.obsp["spatial_connectivities"]) != 0).astype(np.float64)
    assert np.all(np.diff(graph.indptr) == 10) and graph.diagonal().sum() == 0
    receivers = types == "Receiver"
    assert 0.07 < receivers.mean() < 0.13
    assert graph[receivers][:, receivers].nnz == 0  # no receiver reads another one
    # the truth, recomputed from the graph: the mean ligand level over the sender neighbours
    senders = (types == "Sender").astype(np.float64)
    n_senders = graph @ senders
    total = graph @ (obs["ligand_level"].to_numpy() * senders)
    expected = np.where(receivers & (n_senders > 0), total / np.maximum(n_senders, 1), 0.0)
    np.testing.assert_allclose(obs["sender_ligand_mean"].to_numpy(), expected)
    np.testing.assert_array_equal(obs["n_sender_neighbours"].to_numpy(), n_senders)
    assert n_senders[receivers].min() == 0 and n_senders[receivers].max() >= 6  # the number of senders varies
    assert (obs["ligand_level"].to_numpy()[types == "Decoy"] > 0).all()  # decoys make the ligand too
    again = sender_receiver_tissue(n_cells=2500, seed=0)
    assert (again.X != tissue.X).nnz == 0
    assert (sender_receiver_tissue(n_cells=2500, seed=1).X != tissue.X).nnz > 0


def test_only_the_sender_mean_of_the_observed_ligand_predicts_the_response(tissue):
    """Attention is identified: the senders' mean ligand (observed counts) explains the response, a
    uniform mean over all neighbours does not, even with the fraction of senders beside it."""
    obs = tissue.obs
    types = obs["cell_type"].to_numpy()
    graph = (sp.csr_matrix(tissue.obsp["spatial_connectivities"]) != 0).astype(np.float64)
    ligand = np.log1p(tissue.X[:, (tissue.var["role"] == "ligand").to_numpy()].toarray()).mean(axis=1)
    response = np.log1p(tissue.X[:, (tissue.var["role"] == "response").to_numpy()].toarray()).mean(axis=1)
    senders = (types == "Sender").astype(np.float64)
    rec = np.flatnonzero((types == "Receiver") & (obs["n_sender_neighbours"].to_numpy() > 0))
    r = obs["sender_ligand_mean"].to_numpy()[rec]
    assert np.corrcoef(response[rec], r)[0, 1] > 0.7  # the receivers do respond
    n_senders = (graph @ senders)[rec]
    sender_mean = (graph @ (ligand * senders))[rec] / n_senders
    uniform = (graph @ ligand)[rec] / 10.0
    fraction = n_senders / 10.0
    assert _r2(sender_mean, r) > 0.8
    assert _r2(np.c_[uniform, fraction, uniform / fraction], r) < 0.5
    with pytest.raises(ValueError, match="receiver_share"):
        sender_receiver_tissue(n_cells=100, receiver_share=0.3)
