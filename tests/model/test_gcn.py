"""CellinaGCN trained briefly on a two-slide tissue (the slide as batch): training, getters, prediction."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from lightning.pytorch.callbacks import Callback
from scvi.nn import DecoderSCVI, Encoder

from cellina.counterfactual import rewired_neighbourhoods
from cellina.keys import OBSM, OBSP
from cellina.model import Cellina, CellinaGCN, CellinaModule, holdout_split
from cellina.model._constants import GRAPH_KEYS as GK
from cellina.model._graph_data import NodeFeatures, SampledGraphBatches
from cellina.model._graph_sampler import prepare_graph

SMALL = {"n_hidden": 16, "n_latent": 4, "n_layers": 2}
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
SETUP = {"batch_key": "slide", "labels_key": "coarse_type", "domains_key": "domain", "layer": "counts"}


class NodeSpy(Callback):
    """Records every cell of every training and validation subgraph."""

    def __init__(self):
        self.train, self.validation = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.train.append(batch[GK.NODES].cpu().numpy())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.validation.append(batch[GK.NODES].cpu().numpy())


def _held_out(adata) -> np.ndarray:
    tumour_myeloid = (adata.obs["domain"] == "tumour") & (adata.obs["coarse_type"] == "Myeloid")
    return np.flatnonzero(tumour_myeloid.to_numpy())


@pytest.fixture(scope="module")
def trained(two_slide_tissue):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    held = _held_out(adata)
    split = holdout_split(adata.n_obs, held, 0.1, 0)
    spy = NodeSpy()
    torch.manual_seed(0)
    model = CellinaGCN(adata, **SMALL, num_neighbors=[6, 3])
    model.train(
        max_epochs=2,
        batch_size=64,
        datasplitter_kwargs={"external_indexing": split},
        check_val_every_n_epoch=1,
        plan_kwargs={"normalize_losses": True},
        callbacks=[spy],
        **QUIET,
    )
    return model, adata, held, spy


def test_no_held_out_cell_is_ever_in_a_sampled_subgraph(trained):
    model, adata, held, spy = trained
    assert held.size > 5
    assert np.array_equal(model.heldout_indices_, held)
    train = holdout_split(adata.n_obs, held, 0.1, 0)[0]
    assert len(spy.train) == 2 * int(np.ceil(train.size / 64)) and spy.validation
    seen = np.concatenate(spy.train + spy.validation)
    assert not np.isin(held, seen).any()
    # the subgraphs do reach beyond the seeds (2 hops, fan-out 6 then 3)
    assert max(len(n) for n in spy.train) > 64 * 3


def test_the_plan_normalises_the_contrastive_loss(trained):
    model, *_ = trained
    history = model.history
    for key in ("spatial_loss_train", "spatial_loss_raw_train", "spatial_loss_validation", "alpha_spatial"):
        assert key in history, key
    alpha = history["alpha_spatial"].to_numpy().ravel()
    assert alpha[0] > 0 and np.all(alpha == alpha[0])
    assert model.module.alpha_spatial.item() == pytest.approx(alpha[0])
    raw, weighted = history["spatial_loss_raw_train"].iloc[-1, 0], history["spatial_loss_train"].iloc[-1, 0]
    assert weighted == pytest.approx(raw * alpha[0], rel=1e-4)
    assert model.trainer.strategy.model._scale_spatial == pytest.approx(alpha[0])


def test_shares_cellinas_parts_rather_than_copying_them(trained, two_slide_tissue):
    model, *_ = trained
    assert isinstance(model, Cellina) and isinstance(model.module, CellinaModule)
    assert isinstance(model.module.decoder, DecoderSCVI) and isinstance(model.module.z_encoder, Encoder)
    assert model.module.classifier is not None and model.module.discriminator is not None
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    recommended = CellinaGCN.from_preset(adata, "recommended", **SMALL)
    assert recommended.preset == "recommended"
    assert recommended.module.niche_decoder == "type_gated" and recommended.module.type_aware_discriminator
    assert recommended._summary().startswith("CellinaGCN model") and "2 gat layers" in recommended._summary()


@pytest.mark.parametrize(
    ("preset", "options", "fanouts", "subgraph"),
    [
        ("recommended", {}, (10, 5), "directional"),
        ("recommended", {"n_layers": 1}, (10,), "directional"),
        ("recommended", {"n_layers": 3}, (10, 5, 5), "directional"),
        ("recommended", {"num_neighbors": None, "subgraph_type": "induced"}, (None, None), "induced"),
        ("published", {}, (None, None), "induced"),
    ],
)
def test_the_preset_chooses_the_sampling(two_slide_tissue, preset, options, fanouts, subgraph):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    model = CellinaGCN.from_preset(adata, preset, **{**SMALL, **options})
    assert (model.fanouts_, model.subgraph_type) == (fanouts, subgraph)
    # Cellina has no graph sampling: the same preset builds it without them
    Cellina.setup_anndata(adata, **SETUP, spatial_obsm_key=OBSM.NICHE_FEATURES)
    assert Cellina.from_preset(adata, preset, **SMALL).preset == preset


def test_getters_have_scvi_tools_shapes(trained):
    model, adata, *_ = trained
    n, g = adata.n_obs, adata.n_vars
    assert model.get_latent_representation(latent_key="z").shape == (n, 4)
    s = model.get_latent_representation(latent_key="s")
    assert s.shape == (n, 4) and np.all(np.isfinite(s))
    assert model.get_latent_representation().shape == (n, 8)
    mean, var = model.get_latent_representation(latent_key="s", return_dist=True)
    np.testing.assert_allclose(mean, s, atol=1e-5)
    assert np.all(var > 0)
    expression = model.get_normalized_expression()
    assert isinstance(expression, pd.DataFrame) and expression.shape == (n, g)
    np.testing.assert_allclose(expression.sum(1), 1.0, rtol=1e-4)
    assert np.isfinite(float(model.get_elbo()))
    assert model.get_marginal_ll(indices=np.arange(20), n_mc_samples=4, return_mean=False).shape == (20,)
    assert "reconstruction_loss" in model.get_reconstruction_error(indices=np.arange(30))
    assert model.posterior_predictive_sample(indices=np.arange(10), n_samples=2).shape == (10, g, 2)
    with pytest.raises(ValueError, match="no niche features"):
        model.get_latent_representation(latent_key="s_perturbed")


def test_prediction_does_not_depend_on_the_batch_size(trained):
    model, *_ = trained
    idx = np.arange(0, 300, 3)
    a = model.get_latent_representation(indices=idx, latent_key="s", batch_size=7)
    b = model.get_latent_representation(indices=idx, latent_key="s", batch_size=1000)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_layerwise_prediction_equals_the_minibatch_computation(trained):
    """With all neighbours sampled, a training minibatch gives the seeds the s that prediction gives."""
    model, adata, held, _ = trained
    options = replace(model.graph_options(), fanouts=(None, None), contrastive=False)
    inputs = options.inputs(model.adata_manager, exclude=held)
    seeds = np.setdiff1d(np.arange(0, adata.n_obs, 11), held)
    batch = SampledGraphBatches(inputs, options, seeds)[list(range(seeds.size))]
    model.module.eval()
    with torch.no_grad():
        out = model.module.inference(**model.module._get_inference_input(batch))
    assert batch[GK.X].shape[0] > seeds.size * 5
    predicted = model.get_latent_representation(indices=seeds, latent_key="s")
    np.testing.assert_allclose(out["qsm"].numpy(), predicted, atol=1e-5)


def test_trimmed_training_minibatches_give_the_seeds_their_whole_graph_s(trained):
    """At the default (all neighbours, induced subgraphs, contrastive candidates, hops in locality
    order, node features gathered from the dense table), each layer runs on the cells the next one reads only, yet the
    seeds get exactly the s of every layer run on every cell of the graph; no held-out cell enters."""
    model, adata, held, _ = trained
    options = replace(model.graph_options(), fanouts=(None, None), contrastive=True)
    inputs = options.inputs(model.adata_manager, exclude=held).for_training()
    assert inputs.features.table is not None and inputs.order is not None
    seeds = np.setdiff1d(np.arange(0, adata.n_obs, 7), held)
    batch = SampledGraphBatches(inputs, options, seeds, seed=0)[list(range(seeds.size))]
    nodes, sizes = batch[GK.NODES].numpy(), batch[GK.SIZES].tolist()
    assert not np.isin(held, nodes).any()
    assert sizes[0] == nodes.size > sizes[1] > sizes[2] > seeds.size  # trimmed, with candidates
    np.testing.assert_array_equal(batch[GK.X].numpy(), NodeFeatures(inputs.features.source).rows(nodes))
    module, encoder = model.module, model.module.s_encoder
    graph = inputs.graph.tocoo()
    edges = torch.from_numpy(np.stack([graph.col, graph.row]).astype(np.int64))
    codes = torch.from_numpy(inputs.batch) if module.encode_batch else None
    module.eval()
    with torch.no_grad():
        trimmed = module.encode_spatial({key: batch[key] for key in GK if key in batch})[0].loc[: seeds.size]
        h = torch.from_numpy(inputs.features.rows(np.arange(adata.n_obs)))
        for layer in range(encoder.n_layers):
            h, _ = encoder.layer(layer, h, h, edges, codes)
        whole = encoder.head(h)[0].loc[seeds]
    torch.testing.assert_close(trimmed, whole, rtol=1e-4, atol=1e-5)


def test_a_cells_own_expression_reaches_s_only_through_neighbours(trained):
    """Cell 0 reads only cell 1, which reads only cell 2: cell 0's counts cannot change its s."""
    model, adata, *_ = trained
    graph = sp.lil_matrix(adata.obsp["spatial_connectivities"])
    graph[0, :] = 0
    graph[1, :] = 0
    graph[0, 1] = 1.0
    graph[1, 2] = 1.0
    graph = graph.tocsr()
    counts = sp.lil_matrix(adata.layers["counts"], dtype=np.float32)
    other = counts.copy()
    other[0, :] = 50.0
    s0 = model.predict_from_graph(indices=[0], graph=graph, node_features=counts.tocsr(), output="s")
    s0_changed = model.predict_from_graph(indices=[0], graph=graph, node_features=other.tocsr(), output="s")
    np.testing.assert_allclose(s0, s0_changed, atol=1e-6)
    neighbour = counts.copy()
    neighbour[2, :] = 50.0
    s0_neighbour = model.predict_from_graph(indices=[0], graph=graph, node_features=neighbour.tocsr(), output="s")
    assert np.abs(s0 - s0_neighbour).max() > 1e-3


