"""Vault worlds: a fifth set of held-back worlds, fixed on 2026-12-07 (night).

The sealed worlds judged the range of each gene's change that night, so every held-back set had judged a
change. These worlds are written before any change they will judge and nothing has been run on them; open
them once, for the next change, under a rule committed first. The same rules hold: do not edit them, add new
ones instead.

They recombine the family's factors with new seeds: a fibroblast ligand by contact, saturating, beside an
exponential hypoxia threshold; a T cell share over a short Gaussian with a threshold on three slides with
strong batch effects; vessel proximity over a long exponential on one deep slide with a 900-gene panel; and
two ligands at once (malignant over a Gaussian, myeloid by contact) in nests beside aggregates.
"""

from __future__ import annotations

from cellina.datasets.worlds._profiles import _ALL, _IMMUNE, _STROMA
from cellina.datasets.worlds._spec import Channel, Confounds, Layout, WorldSpec

VAULT: tuple[WorldSpec, ...] = (
    WorldSpec(
        name="vault_fibroblast_contact",
        description="a fibroblast ligand by contact (25 um), saturating, specificity 0.5, and hypoxia over an "
        "exponential 40 um with a threshold; immune aggregates and vessels; state confound",
        channels=(
            Channel(
                "stromal_signal",
                "ligand",
                "contact",
                25.0,
                "saturating",
                senders=("Fibroblast",),
                responders=_IMMUNE,
                n_genes=16,
                specificity=0.5,
            ),
            Channel("hypoxia", "gradient", "exponential", 40.0, "threshold", responders=_STROMA, n_genes=10),
        ),
        seed=601,
        n_cells=10000,
        n_genes=450,
        n_slides=2,
        depth=450.0,
        layout=Layout(aggregates=2.0, vessels=5.0),
        confounds=Confounds(state_shift=0.2),
    ),
    WorldSpec(
        name="vault_tcell_share",
        description="the T cell share over a Gaussian 12 um (reach ~36 um) with a threshold, specificity 0.4, "
        "small effects; malignant nests; 3 slides with batch sd 0.3; depth 200; size confound",
        channels=(
            Channel(
                "lymphocyte_share",
                "fraction",
                "gaussian",
                12.0,
                "threshold",
                senders=("T_cell",),
                responders=_ALL,
                n_genes=18,
                specificity=0.4,
                effect=(0.6, 1.2),
                threshold=0.4,
            ),
        ),
        seed=602,
        n_cells=11000,
        n_genes=350,
        n_slides=3,
        depth=200.0,
        batch_sd=0.3,
        layout=Layout(nests=1.5),
        confounds=Confounds(size_ratio=1.25),
    ),
    WorldSpec(
        name="vault_long_vessels",
        description="vessel proximity over an exponential 35 um (reach ~160 um), linear, on 22 genes; vessels; "
        "one slide; depth 600; 900 genes; subtype confound",
        channels=(Channel("perfusion", "structure", "exponential", 35.0, "linear", responders=_ALL, n_genes=22),),
        seed=603,
        n_cells=9000,
        n_genes=900,
        n_slides=1,
        depth=600.0,
        batch_sd=0.0,
        layout=Layout(vessels=10.0),
        confounds=Confounds(subtype_shift=0.7),
    ),
    WorldSpec(
        name="vault_two_ligands",
        description="a malignant ligand over a Gaussian 20 um, linear, and a myeloid ligand by contact (12 um), "
        "saturating, specificity 0.6; nests beside aggregates; depth 300; subtype and state confounds",
        channels=(
            Channel(
                "tumour_signal",
                "ligand",
                "gaussian",
                20.0,
                "linear",
                senders=("Malignant",),
                responders=_STROMA,
                n_genes=14,
            ),
            Channel(
                "myeloid_signal",
                "ligand",
                "contact",
                12.0,
                "saturating",
                senders=("Myeloid",),
                responders=_IMMUNE,
                n_genes=12,
                specificity=0.6,
            ),
        ),
        seed=604,
        n_cells=12000,
        n_genes=400,
        n_slides=2,
        depth=300.0,
        layout=Layout(nests=1.5, aggregates=1.5),
        confounds=Confounds(subtype_shift=0.6, state_shift=0.15),
    ),
)
