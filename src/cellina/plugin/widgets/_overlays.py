"""The layers the bridge draws over the cells: lassos, rings around the selected cells, results on top.

A mixin of :class:`~cellina.plugin.widgets._bridge.ViewerBridge`. Lasso outlines keep the
same width on screen at any zoom (napari's Shapes widths are in data units, so the width is
reset when the camera zooms), and the focal and donor cells are ringed on the canvas by Points
layers whose size never falls below a few screen pixels. Layers stay in one order, bottom to
top: cells, counterfactual result, rings, lassos.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cellina.plugin._state import DONORS, FOCAL

RESULT_LAYER = "counterfactual"
#: the graph variant's attention overlay (drawn by the bridge's attention mixin)
ATTENTION_OVERLAY = "attention of picked cell"
LASSO_LAYERS = {FOCAL: "focal lasso", DONORS: "donor lasso"}
LASSO_COLOURS = {FOCAL: "#ff7f0e", DONORS: "#1f77b4"}
RING_LAYERS = {FOCAL: "focal cells", DONORS: "donor cells"}
#: lasso outline width and smallest ring, in screen pixels
LASSO_WIDTH_PX = 2.5
RING_MIN_PX = 9.0


def lasso_outline(vertices: np.ndarray, kind: str, n_ellipse: int = 64) -> np.ndarray:
    """Outline of a Shapes-layer shape as polygon vertices (napari stores ellipses by their box)."""
    vertices = np.asarray(vertices, dtype=np.float64)[:, -2:]
    if kind != "ellipse":
        return vertices
    centre = vertices.mean(axis=0)
    axis_a = (vertices[1] - vertices[0]) / 2
    axis_b = (vertices[3] - vertices[0]) / 2
    angles = np.linspace(0, 2 * np.pi, n_ellipse, endpoint=False)
    return centre + np.cos(angles)[:, None] * axis_a + np.sin(angles)[:, None] * axis_b


def _camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


class OverlaysMixin:
    """Lasso layers, selection rings and the order of the layers, for the viewer bridge."""

    session: Any
    viewer: Any
    point_size_um: float
    message: Any

    def find_layer(self, name: str):
        """The viewer's layer called ``name``, or None."""
        viewer = self.viewer
        if viewer is None:
            return None
        return viewer.layers[name] if name in viewer.layers else None

    def _connect_overlays(self) -> None:
        self.session.events.selection.connect(self._on_selection)
        self.session.events.current_run.connect(self._on_current_run)
        viewer = self.viewer
        if viewer is not None:
            _camera(viewer).events.zoom.connect(self._on_zoom)

    # ------------------------------------------------------------------ lassos
    def lasso_width(self) -> float:
        """A lasso outline width in data units that shows :data:`LASSO_WIDTH_PX` pixels at the current zoom."""
        zoom = float(_camera(self.viewer).zoom or 1.0)
        return LASSO_WIDTH_PX / zoom

    def _on_zoom(self, _event: Any = None) -> None:
        width = self.lasso_width()
        for layer_name in LASSO_LAYERS.values():
            layer = self.find_layer(layer_name)
            if layer is not None:
                with layer.events.data.blocker():
                    layer.current_edge_width = width
                    if layer.nshapes:
                        layer.edge_width = width

    def lasso_layer(self, name: str, draw: bool = True):
        """The Shapes layer of a named lasso (created on demand), in polygon-lasso mode if ``draw``."""
        layer_name = LASSO_LAYERS[name]
        layer = self.find_layer(layer_name)
        if layer is None:
            layer = self.viewer.add_shapes(
                name=layer_name,
                edge_color=LASSO_COLOURS[name],
                face_color="transparent",
                edge_width=self.lasso_width(),
                opacity=1.0,
            )
            layer.events.data.connect(lambda event, n=name: self._on_lasso_event(n, event))
        if draw:
            self.viewer.layers.selection.active = layer
            layer.mode = "add_polygon_lasso"
        return layer

    def _on_lasso_event(self, name: str, event: Any) -> None:
        # napari announces each edit twice (adding/added, ...): select once, when the shape is finished
        action = str(getattr(event, "action", "added"))
        if action in ("added", "removed", "changed"):
            self._on_lasso(name)

    def _on_lasso(self, name: str) -> None:
        layer = self.find_layer(LASSO_LAYERS[name])
        if layer is None or self.session.adata is None:
            return
        polygons = [
            lasso_outline(p, kind)
            for p, kind in zip(layer.data, layer.shape_type)
            if kind in ("polygon", "rectangle", "ellipse")
        ]
        selection = self.session.selections.get(name)
        cell_types = selection.cell_types if selection else ()
        domains = selection.domains if selection else ()
        try:
            self.session.select_polygons(name, polygons, cell_types=cell_types, domains=domains)
        except Exception as err:  # a lasso the session refuses is a message, never a crash
            self.message.emit(str(err))

    def _draw_lassos(self) -> None:
        """Lasso layers show the session's selections (none for a new tissue)."""
        for name, layer_name in LASSO_LAYERS.items():
            layer = self.find_layer(layer_name)
            if layer is None:
                continue
            selection = self.session.selections.get(name)
            with layer.events.data.blocker():
                layer.data = []
                if selection is not None and selection.polygons:
                    layer.add(list(selection.polygons), shape_type="polygon", edge_width=self.lasso_width())
        for name in RING_LAYERS:
            self._on_selection(name)

    # ------------------------------------------------------------------ rings
    def _ring(self, name: str, cells: np.ndarray | None) -> None:
        """Ring ``cells`` (positions) in the colour of their lasso; no cells removes the ring layer."""
        viewer, layer = self.viewer, self.find_layer(RING_LAYERS[name])
        if viewer is None:
            return
        if cells is None or cells.size == 0 or self.session.adata is None:
            if layer is not None:
                viewer.layers.remove(layer)
            return
        data = self.session.display_coordinates()[cells]
        features = pd.DataFrame({"cell_id": self.session.adata.obs_names[cells].to_numpy()})
        if layer is None:
            layer = viewer.add_points(
                data,
                name=RING_LAYERS[name],
                face_color="transparent",
                border_color=LASSO_COLOURS[name],
                border_width=0.22,
                border_width_is_relative=True,
                size=self.point_size_um * 1.8,
                canvas_size_limits=(RING_MIN_PX, 10000),
                features=features,
            )
        else:
            with layer.events.blocker_all():
                layer.data = data
            layer.features = features
            layer.face_color = "transparent"
            layer.border_color = LASSO_COLOURS[name]
            layer.size = self.point_size_um * 1.8
            layer.refresh()
        self.order_layers()

    def _on_selection(self, name: str) -> None:
        if name not in RING_LAYERS:
            return
        selection = self.session.selections.get(name)
        self._ring(name, None if selection is None or selection.mask is None else np.flatnonzero(selection.mask))

    def _on_current_run(self, name: str) -> None:
        """The donors the current edge run drew are ringed (a node run has none), unless a donor lasso is drawn."""
        if DONORS in self.session.selections:
            return
        run = self.session.runs.get(name)
        if run is None or run.donors is None:
            self._ring(DONORS, None)
            return
        drawn = np.unique(np.asarray(run.donors).ravel())
        self._ring(DONORS, drawn[(drawn >= 0) & (drawn < self.session.adata.n_obs)])

    def order_layers(self) -> None:
        """Bottom to top: everything else, the result, the attention, the rings, the lassos."""
        viewer = self.viewer
        if viewer is None:
            return
        for name in (RESULT_LAYER, ATTENTION_OVERLAY, *RING_LAYERS.values(), *LASSO_LAYERS.values()):
            layer = self.find_layer(name)
            if layer is not None:
                viewer.layers.move(viewer.layers.index(layer), len(viewer.layers))
