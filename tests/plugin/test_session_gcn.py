"""The graph variant through the session: training without niche features, its attention overlay
(drawn by the viewer bridge on a Qt-free viewer model), the receiver x sender table and the export."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellina.keys import OBSM, OBSP
from cellina.plugin._session import CellinaSession
from cellina.plugin._state import (
    ALL_NEIGHBOURS,
    SessionError,
    TissueKeys,
    TrainParams,
    format_num_neighbors,
    parse_num_neighbors,
)

#: a tiny CellinaGCN: two GATv2 layers, few neighbours per hop, one epoch
TINY_GCN = {
    "variant": "gcn",
    "n_latent": 4,
    "n_hidden": 16,
    "max_epochs": 1,
    "batch_size": 128,
    "num_neighbors": (5, 3),
    "seed_patches": 2,
    "early_stopping": False,
}


@pytest.fixture(scope="module")
def gcn_session(two_slide_tissue):
    """A session on the two-slide tissue, without niche features, with a trained tiny CellinaGCN."""
    adata = two_slide_tissue.copy()
    del adata.obsm[OBSM.NICHE_FEATURES]  # the graph variant reads the spatial graph only
    session = CellinaSession(adata, TissueKeys(batch_key="slide"))
    session.train(**TINY_GCN)
    return session


def test_the_graph_variant_trains_from_the_graph_alone(gcn_session):
    model = gcn_session.model
    assert type(model).__name__ == "CellinaGCN" and model.fanouts_ == (5, 3)
    assert model.summary_stats.n_batch == 2 and OBSM.NICHE_FEATURES not in gcn_session.adata.obsm
    assert OBSM.S in gcn_session.adata.obsm  # the latents follow-up ran
    assert gcn_session.train_params.variant == "gcn"
    model = gcn_session.build_export().uns["cellina"]["provenance"]["model"]
    assert model["variant"] == "gcn"
    # the sampling is recorded with the other options
    assert (model["init_params"]["num_neighbors"], model["init_params"]["subgraph_type"]) == ("[5, 3]", "directional")
    assert gcn_session.model.seed_patches == 2 and int(model["init_params"]["seed_patches"]) == 2


def test_cellina_still_demands_the_niche_features(gcn_session):
    session = CellinaSession(gcn_session.adata.copy(), TissueKeys(batch_key="slide"))
    with pytest.raises(SessionError, match=r"obsm\['spatial_x'\]"):
        session.train(**{**TINY_GCN, "variant": "cellina"})


def test_attention_is_computed_once_per_model(gcn_session):
    layers = gcn_session.attention_layers()
    assert len(layers) == 2 and gcn_session.attention_problem() is None
    assert gcn_session.attention_layers() is layers  # kept, not recomputed
    for matrix in layers:
        sums = np.asarray(matrix.sum(axis=1)).ravel()
        np.testing.assert_allclose(sums[sums > 0], 1.0, rtol=1e-5)


def test_the_overlay_shows_exactly_the_receivers_neighbours(gcn_session):
    from napari.components import ViewerModel

    from cellina.plugin.widgets._bridge import ATTENTION_LAYER, ViewerBridge

    viewer = ViewerModel()
    bridge = ViewerBridge(viewer)
    bridge.session = gcn_session  # the bridge draws this session's cells and attention
    adata = gcn_session.adata
    receiver = 17
    graph = sp.csr_matrix(adata.obsp[OBSP.CONNECTIVITIES])
    graph.setdiag(0)
    graph.eliminate_zeros()
    neighbours = np.sort(graph[receiver].indices)
    assert neighbours.size > 1
    for layer in (0, -1):
        edges = bridge.show_attention(adata.obs_names[receiver], layer=layer)
        shapes = viewer.layers[ATTENTION_LAYER]
        points = gcn_session.display_coordinates()
        starts = np.array([line[0] for line in shapes.data])
        ends = np.array([line[1] for line in shapes.data])
        np.testing.assert_allclose(ends, np.repeat(points[[receiver]], len(ends), axis=0))
        drawn = [int(np.argmin(((points - s) ** 2).sum(axis=1))) for s in starts]
        np.testing.assert_array_equal(np.sort(drawn), neighbours)
        row = gcn_session.attention_layers()[layer][receiver].toarray().ravel()
        features = shapes.features
        np.testing.assert_array_equal(features["sender"], adata.obs_names[drawn])
        np.testing.assert_allclose(features["attention"], row[drawn], rtol=1e-6)
        np.testing.assert_allclose(features["attention"].sum(), 1.0, rtol=1e-5)
        np.testing.assert_allclose(features["relative to uniform"], row[drawn] * neighbours.size, rtol=1e-6)
        assert shapes.metadata["receiver"] == adata.obs_names[receiver] and edges.layer == layer % 2
        widths = np.asarray(shapes.edge_width)
        assert widths[np.argmax(features["attention"])] == widths.max()
    assert bridge.nearest_cell(points[receiver] + 0.1) == receiver


def test_the_table_is_attention_by_group(gcn_session):
    model = gcn_session.model
    table = gcn_session.attention_table()
    expected = model.attention_by_group("cell_type", adata=gcn_session.adata)
    np.testing.assert_allclose(table.to_numpy(), expected.to_numpy(), rtol=1e-6)
    assert list(table.index) == list(expected.index) and list(table.columns) == list(expected.columns)
    first = gcn_session.attention_table("domain", layer=0)
    np.testing.assert_allclose(
        first.to_numpy(), model.attention_by_group("domain", layer=0, adata=gcn_session.adata).to_numpy(), rtol=1e-6
    )
    with pytest.raises(SessionError, match="layer=2 is out of range"):
        gcn_session.attention_table(layer=2)
    with pytest.raises(SessionError, match="'nope'"):
        gcn_session.attention_table("nope")
    with pytest.raises(SessionError, match="'cell_zzz'"):
        gcn_session.attention_edges("cell_zzz")


def test_a_cellina_model_has_no_attention(trained_two_slide):
    problem = trained_two_slide.attention_problem()
    assert "CellinaGCN only" in problem and "Cellina" in problem
    with pytest.raises(SessionError, match="CellinaGCN only"):
        trained_two_slide.attention_job()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("all", -1), ("", -1), ("10", 10), ("10, 5", (10, 5)), ("-1 5", (-1, 5)), ("(10, 5)", (10, 5)), ("[8 4]", (8, 4))],
)
def test_num_neighbors_as_typed_and_written_back(text, expected):
    assert parse_num_neighbors(text) == expected
    assert parse_num_neighbors(format_num_neighbors(expected)) == expected


def test_the_preset_chooses_the_sampling_fitted_to_the_layers():
    recommended = TrainParams(variant="gcn")
    assert (recommended.num_neighbors, recommended.subgraph_type) == ((10, 5), "directional")
    assert recommended.model_kwargs()["num_neighbors"] == [10, 5]
    assert TrainParams(variant="gcn", n_layers=1).num_neighbors == (10,)
    assert TrainParams(variant="gcn", n_layers=3).num_neighbors == (10, 5, 5)
    published = TrainParams(variant="gcn", preset="published")
    assert (published.num_neighbors, published.subgraph_type) == (ALL_NEIGHBOURS, "induced")
    # a value the user gives wins, and is checked against the layers as given
    mine = TrainParams(variant="gcn", num_neighbors="all", subgraph_type="induced")
    assert (mine.model_kwargs()["num_neighbors"], mine.subgraph_type) == (ALL_NEIGHBOURS, "induced")
    with pytest.raises(SessionError, match="gives 2 hop"):
        TrainParams(variant="gcn", n_layers=1, num_neighbors="10, 5")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_neighbors": "ten"}, "num_neighbors='ten'"),
        ({"num_neighbors": "0"}, "num_neighbors='0'"),
        ({"num_neighbors": (4, 3, 2)}, r"num_neighbors=\[4, 3, 2\] gives 3 hop"),
        ({"variant": "gat"}, "variant='gat'"),
        ({"convolution_type": "sage"}, "convolution_type='sage'"),
        ({"subgraph_type": "full"}, "subgraph_type='full'"),
        ({"link_prediction_weight": -1.0}, "link_prediction_weight=-1.0"),
        ({"seed_patches": 0}, "seed_patches=0 must be a positive int"),
    ],
)
def test_bad_graph_options_are_named(options, match):
    with pytest.raises(SessionError, match=match):
        TrainParams(**options)


def test_graph_options_reach_the_model_only_for_the_graph_variant():
    graph = TrainParams(variant="CellinaGCN", num_neighbors="10, 5", subgraph_type="directional")
    assert graph.variant == "gcn" and graph.model_kwargs()["num_neighbors"] == [10, 5]
    assert graph.model_kwargs()["subgraph_type"] == "directional"
    assert "num_neighbors" not in TrainParams(num_neighbors=(10, 5)).model_kwargs()