def test_attention_rows_sum_to_one_and_follow_the_given_adata(trained):
    model, adata, held, _ = trained
    layers = model.get_attention_weights()
    assert len(layers) == 2
    graph = adata.obsp["spatial_connectivities"]
    reads = np.diff(prepare_graph(graph, adata.n_obs, held).indptr) > 0
    for att in layers:
        assert att.shape == (adata.n_obs, adata.n_obs)
        sums = np.asarray(att.sum(1)).ravel()
        has = np.diff(att.indptr) > 0
        np.testing.assert_allclose(sums[has], 1.0, atol=1e-5)
        assert np.array_equal(has, reads)
        assert att[:, held].nnz == 0  # held-out cells are nobody's neighbour
        assert (att.multiply(graph != 0)).nnz == att.nnz  # only graph edges
    other = adata.copy()
    g = sp.lil_matrix(other.obsp["spatial_connectivities"])
    g[0, :] = 0
    g[0, 5] = 0.3
    g[0, 6] = 0.9
    other.obsp["spatial_connectivities"] = g.tocsr()
    row = model.get_attention_weights(other, indices=[0])[-1]
    assert sorted(row[0].indices.tolist()) == [5, 6] and row.nnz == 2
    assert row[0].sum() == pytest.approx(1.0, abs=1e-5)
    table = model.attention_by_group("coarse_type", adata=adata)
    assert table.shape == (adata.obs["coarse_type"].nunique(),) * 2


