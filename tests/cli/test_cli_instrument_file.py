"""The command line on an instrument-style file: counts in X, pixel coordinates in obs, the
instrument's own column names (CosMx: ``CenterX_global_px``, ``ist``, ``typ``, ``sid``)."""

from __future__ import annotations

import contextlib
import io

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellina.cli import main

PIXEL_SIZE = 0.12028


@pytest.fixture(scope="module")
def cosmx_file(tmp_path_factory):
    """A two-slide synthetic tissue rewritten with CosMx names and pixel coordinates."""
    from cellina.datasets import synthetic_tissue

    tissue = synthetic_tissue(n_cells=600, n_genes=100, n_slides=2, seed=5, store_means=False)
    xy = tissue.obsm["spatial"] / PIXEL_SIZE
    obs = pd.DataFrame(
        {
            "CenterX_global_px": xy[:, 0],
            "CenterY_global_px": xy[:, 1],
            "typ": tissue.obs["domain"].astype(str).to_numpy(),
            "ist": tissue.obs["coarse_type"].astype(str).to_numpy(),
            "sid": tissue.obs["slide"].astype(str).to_numpy(),
        },
        index=tissue.obs_names,
    )
    adata = ad.AnnData(X=tissue.layers["counts"].copy(), obs=obs, var=pd.DataFrame(index=tissue.var_names))
    path = tmp_path_factory.mktemp("cosmx") / "cosmx.h5ad"
    adata.write_h5ad(path)
    return path, tissue.obsm["spatial"]


def _train(path, out, *extra):
    return main(
        [
            "train",
            str(path),
            str(out),
            "--bandwidth",
            "20",
            "--max-neighbours",
            "20",
            "--max-epochs",
            "1",
            "--n-hidden",
            "16",
            "--n-latent",
            "4",
            "--accelerator",
            "cpu",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def cosmx_model(cosmx_file, tmp_path_factory):
    """(model folder, stderr of the run) of a training on the CosMx-style file with its pixel size."""
    out = tmp_path_factory.mktemp("cosmx_model") / "model"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _train(cosmx_file[0], out, "--pixel-size", str(PIXEL_SIZE), "--early-stopping") == 0
    return out, err.getvalue()


def test_pixel_coordinates_without_a_pixel_size_are_refused(cosmx_file, tmp_path, capsys):
    assert _train(cosmx_file[0], tmp_path / "m", "-q") == 2
    err = capsys.readouterr().err
    assert "look like pixels" in err and "--pixel-size" in err and "0.12028" in err


def test_keys_are_guessed_from_the_instrument_names(cosmx_model):
    line = next(text for text in cosmx_model[1].splitlines() if "guessed" in text)
    for option in (
        "--labels-key 'ist'",
        "--domains-key 'typ'",
        "--batch-key 'sid'",
        "--x-column 'CenterX_global_px'",
        "--y-column 'CenterY_global_px'",
    ):
        assert option in line


def test_the_graph_is_summarised(cosmx_model):
    assert "spatial graph median" in cosmx_model[1]


def test_coordinates_are_converted_to_micrometres(cosmx_model, cosmx_file):
    prepared = ad.read_h5ad(cosmx_model[0] / "adata.h5ad")
    np.testing.assert_allclose(prepared.obsm["spatial"], cosmx_file[1], rtol=1e-9)


def test_the_original_coordinate_names_are_kept(cosmx_model):
    keys = ad.read_h5ad(cosmx_model[0] / "adata.h5ad").uns["cellina"]["training"]["keys"]
    assert (keys["x_column"], keys["y_column"], keys["pixel_size"]) == (
        "CenterX_global_px",
        "CenterY_global_px",
        PIXEL_SIZE,
    )


def test_the_slide_is_the_batch(cosmx_model):
    from cellina.model import Cellina

    prepared = ad.read_h5ad(cosmx_model[0] / "adata.h5ad")
    assert Cellina.load(str(cosmx_model[0]), adata=prepared).summary_stats.n_batch == 2


def test_edge_and_node_run_on_the_instrument_model(cosmx_model, tmp_path):
    model_dir = cosmx_model[0]
    genes = list(ad.read_h5ad(model_dir / "adata.h5ad").var_names[:3])
    pd.DataFrame({"gene": genes, "value": 1.0}).to_csv(tmp_path / "s.csv", index=False)
    focal = "typ == 'healthy' and ist == 'Myeloid'"
    assert (
        main(
            [
                "counterfactual",
                "edge",
                str(model_dir),
                str(tmp_path / "e.h5ad"),
                "--focal",
                focal,
                "--donors-neighbours-of",
                "typ == 'tumour' and ist == 'Myeloid'",
                "--exclude",
                "ist == 'Myeloid'",
                "--n-neighbours",
                "5",
                "-q",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "counterfactual",
                "node",
                str(model_dir),
                str(tmp_path / "n.h5ad"),
                "--focal",
                focal,
                "--shifts",
                str(tmp_path / "s.csv"),
                "-q",
            ]
        )
        == 0
    )
    keys = ad.read_h5ad(tmp_path / "n.h5ad").uns["cellina"]["provenance"]["keys"]
    assert keys["x_column"] == "CenterX_global_px"


def test_a_missing_cell_type_column_is_named(cosmx_file, tmp_path, capsys):
    assert _train(cosmx_file[0], tmp_path / "m", "--labels-key", "celltype_fine", "--pixel-size", "0.12", "-q") == 2
    assert "--labels-key 'celltype_fine' is not an obs column" in capsys.readouterr().err
