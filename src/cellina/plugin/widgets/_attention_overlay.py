"""The attention overlay of the graph variant: lines from a cell's neighbours to the cell.

A mixin of :class:`~cellina.plugin.widgets._bridge.ViewerBridge`. For the picked cell (the
receiver) each graph neighbour (sender) gets a line to it in a Shapes layer, as wide as its
attention weight (relative to the cell's largest) and coloured by the attention relative to
uniform (1: as much as any neighbour) on the diverging map of the receiver x sender heatmap.
The layer's ``features`` hold each sender's id and weights, so hover shows them. Cells are
picked with a click on the canvas while picking is on (a drag still pans).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from cellina.plugin._colours import attention_style
from cellina.plugin.widgets._overlays import ATTENTION_OVERLAY

#: the Shapes layer of the picked cell's attention
ATTENTION_LAYER = ATTENTION_OVERLAY
#: the widest line, as a fraction of a cell's point size
WIDEST = 0.2


class AttentionOverlayMixin:
    """Draw the attention one cell pays its neighbours, and pick that cell with a click."""

    session: Any
    viewer: Any
    point_size_um: float
    message: Any
    _pick: Callable | None = None

    def _connect_attention(self) -> None:
        # a new model or tissue has other attention: its overlay goes
        self.session.events.model.connect(lambda _m: self.clear_attention())
        self.session.events.adata.connect(lambda _a: self.clear_attention())

    def clear_attention(self) -> None:
        """Remove the attention overlay, if shown."""
        layer = self.find_layer(ATTENTION_LAYER)
        if layer is not None and self.viewer is not None:
            self.viewer.layers.remove(layer)

    def show_attention(self, cell: Any, layer: int = -1):
        """Lines from ``cell``'s neighbours to it, weighted by its attention in GATv2 layer ``layer``.

        The attention must have been computed (:meth:`CellinaSession.attention_job`). Returns the
        receiver's edges (:class:`cellina.plugin._attention.ReceiverEdges`).
        """
        session = self.session
        edges = session.attention_edges(cell, layer)
        adata = session.require_adata()
        names = adata.obs_names
        receiver = str(names[edges.receiver])
        widths, colours = attention_style(edges.weights, self.point_size_um * WIDEST)
        # one line per edge, from the sender to the receiver
        points = session.display_coordinates()
        lines = [np.stack([points[j], points[edges.receiver]]) for j in edges.senders]
        features = pd.DataFrame(
            {
                "sender": names[edges.senders].astype(str).to_numpy(),
                "receiver": np.full(edges.senders.size, receiver, dtype=object),
                "attention": edges.weights,
                "relative to uniform": edges.relative,
            }
        )
        metadata = {"receiver": receiver, "layer": edges.layer, "n_layers": edges.n_layers}
        self.clear_attention()
        if edges.senders.size:
            shapes = self.viewer.add_shapes(
                lines,
                shape_type="line",
                name=ATTENTION_LAYER,
                edge_width=list(widths),
                edge_color=colours,
                features=features,
                metadata=metadata,
                opacity=0.95,
            )
            shapes.mode = "pan_zoom"
        self.order_layers()
        return edges

    # ------------------------------------------------------------------ picking
    def nearest_cell(self, position: Any) -> int:
        """The cell nearest a canvas position (row, column in micrometres; leading axes ignored)."""
        points = self.session.display_coordinates()
        where = np.asarray(position, dtype=np.float64)[-2:]
        return int(np.argmin(((points - where) ** 2).sum(axis=1)))

    @property
    def picking(self) -> bool:
        """Whether a click on the canvas picks a cell."""
        return self._pick is not None

    def pick_cells(self, on_pick: Callable[[int], None] | None) -> None:
        """Call ``on_pick(cell)`` for every click on the canvas (None stops picking); drags still pan."""
        viewer = self.viewer
        if viewer is None:
            return
        if self._pick is not None and self._pick in viewer.mouse_drag_callbacks:
            viewer.mouse_drag_callbacks.remove(self._pick)
        self._pick = None
        if on_pick is None:
            return

        def pick(_viewer, event):
            if getattr(event, "button", 1) != 1:
                return
            start = np.asarray(event.position, dtype=np.float64)
            yield
            moved = False
            while event.type == "mouse_move":
                moved = True
                yield
            if not moved and self.session.adata is not None:
                on_pick(self.nearest_cell(start))

        self._pick = pick
        viewer.mouse_drag_callbacks.append(pick)
