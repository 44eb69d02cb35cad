"""The mean-shift baseline and pseudobulk domain shifts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellina.evaluation import (
    get_lfc,
    global_pseudobulk_lfc,
    mean_shift_baseline,
    mean_shift_delta,
    perturbation_table,
    pseudobulk,
    pseudobulk_lfc,
)


def test_mean_shift_baseline_constructed_example():
    # Two reference types, each 10x higher for gene 0 in the target domain relative to gene 1.
    src = np.array([[10.0, 10.0], [20.0, 20.0], [5.0, 15.0]])
    tgt = np.array([[50.0, 5.0], [100.0, 10.0], [30.0, 10.0]])
    groups_src = np.array(["a", "a", "b"])
    groups_tgt = np.array(["a", "a", "b"])

    def logn(m):
        return np.log1p(m / m.sum(axis=1, keepdims=True) * 1e4)

    d_a = logn(tgt[:2]).mean(0) - logn(src[:2]).mean(0)
    d_b = logn(tgt[2:]).mean(0) - logn(src[2:]).mean(0)
    delta = mean_shift_delta(src, tgt, groups_src, groups_tgt)
    np.testing.assert_allclose(delta, (d_a + d_b) / 2)
    pooled = mean_shift_delta(src, tgt)
    np.testing.assert_allclose(pooled, logn(tgt).mean(0) - logn(src).mean(0))

    control = np.array([[3.0, 7.0], [1.0, 1.0]])
    pred = mean_shift_baseline(control, src, tgt, groups_src, groups_tgt)
    np.testing.assert_allclose(pred, np.expm1(logn(control) + delta))
    # A zero shift returns the control cells on the normalised scale.
    same = mean_shift_baseline(sp.csr_matrix(control), delta=np.zeros(2))
    np.testing.assert_allclose(same, control / control.sum(1, keepdims=True) * 1e4)
    # The baseline moves the control towards the target in get_lfc terms.
    true_lfc, pred_lfc, _ = get_lfc(control, tgt, pred)
    assert np.sign(pred_lfc[0]) == np.sign(true_lfc[0]) == 1


def test_mean_shift_baseline_errors():
    with pytest.raises(ValueError, match="source_groups"):
        mean_shift_delta(np.ones((2, 2)), np.ones((2, 2)), source_groups=["a", "b"])
    with pytest.raises(ValueError, match="no group"):
        mean_shift_delta(np.ones((2, 2)), np.ones((2, 2)), ["a", "a"], ["b", "b"])
    with pytest.raises(ValueError, match="delta"):
        mean_shift_baseline(np.ones((2, 3)), delta=np.zeros(2))
    with pytest.raises(ValueError, match="source_reference"):
        mean_shift_baseline(np.ones((2, 3)))


@pytest.fixture
def small_adata():
    rng = np.random.default_rng(0)
    n, g = 60, 12
    counts = rng.poisson(4.0, size=(n, g)).astype(np.float32)
    obs = pd.DataFrame(
        {
            "ct": rng.choice(["A", "B", "C"], size=n),
            "dom": np.repeat(["healthy", "tumour", "margin"], n // 3),
        },
        index=[f"c{i}" for i in range(n)],
    )
    obs.loc[obs.index[:20], "ct"] = np.where(np.arange(20) < 10, "A", "B")  # no C in healthy
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)]))
    adata.layers["counts"] = sp.csr_matrix(counts)
    return adata


def _dense_pseudobulk_log(counts, mask):
    s = counts[mask].sum(axis=0)
    return np.log1p(s / s.sum() * 1e4)


def test_pseudobulk_lfc_matches_dense_reference(small_adata):
    before = small_adata.copy()
    lfc = pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "tumour")
    counts = small_adata.layers["counts"].toarray().astype(np.float64)
    ct = small_adata.obs["ct"].to_numpy()
    dom = small_adata.obs["dom"].to_numpy()
    assert list(lfc.index) == ["A", "B"]  # C is absent from the healthy domain
    assert list(lfc.columns) == list(small_adata.var_names)
    for t in ["A", "B"]:
        ref = _dense_pseudobulk_log(counts, (ct == t) & (dom == "tumour")) - _dense_pseudobulk_log(
            counts, (ct == t) & (dom == "healthy")
        )
        np.testing.assert_allclose(lfc.loc[t].to_numpy(), ref, rtol=1e-6)
    glob = global_pseudobulk_lfc(small_adata, "dom", "healthy", "tumour", labels_key="ct", exclude="A")
    ref = _dense_pseudobulk_log(counts, (ct != "A") & (dom == "tumour")) - _dense_pseudobulk_log(
        counts, (ct != "A") & (dom == "healthy")
    )
    np.testing.assert_allclose(glob.to_numpy(), ref, rtol=1e-6)
    obs, summed = pseudobulk(small_adata, "dom", "ct")
    assert int(obs["n_cells"].sum()) == small_adata.n_obs
    np.testing.assert_allclose(summed.sum(), counts.sum())
    # Nothing written to the caller's object.
    assert small_adata.obs.equals(before.obs) and list(small_adata.uns) == list(before.uns)


def test_pseudobulk_errors_name_the_culprit(small_adata):
    with pytest.raises(ValueError, match="'nope'"):
        pseudobulk_lfc(small_adata, "nope", "dom", "healthy", "tumour")
    with pytest.raises(ValueError, match="'mars'"):
        pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "mars")
    with pytest.raises(ValueError, match="'raw'"):
        pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "tumour", layer="raw")
    with pytest.raises(ValueError, match="Z"):
        global_pseudobulk_lfc(small_adata, "dom", "healthy", "tumour", labels_key="ct", exclude="Z")


def test_perturbation_table_replaces_holdout_with_global(small_adata):
    lfc = pseudobulk_lfc(small_adata, "ct", "dom", "healthy", "tumour")
    glob = global_pseudobulk_lfc(small_adata, "dom", "healthy", "tumour", labels_key="ct", exclude="A")
    table = perturbation_table(lfc, n_genes=3, holdout="A", global_lfc=glob)
    assert set(table) == {"A", "B"}
    assert all(len(s) == 3 for s in table.values())
    top_glob = glob[glob.abs().nlargest(3).index]
    pd.testing.assert_series_equal(table["A"], top_glob, check_names=False)
    assert table["B"].abs().min() >= lfc.loc["B"].abs().nlargest(3).min()
