"""The ``cellina`` command line: help, ``simulate``, ``view`` and how errors are reported."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

from cellina.cli import main


def test_help_lists_subcommands():
    result = subprocess.run([sys.executable, "-m", "cellina.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "simulate" in result.stdout and "view" in result.stdout


def test_simulate_help_describes_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--n-cells", "--n-genes", "--n-slides", "--seed", "--overwrite", "--debug"):
        assert option in text


def test_simulate_writes_a_readable_tissue(tmp_path, capsys):
    out = tmp_path / "tissue.h5ad"
    code = main(["simulate", str(out), "--n-cells", "800", "--n-genes", "150", "--n-slides", "2", "--seed", "3"])
    assert code == 0
    adata = ad.read_h5ad(out)
    assert adata.n_obs == 800 and adata.n_vars == 150
    assert set(adata.obs["slide"].unique()) == {"slide_0", "slide_1"}
    assert "counts" in adata.layers and "spatial" in adata.obsm
    assert "cellina_truth" in adata.uns
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"
    assert "wrote 800 cells" in capsys.readouterr().out


def test_simulate_is_deterministic_by_seed(tmp_path):
    paths = [tmp_path / f"t{i}.h5ad" for i in range(2)]
    for path in paths:
        assert main(["simulate", str(path), "--n-cells", "300", "--n-genes", "120", "--seed", "7", "-q"]) == 0
    first, second = (ad.read_h5ad(p) for p in paths)
    assert (first.X != second.X).nnz == 0
    np.testing.assert_array_equal(first.obsm["spatial"], second.obsm["spatial"])


def test_simulate_refuses_to_overwrite_without_flag(tmp_path, capsys):
    out = tmp_path / "tissue.h5ad"
    out.write_bytes(b"precious")
    assert main(["simulate", str(out), "--n-cells", "300", "--n-genes", "120", "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("bad", [["--n-cells", "0"], ["--n-cells", "-5"], ["--n-genes", "abc"]])
def test_simulate_rejects_bad_numbers(tmp_path, bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(tmp_path / "x.h5ad"), *bad])
    assert exit_info.value.code == 2
    assert bad[0] in capsys.readouterr().err


def test_simulate_rejects_wrong_suffix(tmp_path, capsys):
    code = main(["simulate", str(tmp_path / "tissue.csv"), "--n-cells", "300", "--n-genes", "120", "-q"])
    assert code == 2
    assert "tissue.csv" in capsys.readouterr().err


def test_simulate_rejects_missing_folder(tmp_path, capsys):
    code = main(["simulate", str(tmp_path / "nowhere" / "t.h5ad"), "--n-cells", "300", "--n-genes", "120", "-q"])
    assert code == 2
    assert "nowhere" in capsys.readouterr().err


def test_view_without_a_display_says_how_to_run_it(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(SystemExit, match="xvfb-run"):
        main(["view"])


def test_view_names_a_missing_file(monkeypatch, tmp_path):
    monkeypatch.setenv("DISPLAY", ":99")
    with pytest.raises(SystemExit, match="nowhere.h5ad"):
        main(["view", str(tmp_path / "nowhere.h5ad")])


# ------------------------------------------------------------------------------ errors


def _failing_simulate(monkeypatch, error: Exception) -> None:
    import cellina.datasets

    def fail(**_):
        raise error

    monkeypatch.setattr(cellina.datasets, "synthetic_tissue", fail)


def test_a_torch_runtime_error_is_one_line_without_traceback(monkeypatch, tmp_path, capsys):
    _failing_simulate(monkeypatch, RuntimeError("CUDA error: device-side assert\ntriggered somewhere deep"))
    code = main(["simulate", str(tmp_path / "t.h5ad"), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("cellina simulate: error: CUDA error: device-side assert triggered somewhere deep")
    assert "--debug" in err


def test_an_input_error_exits_with_status_2(monkeypatch, tmp_path, capsys):
    _failing_simulate(monkeypatch, KeyError("obs column 'x' is missing"))
    assert main(["simulate", str(tmp_path / "t.h5ad"), "-q"]) == 2
    assert capsys.readouterr().err == "cellina simulate: error: obs column 'x' is missing\n"


def test_debug_shows_the_traceback(monkeypatch, tmp_path):
    _failing_simulate(monkeypatch, RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        main(["simulate", str(tmp_path / "t.h5ad"), "-q", "--debug"])
