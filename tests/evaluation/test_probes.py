"""Disentanglement probes of latents."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.evaluation import latent_probe_scores, niche_probe_score, within_group_probe_scores


@pytest.fixture
def group_latent():
    """A latent that knows only the group; malignant cells live in the tumour, myeloid cells anywhere."""
    rng = np.random.default_rng(0)
    groups = np.repeat(["malignant", "myeloid"], 300)
    labels = np.where(groups == "malignant", "tumour", rng.choice(["healthy", "tumour"], 600))
    latent = np.c_[(groups == "malignant") * 5.0, rng.normal(size=600)] + rng.normal(scale=0.1, size=(600, 2))
    return latent, labels, groups


def test_a_group_latent_predicts_the_label_across_groups(group_latent):
    latent, labels, _ = group_latent
    assert latent_probe_scores(latent, labels)["balanced_accuracy"] > 0.57  # chance is 0.5


def test_within_group_probe_ignores_what_the_groups_explain(group_latent):
    within = within_group_probe_scores(*group_latent)
    assert within["n_groups"] == 1  # the malignant group has one label only
    assert abs(within["balanced_accuracy"] - 0.5) < 0.1 and within["chance"] == 0.5


def test_within_group_probe_finds_a_leak_beyond_the_group(group_latent):
    latent, labels, groups = group_latent
    leaky = latent.copy()
    leaky[:, 1] += (labels == "tumour") * 4.0
    assert within_group_probe_scores(leaky, labels, groups)["balanced_accuracy"] > 0.9


def test_within_group_probe_rejects_bad_input(group_latent):
    latent, labels, groups = group_latent
    with pytest.raises(ValueError, match="no group has two label classes"):
        within_group_probe_scores(latent, np.array(["x"] * 600), groups)
    with pytest.raises(ValueError, match="got 600, 600 and 599"):
        within_group_probe_scores(latent, labels, groups[:-1])


@pytest.fixture
def three_labels():
    return np.repeat(["a", "b", "c"], 100)


def test_latent_probe_reads_a_separable_latent(three_labels):
    rng = np.random.default_rng(0)
    informative = rng.normal(size=(300, 4)) + np.repeat(np.eye(3, 4) * 6, 100, axis=0)
    out = latent_probe_scores(informative, three_labels)
    assert out["chance"] == pytest.approx(1 / 3)
    assert out["balanced_accuracy"] > 0.95


def test_latent_probe_of_noise_is_at_chance(three_labels):
    noise = latent_probe_scores(np.random.default_rng(1).normal(size=(300, 4)), three_labels)
    assert abs(noise["balanced_accuracy"] - 1 / 3) < 0.15


def test_latent_probe_rejects_bad_input(three_labels):
    latent = np.zeros((300, 4))
    with pytest.raises(ValueError, match="labels"):
        latent_probe_scores(latent, three_labels[:10])
    with pytest.raises(ValueError, match="two classes"):
        latent_probe_scores(latent, np.repeat("a", 300))


def test_niche_probe_scores_what_a_latent_knows_of_the_niche_beyond_the_type():
    rng = np.random.default_rng(0)
    n = 900
    types = rng.choice(["A", "B", "C"], size=n)
    type_level = {"A": -2.0, "B": 0.0, "C": 2.0}
    within = rng.normal(size=n)  # the niche beyond the type
    niche = np.column_stack([np.vectorize(type_level.get)(types) + within, rng.normal(scale=0.1, size=(n, 7))])
    niche = niche @ rng.normal(size=(8, 20))  # spread over 20 features
    leaky = np.column_stack([within + rng.normal(scale=0.2, size=n), rng.normal(size=n)])
    clean = rng.normal(size=(n, 2))
    type_only = np.vectorize(type_level.get)(types)[:, None] + rng.normal(scale=0.01, size=(n, 1))
    assert niche_probe_score(leaky, niche, types) > 0.5
    assert abs(niche_probe_score(clean, niche, types)) < 0.05
    # knowing the type again adds nothing
    assert abs(niche_probe_score(type_only, niche, types)) < 0.05
    with pytest.raises(ValueError, match="differ in cells"):
        niche_probe_score(clean[:10], niche, types)
