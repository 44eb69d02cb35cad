"""The link between one napari viewer and its Cellina session.

Every dock of a viewer shares one :class:`ViewerBridge`: it owns the session and the
layers Cellina draws (cells, lasso shapes, results) and updates those layers in place on
the main thread when the session changes. Per-cell values (annotations, latent clusters,
the gene coloured by) are columns of the cells layer's ``features``, so hover shows them.
Docks never find each other; they talk to the bridge and observe the session.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pandas as pd
from psygnal import Signal

from cellina.plugin._colours import ColourInfo, colours_for, continuous_colours, values_for
from cellina.plugin._points import DEFAULT_HOVER_COLUMNS, PLAIN_RGBA
from cellina.plugin._session import CellinaSession
from cellina.plugin._state import CLUSTER_COLUMNS, SessionError, TissueKeys
from cellina.plugin._tissue import guess_keys
from cellina.plugin.widgets._attention_overlay import ATTENTION_LAYER, AttentionOverlayMixin
from cellina.plugin.widgets._overlays import (
    LASSO_COLOURS,
    LASSO_LAYERS,
    RESULT_LAYER,
    RING_LAYERS,
    OverlaysMixin,
    lasso_outline,
)

__all__ = [
    "ATTENTION_LAYER",
    "CELLS",
    "LFC_LABEL",
    "LASSO_COLOURS",
    "LASSO_LAYERS",
    "RESULT_LAYER",
    "RING_LAYERS",
    "ViewerBridge",
    "get_bridge",
    "lasso_outline",
    "unwrap",
]

CELLS = "cells"
#: what every log-fold change of a run is: its base and its reference
LFC_LABEL = "log2 fold change, counterfactual vs factual"

_BRIDGES: dict[int, ViewerBridge] = {}


def unwrap(viewer: Any) -> Any:
    """The viewer behind napari's public-only proxy (plugin docks receive the proxy)."""
    return getattr(viewer, "__wrapped__", viewer)


def get_bridge(viewer: Any) -> ViewerBridge:
    """The bridge of ``viewer``, created on first use and dropped when the viewer goes."""
    viewer = unwrap(viewer)
    key = id(viewer)
    bridge = _BRIDGES.get(key)
    if bridge is None or bridge.viewer is not viewer:
        bridge = ViewerBridge(viewer)
        _BRIDGES[key] = bridge
        weakref.finalize(viewer, _BRIDGES.pop, key, None)
    return bridge


