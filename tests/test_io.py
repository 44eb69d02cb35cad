"""Atomic writing and careful reading of .h5ad files."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from cellina._io import read_h5ad, write_h5ad_atomic


def _tiny() -> ad.AnnData:
    return ad.AnnData(np.arange(6, dtype=np.float32).reshape(3, 2))


def test_round_trip(tmp_path):
    path = write_h5ad_atomic(_tiny(), tmp_path / "a.h5ad")
    np.testing.assert_array_equal(read_h5ad(path).X, _tiny().X)
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5ad"]


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "a.h5ad"
    write_h5ad_atomic(_tiny(), path)
    before = path.read_bytes()

    def explode(self, filename, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        write_h5ad_atomic(_tiny(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5ad"]


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5ad"):
        read_h5ad(tmp_path / "missing.h5ad")
    junk = tmp_path / "junk.h5ad"
    junk.write_text("not hdf5")
    with pytest.raises(ValueError, match="junk.h5ad"):
        read_h5ad(junk)
    table = tmp_path / "table.csv"
    table.write_text("a,b")
    with pytest.raises(ValueError, match="table.csv"):
        read_h5ad(table)
