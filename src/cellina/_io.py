"""File input and output shared by the command line and the napari plugin."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import anndata as ad
import pandas as pd


def write_h5ad_atomic(adata: ad.AnnData, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` without ever leaving a half-written file there.

    The data goes to a temporary file in the destination folder first and is
    renamed over ``path`` only once complete, so an interrupted or failed write
    leaves any previous file at ``path`` intact.
    """
    path = Path(path)
    if path.suffix != ".h5ad":
        raise ValueError(f"output file {str(path)!r} must end in '.h5ad'")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist")
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        adata.write_h5ad(tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_csv_atomic(frame: pd.DataFrame, path: str | os.PathLike, index: bool = True) -> Path:
    """Write ``frame`` as CSV to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"output folder {str(folder)!r} does not exist")
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w") as stream:
            frame.to_csv(stream, index=index)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def read_h5ad(path: str | os.PathLike) -> ad.AnnData:
    """Read an .h5ad file, with an error that names the file when it cannot be read."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    if path.suffix != ".h5ad":
        raise ValueError(f"{str(path)!r} is not an .h5ad file")
    try:
        return ad.read_h5ad(path)
    except OSError as err:
        raise ValueError(f"could not read {str(path)!r} as AnnData: {err}") from err
