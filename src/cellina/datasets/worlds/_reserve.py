"""Reserve worlds: a third set of held-back worlds, fixed on 2026-12-07 (night).

The confirmation worlds judged the borrowed and corrected answer that evening, so their per-pair
figures are known too and a later change could be fitted to them. These worlds are written before any
change they will judge and nothing has been run on them. The same rules hold: do not edit them, add new
ones instead.

Besides new seeds and recombined mechanisms, two of them let types answer with their own genes (high
specificity), where borrowing the other types' answer should hurt, so a change is judged where the
bets of the earlier rules fail as well as where they hold.
"""

from __future__ import annotations

from cellina.datasets.worlds._profiles import _ALL, _IMMUNE, _STROMA
from cellina.datasets.worlds._spec import Channel, Confounds, Layout, WorldSpec

RESERVE: tuple[WorldSpec, ...] = (
    WorldSpec(
        name="res_specific_ligand",
        description="types answer with their own genes (specificity 0.9): a myeloid ligand over a Gaussian 20 um "
        "with a threshold, and vessel proximity by contact (30 um), saturating; vessels; size confound",
        channels=(
            Channel(
                "myeloid_signal",
                "ligand",
                "gaussian",
                20.0,
                "threshold",
                senders=("Myeloid",),
                responders=_ALL,
                n_genes=24,
                specificity=0.9,
                threshold=0.4,
            ),
            Channel("perfusion", "structure", "contact", 30.0, "saturating", responders=_STROMA, n_genes=12),
        ),
        seed=401,
        n_cells=10000,
        n_genes=600,
        n_slides=2,
        depth=500.0,
        layout=Layout(vessels=8.0),
        confounds=Confounds(size_ratio=1.3),
    ),
    WorldSpec(
        name="res_long_gradient",
        description="hypoxia over an exponential 60 um (reach ~280 um), linear, and the fibroblast share by "
        "contact (12 um) with a threshold; vessels and aggregates; 3 slides; subtype confound",
        channels=(
            Channel("hypoxia", "gradient", "exponential", 60.0, "linear", responders=_ALL, n_genes=14),
            Channel(
                "stromal_contact",
                "fraction",
                "contact",
                12.0,
                "threshold",
                senders=("Fibroblast",),
                responders=_IMMUNE,
                n_genes=12,
                threshold=0.3,
            ),
        ),
        seed=402,
        n_cells=8000,
        n_genes=1000,
        n_slides=3,
        depth=300.0,
        layout=Layout(vessels=6.0, aggregates=1.5),
        confounds=Confounds(subtype_shift=1.0),
    ),
    WorldSpec(
        name="res_deep_nests",
        description="the malignant share over a Gaussian 15 um, saturating, and a morphogen over a Gaussian "
        "40 um, linear; malignant nests; depth 1,000; one slide; state confound",
        channels=(
            Channel(
                "tumour_share",
                "fraction",
                "gaussian",
                15.0,
                "saturating",
                senders=("Malignant",),
                responders=_STROMA,
                n_genes=14,
            ),
            Channel("morphogen", "gradient", "gaussian", 40.0, "linear", responders=_ALL, n_genes=12),
        ),
        seed=403,
        n_cells=9000,
        n_genes=900,
        n_slides=1,
        depth=1000.0,
        batch_sd=0.0,
        gradient="morphogen",
        layout=Layout(nests=2.5),
        confounds=Confounds(state_shift=0.3),
    ),
    WorldSpec(
        name="res_shallow_specific",
        description="types answer mostly with their own genes (specificity 0.6): an activated-fibroblast ligand "
        "by contact (20 um), linear; independent types; depth 100; strong slide effects",
        channels=(
            Channel(
                "growth",
                "ligand",
                "contact",
                20.0,
                "linear",
                senders=("fib_activated",),
                responders=_ALL,
                n_genes=20,
                specificity=0.6,
            ),
        ),
        seed=404,
        n_cells=12000,
        n_genes=300,
        n_slides=2,
        depth=100.0,
        batch_sd=0.3,
    ),
)
