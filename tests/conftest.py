"""Test-wide set-up: a display for Qt, and few threads on small CI machines."""

from __future__ import annotations

import os
import shutil

import pytest

# Without a display and without Xvfb, Qt would abort the whole test process; offscreen
# still supports widgets and layers, only rendering tests must then be skipped.
HAS_RENDERING_DISPLAY = bool(os.environ.get("DISPLAY")) or shutil.which("Xvfb") is not None
if not HAS_RENDERING_DISPLAY:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_collection_modifyitems(config, items):
    if HAS_RENDERING_DISPLAY:
        return
    skip = pytest.mark.skip(reason="needs an OpenGL display (install xvfb)")
    for item in items:
        if "render" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # napari's make_napari_viewer fixture reads item.rep_call in its teardown to decide
    # whether to check for leaked widgets; without this a failing test reports a second,
    # misleading error.
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def prepared_tissue(
    n_cells: int = 640, n_genes: int = 100, n_slides: int = 2, seed: int = 0, composition_key: str | None = None
):
    """A small synthetic tissue ready for Cellina: graph, niche features, counts in X and a layer.

    Real data has several slides, so the default has two; ``obs["slide"]`` names them. With
    ``composition_key`` the niche features end in the neighbours' shares of that column's values.
    """
    import scanpy as sc

    from cellina.datasets import synthetic_tissue
    from cellina.spatial import compute_spatial_features, spatial_neighbors

    adata = synthetic_tissue(n_cells=n_cells, n_genes=n_genes, n_slides=n_slides, seed=seed, store_means=False)
    adata.X = adata.layers["counts"].copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    spatial_neighbors(adata, bandwidth=20.0, max_neighbours=20, library_key="slide")
    compute_spatial_features(adata, composition_key=composition_key)
    adata.X = adata.layers["counts"].copy()
    return adata


@pytest.fixture(scope="session")
def make_tissue():
    """The tissue builder :func:`prepared_tissue`, for tests that need other sizes."""
    return prepared_tissue


@pytest.fixture(scope="session")
def two_slide_tissue():
    """Session-wide two-slide tissue; copy it before registering or changing it."""
    return prepared_tissue()


@pytest.fixture
def two_slide_counts():
    """A small tissue on two slides, laid out as the held-out protocol expects.

    Raw counts in ``X`` and ``layers["counts"]``, log1p(CP10K) in ``layers["lognorm"]``,
    a k-NN graph built per slide (no edge crosses slides) in
    ``obsp["spatial_connectivities"]`` with an identical copy in
    ``obsp["spatial_connectivities_orig"]``, and niche features of the lognorm layer in
    ``obsm["spatial_x"]`` (with their provenance record).
    """
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from cellina.spatial import compute_spatial_features, spatial_neighbors

    rng = np.random.default_rng(7)
    n, n_genes = 180, 25
    counts = rng.poisson(6.0, size=(n, n_genes)).astype(np.float32)
    counts[rng.random((n, n_genes)) < 0.3] = 0
    counts[:, 0] += 1  # every cell has counts, so every cell is normalisable
    lognorm = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame(
            {
                "slide": pd.Categorical(np.repeat(["s1", "s2"], n // 2)),
                "cell_type": pd.Categorical(rng.choice(["A", "B", "C"], size=n)),
            },
            index=[f"cell{i}" for i in range(n)],
        ),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.layers["counts"] = sp.csr_matrix(counts)
    adata.layers["lognorm"] = sp.csr_matrix(lognorm)
    adata.obsm["spatial"] = rng.uniform(0, 100, size=(n, 2))
    spatial_neighbors(adata, bandwidth=15.0, max_neighbours=8, library_key="slide")
    adata.obsp["spatial_connectivities_orig"] = adata.obsp["spatial_connectivities"].copy()
    compute_spatial_features(adata, layer="lognorm")
    return adata
