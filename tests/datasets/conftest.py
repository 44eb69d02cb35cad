"""Small worlds shared by the world tests, built once per session (each takes well under a second)."""

from __future__ import annotations

import anndata as ad
import pytest

from cellina.datasets import Channel, Confounds, Layout, WorldSpec, make_world

ALL = {"Epithelial": 0.6, "Fibroblast": 0.8, "Endothelial": 0.7, "T_cell": 1.0, "B_cell": 0.6, "Myeloid": 1.0}

# one channel of each sensed kind, kernel and dose across the two specs
LIGAND_SPEC = WorldSpec(
    name="test_ligand",
    description="contact malignant fraction (linear) and a Gaussian ligand (saturating)",
    channels=(
        Channel("frac", "fraction", "contact", 18.0, "linear", senders=("Malignant",), responders=ALL, n_genes=8),
        Channel("lig", "ligand", "gaussian", 20.0, "saturating", senders=("macro_repair",), responders=ALL, n_genes=8),
    ),
    seed=7,
    n_cells=2400,
    n_genes=150,
    n_slides=2,
    depth=400.0,
    layout=Layout(nests=2.0, aggregates=2.0),
    confounds=Confounds(subtype_shift=1.0, state_shift=0.2, size_ratio=1.3),
)
VESSEL_SPEC = WorldSpec(
    name="test_vessel",
    description="exponential vessel proximity (threshold) and a contact hypoxia gradient (linear)",
    channels=(
        Channel("perf", "structure", "exponential", 25.0, "threshold", responders=ALL, n_genes=8, threshold=0.4),
        Channel("hyp", "gradient", "contact", 30.0, "linear", responders=ALL, n_genes=6),
    ),
    seed=8,
    n_cells=2400,
    n_genes=120,
    n_slides=3,
    depth=300.0,
    batch_sd=0.4,
    layout=Layout(vessels=15.0),
)


@pytest.fixture(scope="session")
def ligand_spec() -> WorldSpec:
    return LIGAND_SPEC


@pytest.fixture(scope="session")
def vessel_spec() -> WorldSpec:
    return VESSEL_SPEC


@pytest.fixture(scope="session")
def ligand_world() -> ad.AnnData:
    return make_world(LIGAND_SPEC)


@pytest.fixture(scope="session")
def vessel_world() -> ad.AnnData:
    return make_world(VESSEL_SPEC)
