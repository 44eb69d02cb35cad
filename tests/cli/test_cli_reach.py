"""``cellina train --bandwidth auto``: the graph's reach chosen from the data's validation curve."""

from __future__ import annotations

import re

import pytest

from cellina.cli import main


def _auto_args(tissue, tmp_path, *extra):
    return [
        "train", str(tissue), str(tmp_path / "m"), "--bandwidth", "auto", "--labels-key", "coarse_type",
        "--batch-key", "slide", "--accelerator", "cpu", *extra,
    ]  # fmt: skip


def test_auto_bandwidth_builds_the_graph_at_the_suggested_reach(cli_tissue, tmp_path, train_call, capsys):
    assert main(_auto_args(cli_tissue, tmp_path)) == 1  # the recorder stops before training
    err = capsys.readouterr().err
    assert "<- suggested" in err and "suggested bandwidth" in err
    suggested_line = next(line for line in err.splitlines() if "<- suggested" in line)
    suggested = float(suggested_line.split("bandwidth")[1].split("um")[0])
    cap = int(re.search(r"max neighbours (\d+)\)", err).group(1))
    params = train_call["adata"].uns["spatial_neighbors"]["params"]
    assert params["bandwidth"] == pytest.approx(suggested, rel=1e-3)
    # the neighbour cap follows the suggestion, not the fixed default of 50
    assert params["n_neighbors"] == cap != 50


def test_max_neighbours_given_wins_over_the_suggested_cap(cli_tissue, tmp_path, train_call):
    assert main(_auto_args(cli_tissue, tmp_path, "--max-neighbours", "17", "-q")) == 1
    assert train_call["adata"].uns["spatial_neighbors"]["params"]["n_neighbors"] == 17


def test_auto_bandwidth_without_cell_types_is_refused(cli_tissue, tmp_path, capsys):
    args = _auto_args(cli_tissue, tmp_path, "-q")
    args[args.index("coarse_type")] = "none"
    assert main(args) == 2
    assert "--bandwidth auto needs the cell types" in capsys.readouterr().err


def test_a_bandwidth_that_is_neither_a_number_nor_auto_is_refused(cli_tissue, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", str(cli_tissue), str(tmp_path / "m"), "--bandwidth", "wide"])
    assert "'auto'" in capsys.readouterr().err
