"""``cellina counterfactual edge|node`` on the shared two-slide model."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina.cli import main
from cellina.counterfactual import RANGE_DRAWS

HEALTHY_MYELOID = "domain == 'healthy' and coarse_type == 'Myeloid'"


@pytest.fixture(scope="module")
def edge_run(trained, hold_out):
    """The exported AnnData of an edge run with the published donor pool and two draws."""
    folder, model_dir = trained
    out = folder / "edge.h5ad"
    assert (
        main(
            [
                "counterfactual",
                "edge",
                str(model_dir),
                str(out),
                "--focal",
                HEALTHY_MYELOID,
                "--donors-neighbours-of",
                hold_out,
                "--exclude",
                "coarse_type == 'Myeloid'",
                "--n-neighbours",
                "10",
                "--n-draws",
                "2",
                "--seed",
                "4",
                "-q",
            ]
        )
        == 0
    )
    return ad.read_h5ad(out)


def _node(trained, name: str, rows: pd.DataFrame, *extra: str) -> ad.AnnData:
    folder, model_dir = trained
    shifts, out = folder / f"{name}.csv", folder / f"{name}.h5ad"
    rows.to_csv(shifts, index=False)
    assert (
        main(
            [
                "counterfactual",
                "node",
                str(model_dir),
                str(out),
                "--focal",
                "coarse_type == 'Myeloid'",
                "--shifts",
                str(shifts),
                "-q",
                *extra,
            ]
        )
        == 0
    )
    return ad.read_h5ad(out)


@pytest.fixture(scope="module")
def genes(trained):
    return list(ad.read_h5ad(trained[1] / "adata.h5ad").var_names[:5])


def _run(result: ad.AnnData) -> dict:
    provenance = result.uns["cellina"]["provenance"]
    return provenance["runs"][provenance["current_run"]]


def test_edge_marks_the_focal_cells(edge_run):
    expected = edge_run.obs.eval(HEALTHY_MYELOID).to_numpy()
    np.testing.assert_array_equal(edge_run.obs["cellina_counterfactual_cells"].to_numpy(), expected)


def test_edge_writes_finite_counts_and_their_spread(edge_run):
    focal = np.flatnonzero(edge_run.obs["cellina_counterfactual_cells"].to_numpy())
    cf = edge_run.layers["cellina_counterfactual"][focal].toarray()
    assert np.all(np.isfinite(cf)) and np.all(cf >= 0) and cf.sum() > 0
    assert edge_run.layers["cellina_counterfactual_std"].shape == edge_run.shape


def test_edge_stores_how_far_the_focal_niches_lie_from_training(edge_run):
    focal = edge_run.obs["cellina_counterfactual_cells"].to_numpy()
    novelty = edge_run.obs["cellina_niche_novelty"].to_numpy()
    assert np.isfinite(novelty[focal]).all() and ((novelty[focal] >= 0) & (novelty[focal] <= 100)).all()
    assert np.isnan(novelty[~focal]).all() and not edge_run.obs["cellina_outside_training"][~focal].any()
    n_outside = int(edge_run.obs["cellina_outside_training"].sum())
    assert edge_run.uns["cellina"]["provenance"]["n_outside_training"] == n_outside
    assert _run(edge_run)["novelty"]["n_outside_training"] == n_outside


def test_edge_records_what_the_model_saw_of_the_focal_type(edge_run):
    support = _run(edge_run)["support"]
    n_focal = int(edge_run.obs["cellina_counterfactual_cells"].sum())
    assert list(support["types"]) == ["Myeloid"] and list(support["n_focal"]) == [n_focal]
    # the model was trained with the tumour Myeloid cells held out
    obs = edge_run.obs
    assert list(support["n_training"]) == [int(((obs["coarse_type"] == "Myeloid") & (obs["domain"] != "tumour")).sum())]
    assert support["message"].startswith(f"Myeloid ({n_focal} focal cells): learnt from")


def test_edge_records_the_draws_without_excluded_donors(edge_run):
    run = _run(edge_run)
    assert run["perturbation"] == "edge" and run["seed"] == 4
    draws = run["donor_indices"]
    assert draws.shape == (2, int(edge_run.obs["cellina_counterfactual_cells"].sum()), 10)
    assert not np.isin(draws, np.flatnonzero(edge_run.obs["coarse_type"] == "Myeloid")).any()


def test_export_records_the_model_and_its_preset(edge_run):
    provenance = edge_run.uns["cellina"]["provenance"]
    assert provenance["model"]["class"] == "Cellina" and len(provenance["model"]["weights_sha256"]) == 64
    assert provenance["model"]["preset"] == "recommended"
    assert _run(edge_run)["parameters"]["preset"] == "recommended"
    assert provenance["keys"]["labels_key"] == "coarse_type"


def test_export_leaves_out_registration_columns(edge_run):
    assert not [c for c in edge_run.obs.columns if c.startswith("_scvi")]


def test_observed_neighbour_pool_works_without_a_held_out_training(trained, tmp_path, tiny_training, cli_tissue):
    model_dir = tmp_path / "plain"
    assert main(["train", str(cli_tissue), str(model_dir), *tiny_training, "--max-epochs", "1"]) == 0
    assert "spatial_connectivities_orig" not in ad.read_h5ad(model_dir / "adata.h5ad").obsp
    out = tmp_path / "edge.h5ad"
    assert (
        main(
            [
                "counterfactual",
                "edge",
                str(model_dir),
                str(out),
                "--focal",
                HEALTHY_MYELOID,
                "--donors-neighbours-of",
                "domain == 'tumour'",
                "--n-neighbours",
                "5",
                "-q",
            ]
        )
        == 0
    )
    assert _run(ad.read_h5ad(out))["donor_indices"].shape[-1] == 5


def test_node_at_a_fixed_library_size(trained, genes):
    result = _node(
        trained, "node", pd.DataFrame({"gene": genes[:3], "value": [1.0, -1.0, 2.0]}), "--library-size", "1e4"
    )
    focal = np.flatnonzero(result.obs["cellina_counterfactual_cells"].to_numpy())
    totals = result.layers["cellina_counterfactual"][focal].sum(axis=1)
    np.testing.assert_allclose(np.asarray(totals).ravel(), 1e4, rtol=1e-3)


def test_node_records_the_shift_table(trained, genes):
    result = _node(trained, "node_record", pd.DataFrame({"gene": genes[:3], "value": [1.0, -1.0, 2.0]}))
    run = _run(result)
    assert run["novelty"]["n_focal"] == int(result.obs["cellina_counterfactual_cells"].sum())
    assert run["perturbation"] == "node"
    assert list(run["gene_shifts"]["gene"]) == genes[:3]
    np.testing.assert_array_equal(run["gene_shifts"]["value"], [1.0, -1.0, 2.0])


def test_node_shift_on_counts_differs_from_log_shift(trained, genes):
    rows = pd.DataFrame({"gene": genes, "value": 2.0})
    log = _node(trained, "node_log", rows)
    counts = _node(trained, "node_counts", rows, "--on-counts")
    assert bool(_run(log)["parameters"]["add_shift"]) and not bool(_run(counts)["parameters"]["add_shift"])
    assert not np.allclose(
        log.layers["cellina_counterfactual"].toarray(), counts.layers["cellina_counterfactual"].toarray()
    )


def test_node_senders_default_to_the_model_cell_types(trained, genes):
    rows = pd.DataFrame({"gene": genes[:2], "value": [2.0, 2.0], "senders": ["Myeloid", "T_cell;B_cell"]})
    run = _run(_node(trained, "node_senders", rows))
    assert run["parameters"]["sender_key"] == "coarse_type"


def test_node_senders_change_the_prediction(trained, genes):
    everyone = _node(trained, "node_all", pd.DataFrame({"gene": genes, "value": 2.0}))
    only = _node(trained, "node_epi", pd.DataFrame({"gene": genes, "value": 2.0, "senders": "Epithelial"}))
    assert not np.allclose(
        everyone.layers["cellina_counterfactual"].toarray(), only.layers["cellina_counterfactual"].toarray()
    )


def test_bad_shift_file_is_named(trained, capsys):
    folder, model_dir = trained
    bad = folder / "bad.csv"
    bad.write_text("name,amount\nX,1\n")
    code = main(
        [
            "counterfactual",
            "node",
            str(model_dir),
            str(folder / "x.h5ad"),
            "--focal",
            "coarse_type == 'Myeloid'",
            "--shifts",
            str(bad),
            "-q",
        ]
    )
    assert code == 2
    assert "bad.csv" in capsys.readouterr().err


def test_empty_focal_selection_is_an_error(trained, capsys):
    folder, model_dir = trained
    code = main(
        [
            "counterfactual",
            "edge",
            str(model_dir),
            str(folder / "x.h5ad"),
            "--focal",
            "coarse_type == 'Unicorn'",
            "--donors",
            "domain == 'tumour'",
            "-q",
        ]
    )
    assert code == 2
    assert "Unicorn" in capsys.readouterr().err


def test_edge_divides_the_niche_change_by_its_reliability_on_request(edge_run, trained, hold_out):
    assert _run(edge_run)["parameters"]["disattenuate"] is False
    folder, model_dir = trained
    out = folder / "edge_disattenuated.h5ad"
    args = ["counterfactual", "edge", str(model_dir), str(out), "--focal", HEALTHY_MYELOID]
    args += ["--donors-neighbours-of", hold_out, "--exclude", "coarse_type == 'Myeloid'"]
    assert main([*args, "--n-neighbours", "10", "--n-draws", "2", "--seed", "4", "--disattenuate", "-q"]) == 0
    result = ad.read_h5ad(out)
    assert _run(result)["parameters"]["disattenuate"] is True

    def layer(adata, key):
        return adata.layers[key].toarray()

    np.testing.assert_array_equal(layer(result, "cellina_factual"), layer(edge_run, "cellina_factual"))
    changed = np.abs(layer(result, "cellina_counterfactual") - layer(edge_run, "cellina_counterfactual"))
    assert changed.max() > 1e-3


def test_edge_records_what_its_spread_describes(edge_run, trained, capsys):
    assert _run(edge_run)["parameters"]["uncertainty"] == "donors"
    folder, model_dir = trained
    args = ["counterfactual", "edge", str(model_dir), str(folder / "y.h5ad"), "--focal", HEALTHY_MYELOID]
    with pytest.raises(SystemExit) as stop:
        main([*args, "--donors", "domain == 'tumour'", "--uncertainty", "latents", "-q"])
    assert stop.value.code == 2
    assert "'latents'" in capsys.readouterr().err


def _as_the_cli_ran(model_dir, out):
    """The saved model, its AnnData, the healthy Myeloid focal cells and the donor pool an edge run recorded."""
    import cellina

    adata = ad.read_h5ad(model_dir / "adata.h5ad")
    model = cellina.model.load_model(str(model_dir), adata=adata)
    pool = ad.read_h5ad(out).uns["cellina"]["provenance"]["runs"]["edge 1"]["parameters"]["donor_pool"]
    return model, adata, np.flatnonzero(adata.obs.eval(HEALTHY_MYELOID).to_numpy()), pool


def test_edge_writes_the_borrowed_change_on_request(trained, hold_out):
    folder, model_dir = trained
    out, table_path = folder / "edge_borrowed.h5ad", folder / "borrowed.csv"
    args = ["counterfactual", "edge", str(model_dir), str(out), "--focal", HEALTHY_MYELOID]
    args += ["--donors-neighbours-of", hold_out, "--exclude", "coarse_type == 'Myeloid'", "--n-neighbours", "10"]
    assert main([*args, "--seed", "4", "--borrowed-csv", str(table_path), "--borrow-weight", "0.5", "-q"]) == 0
    table = pd.read_csv(table_path, index_col=0)
    assert list(table.columns) == ["own_lfc", "others_lfc", "borrowed_lfc"]
    np.testing.assert_allclose(table["borrowed_lfc"], 0.5 * (table["own_lfc"] + table["others_lfc"]), atol=1e-6)
    parameters = _run(ad.read_h5ad(out))["parameters"]
    assert parameters["borrow_weight"] == 0.5 and parameters["borrowed_csv"] == str(table_path)
    assert "Myeloid" not in parameters["borrowed_reference_cells"]
    # the same table from Python, with the CLI's donor pool and draws
    model, adata, focal, pool = _as_the_cli_ran(model_dir, out)
    again = model.borrowed_counterfactual_change(
        focal, pool, adata=adata, weight=0.5, n_neighbours=10, n_draws=1, seed=4
    )
    np.testing.assert_allclose(table.to_numpy(), again.to_numpy(), atol=1e-5)


def test_edge_writes_the_change_range_on_request(trained, hold_out):
    folder, model_dir = trained
    out, table_path = folder / "edge_range.h5ad", folder / "range.csv"
    args = ["counterfactual", "edge", str(model_dir), str(out), "--focal", HEALTHY_MYELOID, "--n-draws", "2"]
    args += ["--donors-neighbours-of", hold_out, "--exclude", "coarse_type == 'Myeloid'", "--n-neighbours", "10"]
    assert main([*args, "--seed", "4", "--range-csv", str(table_path), "--min-reference-cells", "5", "-q"]) == 0
    table = pd.read_csv(table_path, index_col=0)
    assert list(table.columns) == ["lfc", "lfc_corrected", "draw_spread", "checked_error", "low", "high"]
    assert (table["low"] <= table[["lfc", "lfc_corrected"]].min(axis=1)).all()
    assert (table["high"] >= table[["lfc", "lfc_corrected"]].max(axis=1)).all()
    parameters = _run(ad.read_h5ad(out))["parameters"]
    assert parameters["range_csv"] == str(table_path)
    # the range draws as often as it was judged, more than the run's --n-draws 2
    assert parameters["range_n_draws"] == RANGE_DRAWS == 5
    # the same table from Python, with the CLI's donor pool
    model, adata, focal, pool = _as_the_cli_ran(model_dir, out)
    again = model.counterfactual_change_range(
        focal, pool, adata=adata, n_neighbours=10, n_draws=RANGE_DRAWS, seed=4, min_reference_cells=5
    )
    np.testing.assert_allclose(table.to_numpy(), again.to_numpy(), atol=1e-5)
    assert {k: dict(v) for k, v in parameters["range_checked_types"].items()} == again.attrs["checked_types"]


def test_a_range_that_cannot_be_checked_leaves_no_file_behind(trained):
    folder, model_dir = trained
    out, borrowed_path, range_path = folder / "unchecked.h5ad", folder / "b_unchecked.csv", folder / "r_unchecked.csv"
    args = ["counterfactual", "edge", str(model_dir), str(out), "--focal", HEALTHY_MYELOID, "-q"]
    # every donor is malignant, a type with no healthy cells: the borrowed table can be made, the range cannot
    args += ["--donors", "coarse_type == 'Malignant'", "--n-neighbours", "5", "--min-reference-cells", "5"]
    assert main([*args, "--borrowed-csv", str(borrowed_path), "--range-csv", str(range_path)]) == 2
    assert not out.exists() and not borrowed_path.exists() and not range_path.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--min-reference-cells", "5"], "--min-reference-cells needs --borrowed-csv or --range-csv"),
        (["--range-csv", "t.csv", "--borrowed-csv", "t.csv"], "give each table its own file"),
        (["--range-csv", "r.csv", "--anchor"], "--range-csv works with pooled rewiring only"),
        (["--range-csv", "r.txt"], "--range-csv 'r.txt' must end in '.csv'"),
        (["--range-csv", "r.csv", "--min-reference-cells", "0"], "--min-reference-cells 0 must be at least 1"),
        (["--borrow-weight", "0.5"], "--borrow-weight needs --borrowed-csv"),
        (["--borrowed-csv", "b.csv", "--borrow-weight", "1.5"], "weight=1.5"),
        (["--borrowed-csv", "b.csv", "--anchor"], "pooled rewiring only"),
        (["--borrowed-csv", "b.txt"], "must end in '.csv'"),
    ],
)
def test_bad_borrowing_options_are_refused_before_running(trained, capsys, extra, message):
    folder, model_dir = trained
    args = ["counterfactual", "edge", str(model_dir), str(folder / "never.h5ad"), "--focal", HEALTHY_MYELOID]
    assert main([*args, "--donors", "domain == 'tumour'", *extra, "-q"]) == 2
    assert message in capsys.readouterr().err
    assert not (folder / "never.h5ad").exists()
