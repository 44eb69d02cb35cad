"""Cell types, domains and base compositions shared by every world of the family.

The catalogue is fixed so that worlds differ only in what their specification says; the numbers
are plausible for a carcinoma section, not fitted to any data set.
"""

from __future__ import annotations

DOMAINS: tuple[str, ...] = ("healthy", "margin", "tumour")
# how far into the tumour a domain lies; scales the domain-dependent confounds
TUMOURNESS: tuple[float, ...] = (0.0, 0.5, 1.0)

COARSE_TYPES: tuple[str, ...] = ("Epithelial", "Malignant", "Fibroblast", "Endothelial", "T_cell", "B_cell", "Myeloid")

FINE_TO_COARSE: dict[str, str] = {
    "epi_basal": "Epithelial",
    "epi_luminal": "Epithelial",
    "malignant": "Malignant",
    "fib_quiescent": "Fibroblast",
    "fib_activated": "Fibroblast",
    "endothelial": "Endothelial",
    "t_cd4": "T_cell",
    "t_cd8": "T_cell",
    "b_cell": "B_cell",
    "macro_inflam": "Myeloid",
    "macro_repair": "Myeloid",
}
FINE_TYPES: tuple[str, ...] = tuple(FINE_TO_COARSE)

# Marker lineages: malignant cells keep epithelial lineage markers, as carcinoma cells do.
LINEAGES: dict[str, tuple[str, ...]] = {
    "Epithelial": ("epi_basal", "epi_luminal", "malignant"),
    "Fibroblast": ("fib_quiescent", "fib_activated"),
    "Endothelial": ("endothelial",),
    "T_cell": ("t_cd4", "t_cd8"),
    "B_cell": ("b_cell",),
    "Myeloid": ("macro_inflam", "macro_repair"),
}

# Coarse types with two subtypes: (first, second, share of the second in healthy tissue). A
# world's subtype confound moves the share in the tumour, which changes the coarse type's mean
# expression between domains without any niche effect.
SUBTYPES: dict[str, tuple[str, str, float]] = {
    "Epithelial": ("epi_basal", "epi_luminal", 0.5),
    "Fibroblast": ("fib_quiescent", "fib_activated", 0.25),
    "T_cell": ("t_cd4", "t_cd8", 0.35),
    "Myeloid": ("macro_inflam", "macro_repair", 0.3),
}

# Coarse-type composition per domain before the spatial organisation modifies it. Every coarse
# type except Malignant occurs in healthy and tumour tissue, so each can be held out in the
# tumour and its healthy cells rewired to tumour donors.
COMPOSITION: dict[str, dict[str, float]] = {
    "healthy": {
        "Epithelial": 0.44,
        "Malignant": 0.0,
        "Fibroblast": 0.18,
        "Endothelial": 0.07,
        "T_cell": 0.11,
        "B_cell": 0.08,
        "Myeloid": 0.12,
    },
    "margin": {
        "Epithelial": 0.16,
        "Malignant": 0.16,
        "Fibroblast": 0.18,
        "Endothelial": 0.07,
        "T_cell": 0.17,
        "B_cell": 0.10,
        "Myeloid": 0.16,
    },
    "tumour": {
        "Epithelial": 0.05,
        "Malignant": 0.44,
        "Fibroblast": 0.18,
        "Endothelial": 0.07,
        "T_cell": 0.10,
        "B_cell": 0.04,
        "Myeloid": 0.12,
    },
}

TARGET_SUM = 1e4  # CP10K, the normalisation behind a sender's ligand level
