"""The command line and the evaluation protocol give the same counterfactuals for the same model.

The protocol trains a model (through ``train_model``, two slides, the slide as batch) and keeps
its predictions; the model is saved with its prepared AnnData, and ``cellina counterfactual``
runs the same edge and node perturbations on it, with the same cells, shifts and seed.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from cellina.cli import main
from cellina.counterfactual import GeneShifts
from cellina.evaluation import leave_one_out

N_PERT_GENES = 10
N_NEIGHBOURS = 10


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    """(result, model folder, data file marking the control cells and the donor pool)."""
    from cellina.datasets import synthetic_tissue

    tissue = synthetic_tissue(n_cells=1000, n_genes=100, n_slides=2, seed=4)
    res = leave_one_out(
        tissue, "Myeloid", methods=("cellina",), preset="recommended", batch_key="slide", library_key="slide",
        bandwidth=20.0, max_neighbours=30, n_deg=20, n_neighbours=N_NEIGHBOURS, n_pert_genes=N_PERT_GENES,
        energy=False, probes=False, model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
        train_kwargs={"max_epochs": 2, "batch_size": 256}, return_models=True,
    )
    folder = tmp_path_factory.mktemp("faces")
    model = res.models["cellina"]
    model.save(str(folder / "model"), save_anndata=True)
    data = model.adata.copy()
    for name, cells in (("is_control", res.indices["control"]), ("in_pool", res.indices["neighbours"])):
        data.obs[name] = np.isin(np.arange(data.n_obs), cells)
    data.write_h5ad(folder / "data.h5ad")
    return res, folder


def _cli(folder, mode: str, *extra: str) -> np.ndarray:
    out = folder / f"{mode}.h5ad"
    assert main(["counterfactual", mode, str(folder / "model"), str(out), "--data", str(folder / "data.h5ad"),
                 "--focal", "is_control", "--seed", "0", "-q", *extra]) == 0
    result = ad.read_h5ad(out)
    return result.layers["cellina_counterfactual"][np.flatnonzero(result.obs["is_control"])].toarray()


def test_the_protocol_trains_the_preset_it_is_given(protocol):
    assert protocol[0].models["cellina"].preset == "recommended"


def test_edge_counterfactuals_agree(protocol):
    res, folder = protocol
    cli = _cli(folder, "edge", "--donors", "in_pool", "--n-neighbours", str(N_NEIGHBOURS))
    np.testing.assert_allclose(cli, res.predictions[("edge", "cellina")], rtol=1e-5, atol=1e-6)


def test_node_counterfactuals_agree(protocol):
    res, folder = protocol
    work = ad.read_h5ad(folder / "data.h5ad")
    shifts = GeneShifts.from_contrast(work, "coarse_type", "domain", "healthy", "tumour", n_genes=N_PERT_GENES,
                                      holdout="Myeloid", layer="counts")
    shifts.to_csv(folder / "shifts.csv")
    cli = _cli(folder, "node", "--shifts", str(folder / "shifts.csv"), "--sender-key", "coarse_type",
               "--library-size", "1e4")
    np.testing.assert_allclose(cli, res.predictions[("node", "cellina")], rtol=1e-5, atol=1e-6)


def test_edge_and_node_predictions_differ(protocol):
    predictions = protocol[0].predictions
    assert not np.allclose(predictions[("edge", "cellina")], predictions[("node", "cellina")])
