"""Log-fold changes as in the published tutorial: get_lfc, normalisation, safe log2 ratios."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellina.evaluation import get_lfc, normalize_counts, safe_log2_fold_change


def _hand_lfc(control, target, cf, normalize=True):
    def norm(m):
        m = np.asarray(m, dtype=float)
        return m / (m.sum(axis=1, keepdims=True) + 1e-8) * 1e4 if normalize else m

    mc, mt, mf = (norm(m).mean(axis=0) for m in (control, target, cf))
    return np.log2((mt + 1e-6) / (mc + 1e-6)), np.log2((mf + 1e-6) / (mc + 1e-6))


def test_get_lfc_matches_hand_computation():
    control = np.array([[1.0, 3.0, 0.0, 6.0], [2.0, 2.0, 0.0, 4.0]])
    target = np.array([[4.0, 1.0, 0.0, 5.0], [6.0, 1.0, 1.0, 2.0], [2.0, 2.0, 0.0, 6.0]])
    cf = np.array([[3.0, 2.0, 0.0, 5.0]])
    true_lfc, pred_lfc, top = get_lfc(control, target, cf, n_deg=2)
    # Worked by hand for gene 0: control shares 0.1 and 0.25 -> mean 1750 CP10K;
    # target shares 0.4, 0.6, 0.2 -> 4000 CP10K.
    assert true_lfc[0] == pytest.approx(np.log2((4000 + 1e-6) / (1750 + 1e-6)), rel=1e-9)
    exp_true, exp_pred = _hand_lfc(control, target, cf)
    np.testing.assert_allclose(true_lfc, exp_true, rtol=1e-12)
    np.testing.assert_allclose(pred_lfc, exp_pred, rtol=1e-12)
    # Gene 2 is absent from control: its change dwarfs the others, gene 0 is next.
    assert list(top) == [2, 0]


def test_get_lfc_sparse_equals_dense_and_unnormalised():
    rng = np.random.default_rng(0)
    c, t, f = (rng.poisson(2.0, size=(n, 30)).astype(float) for n in (20, 15, 10))
    dense = get_lfc(c, t, f, n_deg=5)
    sparse = get_lfc(sp.csr_matrix(c), sp.csr_matrix(t), sp.csr_matrix(f), n_deg=5)
    for a, b in zip(dense, sparse, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    raw_true, raw_pred, _ = get_lfc(c, t, f, normalize_counts=False)
    exp_true, exp_pred = _hand_lfc(c, t, f, normalize=False)
    np.testing.assert_allclose(raw_true, exp_true)
    np.testing.assert_allclose(raw_pred, exp_pred)


def test_get_lfc_rejects_gene_mismatch_and_bad_k():
    with pytest.raises(ValueError, match="counterfactual"):
        get_lfc(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="n_deg"):
        get_lfc(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)), n_deg=0)


def test_normalize_and_safe_log2():
    x = np.array([[1.0, 3.0], [0.0, 0.0]])
    out = normalize_counts(x)
    np.testing.assert_allclose(out[0], [2500.0, 7500.0], rtol=1e-8)
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    np.testing.assert_allclose(safe_log2_fold_change([4.0, 0.0], [1.0, 0.0]), [2.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        safe_log2_fold_change([1.0, 2.0], [1.0])
