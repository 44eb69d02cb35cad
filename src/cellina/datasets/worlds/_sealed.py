"""Sealed worlds: a fourth set of held-back worlds, fixed on 2026-12-07 (night).

The reserve worlds judged borrowing by default that night, so every held-back set had judged a change.
These worlds are written before any change they will judge and nothing has been run on them; open them
once, for the next change, under a rule committed first. The same rules hold: do not edit them, add new
ones instead.

They recombine the family's factors with new seeds: an endothelial share by contact with a threshold,
a B cell ligand over a wide Gaussian, a myeloid share over an exponential kernel, a very short malignant
ligand at low depth, and response genes shared between types to different degrees (specificity 0.3-0.7).
"""

from __future__ import annotations

from cellina.datasets.worlds._profiles import _ALL, _IMMUNE, _STROMA
from cellina.datasets.worlds._spec import Channel, Confounds, Layout, WorldSpec

SEALED: tuple[WorldSpec, ...] = (
    WorldSpec(
        name="sealed_contact_specific",
        description="the endothelial share by contact (18 um) with a threshold, specificity 0.7, and hypoxia "
        "over a Gaussian 30 um, linear; vessels; subtype confound",
        channels=(
            Channel(
                "vascular_contact",
                "fraction",
                "contact",
                18.0,
                "threshold",
                senders=("Endothelial",),
                responders=_ALL,
                n_genes=20,
                specificity=0.7,
                threshold=0.3,
            ),
            Channel("hypoxia", "gradient", "gaussian", 30.0, "linear", responders=_IMMUNE, n_genes=12),
        ),
        seed=501,
        n_cells=10000,
        n_genes=500,
        n_slides=2,
        depth=350.0,
        layout=Layout(vessels=8.0),
        confounds=Confounds(subtype_shift=0.9),
    ),
    WorldSpec(
        name="sealed_wide_ligand",
        description="a B cell ligand over a Gaussian 45 um (reach ~140 um), saturating; immune aggregates; one "
        "slide; depth 800; state confound",
        channels=(
            Channel(
                "b_signal",
                "ligand",
                "gaussian",
                45.0,
                "saturating",
                senders=("B_cell",),
                responders=_ALL,
                n_genes=16,
            ),
        ),
        seed=502,
        n_cells=7000,
        n_genes=700,
        n_slides=1,
        depth=800.0,
        batch_sd=0.0,
        layout=Layout(aggregates=2.5),
        confounds=Confounds(state_shift=0.25),
    ),
    WorldSpec(
        name="sealed_exponential_share",
        description="the myeloid share over an exponential 25 um (reach ~115 um), linear, specificity 0.5, and "
        "vessel proximity over a Gaussian 15 um with a threshold; vessels; 3 slides; size confound",
        channels=(
            Channel(
                "myeloid_share",
                "fraction",
                "exponential",
                25.0,
                "linear",
                senders=("Myeloid",),
                responders=_STROMA,
                n_genes=18,
                specificity=0.5,
            ),
            Channel("perfusion", "structure", "gaussian", 15.0, "threshold", responders=_ALL, n_genes=12),
        ),
        seed=503,
        n_cells=9000,
        n_genes=400,
        n_slides=3,
        depth=250.0,
        batch_sd=0.2,
        layout=Layout(vessels=6.0),
        confounds=Confounds(size_ratio=1.35),
    ),
    WorldSpec(
        name="sealed_low_nests",
        description="a malignant ligand over an exponential 6 um (reach ~28 um), linear, small effects on 10 "
        "genes; malignant nests; depth 120; subtype and state confounds",
        channels=(
            Channel(
                "tumour_signal",
                "ligand",
                "exponential",
                6.0,
                "linear",
                senders=("Malignant",),
                responders=_ALL,
                n_genes=10,
                effect=(0.5, 1.0),
            ),
        ),
        seed=504,
        n_cells=12000,
        n_genes=300,
        n_slides=2,
        depth=120.0,
        layout=Layout(nests=2.0),
        confounds=Confounds(subtype_shift=0.8, state_shift=0.2),
    ),
)
