"""Everything napari: sample data, reader, writer and dock widgets.

Nothing here is imported by ``import cellina``. The session object, which holds the
state the docks share and can drive the same workflow from a notebook, is importable
without Qt: ``from cellina.plugin import CellinaSession, TissueKeys``.
"""

from __future__ import annotations

from typing import Any

# public name -> module that defines it (loaded on first use; none of them imports Qt)
_NAMES = {"CellinaSession": "_session", "TissueKeys": "_state", "category_colours": "_points"}
__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        import importlib

        return getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
    raise AttributeError(f"module 'cellina.plugin' has no attribute {name!r}")
