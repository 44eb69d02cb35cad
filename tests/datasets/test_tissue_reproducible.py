"""A seed names one synthetic tissue for good: refactors must not reorder its random draws.

The published figures (docs/benchmarks.md) are built on fixed seeds. The other dataset tests
only compare two tissues made by the same code, so a change that reorders the draws would pass
them; this one pins a few numbers of one small tissue. Counts and floats are compared with a
tolerance that absorbs last-bit differences between platforms but not a different draw.
"""

from __future__ import annotations

import numpy as np

from cellina.datasets import GRAPH_KEY, TRUTH_KEY, synthetic_tissue


def test_a_seed_gives_the_same_tissue_as_when_the_figures_were_made():
    adata = synthetic_tissue(n_cells=300, n_genes=120, n_slides=2, seed=0, store_means=False)
    assert np.bincount(adata.obs["cell_type"].cat.codes, minlength=10).tolist() == [
        75,
        37,
        17,
        30,
        25,
        29,
        23,
        15,
        29,
        20,
    ]
    assert np.bincount(adata.obs["domain"].cat.codes, minlength=3).tolist() == [150, 60, 90]
    assert adata.obsp[GRAPH_KEY].nnz == 5948
    np.testing.assert_allclose(adata.obsm["spatial"].sum(), 157383.79939470184, rtol=1e-9)
    np.testing.assert_allclose(adata.obs["cellina_true_size"].sum(), 160388.57773720584, rtol=1e-9)
    np.testing.assert_allclose(
        adata.var["cellina_true_baseline"].to_numpy()[:3],
        [-4.968626973894445, -7.308263904978311, -5.676362258415532],
        rtol=1e-9,
    )
    np.testing.assert_allclose(
        adata.var["cellina_true_theta"].to_numpy()[:2], [3.6787837295392514, 5.672870629469143], rtol=1e-9
    )
    np.testing.assert_allclose(adata.uns[TRUTH_KEY]["l_ref"], 3.1390261133537183, rtol=1e-6)
    np.testing.assert_allclose(adata.X.astype(np.float64).sum(), 201749.0, rtol=1e-4)
