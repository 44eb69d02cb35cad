"""How strongly each coarse type responds to a world's channel: three profiles the registry shares.

Every coarse type that occurs in healthy and tumour tissue responds to every channel (more or
less), so each can be held out in any world.
"""

from __future__ import annotations

_ALL = {"Epithelial": 0.6, "Fibroblast": 0.8, "Endothelial": 0.7, "T_cell": 1.0, "B_cell": 0.6, "Myeloid": 1.0}
_IMMUNE = {"Epithelial": 0.3, "Fibroblast": 0.5, "Endothelial": 0.4, "T_cell": 1.0, "B_cell": 0.8, "Myeloid": 1.0}
_STROMA = {"Epithelial": 0.4, "Fibroblast": 1.0, "Endothelial": 1.0, "T_cell": 0.5, "B_cell": 0.3, "Myeloid": 0.7}