def test_edge_counterfactuals_take_cellinas_calls(trained):
    model, adata, held, _ = trained
    domain = adata.obs["domain"].to_numpy()
    focal = np.flatnonzero(domain == "healthy")[:40]
    pool = np.flatnonzero(domain == "tumour")
    mean, std, donors = model.get_counterfactual_expression(
        focal, pool, precomputed=False, n_neighbours=8, n_draws=2, return_std=True, return_donors=True, seed=3
    )
    assert mean.shape == std.shape == (40, adata.n_vars) and donors.shape == (2, 40, 8)
    assert np.all(std >= 0) and std.max() > 0
    assert not np.isin(donors, held).any()  # exclude_indices defaults to the held-out cells
    assert not (donors == focal[None, :, None]).any()
    again = model.get_counterfactual_expression(focal, pool, precomputed=False, n_neighbours=8, n_draws=2, seed=3)
    np.testing.assert_allclose(again, mean, rtol=1e-5)
    z = model.get_counterfactual_latents(focal, pool, precomputed=False, n_neighbours=8, latent_key="z")
    np.testing.assert_allclose(z, model.get_latent_representation(indices=focal, latent_key="z"), atol=1e-5)
    s = model.get_counterfactual_latents(focal, pool, precomputed=False, n_neighbours=8)
    assert np.abs(s - model.get_latent_representation(indices=focal, latent_key="s")).max() > 1e-4
    anchored, anchors = model.get_counterfactual_expression(focal, pool, anchor_donors=True, return_donors=True)
    assert anchored.shape == (40, adata.n_vars) and anchors.shape == (1, 40) and np.isin(anchors, pool).all()
    # what the anchors hand on: their neighbours minus the held-out cells and the focal cell itself
    rows, drawn = rewired_neighbourhoods(
        adata, focal, pool, np.random.default_rng(0), True, 50, OBSP.CONNECTIVITIES, held
    )
    assert rows[:, held].nnz == 0 and rows[np.arange(40), focal].sum() == 0 and rows.nnz > 40


