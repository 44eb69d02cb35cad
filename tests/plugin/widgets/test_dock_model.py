"""The Model dock offers the presets, explains each option in the presets module's words."""

from __future__ import annotations

import pytest

from cellina.model.presets import OPTION_NOTES, PRESETS, PUBLISHED, RECOMMENDED
from cellina.plugin.widgets import ModelWidget

OPTIONS = {
    "niche_decoder": "niche_decoder",
    "spatial_decoding": "spatial_decoding",
    "type_aware_discriminator": "discriminator_input",
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
