"""Locked worlds: a sixth set of held-back worlds, fixed on 2026-12-08.

The vault worlds judged a narrower range of each gene's change that morning, so every held-back set had
judged a change. These worlds are written before any change they will judge and nothing has been run on
them; open them once, for the next change, under a rule committed first. The same rules hold: do not edit
them, add new ones instead.

They recombine the family's factors with new seeds: a myeloid ligand over a short exponential beside a
morphogen over a wide Gaussian; the endothelial share by contact, saturating, on three slides with batch
effects; the malignant share over a long Gaussian with a threshold on one slide; and an activated-fibroblast
ligand with vessel proximity at low depth among nests and aggregates.
"""

from __future__ import annotations

from cellina.datasets.worlds._profiles import _ALL, _IMMUNE, _STROMA
from cellina.datasets.worlds._spec import Channel, Confounds, Layout, WorldSpec

LOCKED: tuple[WorldSpec, ...] = (
    WorldSpec(
        name="locked_myeloid_morphogen",
        description="a myeloid ligand over an exponential 10 um (reach ~46 um), linear, specificity 0.6, and a "
        "morphogen over a Gaussian 35 um, saturating; immune aggregates; subtype confound",
        channels=(
            Channel(
                "myeloid_signal",
                "ligand",
                "exponential",
                10.0,
                "linear",
                senders=("Myeloid",),
                responders=_STROMA,
                n_genes=14,
                specificity=0.6,
            ),
            Channel("morphogen", "gradient", "gaussian", 35.0, "saturating", responders=_ALL, n_genes=12),
        ),
        seed=701,
        n_cells=10000,
        n_genes=500,
        n_slides=2,
        depth=500.0,
        gradient="morphogen",
        layout=Layout(aggregates=1.5),
        confounds=Confounds(subtype_shift=0.8),
    ),
    WorldSpec(
        name="locked_endothelial_contact",
        description="the endothelial share by contact (15 um), saturating, specificity 0.5; vessels; 3 slides "
        "with batch sd 0.2; depth 250; state confound",
        channels=(
            Channel(
                "vascular_share",
                "fraction",
                "contact",
                15.0,
                "saturating",
                senders=("Endothelial",),
                responders=_IMMUNE,
                n_genes=18,
                specificity=0.5,
            ),
        ),
        seed=702,
        n_cells=11000,
        n_genes=400,
        n_slides=3,
        depth=250.0,
        batch_sd=0.2,
        layout=Layout(vessels=8.0),
        confounds=Confounds(state_shift=0.2),
    ),
    WorldSpec(
        name="locked_long_malignant",
        description="the malignant share over a Gaussian 40 um (reach ~120 um) with a threshold; malignant "
        "nests; one slide; depth 700; 600 genes; size confound",
        channels=(
            Channel(
                "tumour_share",
                "fraction",
                "gaussian",
                40.0,
                "threshold",
                senders=("Malignant",),
                responders=_ALL,
                n_genes=16,
                threshold=0.5,
            ),
        ),
        seed=703,
        n_cells=9000,
        n_genes=600,
        n_slides=1,
        depth=700.0,
        batch_sd=0.0,
        layout=Layout(nests=2.0),
        confounds=Confounds(size_ratio=1.4),
    ),
    WorldSpec(
        name="locked_low_fibroblast",
        description="an activated-fibroblast ligand over a Gaussian 15 um, linear, specificity 0.5, and vessel "
        "proximity by contact (20 um) with a threshold; nests and aggregates; depth 150; subtype and state "
        "confounds",
        channels=(
            Channel(
                "stromal_signal",
                "ligand",
                "gaussian",
                15.0,
                "linear",
                senders=("fib_activated",),
                responders=_ALL,
                n_genes=14,
                specificity=0.5,
                effect=(0.8, 1.6),
            ),
            Channel("perfusion", "structure", "contact", 20.0, "threshold", responders=_STROMA, n_genes=10),
        ),
        seed=704,
        n_cells=12000,
        n_genes=300,
        n_slides=2,
        depth=150.0,
        layout=Layout(nests=1.5, aggregates=1.5, vessels=6.0),
        confounds=Confounds(subtype_shift=0.5, state_shift=0.1),
    ),
)
