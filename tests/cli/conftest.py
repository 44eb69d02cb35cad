"""A model trained once through ``cellina train`` on a two-slide tissue, shared by the CLI tests."""

from __future__ import annotations

import pytest

from cellina.cli import main

HOLD_OUT = "domain == 'tumour' and coarse_type == 'Myeloid'"
TINY_TRAINING = [
    "--labels-key",
    "coarse_type",
    "--domains-key",
    "domain",
    "--batch-key",
    "slide",
    "--bandwidth",
    "25",
    "--max-neighbours",
    "20",
    "--max-epochs",
    "2",
    "--batch-size",
    "256",
    "--n-hidden",
    "32",
    "--n-latent",
    "4",
    "--niche-rank",
    "3",
    "--accelerator",
    "cpu",
    "-q",
]


@pytest.fixture(scope="session")
def hold_out() -> str:
    """The obs query of the shared model's held-out cells."""
    return HOLD_OUT


@pytest.fixture(scope="session")
def tiny_training() -> list[str]:
    """Options of a tiny training run on the simulated tissue (two slides, the slide as batch)."""
    return list(TINY_TRAINING)


@pytest.fixture(scope="session")
def cli_tissue(tmp_path_factory):
    """A simulated two-slide tissue written by ``cellina simulate``."""
    path = tmp_path_factory.mktemp("cli_tissue") / "tissue.h5ad"
    assert (
        main(["simulate", str(path), "--n-cells", "900", "--n-genes", "100", "--n-slides", "2", "--seed", "2", "-q"])
        == 0
    )
    return path


@pytest.fixture(scope="session")
def trained(cli_tissue, tmp_path_factory):
    """(folder for outputs, model folder) of a model trained with the Myeloid tumour cells held out."""
    folder = tmp_path_factory.mktemp("cli")
    model_dir = folder / "model"
    assert main(["train", str(cli_tissue), str(model_dir), "--hold-out", HOLD_OUT, *TINY_TRAINING]) == 0
    return folder, model_dir


class _Captured(Exception):
    """Raised by the fake ``train_model`` once it has recorded its arguments."""


@pytest.fixture
def train_call(monkeypatch):
    """Replace ``train_model`` by a recorder: the dict receives the arguments of the call (the
    AnnData it would train on under ``"adata"``); ``cellina train`` then exits with status 1."""
    import cellina.model

    seen: dict = {}

    def fake(adata, **kwargs):
        seen.update(kwargs, adata=adata)
        raise _Captured

    monkeypatch.setattr(cellina.model, "train_model", fake)
    return seen
