"""napari writer: File > Save of a cells layer writes its AnnData (.h5ad), atomically.

A layer driven by a Cellina session is exported with the session's counterfactual
layers, selections, latents and provenance, exactly as the export dock does.
"""

from __future__ import annotations

from typing import Any

from cellina._io import write_h5ad_atomic


def write_points(path: str, data: Any, meta: dict) -> list[str]:  # noqa: ARG001 - napari's writer signature
    """Write the AnnData behind a Points layer of cells to ``path`` (.h5ad).

    Raises
    ------
    ValueError
        The layer carries no AnnData, or ``path`` does not end in .h5ad.
    """
    metadata = meta.get("metadata") or {}
    session = metadata.get("cellina_session")
    adata = metadata.get("adata")
    if not str(path).endswith(".h5ad"):
        raise ValueError(f"Cellina writes .h5ad files; {str(path)!r} has another extension")
    if session is not None and session.adata is not None and session.adata is adata:
        session.export(path)
    elif adata is not None:
        write_h5ad_atomic(adata, path)
    else:
        raise ValueError(f"layer {meta.get('name', '')!r} carries no AnnData in metadata['adata']; nothing to write")
    return [str(path)]
