"""``cellina train``: what it saves, which preset and overrides it trains with, and how quiet it is."""

from __future__ import annotations

import anndata as ad
import pytest

from cellina.cli import main


def _train_args(tissue, tmp_path, *extra):
    return ["train", str(tissue), str(tmp_path / "m"), "--bandwidth", "25", "--accelerator", "cpu", "-q", *extra]


def test_train_writes_model_and_prepared_data(trained):
    _, model_dir = trained
    assert (model_dir / "model.pt").exists()
    prepared = ad.read_h5ad(model_dir / "adata.h5ad")
    assert "spatial_x" in prepared.obsm and "spatial_connectivities_orig" in prepared.obsp


def test_held_out_cells_leave_the_training_graph(trained, hold_out):
    prepared = ad.read_h5ad(trained[1] / "adata.h5ad")
    held = prepared.obs.eval(hold_out).to_numpy()
    assert prepared.obsp["spatial_connectivities"][held].nnz == 0
    assert prepared.obsp["spatial_connectivities_orig"][held].nnz > 0


def test_train_starts_from_the_recommended_preset(trained):
    from cellina.model import Cellina

    prepared = ad.read_h5ad(trained[1] / "adata.h5ad")
    model = Cellina.load(str(trained[1]), adata=prepared)
    assert model.preset == "recommended"
    assert model.module.spatial_decoding == "mean" and model.module.spatial_encoder == "linear"
    assert model.module.type_aware_discriminator and model.module.domain_counts_by_type.sum() > 0


def test_size_options_override_the_preset(trained):
    from cellina.model import Cellina, FactorisedNicheDecoder

    prepared = ad.read_h5ad(trained[1] / "adata.h5ad")
    decoder = Cellina.load(str(trained[1]), adata=prepared).module.decoder
    assert isinstance(decoder, FactorisedNicheDecoder) and decoder.gene_loadings.in_features == 3
    # type-gated (the preset's decoder): one niche map per coarse type, 4 latent dimensions each
    assert decoder.type_niche_loadings.shape == (4 * prepared.obs["coarse_type"].nunique(), prepared.n_vars)


def test_training_record_names_preset_keys_and_seed(trained, hold_out):
    record = ad.read_h5ad(trained[1] / "adata.h5ad").uns["cellina"]["training"]
    assert record["preset"] == "recommended" and record["seed"] == 0
    assert (record["keys"]["labels_key"], record["keys"]["batch_key"]) == ("coarse_type", "slide")
    assert record["hold_out"] == hold_out
    assert int(record["model_overrides"]["n_latent"]) == 4


def test_preset_option_reaches_train_model(cli_tissue, tmp_path, train_call):
    assert main(_train_args(cli_tissue, tmp_path, "--preset", "published")) == 1
    assert train_call["preset"] == "published"
    assert train_call["model_kwargs"] == {} and train_call["plan_kwargs"] == {}


def test_given_options_become_overrides(cli_tissue, tmp_path, train_call):
    main(
        _train_args(
            cli_tissue,
            tmp_path,
            "--spatial-decoding",
            "sample",
            "--no-type-aware-discriminator",
            "--spatial-encoder",
            "mlp",
            "--lr",
            "0.01",
        )
    )
    expected = {"spatial_decoding": "sample", "type_aware_discriminator": False, "spatial_encoder": "mlp"}
    assert train_call["model_kwargs"] == expected
    assert train_call["plan_kwargs"] == {"lr": 0.01}


def test_seed_and_held_out_cells_reach_train_model(cli_tissue, tmp_path, train_call, hold_out):
    main(_train_args(cli_tissue, tmp_path, "--seed", "5", "--hold-out", hold_out))
    adata = train_call["adata"]
    assert train_call["seed"] == 5
    assert sorted(train_call["heldout"]) == sorted(adata.obs.eval(hold_out).to_numpy().nonzero()[0])


def test_help_lists_what_each_preset_sets(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert "recommended: " in text and "published: " in text
    assert "spatial_kl_weight=1.0" in text and "spatial_kl_weight: Weight of KL(s)" in text


def test_train_without_features_or_bandwidth_is_an_error(cli_tissue, tmp_path, capsys):
    code = main(["train", str(cli_tissue), str(tmp_path / "m"), "--labels-key", "coarse_type", "-q"])
    assert code == 2
    assert "--bandwidth" in capsys.readouterr().err


def test_hold_out_needs_a_rebuilt_graph(trained, tmp_path, capsys, hold_out):
    prepared = trained[1] / "adata.h5ad"
    code = main(
        ["train", str(prepared), str(tmp_path / "m"), "--labels-key", "coarse_type", "--hold-out", hold_out, "-q"]
    )
    assert code == 2
    assert "--hold-out needs --bandwidth" in capsys.readouterr().err


def test_quiet_training_prints_nothing(make_tissue, tmp_path, capfd, tiny_training):
    tissue = make_tissue(n_cells=300, n_genes=100)
    tissue.write_h5ad(tmp_path / "t.h5ad")
    capfd.readouterr()
    assert (
        main(
            [
                "train",
                str(tmp_path / "t.h5ad"),
                str(tmp_path / "m"),
                *tiny_training[:6],
                "--max-epochs",
                "1",
                "--accelerator",
                "cpu",
                "-q",
            ]
        )
        == 0
    )
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_composition_puts_the_neighbours_types_in_the_niche_features(cli_tissue, tmp_path, train_call):
    main(_train_args(cli_tissue, tmp_path, "--labels-key", "coarse_type", "--composition", "added"))
    adata = train_call["adata"]
    record = adata.uns["cellina"]["spatial_features"]["spatial_x"]
    assert record["composition_key"] == "coarse_type"
    assert adata.obsm["spatial_x"].shape[1] == adata.n_vars + adata.obs["coarse_type"].nunique()


def test_composition_is_refused_where_it_cannot_act(trained, cli_tissue, tmp_path, capsys):
    prepared = trained[1] / "adata.h5ad"
    code = main(["train", str(prepared), str(tmp_path / "m"), "--labels-key", "coarse_type", "--composition", "only"])
    assert code == 2 and "--composition builds the niche features, so it needs --bandwidth" in capsys.readouterr().err
    code = main(
        _train_args(cli_tissue, tmp_path, "--labels-key", "coarse_type", "--model", "gcn", "--composition", "added")
    )
    assert code == 2 and "graph variant (--model gcn) does not read" in capsys.readouterr().err