def test_posterior_draws_take_cellinas_option(trained):
    model, adata, *_ = trained
    domain = adata.obs["domain"].to_numpy()
    focal, pool = np.flatnonzero(domain == "healthy")[:30], np.flatnonzero(domain == "tumour")
    kwargs = {"precomputed": False, "n_neighbours": 6, "n_draws": 2, "return_std": True, "seed": 1}
    mean_d, std_d = model.get_counterfactual_expression(focal, pool, **kwargs)
    mean_p, std_p = model.get_counterfactual_expression(focal, pool, uncertainty="posterior", **kwargs)
    again = model.get_counterfactual_expression(focal, pool, uncertainty="posterior", batch_size=11, **kwargs)[1]
    np.testing.assert_array_equal(mean_p, mean_d)
    assert std_p.mean() > 1.1 * std_d.mean()
    assert np.all(np.abs(again - std_p) <= 1e-3 * std_p + 1e-5 * mean_p)


def test_rewiring_adds_donor_to_focal_edges_only(trained):
    model, adata, *_ = trained
    focal = np.array([3, 8])
    rows = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 1], [100, 101, 3])), shape=(2, adata.n_obs))
    graph = model.rewired_graph(adata, focal, rows)
    assert sorted(graph[3].indices.tolist()) == [100, 101]
    assert graph[8].indices.tolist() == [3]  # another focal cell may be a donor
    others = np.setdiff1d(np.arange(adata.n_obs), focal)
    assert graph[others][:, focal].nnz == 0  # focal cells feed nobody else
    assert graph[100].nnz == sp.csr_matrix(adata.obsp["spatial_connectivities"])[100][:, others].nnz


def test_save_and_load_round_trip(trained, tmp_path):
    from cellina.model import load_model

    model, adata, held, _ = trained
    model.save(str(tmp_path), overwrite=True)
    for loaded in (CellinaGCN.load(str(tmp_path), adata=adata), load_model(str(tmp_path), adata=adata)):
        assert type(loaded) is CellinaGCN
        assert loaded.init_params_["non_kwargs"]["num_neighbors"] == [6, 3]
        assert np.array_equal(loaded.heldout_indices_, held)
        np.testing.assert_allclose(
            loaded.get_latent_representation(latent_key="s"), model.get_latent_representation(latent_key="s")
        )
    with pytest.raises(ValueError, match="different class"):
        Cellina.load(str(tmp_path), adata=adata)


