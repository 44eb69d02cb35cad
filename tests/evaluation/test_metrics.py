"""DEG scores, truth scores and the energy distance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cellina.evaluation import (
    energy_distance,
    lfc_scores,
    pearson_top_k,
    rescaled_skill,
    signed_precision_at_k,
    skill,
    spearman_top_k,
    top_k_degs,
    truth_scores,
)


def test_top_k_and_correlations_edge_cases():
    t = np.array([0.1, -3.0, 2.0, 0.0, np.nan])
    assert list(top_k_degs(t, 2)) == [1, 2]
    # k larger than the number of genes: every gene, NaN last.
    assert list(top_k_degs(t, 10)) == [1, 2, 0, 3, 4]
    p = np.array([0.2, -2.5, 1.5, 0.1, 0.0])
    assert pearson_top_k(t, p, k=10) == pytest.approx(np.corrcoef(t[:4], p[:4])[0, 1])
    assert spearman_top_k(t, p, k=3) == pytest.approx(1.0)
    # A constant prediction has no correlation.
    assert np.isnan(pearson_top_k(t, np.zeros(5), k=3))
    assert np.isnan(spearman_top_k(np.ones(5), p, k=None))
    with pytest.raises(ValueError, match="length"):
        pearson_top_k(t, p[:3])
    with pytest.raises(ValueError, match="k"):
        top_k_degs(t, 0)


def test_signed_precision_at_k():
    t = np.array([3.0, -2.0, 1.0, 0.1, 0.05])
    assert signed_precision_at_k(t, t, k=2) == 1.0
    # Right genes, wrong directions.
    assert signed_precision_at_k(t, -t, k=2) == 0.0
    # Predicted top-2 = {0, 3}: only gene 0 is a true top-2 gene with the right sign.
    assert signed_precision_at_k(t, np.array([2.0, 0.0, 0.0, 5.0, 0.0]), k=2) == 0.5
    # Gene 1 in the predicted top list but with the wrong sign does not count.
    assert signed_precision_at_k(t, np.array([2.0, 1.0, 0.0, 0.0, 0.0]), k=2) == 0.5
    # k beyond the number of genes is clipped: every gene, perfect.
    assert signed_precision_at_k(t, t, k=50) == 1.0


def test_skill_perfect_zero_doubled():
    true = np.array([1.0, -2.0, 0.5, 0.0])
    assert skill(true, true) == pytest.approx(1.0)
    assert skill(np.zeros(4), true) == pytest.approx(0.0)
    assert skill(2 * true, true) == pytest.approx(0.0)
    assert skill(0.5 * true, true) == pytest.approx(0.75)
    assert skill(-true, true) == pytest.approx(-3.0)
    assert np.isnan(skill(true, np.zeros(4)))


def test_lfc_scores_of_a_perfect_prediction():
    t = np.random.default_rng(1).normal(size=100)
    assert lfc_scores(t, t, k=20) == {
        "pearson": pytest.approx(1.0),
        "spearman": pytest.approx(1.0),
        "signed_precision": 1.0,
        "skill": pytest.approx(1.0),
        "k": 20,
    }


@pytest.fixture
def half_change():
    """A true change on 10 responsive genes, and a prediction of half of it plus 0.1 on the others."""
    t = np.random.default_rng(1).normal(size=100)
    resp = np.zeros(100, dtype=bool)
    resp[:10] = True
    true_change = np.where(resp, t, 0.0)
    return true_change * 0.5 + np.where(resp, 0.0, 0.1), true_change, resp


@pytest.mark.parametrize(
    ("score", "value"),
    [
        ("truth_pearson", 1.0),
        ("truth_skill", 0.75),
        ("truth_slope", 0.5),
        ("truth_cosine", 1.0),
        ("null_change", 0.1),
        ("null_change_true", 0.0),
    ],
)
def test_truth_scores_of_half_the_change(half_change, score, value):
    pred, true_change, resp = half_change
    assert truth_scores(pred, true_change, resp, ~resp)[score] == pytest.approx(value)


def test_skill_is_fixed_by_the_direction_and_the_size():
    rng = np.random.default_rng(3)
    true_change = rng.normal(size=40)
    pred = 0.6 * true_change + rng.normal(scale=0.5, size=40)
    scores = truth_scores(pred, true_change, np.arange(40))
    cosine = scores["truth_cosine"]
    assert 0.5 < cosine < 0.95
    assert rescaled_skill(cosine, scores["truth_slope"]) == pytest.approx(scores["truth_skill"])
    # every rescaling of the prediction lies on the parabola, whose top is (cos^2, cos^2)
    for factor in (0.3, 1.0, 2.5):
        rescaled = truth_scores(factor * pred, true_change, np.arange(40))
        assert rescaled["truth_cosine"] == pytest.approx(cosine)
        assert rescaled_skill(cosine, rescaled["truth_slope"]) == pytest.approx(rescaled["truth_skill"])
        assert rescaled["truth_skill"] <= cosine**2 + 1e-12
    best = truth_scores(pred * cosine**2 / scores["truth_slope"], true_change, np.arange(40))
    assert best["truth_skill"] == pytest.approx(cosine**2)
    assert np.isnan(rescaled_skill(-0.2, 1.0))


@pytest.mark.parametrize("responsive", [np.zeros(100, dtype=bool), [0, 200]])
def test_truth_scores_need_valid_responsive_genes(half_change, responsive):
    pred, true_change, _ = half_change
    with pytest.raises(ValueError, match="responsive"):
        truth_scores(pred, true_change, responsive)


@pytest.fixture
def counts_and_shifted():
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(80, 40)).astype(float)
    y = x.copy()
    y[:, :10] *= 4  # a strong shift of a gene block
    return x, y


def test_energy_distance_of_a_population_to_itself_is_zero(counts_and_shifted):
    x, _ = counts_and_shifted
    assert energy_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(sp.csr_matrix(x), x, space="log") == pytest.approx(0.0, abs=1e-9)


def test_energy_distance_sees_a_shift_beyond_sampling_noise(counts_and_shifted):
    x, y = counts_and_shifted
    d_shift = energy_distance(x, y)
    assert d_shift > 0.5
    x2 = np.random.default_rng(5).poisson(3.0, size=(80, 40)).astype(float)
    assert energy_distance(x, x2) < 0.25 * d_shift


def test_energy_distance_subsamples_deterministically(counts_and_shifted):
    _, y = counts_and_shifted
    big = np.random.default_rng(1).poisson(3.0, size=(300, 40)).astype(float)
    assert energy_distance(big, y, max_cells=50, seed=3) == energy_distance(big, y, max_cells=50, seed=3)


def test_energy_distance_of_two_point_masses_in_latent_space():
    a, b = np.zeros((5, 2)), np.full((5, 2), [3.0, 0.0])
    assert energy_distance(a, b, space="log", normalize=False) == pytest.approx(6.0)


def test_energy_distance_rejects_bad_input(counts_and_shifted):
    x, y = counts_and_shifted
    with pytest.raises(ValueError, match="space"):
        energy_distance(x, y, space="umap")
    with pytest.raises(ValueError, match="features"):
        energy_distance(x, y[:, :5])


def test_separation_auroc_is_the_mann_whitney_statistic():
    from cellina.evaluation._metrics import separation_auroc, truth_scores

    assert separation_auroc([3, 4], [1, 2]) == 1.0
    assert separation_auroc([1, 2], [3, 4]) == 0.0
    assert separation_auroc([1, 3], [2, 2]) == 0.5  # one win, one loss
    assert separation_auroc([2], [2]) == 0.5  # a tie counts one half
    assert np.isnan(separation_auroc([], [1.0]))
    true = np.array([1.0, -1.0, 0.5, 0.0, 0.0, 0.0])
    good = truth_scores(true * 0.8, true, responsive=[0, 1, 2], null=[3, 4, 5])
    assert good["truth_auroc"] == 1.0
    noisy = truth_scores(np.array([0.1, 0.0, 0.1, 0.9, -0.8, 0.0]), true, responsive=[0, 1, 2], null=[3, 4, 5])
    assert noisy["truth_auroc"] < 0.5


def test_the_auroc_ranks_the_change_beyond_the_common_normalisation_shift():
    from cellina.evaluation._metrics import truth_scores

    # library normalisation moves every gene by the same -0.2; gene 2 responds by +0.15, so its whole
    # change (-0.05) is smaller than the null genes' (-0.2): it still responds, and the exact change scores 1
    niche = np.array([1.0, -0.6, 0.15, 0.0, 0.0, 0.0, 0.0])
    true = niche - 0.2
    exact = truth_scores(true, true, responsive=[0, 1, 2], null=[3, 4, 5, 6])
    assert exact["truth_auroc"] == 1.0 and exact["null_change_true"] == pytest.approx(0.2)
    # a prediction that gets the normalisation shift wrong but the responses right loses nothing
    assert truth_scores(niche + 0.3, true, responsive=[0, 1, 2], null=[3, 4, 5, 6])["truth_auroc"] == 1.0
    # missing gene 2's response ranks it with the null genes
    flat = truth_scores(np.where(np.arange(7) == 2, -0.2, true), true, responsive=[0, 1, 2], null=[3, 4, 5, 6])
    assert flat["truth_auroc"] == pytest.approx((2 * 4 + 0.5 * 4) / 12)
