"""The data-driven niche reach: a validation curve over bandwidths, on two-slide worlds whose reach is known."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.datasets import make_world
from cellina.spatial import CellinaKeyError, NicheReachCurve, niche_reach_curve

# dev_ligand_gaussian: receivers sense a ligand over a Gaussian kernel of 25 um (two slides)
TRUE_BANDWIDTH = 25.0


@pytest.fixture(scope="module")
def ligand_world():
    return make_world("dev_ligand_gaussian", n_cells=4000, n_genes=200)


@pytest.fixture(scope="module")
def ligand_curve(ligand_world):
    return niche_reach_curve(ligand_world, "coarse_type", layer="counts", library_key="slide")


def test_the_curve_peaks_near_the_true_reach(ligand_curve):
    curve = ligand_curve
    assert isinstance(curve, NicheReachCurve)
    assert curve.signal
    # the suggestion lies within a factor of two of the world's own kernel, and so does the best score
    assert TRUE_BANDWIDTH / 2 <= curve.suggested_bandwidth <= TRUE_BANDWIDTH * 2
    assert TRUE_BANDWIDTH / 2 <= curve.best_bandwidth <= TRUE_BANDWIDTH * 2
    best = int(np.argmax(curve.score))
    # too short a reach is clearly worse than the best, not within noise
    assert curve.score[0] < curve.score[best] - 2 * curve.score_se[best]
    assert curve.suggested_bandwidth <= curve.best_bandwidth


def test_the_curve_reports_neighbours_and_a_cap_that_covers_the_suggestion(ligand_curve):
    curve = ligand_curve
    frame = curve.to_frame()
    assert list(frame["bandwidth"]) == sorted(frame["bandwidth"])
    assert np.all(np.diff(curve.median_neighbours) >= 0)
    assert frame["suggested"].sum() == 1
    i = int(np.flatnonzero(frame["suggested"])[0])
    assert curve.suggested_max_neighbours >= curve.median_neighbours[i]
    assert curve.fold_scores.shape == (5, len(curve.bandwidths))
    record = curve.as_record()
    assert record["suggested_bandwidth"] == curve.suggested_bandwidth
    assert "suggested bandwidth" in curve.describe()


def test_shuffled_positions_have_no_signal(ligand_world):
    shuffled = ligand_world.copy()
    shuffled.obsm["spatial"] = shuffled.obsm["spatial"][np.random.default_rng(0).permutation(shuffled.n_obs)]
    curve = niche_reach_curve(shuffled, "coarse_type", layer="counts", library_key="slide")
    assert not curve.signal
    assert curve.score.max() < 0.0005
    assert "no reach stands out" in curve.describe()


def test_same_seed_same_curve_and_held_out_cells_are_not_scored(ligand_world):
    held = np.flatnonzero(ligand_world.obs["coarse_type"].to_numpy() == "Myeloid")
    first = niche_reach_curve(
        ligand_world, "coarse_type", [10.0, 25.0], layer="counts", library_key="slide", test_indices=held
    )
    second = niche_reach_curve(
        ligand_world, "coarse_type", [10.0, 25.0], layer="counts", library_key="slide", test_indices=held
    )
    np.testing.assert_array_equal(first.score, second.score)
    assert first.n_cells == ligand_world.n_obs - held.size


def test_log_normalised_input_gives_the_same_curve_as_counts(ligand_world):
    import scanpy as sc

    logged = ligand_world.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    from_counts = niche_reach_curve(ligand_world, "coarse_type", [10.0, 25.0], layer="counts", library_key="slide")
    from_log = niche_reach_curve(logged, "coarse_type", [10.0, 25.0], library_key="slide")
    np.testing.assert_allclose(from_log.score, from_counts.score, rtol=1e-3, atol=1e-6)


def test_a_progress_callback_hears_every_bandwidth(ligand_world):
    heard = []
    niche_reach_curve(
        ligand_world, "coarse_type", [10.0, 20.0, 30.0], layer="counts", progress=lambda f, m: heard.append((f, m))
    )
    assert [round(f, 3) for f, _ in heard] == [0.333, 0.667, 1.0]
    assert heard[0][1].startswith("bandwidth 10")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"labels_key": "no_such_column"}, CellinaKeyError, "no_such_column"),
        ({"bandwidths": [10.0]}, ValueError, "at least two"),
        ({"bandwidths": [10.0, -5.0]}, ValueError, "bandwidths"),
        ({"kernel": "box"}, ValueError, "box"),
        ({"cutoff": 1.5}, ValueError, "cutoff"),
        ({"n_folds": 1}, ValueError, "n_folds"),
        ({"spatial_key": "nowhere"}, CellinaKeyError, "nowhere"),
        ({"library_key": "no_slides"}, CellinaKeyError, "no_slides"),
    ],
)
def test_bad_input_names_what_is_wrong(ligand_world, kwargs, error, match):
    arguments = {"labels_key": "coarse_type", "layer": "counts", **kwargs}
    with pytest.raises(error, match=match):
        niche_reach_curve(ligand_world, **arguments)


def test_too_few_labelled_cells_is_refused(ligand_world):
    few = ligand_world[:80].copy()
    with pytest.raises(ValueError, match="Too few labelled cells"):
        niche_reach_curve(few, "coarse_type", layer="counts")


def test_the_curve_plots(ligand_curve):
    import matplotlib

    matplotlib.use("Agg")
    ax = ligand_curve.plot()
    assert ax.get_xscale() == "log"
    assert len(ax.lines) >= 2


def test_windows_of_a_large_tissue_keep_every_scored_cell_s_neighbourhood_whole(ligand_world):
    from scipy.spatial import cKDTree

    from cellina.spatial._reach import reach_windows

    coords = np.asarray(ligand_world.obsm["spatial"])
    slides = ligand_world.obs["slide"].astype("category").cat.codes.to_numpy()
    eligible = np.arange(ligand_world.n_obs)
    reach = 60.0
    senders, scored = reach_windows(coords, slides, eligible, 800, reach, np.random.default_rng(0))
    assert 800 <= scored.size < ligand_world.n_obs and senders.size < ligand_world.n_obs
    inner = senders[scored]
    is_sender = np.zeros(ligand_world.n_obs, dtype=bool)
    is_sender[senders] = True
    for slide in np.unique(slides):
        on_slide = np.flatnonzero(slides == slide)
        tree = cKDTree(coords[on_slide])
        for i in inner[slides[inner] == slide]:
            assert is_sender[on_slide[tree.query_ball_point(coords[i], reach)]].all()


def test_a_tissue_larger_than_the_budget_is_scanned_in_windows(ligand_world):
    curve = niche_reach_curve(
        ligand_world, "coarse_type", [10.0, 25.0], layer="counts", library_key="slide", max_cells=1000
    )
    assert curve.n_cells == 1000
    assert np.all(np.isfinite(curve.score))
