"""Warnings of the node-perturbation functions point at the caller's line, not at cellina's code.

The checks that warn sit at different depths below the public functions (planning, the
representation check, the niche transform); each must name the line that called cellina,
where the user can act on it.
"""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cellina.spatial import (
    _node_perturbation,
    make_neighbor_perturbation,
    make_perturbed_expression,
    spatial_neighbors,
)


def _counts_tissue(n: int = 80, n_genes: int = 12) -> ad.AnnData:
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(n, n_genes)).astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        obs=pd.DataFrame({"ct": pd.Categorical(rng.choice(["A", "B"], size=n))}, index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]),
    )
    adata.obsm["spatial"] = rng.uniform(0, 200, size=(n, 2))
    spatial_neighbors(adata, bandwidth=30.0, max_neighbours=8)
    return adata


def _warnings_of(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        call()
    return seen


def test_every_perturbation_warning_names_the_callers_file():
    adata = _counts_tissue()
    calls = [
        # unknown gene (planning) and no niche-feature record (niche transform)
        lambda: make_neighbor_perturbation(adata, {"g1": 1.0, "NOPE": 2.0}),
        # counts given to the additive log mode (representation check)
        lambda: make_neighbor_perturbation(adata, {"g1": 1.0}, add_shift=True, obsm_key_out="cf2"),
        lambda: make_perturbed_expression(adata, {"A": {"g1": 1.0, "NOPE": 1.0}}, groupby="ct"),
        lambda: _node_perturbation(adata.X, {"g1": 1}, {"g1": 1.0, "NOPE": 1.0}),
    ]
    for call in calls:
        seen = _warnings_of(call)
        assert seen, "each call above is expected to warn"
        assert [w.filename for w in seen] == [__file__] * len(seen), [(str(w.message)[:40], w.filename) for w in seen]
