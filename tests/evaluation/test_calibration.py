"""Calibration of the spread across edge draws (of the donors, or of the donors and the posterior): by
hand, and in the leave-one-out protocol."""

from __future__ import annotations

import numpy as np
import pytest

from cellina.evaluation import calibration, leave_one_out, log2_change_std, responsive_genes, truth_scores


def test_calibration_by_hand():
    pred = np.array([0.0, 1.0, -1.0, 2.0])
    true = np.array([0.1, 0.0, -1.5, 2.0])
    std = np.array([0.1, 0.4, 0.3, 0.0])
    # |true - pred| = 0.1, 1.0, 0.5, 0.0 against 2 std = 0.2, 0.8, 0.6, 0.0 -> in, out, in, in
    assert calibration(pred, true, std) == pytest.approx(0.75)
    assert calibration(pred, true, std, width=1.0) == pytest.approx(0.5)
    assert np.isnan(calibration([], [], []))
    with pytest.raises(ValueError, match="non-negative"):
        calibration(pred, true, -std)
    with pytest.raises(ValueError, match="must match"):
        calibration(pred, true, std[:3])


def test_truth_scores_add_calibration_on_the_responsive_genes_only():
    pred = np.array([0.0, 1.0, -1.0, 2.0, 0.3])
    true = np.array([0.1, 0.0, -1.5, 2.0, 0.0])
    std = np.array([0.1, 0.4, 0.3, 0.0, 0.0])
    scores = truth_scores(pred, true, responsive=[0, 1, 2], null=[3, 4], change_std=std)
    assert scores["truth_calibration"] == pytest.approx(2 / 3)
    assert "truth_calibration" not in truth_scores(pred, true, responsive=[0, 1, 2])
    with pytest.raises(ValueError, match="change_std has 4 genes"):
        truth_scores(pred, true, responsive=[0, 1, 2], change_std=std[:4])


def test_log2_change_std_by_hand():
    pred = np.array([[10.0, 30.0], [20.0, 20.0]])
    std = np.array([[1.0, 3.0], [4.0, 0.0]])
    # cells scaled to 1e4: factors 250 and 250
    level = np.array([(2500 + 5000) / 2, (7500 + 5000) / 2])
    spread = np.array([(250 + 1000) / 2, (750 + 0) / 2])
    np.testing.assert_allclose(log2_change_std(pred, std), spread / ((level + 1e-6) * np.log(2)))
    with pytest.raises(ValueError, match="same shape"):
        log2_change_std(pred, std[:1])


@pytest.fixture(scope="module")
def tissue():
    from cellina.datasets import synthetic_tissue

    return synthetic_tissue(n_cells=900, n_genes=100, n_slides=2, seed=3)


OPTIONS = dict(
    perturbations=("edge",),
    batch_key="slide",
    library_key="slide",
    bandwidth=20.0,
    max_neighbours=30,
    n_deg=20,
    n_neighbours=10,
    energy=False,
    probes=False,
    model_kwargs={"n_latent": 4, "n_hidden": 16, "n_layers": 1},
    train_kwargs={"max_epochs": 2, "batch_size": 256},
)


def test_protocol_scores_calibration_with_several_draws(tissue):
    res = leave_one_out(tissue, "Myeloid", methods=("cellina", "oracle"), n_draws=3, return_models=True, **OPTIONS)
    scores = res.scores.set_index(["perturbation", "method"])
    frame = res.lfc[("edge", "cellina")]
    resp = responsive_genes(tissue, "Myeloid")
    t, p, sd = (frame[c].to_numpy()[resp] for c in ("true_change", "pred_change", "pred_change_std"))
    manual = float(np.mean(np.abs(t - p) <= 2 * sd))
    assert scores.loc[("edge", "cellina"), "truth_calibration"] == pytest.approx(manual)
    assert 0.0 <= manual <= 1.0 and (sd > 0).all()
    # the oracle has no spread; the exact truth is the mean over the same three draws
    assert np.isnan(scores.loc[("edge", "oracle")].get("truth_calibration", np.nan))
    assert res.indices["donors"].shape[0] == 3
    from cellina.datasets import truth_for

    truth = truth_for(tissue)
    control = res.indices["control"]
    mean = sum(truth.edge(control, d) for d in res.indices["donors"]) / 3
    np.testing.assert_allclose(res.predictions[("edge", "oracle")], mean)


def test_one_draw_keeps_the_protocol_as_it_was(tissue):
    res = leave_one_out(tissue, "Myeloid", methods=("mean_shift",), **OPTIONS)
    assert "truth_calibration" not in res.scores.columns
    assert res.indices["donors"].ndim == 2
    with pytest.raises(ValueError, match="n_draws=0"):
        leave_one_out(tissue, "Myeloid", methods=("mean_shift",), n_draws=0)


def test_posterior_draws_widen_the_spread_and_keep_the_prediction(tissue):
    runs = {
        u: leave_one_out(tissue, "Myeloid", methods=("cellina",), n_draws=3, uncertainty=u, **OPTIONS)
        for u in ("donors", "posterior")
    }
    frames = {u: res.lfc[("edge", "cellina")] for u, res in runs.items()}
    np.testing.assert_allclose(frames["posterior"]["pred_change"], frames["donors"]["pred_change"], atol=1e-6)
    np.testing.assert_array_equal(runs["posterior"].indices["donors"], runs["donors"].indices["donors"])
    resp = responsive_genes(tissue, "Myeloid")
    wider = (
        frames["posterior"]["pred_change_std"].to_numpy()[resp] > frames["donors"]["pred_change_std"].to_numpy()[resp]
    )
    assert wider.mean() > 0.9
    scores = {u: res.scores.set_index("perturbation").loc["edge", "truth_calibration"] for u, res in runs.items()}
    assert scores["posterior"] >= scores["donors"]


def test_an_unknown_uncertainty_is_named_before_any_training(tissue):
    from cellina.counterfactual import UNCERTAINTIES
    from cellina.evaluation._config import UNCERTAINTIES as NAMED_HERE

    assert NAMED_HERE == UNCERTAINTIES
    with pytest.raises(ValueError, match="uncertainty='latent'"):
        leave_one_out(tissue, "Myeloid", methods=("cellina",), uncertainty="latent")
