"""Per-cell colours for categories, genes and values: vectorised lookups with what a legend needs."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.plugin._colours import colours_for, continuous_colours


def test_a_category_is_a_palette_lookup_by_code(tissue):
    rgba, info = colours_for(tissue, "cell_type")
    assert info.kind == "categorical" and info.categories == ["A", "B", "C"]
    codes = tissue.obs["cell_type"].cat.codes.to_numpy()
    np.testing.assert_array_equal(rgba, info.colours[codes])


def test_a_gene_is_a_colormap_lookup(tissue):
    rgba, info = colours_for(tissue, "g3", layer="counts")
    assert info.kind == "continuous" and rgba.shape == (120, 4)
    values = tissue.layers["counts"][:, 3].toarray().ravel()
    # brighter viridis (higher value) means a larger green channel
    order = np.argsort(values)
    assert rgba[order[-1], 1] >= rgba[order[0], 1]


def test_missing_values_are_grey():
    rgba, _ = continuous_colours(np.array([0.0, np.nan, 1.0]), "v", clim=(0, 1))
    np.testing.assert_allclose(rgba[1], [0.5, 0.5, 0.5, 1.0])


def test_an_unknown_key_is_named(tissue):
    with pytest.raises(KeyError, match="'nothing'"):
        colours_for(tissue, "nothing")