class ViewerBridge(AttentionOverlayMixin, OverlaysMixin):
    """Session plus the napari layers that show it.

    Parameters
    ----------
    viewer
        The napari viewer.
    """

    colouring = Signal(object)  # ColourInfo of the cells layer
    result_colouring = Signal(object)  # ColourInfo of the result layer
    message = Signal(str)

    def __init__(self, viewer: Any):
        self._viewer = weakref.ref(viewer)
        self.session = CellinaSession()
        self.color_by: str | None = None
        self.point_size_um = 10.0
        self.colour_info: ColourInfo | None = None
        self._cells_layer = None
        self.session.events.adata.connect(self._on_adata)
        self.session.events.keys.connect(self._on_keys)
        self.session.events.latents.connect(self._on_latents)
        self._connect_overlays()
        self._connect_attention()

    @property
    def viewer(self) -> Any:
        """The napari viewer (None once it is gone)."""
        return self._viewer()

    # ------------------------------------------------------------------ cells layer
    @property
    def cells_layer(self):
        """The Points layer of the session's cells (None until a tissue is shown)."""
        layer = self._cells_layer
        if layer is not None and self.viewer is not None and layer in self.viewer.layers:
            return layer
        return None

    def tissue_layers(self) -> list:
        """Points layers that carry an AnnData (sample, reader, or ours)."""
        viewer = self.viewer
        if viewer is None:
            return []
        from napari.layers import Points

        return [ly for ly in viewer.layers if isinstance(ly, Points) and "adata" in ly.metadata]

    def adopt_layer(self, layer, keys: TissueKeys | None = None) -> None:
        """Make a layer that carries ``metadata["adata"]`` the session's tissue."""
        adata = layer.metadata.get("adata")
        if adata is None:
            raise SessionError(f"layer {layer.name!r} carries no AnnData in metadata['adata']")
        # the reader found the layer's coordinates by the same rule, so layer and session agree
        keys = keys or guess_keys(adata)
        previous = (self._cells_layer, self.color_by)
        self._cells_layer = layer
        self.color_by = layer.metadata.get("color_by") or keys.cell_type_key
        try:
            self.session.set_adata(adata, keys)
        except SessionError:
            self._cells_layer, self.color_by = previous
            raise

    def _features(self) -> pd.DataFrame:
        adata = self.session.adata
        keys = self.session.keys
        features = pd.DataFrame({"cell_id": adata.obs_names.to_numpy()})
        wanted = [
            keys.cell_type_key,
            keys.domain_key,
            keys.batch_key,
            *DEFAULT_HOVER_COLUMNS,
            *CLUSTER_COLUMNS.values(),
        ]
        for column in dict.fromkeys(c for c in wanted if c):
            if column in adata.obs:
                features[column] = adata.obs[column].to_numpy()
        return features

    def _cell_colours(self, adata) -> tuple[np.ndarray, ColourInfo | None]:
        """Colours of the cells by ``color_by``, else the cell type, else the domain, else one plain colour."""
        keys = self.session.keys
        candidates = (self.color_by, keys.cell_type_key, keys.domain_key)
        for key in candidates:
            if key is not None and (key in adata.obs or key in adata.var_names):
                try:
                    colours, info = colours_for(adata, key)
                except ValueError:  # an identifier column: too many values to colour by
                    continue
                self.color_by = key
                return colours, info
        self.color_by = None
        return np.tile(np.asarray(PLAIN_RGBA, dtype=np.float32), (adata.n_obs, 1)), None

    def cell_size(self) -> float:
        """The cells' point size in display units: the chosen size in micrometres, or, while the
        coordinates do not look like micrometres, most of the distance between neighbouring cells,
        so the cells stay visible (and coloured) whatever their unit."""
        session = self.session
        try:
            if session.units_problem() is None:
                return self.point_size_um
            spacing = session.cell_spacing() * session.keys.pixel_size
        except SessionError:
            return self.point_size_um
        return 0.8 * spacing if np.isfinite(spacing) and spacing > 0 else self.point_size_um

    def _on_adata(self, adata) -> None:
        if self.viewer is None or adata is None:
            return
        self._show_cells(adata)
        old = self.find_layer(RESULT_LAYER)
        if old is not None:
            self.viewer.layers.remove(old)
        self._draw_lassos()

    def _on_keys(self, _keys: TissueKeys) -> None:
        """New keys may move the cells (another pixel size) or change what they are coloured by."""
        adata = self.session.adata
        if self.viewer is None or adata is None or self.cells_layer is None:
            return
        self._show_cells(adata)
        for name in RING_LAYERS:
            self._on_selection(name)

    def _show_cells(self, adata) -> None:
        # napari may edit layer data in place (moving points); the session's copy stays read-only
        data = self.session.display_coordinates().copy()
        shown = None if self.cells_layer is None else self.cells_layer.metadata.get("color_by")
        colours, info = self._cell_colours(adata)
        layer = self.cells_layer
        if layer is None:
            layer = self.viewer.add_points(
                data,
                name=CELLS,
                features=self._features(),
                face_color=colours,
                border_width=0,
                size=self.cell_size(),
                metadata={"adata": adata, "cellina_session": self.session},
            )
            self._cells_layer = layer
        elif layer.metadata.get("adata") is adata and np.array_equal(np.asarray(layer.data), data):
            # an adopted layer already shows this AnnData: redrawing 500k points would only cost time
            if shown != self.color_by or self.color_by is None:
                layer.face_color = colours
            layer.features = self._features()
            layer.size = self.cell_size()
        else:
            with layer.events.blocker_all():
                layer.data = data
            layer.features = self._features()
            layer.face_color = colours
            layer.size = self.cell_size()
            layer.metadata["adata"] = adata
            layer.refresh()
        layer.metadata["cellina_session"] = self.session
        layer.metadata["color_by"] = self.color_by
        self.colour_info = info
        self.colouring.emit(info)

    def recolour(self, key: str) -> ColourInfo:
        """Colour the cells by an obs column or a gene (in place)."""
        adata = self.session.require_adata()
        layer = self.cells_layer
        if layer is None:
            raise SessionError("no cells layer: open a tissue first")
        try:
            values = values_for(adata, key)
            colours, info = colours_for(adata, key, values=values)
        except (KeyError, ValueError) as err:
            raise SessionError(str(err).strip('"')) from err
        layer.face_color = colours
        self.color_by = key
        layer.metadata["color_by"] = key
        # hover shows what the colours mean; only the gene coloured last is kept as a column
        previous = layer.metadata.get("hover_gene")
        if previous is not None and previous != key and previous in layer.features.columns:
            layer.features = layer.features.drop(columns=[previous])
            layer.metadata["hover_gene"] = None
        if key not in layer.features.columns:
            layer.features[key] = np.asarray(values)
            if key not in adata.obs:
                layer.metadata["hover_gene"] = key
        self.colour_info = info
        self.colouring.emit(info)
        return info

    def set_point_size(self, size_um: float) -> None:
        """Point diameter in micrometres for every cell layer."""
        if not size_um > 0:
            raise SessionError(f"point size must be > 0 micrometres, got {size_um}")
        self.point_size_um = float(size_um)
        if self.cells_layer is not None:
            self.cells_layer.size = self.cell_size()
        result = self.find_layer(RESULT_LAYER)
        if result is not None:
            result.size = self.point_size_um * 1.3
        for name in RING_LAYERS.values():
            ring = self.find_layer(name)
            if ring is not None:
                ring.size = self.point_size_um * 1.8

    # ------------------------------------------------------------------ overlays
    def _points_overlay(
        self,
        name: str,
        data: np.ndarray,
        colours: np.ndarray,
        features: pd.DataFrame,
        size: float,
        visible: bool = True,
        border: float = 0.0,
    ):
        viewer = self.viewer
        layer = self.find_layer(name)
        if layer is None:
            layer = viewer.add_points(
                data,
                name=name,
                face_color=colours,
                border_width=border,
                size=size,
                border_color="black",
                features=features,
                visible=visible,
            )
        else:
            with layer.events.blocker_all():
                layer.data = data
            layer.features = features
            layer.face_color = colours
            layer.size = size
            layer.refresh()
        return layer

    def _on_latents(self) -> None:
        """The latent clusters become hover columns of the cells layer (and recolour it if shown)."""
        adata, layer = self.session.adata, self.cells_layer
        if adata is None or layer is None:
            return
        features = layer.features.copy()
        for column in CLUSTER_COLUMNS.values():
            if column in adata.obs:
                features[column] = adata.obs[column].to_numpy()
        layer.features = features
        if self.color_by in CLUSTER_COLUMNS.values():
            self.recolour(self.color_by)

    def show_result(self, gene: str, mode: str = "lfc") -> ColourInfo:
        """Overlay the current run on its focal cells: ``"expression"``, ``"lfc"`` or ``"std"``.

        The log-fold change is log2 of the counterfactual over the factual prediction of the
        same cell (the model's own reference), as in the Results dock's table.
        """
        session = self.session
        if session.current_run is None:
            raise SessionError("no counterfactual run yet: run an edge or node perturbation first")
        run = session.runs[session.current_run]
        adata = session.require_adata()
        if gene not in adata.var_names:
            raise SessionError(f"unknown gene {gene!r}: not in the AnnData's var_names")
        j = int(adata.var_names.get_loc(gene))
        if mode == "expression":
            values, cmap, label = run.expression[:, j], "viridis", f"{gene}: predicted expression (counts)"
            colours, info = continuous_colours(values, label, cmap)
        elif mode == "lfc":
            values = run.log_fold_change(j) / np.float32(np.log(2.0))
            bound = float(np.nanmax(np.abs(values))) if values.size else 1.0
            bound = bound if bound > 0 else 1.0
            label = f"{gene}: {LFC_LABEL} (per cell)"
            colours, info = continuous_colours(values, label, "RdBu_r", (-bound, bound))
        elif mode == "std":
            if run.std is None:
                raise SessionError(f"run {run.name!r} has one draw, so no spread across draws; use several draws")
            values = run.std[:, j]
            colours, info = continuous_colours(values, f"{gene}: std of the counterfactual across draws", "magma")
        else:
            raise SessionError(f"unknown display mode {mode!r}; use 'expression', 'lfc' or 'std'")
        data = session.display_coordinates()[run.indices]
        features = pd.DataFrame({"cell_id": adata.obs_names[run.indices].to_numpy(), info.name: values})
        # a thin dark ring sets the focal cells apart from the cells layer underneath
        self._points_overlay(RESULT_LAYER, data, colours, features, self.point_size_um * 1.3, border=0.15)
        self.order_layers()
        self.result_colouring.emit(info)
        return info
