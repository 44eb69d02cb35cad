"""The Model dock offers the presets, explains each option in the presets module's words."""

from __future__ import annotations

import pytest

from cellina.model.presets import OPTION_NOTES, PRESETS, PUBLISHED, RECOMMENDED
from cellina.plugin.widgets import ModelWidget

OPTIONS = {
    "niche_decoder": "niche_decoder",
    "spatial_decoding": "spatial_decoding",
    "type_aware_discriminator": "discriminator_input",
    "spatial_encoder": "spatial_encoder",
}


@pytest.fixture
def dock(make_napari_viewer):
    return ModelWidget(make_napari_viewer())


def test_the_presets_are_offered_recommended_first(dock):
    names = [dock.preset.itemData(i) for i in range(dock.preset.count())]
    assert sorted(names) == sorted(PRESETS) and dock.preset.currentData() == "recommended"
    assert dock.params().preset == "recommended"


@pytest.mark.parametrize("option", list(OPTIONS))
def test_each_option_is_explained_by_the_presets_module(dock, option):
    assert getattr(dock, OPTIONS[option]).toolTip() == OPTION_NOTES[option]


def test_the_preset_tooltip_lists_every_option_it_sets_with_its_note(dock):
    dock.preset.setCurrentIndex(dock.preset.findData("published"))
    tip = dock.preset.toolTip()
    assert PUBLISHED.summary in tip
    for option in (*PUBLISHED.model, *PUBLISHED.plan):
        assert option in tip and OPTION_NOTES[option][:40] in tip


def test_choosing_a_preset_sets_its_options(dock):
    dock.preset.setCurrentIndex(dock.preset.findData("published"))
    params = dock.params()
    assert params.preset == "published"
    for option in OPTIONS:
        assert getattr(params, option) == PUBLISHED.model[option]
    dock.preset.setCurrentIndex(dock.preset.findData("recommended"))
    for option in OPTIONS:
        assert getattr(dock.params(), option) == RECOMMENDED.model[option]


def test_an_option_can_differ_from_its_preset(dock):
    dock.niche_decoder.setCurrentIndex(dock.niche_decoder.findData("factorised"))
    params = dock.params()
    assert params.preset == "recommended" and params.niche_decoder == "factorised"


def test_choices_are_marked_with_the_presets_that_use_them(dock):
    labels = {dock.niche_decoder.itemData(i): dock.niche_decoder.itemText(i) for i in range(dock.niche_decoder.count())}
    assert "recommended" in labels["type_gated"] and "published" in labels["concat"]
    assert "(" not in labels["factorised"]


def test_the_graph_variant_shows_its_own_options_only_when_chosen(dock):
    assert [dock.variant.itemText(i) for i in range(dock.variant.count())] == ["Cellina", "CellinaGCN"]
    assert dock.graph_box.isHidden() and dock.params().variant == "cellina"
    dock.variant.setCurrentIndex(dock.variant.findData("gcn"))
    assert not dock.graph_box.isHidden() and "GATv2" in dock.variant.toolTip()
    # the contrastive weight and the sampling follow the preset: the recommended one samples 10 + 5
    # neighbours in directional subgraphs without the contrastive loss, the published one takes all
    # neighbours in induced subgraphs with it
    assert (dock.num_neighbors.text(), dock.subgraph_type.currentText()) == ("10, 5", "directional")
    params = dock.params()
    assert (params.link_prediction_weight, params.num_neighbors, params.subgraph_type) == (0.0, (10, 5), "directional")
    # seeds are drawn at random unless patches are asked for
    assert dock.seed_patches.text() == "random" and params.seed_patches is None
    dock.seed_patches.setValue(8)
    assert dock.params().seed_patches == 8 and dock.params().model_kwargs()["seed_patches"] == 8
    dock.preset.setCurrentIndex(dock.preset.findData("published"))
    assert (dock.num_neighbors.text(), dock.subgraph_type.currentText()) == ("all", "induced")
    # what the user sets after choosing the preset is kept
    dock.num_neighbors.setText("8, 4")
    dock.subgraph_type.setCurrentText("directional")
    params = dock.params()
    assert params.link_prediction_weight == 1.0 and params.model_kwargs()["link_prediction_weight"] == 1.0
    assert (params.variant, params.num_neighbors, params.subgraph_type) == ("gcn", (8, 4), "directional")
    assert params.preset == "published" and params.niche_decoder == PUBLISHED.model["niche_decoder"]
    assert params.model_kwargs()["num_neighbors"] == [8, 4]
    # the niche encoder's choice finishes the graph layers: the published preset's is passed on
    assert dock.spatial_encoder.isEnabled() and params.model_kwargs()["spatial_encoder"] == "mlp"
    dock.variant.setCurrentIndex(dock.variant.findData("cellina"))
    assert dock.graph_box.isHidden() and "num_neighbors" not in dock.params().model_kwargs()
    assert dock.spatial_encoder.isEnabled() and dock.params().model_kwargs()["spatial_encoder"] == "mlp"


def test_neighbours_per_hop_that_cannot_be_read_are_named(dock, errors):
    dock.variant.setCurrentIndex(dock.variant.findData("gcn"))
    dock.num_neighbors.setText("ten")
    assert dock.train() is None
    assert "num_neighbors='ten'" in errors[-1] and not dock.session.busy


def test_the_attention_box_says_why_a_cellina_model_has_none(make_napari_viewer, trained_two_slide):
    from cellina.plugin.widgets import ResultsWidget

    results = ResultsWidget(make_napari_viewer())
    box = results.attention
    assert not box.pick_button.isEnabled() and "no model yet" in box.toolTip()
    session = results.session
    session.set_adata(trained_two_slide.adata.copy(), trained_two_slide.keys)
    session.set_model(trained_two_slide.model)
    assert not box.pick_button.isEnabled() and not box.heatmap_button.isEnabled()
    assert "CellinaGCN only" in box.toolTip() and "Cellina" in box.receiver_label.text()
