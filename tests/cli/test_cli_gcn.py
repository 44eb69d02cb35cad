"""``cellina train --model gcn`` and counterfactuals with the graph variant it saves."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina.cli import main


@pytest.fixture(scope="module")
def gcn_trained(cli_tissue, tmp_path_factory, tiny_training, hold_out):
    """(output folder, model folder) of a graph-variant model trained with the Myeloid tumour cells held out."""
    folder = tmp_path_factory.mktemp("cli_gcn")
    model_dir = folder / "model"
    options = [
        *tiny_training,
        "--model",
        "gcn",
        "--num-neighbors",
        "5",
        "3",
        "--link-prediction-weight",
        "0.5",
        "--seed-patches",
        "2",
    ]
    assert main(["train", str(cli_tissue), str(model_dir), "--hold-out", hold_out, *options]) == 0
    return folder, model_dir


def test_train_saves_the_graph_variant_with_its_options(gcn_trained, hold_out):
    from cellina.model import CellinaGCN, load_model

    prepared = ad.read_h5ad(gcn_trained[1] / "adata.h5ad")
    model = load_model(str(gcn_trained[1]), adata=prepared)
    assert isinstance(model, CellinaGCN) and model.preset == "recommended"
    assert tuple(model.fanouts_) == (5, 3) and model.module.link_prediction_weight == 0.5
    assert model.seed_patches == 2
    held = np.flatnonzero(prepared.obs.eval(hold_out).to_numpy())
    assert np.array_equal(np.sort(model.heldout_indices_), held)
    record = prepared.uns["cellina"]["training"]
    assert record["model"] == "gcn"
    assert [int(v) for v in record["model_overrides"]["num_neighbors"]] == [5, 3]


def test_counterfactuals_of_the_graph_variant_record_it(gcn_trained, hold_out):
    folder, model_dir = gcn_trained
    edge = folder / "edge.h5ad"
    focal = "domain == 'healthy' and coarse_type == 'Myeloid'"
    args = ["counterfactual", "edge", str(model_dir), str(edge), "--focal", focal]
    args += ["--donors-neighbours-of", hold_out, "--n-neighbours", "6", "-q"]
    assert main(args) == 0
    out = ad.read_h5ad(edge)
    provenance = out.uns["cellina"]["provenance"]
    assert provenance["model"]["class"] == "CellinaGCN" and provenance["model"]["variant"] == "gcn"
    run = provenance["runs"][provenance["current_run"]]
    assert run["parameters"]["model_variant"] == "gcn"
    genes = list(out.var_names[:2])
    shifts = folder / "shifts.csv"
    pd.DataFrame({"gene": genes, "value": [2.0, -1.0]}).to_csv(shifts, index=False)
    node = folder / "node.h5ad"
    args = ["counterfactual", "node", str(model_dir), str(node), "--focal", focal, "--shifts", str(shifts), "-q"]
    assert main(args) == 0
    assert ad.read_h5ad(node).uns["cellina"]["provenance"]["model"]["variant"] == "gcn"


def test_graph_options_need_the_graph_variant(cli_tissue, tmp_path, capsys):
    args = ["train", str(cli_tissue), str(tmp_path / "m"), "--bandwidth", "25", "--num-neighbors", "5", "-q"]
    assert main(args) == 2
    assert "--num-neighbors only apply to the graph variant; add --model gcn" in capsys.readouterr().err


def test_bad_seed_patches_are_named(cli_tissue, tmp_path, capsys):
    args = ["train", str(cli_tissue), str(tmp_path / "m"), "--model", "gcn", "--bandwidth", "25", "--seed-patches", "0"]
    assert main([*args, "-q"]) == 2
    assert "seed_patches=0 must be a positive int" in capsys.readouterr().err


def test_graph_variant_needs_a_graph_or_a_bandwidth(cli_tissue, tmp_path, capsys):
    args = ["train", str(cli_tissue), str(tmp_path / "m"), "--model", "gcn", "--labels-key", "coarse_type", "-q"]
    assert main(args) == 2
    assert "adata.obsp['spatial_connectivities'] (spatial graph) is missing" in capsys.readouterr().err
