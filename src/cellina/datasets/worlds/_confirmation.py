"""Confirmation worlds: a second set of held-back worlds, fixed on 2026-12-07.

By then three decision rules had been judged on the evaluation worlds, and their per-pair figures
(the model, the full reliability correction, the borrowed answer of the other types, the global
mean shift) were known. A later change built from those known figures (a share of a correction, a
combination of two) could be predicted on the evaluation worlds before running it, so they can no
longer judge it blind. These worlds are written before any such change and nothing has been run on
them; a change that the evaluation worlds cannot judge blind is reported here. The same rules hold:
do not edit them, add new ones instead.

Their mechanisms recombine the family's factors in ways no development or evaluation world has:
a malignant ligand by contact with a threshold, a structure sensed through an exponential kernel, a
lymphocyte share over a wide Gaussian with a threshold, a morphogen by contact, and new seeds.
"""

from __future__ import annotations

from cellina.datasets.worlds._profiles import _ALL, _IMMUNE, _STROMA
from cellina.datasets.worlds._spec import Channel, Confounds, Layout, WorldSpec

CONFIRMATION: tuple[WorldSpec, ...] = (
    WorldSpec(
        name="conf_contact_ligand",
        description="a malignant ligand by contact (14 um) with a threshold, and the lymphocyte share over a "
        "Gaussian 25 um, linear; malignant nests; cell-state confound",
        channels=(
            Channel(
                "tumour_signal",
                "ligand",
                "contact",
                14.0,
                "threshold",
                senders=("Malignant",),
                responders=_ALL,
                n_genes=14,
                threshold=0.3,
            ),
            Channel(
                "lymphoid",
                "fraction",
                "gaussian",
                25.0,
                "linear",
                senders=("T_cell", "B_cell"),
                responders=_STROMA,
                n_genes=12,
            ),
        ),
        seed=301,
        n_cells=11000,
        n_genes=350,
        n_slides=2,
        depth=400.0,
        layout=Layout(nests=2.0),
        confounds=Confounds(state_shift=0.3),
    ),
    WorldSpec(
        name="conf_vessels_hypoxia",
        description="vessel proximity over an exponential 45 um kernel (reach ~200 um), saturating, and hypoxia "
        "over a Gaussian 60 um, linear; vessels; size confound",
        channels=(
            Channel("perfusion", "structure", "exponential", 45.0, "saturating", responders=_ALL, n_genes=16),
            Channel("hypoxia", "gradient", "gaussian", 60.0, "linear", responders=_IMMUNE, n_genes=12),
        ),
        seed=302,
        n_cells=8000,
        n_genes=500,
        n_slides=3,
        depth=600.0,
        layout=Layout(vessels=8.0),
        confounds=Confounds(size_ratio=1.4),
    ),
    WorldSpec(
        name="conf_wide_fraction",
        description="the lymphocyte share over a Gaussian 80 um (reach ~240 um) with a threshold, and a ligand of "
        "activated fibroblasts over an exponential 10 um, saturating; immune aggregates; subtype confound",
        channels=(
            Channel(
                "lymphoid",
                "fraction",
                "gaussian",
                80.0,
                "threshold",
                senders=("T_cell", "B_cell"),
                responders=_ALL,
                n_genes=14,
                threshold=0.4,
            ),
            Channel(
                "growth",
                "ligand",
                "exponential",
                10.0,
                "saturating",
                senders=("fib_activated",),
                responders=_IMMUNE,
                n_genes=12,
            ),
        ),
        seed=303,
        n_cells=7000,
        n_genes=700,
        n_slides=1,
        depth=200.0,
        layout=Layout(aggregates=2.0),
        confounds=Confounds(subtype_shift=1.3),
    ),
    WorldSpec(
        name="conf_independent_low",
        description="a morphogen gradient by contact (25 um), linear, and the malignant share over an exponential "
        "15 um, saturating; independent types; depth 150; slide effects; subtype confound",
        channels=(
            Channel("morphogen", "gradient", "contact", 25.0, "linear", responders=_ALL, n_genes=14),
            Channel(
                "tumour_share",
                "fraction",
                "exponential",
                15.0,
                "saturating",
                senders=("Malignant",),
                responders=_STROMA,
                n_genes=12,
            ),
        ),
        seed=304,
        n_cells=12000,
        n_genes=300,
        n_slides=2,
        depth=150.0,
        batch_sd=0.25,
        gradient="morphogen",
        confounds=Confounds(subtype_shift=0.8),
    ),
)
