"""Everything napari: sample data, reader, writer and dock widgets.

Nothing here is imported by ``import cellina``. The session object, which holds the
state the docks share and can drive the same workflow from a notebook, is importable
without Qt: ``from cellina.plugin import CellinaSession, TissueKeys``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["CellinaSession", "TissueKeys"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from cellina.plugin import _session

        return getattr(_session, name)
    raise AttributeError(f"module 'cellina.plugin' has no attribute {name!r}")
