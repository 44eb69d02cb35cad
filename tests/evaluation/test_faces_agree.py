"""The command line, the plugin's session and the evaluation protocol give the same counterfactuals.

The protocol trains a model (through ``train_model``, two slides, the slide as batch) and keeps
its predictions; the model is saved with its prepared AnnData, and ``cellina counterfactual`` and
a plugin session that loads the saved model run the same edge and node perturbations on it, with
the same cells, shifts and seed.
"""

from __future__ import annotations

import itertools

import anndata as ad
import numpy as np
import pytest

from cellina.cli import main
from cellina.counterfactual import GeneShifts
from cellina.evaluation import leave_one_out

N_PERT_GENES = 10
N_NEIGHBOURS = 10
_RUNS = itertools.count()  # one output file per command line run


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    """(result, model folder, data file marking the control cells and the donor pool)."""
    from cellina.datasets import synthetic_tissue

    tissue = synthetic_tissue(n_cells=1000, n_genes=100, n_slides=2, seed=4)
    res = leave_one_out(
        tissue,
        "Myeloid",
        methods=("cellina",),
        preset="recommended",
        batch_key="slide",
        library_key="slide",
        bandwidth=20.0,
        max_neighbours=30,
        n_deg=20,
        n_neighbours=N_NEIGHBOURS,
        n_pert_genes=N_PERT_GENES,
        energy=False,
        probes=False,
        model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
        train_kwargs={"max_epochs": 2, "batch_size": 256},
        return_models=True,
    )
    folder = tmp_path_factory.mktemp("faces")
    model = res.models["cellina"]
    model.save(str(folder / "model"), save_anndata=True)
    data = model.adata.copy()
    for name, cells in (("is_control", res.indices["control"]), ("in_pool", res.indices["neighbours"])):
        data.obs[name] = np.isin(np.arange(data.n_obs), cells)
    data.write_h5ad(folder / "data.h5ad")
    return res, folder


def _cli(folder, mode: str, *extra: str, layer: str = "cellina_counterfactual") -> np.ndarray:
    out = folder / f"{mode}_{next(_RUNS)}.h5ad"
    assert (
        main(
            [
                "counterfactual",
                mode,
                str(folder / "model"),
                str(out),
                "--data",
                str(folder / "data.h5ad"),
                "--focal",
                "is_control",
                "--seed",
                "0",
                "-q",
                *extra,
            ]
        )
        == 0
    )
    result = ad.read_h5ad(out)
    return result.layers[layer][np.flatnonzero(result.obs["is_control"])].toarray()


def test_the_protocol_trains_the_preset_it_is_given(protocol):
    assert protocol[0].models["cellina"].preset == "recommended"


def test_edge_counterfactuals_agree(protocol):
    res, folder = protocol
    cli = _cli(folder, "edge", "--donors", "in_pool", "--n-neighbours", str(N_NEIGHBOURS))
    np.testing.assert_allclose(cli, res.predictions[("edge", "cellina")], rtol=1e-5, atol=1e-6)


def _shifts(folder) -> GeneShifts:
    """The protocol's node shifts: each type's observed change, the held-out type given all others'."""
    work = ad.read_h5ad(folder / "data.h5ad")
    return GeneShifts.from_contrast(
        work, "coarse_type", "domain", "healthy", "tumour", n_genes=N_PERT_GENES, holdout="Myeloid", layer="counts"
    )


def test_node_counterfactuals_agree(protocol):
    res, folder = protocol
    _shifts(folder).to_csv(folder / "shifts.csv")
    cli = _cli(
        folder, "node", "--shifts", str(folder / "shifts.csv"), "--sender-key", "coarse_type", "--library-size", "1e4"
    )
    np.testing.assert_allclose(cli, res.predictions[("node", "cellina")], rtol=1e-5, atol=1e-6)


def test_edge_and_node_predictions_differ(protocol):
    predictions = protocol[0].predictions
    assert not np.allclose(predictions[("edge", "cellina")], predictions[("node", "cellina")])


@pytest.fixture(scope="module")
def session(protocol):
    """A plugin session (no viewer) holding the saved model, its focal cells and its donors."""
    from cellina.plugin._session import CellinaSession
    from cellina.plugin._state import DONORS, FOCAL, TissueKeys

    _, folder = protocol
    data = ad.read_h5ad(folder / "data.h5ad")
    keys = TissueKeys(cell_type_key="coarse_type", domain_key="domain", batch_key="slide")
    plugin = CellinaSession(data, keys)
    plugin.load_model(str(folder / "model"))
    plugin.set_selection(FOCAL, data.obs["is_control"].to_numpy())
    plugin.set_selection(DONORS, data.obs["in_pool"].to_numpy())
    return plugin


def test_the_plugin_gives_the_same_edge_counterfactuals(protocol, session):
    run = session.run_edge(pool="lasso", n_neighbours=N_NEIGHBOURS, seed=0)
    np.testing.assert_array_equal(run.indices, protocol[0].indices["control"])
    np.testing.assert_allclose(run.expression, protocol[0].predictions[("edge", "cellina")], rtol=1e-5, atol=1e-6)


def test_the_cli_and_the_plugin_give_the_same_posterior_spread(protocol, session):
    _, folder = protocol
    draws = ("--n-neighbours", str(N_NEIGHBOURS), "--n-draws", "2")
    options = ("--donors", "in_pool", *draws, "--uncertainty", "posterior")
    cli = _cli(folder, "edge", *options, layer="cellina_counterfactual_std")
    donors_only = _cli(folder, "edge", "--donors", "in_pool", *draws, layer="cellina_counterfactual_std")
    run = session.run_edge(pool="lasso", n_neighbours=N_NEIGHBOURS, n_draws=2, seed=0, uncertainty="posterior")
    np.testing.assert_allclose(cli, run.std, rtol=1e-4, atol=1e-5)
    assert cli.mean() > donors_only.mean()
    assert run.params["uncertainty"] == "posterior"
    from cellina.plugin._results import trust_summary
    from cellina.plugin._state import SessionError

    assert trust_summary(run)[0].startswith("2 draws of donors and of the model's posterior")
    with pytest.raises(SessionError, match="uncertainty='both'"):
        session.edge_job(pool="lasso", n_draws=2, uncertainty="both")


def test_the_cli_and_the_plugin_divide_the_niche_change_alike(protocol, session):
    from cellina.plugin._results import trust_summary

    _, folder = protocol
    options = ("--donors", "in_pool", "--n-neighbours", str(N_NEIGHBOURS))
    cli = _cli(folder, "edge", *options, "--disattenuate")
    run = session.run_edge(pool="lasso", n_neighbours=N_NEIGHBOURS, seed=0, disattenuate=True)
    np.testing.assert_allclose(cli, run.expression, rtol=1e-4, atol=1e-6)
    assert not np.allclose(run.expression, session.run_edge(pool="lasso", n_neighbours=N_NEIGHBOURS, seed=0).expression)
    assert "divided by its split-half reliability" in trust_summary(run)[0]


def test_the_plugin_gives_the_same_node_counterfactuals(protocol, session):
    res, folder = protocol
    session.set_gene_shifts(_shifts(folder))
    run = session.run_node(library_size=1e4)
    np.testing.assert_allclose(run.expression, res.predictions[("node", "cellina")], rtol=1e-4, atol=1e-5)