def test_setup_and_options_are_checked(two_slide_tissue):
    adata = two_slide_tissue.copy()
    with pytest.raises(ValueError, match="spatial_connectivities_key='nope' is not in adata.obsp"):
        CellinaGCN.setup_anndata(adata, spatial_connectivities_key="nope", **SETUP)
    CellinaGCN.setup_anndata(adata, **SETUP)
    with pytest.raises(ValueError, match="n_layers=3"):
        CellinaGCN(adata, n_layers=3, num_neighbors=[5, 5])
    with pytest.raises(ValueError, match="x_spatial_layer='lognorm' is not in adata.layers"):
        CellinaGCN(adata, x_spatial_layer="lognorm")
    with pytest.raises(ValueError, match="condition_on_intrinsic"):
        CellinaGCN(adata, condition_on_intrinsic=True)
    with pytest.raises(ValueError, match="convolution_type='gat2'"):
        CellinaGCN(adata, convolution_type="gat2")
    with pytest.raises(ValueError, match="subgraph_type='full'"):
        CellinaGCN(adata, subgraph_type="full")


class SeedSpy(Callback):
    """Records each training minibatch's seeds and how many cells its subgraph reads."""

    def __init__(self):
        self.seeds, self.read = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        nodes = batch[GK.NODES].cpu().numpy()
        self.seeds.append(nodes[: batch["X"].shape[0]])
        self.read.append(nodes)


def test_patch_minibatches_train_on_every_seed_once_and_never_on_held_out_cells(two_slide_tissue):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    held = _held_out(adata)
    split = holdout_split(adata.n_obs, held, 0.1, 0)
    read = {}
    for patches in (None, 2):
        spy = SeedSpy()
        torch.manual_seed(0)
        model = CellinaGCN(adata, **SMALL, seed_patches=patches)
        assert ("seeds in 2 patches" in model._model_summary_string) == (patches == 2)
        model.train(
            max_epochs=2, batch_size=64, datasplitter_kwargs={"external_indexing": split}, callbacks=[spy], **QUIET
        )
        for epoch in (spy.seeds[: len(spy.seeds) // 2], spy.seeds[len(spy.seeds) // 2 :]):
            assert np.array_equal(np.sort(np.concatenate(epoch)), np.sort(split[0]))
        assert not np.isin(held, np.concatenate(spy.read)).any()
        read[patches] = np.mean([nodes.size for nodes in spy.read])
        assert model.get_latent_representation(latent_key="s").shape == (adata.n_obs, SMALL["n_latent"])
    # every neighbour, two hops: seeds that are neighbours share what their subgraphs read
    assert read[2] < 0.6 * read[None]
    with pytest.raises(ValueError, match="seed_patches=0 must be a positive int"):
        CellinaGCN(adata, seed_patches=0)


@pytest.mark.parametrize("kind", ["gcn", "gin", "sg", "mean"])
def test_other_graph_layers_train_and_predict(two_slide_tissue, kind):
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    model = CellinaGCN(adata, **SMALL, convolution_type=kind, num_neighbors=4, subgraph_type="directional")
    model.train(max_epochs=1, batch_size=128, **QUIET)
    s = model.get_latent_representation(latent_key="s", indices=np.arange(50))
    assert s.shape == (50, 4) and np.all(np.isfinite(s))
    with pytest.raises(ValueError, match="convolution_type='gat' only"):
        model.get_attention_weights(indices=[0])


def test_attention_by_group_finds_the_sender_the_attention_favours(two_slide_tissue):
    """A GATv2 layer whose scores grow with a CAF marker: CAF neighbours get more than uniform attention."""
    adata = two_slide_tissue.copy()
    CellinaGCN.setup_anndata(adata, **SETUP)
    model = CellinaGCN(adata, n_hidden=16, n_latent=4, n_layers=1)
    conv = model.module.s_encoder.layers[0].conv
    marker = list(adata.var_names).index("FIBC1")  # the CAF subtype's marker gene
    with torch.no_grad():
        for lin in (conv.lin_l, conv.lin_r):
            lin.weight.zero_()
            lin.bias.zero_()
        conv.lin_l.weight[0, marker] = 1.0
        conv.att.zero_()
        conv.att[0, 0, 0] = 4.0  # score of j -> i: 4 * log1p(FIBC1 counts of j)
    model.is_trained_ = True
    table = model.attention_by_group("coarse_type", layer=0)
    receivers = table["CAF"].dropna()
    assert receivers.size >= 5 and (receivers > 1.5).all()
    assert (table["Malignant"].dropna() < 1).all()
    raw = model.attention_by_group("coarse_type", normalize=False)
    assert (raw["CAF"].dropna() > raw["Malignant"].dropna().reindex(raw["CAF"].dropna().index)).all()
