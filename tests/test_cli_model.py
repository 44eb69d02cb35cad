"""``cellina train`` and ``cellina counterfactual`` end to end on a tiny tissue."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina.cli import main

HOLD_OUT = "domain == 'tumour' and coarse_type == 'Myeloid'"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    tissue = folder / "tissue.h5ad"
    assert main(["simulate", str(tissue), "--n-cells", "900", "--n-genes", "100", "--n-slides", "2",
                 "--seed", "2", "-q"]) == 0
    model_dir = folder / "model"
    args = ["train", str(tissue), str(model_dir), "--bandwidth", "25", "--max-neighbours", "20", "--batch-key", "slide", "--library-key", "slide",
            "--hold-out", HOLD_OUT, "--max-epochs", "2", "--batch-size", "256", "--n-hidden", "32",
            "--n-latent", "4", "--niche-decoder", "type_gated", "--niche-rank", "3", "--spatial-decoding", "mean", "--type-aware-discriminator", "--accelerator", "cpu", "-q"]
    assert main(args) == 0
    return folder, model_dir


def test_train_writes_model_and_prepared_data(trained):
    _, model_dir = trained
    assert (model_dir / "model.pt").exists()
    prepared = ad.read_h5ad(model_dir / "adata.h5ad")
    assert "spatial_x" in prepared.obsm and "spatial_connectivities_orig" in prepared.obsp
    held = prepared.obs.eval(HOLD_OUT).to_numpy()
    assert prepared.obsp["spatial_connectivities"][held].nnz == 0
    from cellina.model import Cellina, FactorisedNicheDecoder

    module = Cellina.load(str(model_dir), adata=prepared).module
    assert module.spatial_decoding == "mean"
    assert module.type_aware_discriminator and module.domain_counts_by_type.sum() > 0
    decoder = module.decoder
    assert isinstance(decoder, FactorisedNicheDecoder) and decoder.gene_loadings.in_features == 3
    # type-gated: one niche map per coarse type (4 latent dimensions each)
    assert decoder.type_niche_loadings.shape == (4 * prepared.obs["coarse_type"].nunique(), prepared.n_vars)


def test_edge_counterfactual_writes_results_with_provenance(trained):
    folder, model_dir = trained
    out = folder / "edge.h5ad"
    code = main(["counterfactual", "edge", str(model_dir), str(out),
                 "--focal", "domain == 'healthy' and coarse_type == 'Myeloid'",
                 "--donors-neighbours-of", HOLD_OUT, "--exclude", "coarse_type == 'Myeloid'",
                 "--n-neighbours", "10", "--n-draws", "2", "--seed", "4", "-q"])
    assert code == 0
    result = ad.read_h5ad(out)
    focal = result.obs["cellina_counterfactual_cells"].to_numpy()
    expected = result.obs.eval("domain == 'healthy' and coarse_type == 'Myeloid'").to_numpy()
    np.testing.assert_array_equal(focal, expected)
    cf = result.layers["cellina_counterfactual"][np.flatnonzero(focal)].toarray()
    assert np.all(np.isfinite(cf)) and np.all(cf >= 0) and cf.sum() > 0
    assert result.layers["cellina_counterfactual_std"].shape == result.shape
    provenance = result.uns["cellina"]["provenance"]
    run = provenance["runs"][provenance["current_run"]]
    assert run["perturbation"] == "edge" and run["seed"] == 4
    draws = run["donor_indices"]
    assert draws.shape == (2, int(focal.sum()), 10)
    assert not np.isin(draws, np.flatnonzero(result.obs["coarse_type"] == "Myeloid")).any()
    assert provenance["model"]["class"] == "Cellina" and len(provenance["model"]["weights_sha256"]) == 64


def test_node_counterfactual_from_csv(trained):
    folder, model_dir = trained
    genes = ad.read_h5ad(model_dir / "adata.h5ad").var_names[:3]
    shifts = folder / "shifts.csv"
    pd.DataFrame({"gene": genes, "value": [1.0, -1.0, 2.0]}).to_csv(shifts, index=False)
    out = folder / "node.h5ad"
    code = main(["counterfactual", "node", str(model_dir), str(out), "--focal", "coarse_type == 'Myeloid'",
                 "--shifts", str(shifts), "--library-size", "1e4", "-q"])
    assert code == 0
    result = ad.read_h5ad(out)
    focal = np.flatnonzero(result.obs["cellina_counterfactual_cells"].to_numpy())
    totals = result.layers["cellina_counterfactual"][focal].sum(axis=1)
    np.testing.assert_allclose(np.asarray(totals).ravel(), 1e4, rtol=1e-3)
    provenance = result.uns["cellina"]["provenance"]
    assert provenance["runs"][provenance["current_run"]]["perturbation"] == "node"
    assert list(provenance["runs"]["node 1"]["gene_shifts"]) == list(genes)


def test_node_shift_on_counts_differs_from_log_shift(trained):
    folder, model_dir = trained
    genes = ad.read_h5ad(model_dir / "adata.h5ad").var_names[:5]
    shifts = folder / "up.csv"
    pd.DataFrame({"gene": genes, "value": 2.0}).to_csv(shifts, index=False)
    results = {}
    for name, extra in (("log", []), ("counts", ["--on-counts"])):
        out = folder / f"node_{name}.h5ad"
        assert main(["counterfactual", "node", str(model_dir), str(out), "--focal", "coarse_type == 'Myeloid'",
                     "--shifts", str(shifts), "-q", *extra]) == 0
        result = ad.read_h5ad(out)
        results[name] = result.layers["cellina_counterfactual"].toarray()
        run = result.uns["cellina"]["provenance"]["runs"]["node 1"]
        assert bool(run["parameters"]["add_shift"]) is (name == "log")
    assert not np.allclose(results["log"], results["counts"])


def test_bad_shift_file_is_named(trained, capsys):
    folder, model_dir = trained
    bad = folder / "bad.csv"
    bad.write_text("name,amount\nX,1\n")
    code = main(["counterfactual", "node", str(model_dir), str(folder / "x.h5ad"), "--focal",
                 "coarse_type == 'Myeloid'", "--shifts", str(bad), "-q"])
    assert code == 2
    assert "bad.csv" in capsys.readouterr().err


def test_empty_focal_selection_is_an_error(trained, capsys):
    folder, model_dir = trained
    code = main(["counterfactual", "edge", str(model_dir), str(folder / "x.h5ad"), "--focal",
                 "coarse_type == 'Unicorn'", "--donors", "domain == 'tumour'", "-q"])
    assert code == 2
    assert "Unicorn" in capsys.readouterr().err


def test_train_without_features_or_bandwidth_is_an_error(tmp_path, capsys):
    tissue = tmp_path / "t.h5ad"
    main(["simulate", str(tissue), "--n-cells", "300", "--n-genes", "100", "-q"])
    code = main(["train", str(tissue), str(tmp_path / "m"), "-q"])
    assert code == 2
    assert "--bandwidth" in capsys.readouterr().err
