"""``cellina train --bandwidth auto``: the graph's reach chosen from the data's validation curve."""

from __future__ import annotations

import pytest

from cellina.cli import main


class _Captured(Exception):
    """Raised by the fake ``train_model`` once it has recorded the prepared AnnData."""


@pytest.fixture
def prepared_for_training(monkeypatch):
    """Replace ``train_model`` by a recorder of the AnnData it would train on."""
    import cellina.model

    seen: dict = {}

    def fake(adata, **kwargs):
        seen.update(kwargs, adata=adata)
        raise _Captured

    monkeypatch.setattr(cellina.model, "train_model", fake)
    return seen


def _auto_args(tissue, tmp_path, *extra):
    return [
        "train", str(tissue), str(tmp_path / "m"), "--bandwidth", "auto", "--labels-key", "coarse_type",
        "--batch-key", "slide", "--accelerator", "cpu", "--debug", *extra,
    ]  # fmt: skip


def test_auto_bandwidth_builds_the_graph_at_the_suggested_reach(cli_tissue, tmp_path, prepared_for_training, capsys):
    with pytest.raises(_Captured):
        main(_auto_args(cli_tissue, tmp_path))
    err = capsys.readouterr().err
    assert "<- suggested" in err and "suggested bandwidth" in err
    suggested_line = next(line for line in err.splitlines() if "<- suggested" in line)
    suggested = float(suggested_line.split("bandwidth")[1].split("um")[0])
    params = prepared_for_training["adata"].uns["spatial_neighbors"]["params"]
    assert params["bandwidth"] == pytest.approx(suggested, rel=1e-3)
    # the neighbour cap follows the suggestion, not the fixed default of 50
    assert params["n_neighbors"] != 50


def test_max_neighbours_given_wins_over_the_suggested_cap(cli_tissue, tmp_path, prepared_for_training):
    with pytest.raises(_Captured):
        main(_auto_args(cli_tissue, tmp_path, "--max-neighbours", "17", "-q"))
    assert prepared_for_training["adata"].uns["spatial_neighbors"]["params"]["n_neighbors"] == 17


def test_auto_bandwidth_without_cell_types_is_refused(cli_tissue, tmp_path, capsys):
    args = [a for a in _auto_args(cli_tissue, tmp_path, "-q") if a != "--debug"]
    args[args.index("coarse_type")] = "none"
    assert main(args) == 2
    assert "--bandwidth auto needs the cell types" in capsys.readouterr().err


def test_a_bandwidth_that_is_neither_a_number_nor_auto_is_refused(cli_tissue, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(cli_tissue), str(tmp_path / "m"), "--bandwidth", "wide"])
    assert "'auto'" in capsys.readouterr().err
