"""Isotonic calibration, ECE, reliability curve and precision above thresholds on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.serving.annotate.calibration import (IsotonicCalibrator, calibration_report, expected_calibration_error,
                                                   precision_above, reliability_curve)


def test_calibrator_maps_scores_to_probabilities_monotonically():
    rng = np.random.default_rng(0)
    s = rng.random(500)
    correct = rng.random(500) < s  # P(correct) = score
    cal = IsotonicCalibrator.fit(s, correct)
    grid = np.linspace(-1, 2, 301)
    p = cal(grid)
    assert ((p >= 0) & (p <= 1)).all(), "probabilities in [0, 1], also outside the fitted range"
    assert (np.diff(p) >= -1e-12).all(), "monotone"
    assert cal([0.05])[0] < 0.3 < 0.7 < cal([0.95])[0]
    again = IsotonicCalibrator.from_dict(cal.to_dict())
    np.testing.assert_allclose(again(grid), p)
    assert cal([np.nan])[0] == pytest.approx(p[0]), "NaN score: the lowest probability"


def test_calibrator_refuses_empty_data():
    with pytest.raises(ValueError, match="non-empty"):
        IsotonicCalibrator.fit([], [])


def test_ece_on_a_hand_made_case():
    # bin [0.2,0.3): 0.2 and 0.2 predicted, 1 of 2 correct -> |0.2-0.5| = 0.3, weight 2/4
    # bin [0.9,1.0]: 0.9 and 1.0 predicted (mean 0.95), 2 of 2 correct -> 0.05, weight 2/4
    probs, correct = [0.2, 0.2, 0.9, 1.0], [True, False, True, True]
    assert expected_calibration_error(probs, correct, n_bins=10) == pytest.approx(0.5 * 0.3 + 0.5 * 0.05)
    curve = reliability_curve(probs, correct, n_bins=10)
    assert [(b["lo"], b["n"]) for b in curve] == [(0.2, 2), (0.9, 2)], "1.0 falls in the last bin"
    assert expected_calibration_error([0.0, 1.0], [False, True]) == 0.0, "perfectly calibrated"
    assert np.isnan(expected_calibration_error([], []))


def test_precision_above_thresholds():
    rows = precision_above([0.95, 0.85, 0.6, 0.3], [True, False, True, False])
    by_t = {r["threshold"]: r for r in rows}
    assert (by_t[0.5]["n"], by_t[0.5]["precision"]) == (3, pytest.approx(2 / 3))
    assert (by_t[0.8]["n"], by_t[0.8]["precision"]) == (2, 0.5)
    assert (by_t[0.9]["n"], by_t[0.9]["precision"]) == (1, 1.0)
    report = calibration_report([0.95, 0.3], [True, False])
    assert report["accuracy"] == 0.5 and set(report) >= {"ece", "reliability", "above"}


def test_split_calibration_keeps_known_and_novel_answers_honest():
    """At the same rank-1 score, library answers are right 90 % of the time and others 20 %: the split map gives
    each group its own rate where one pooled map is off for both; a group too small falls back to the pooled
    map; the JSON round trip keeps it."""
    from speclake.serving.annotate.calibration import SplitCalibrator, load_calibrator

    rng = np.random.default_rng(0)
    n = 2000
    lib = rng.random(n) < 0.25
    score = np.full(n, 0.5)
    correct = np.where(lib, rng.random(n) < 0.9, rng.random(n) < 0.2)
    split = SplitCalibrator.fit(score, correct, lib)
    got = split([0.5, 0.5], [True, False])
    assert abs(got[0] - 0.9) < 0.05 and abs(got[1] - 0.2) < 0.05
    pooled = IsotonicCalibrator.fit(score, correct)([0.5])[0]
    assert 0.3 < pooled < 0.5, "the pooled map is over-confident for novel and under-confident for known answers"
    again = load_calibrator(split.to_dict())
    np.testing.assert_allclose(again([0.5, 0.5], [True, False]), got)
    few = SplitCalibrator.fit(score, correct, np.arange(n) < 10, min_group=50)
    assert few([0.5], [True])[0] == pytest.approx(few.pooled([0.5])[0])
    assert isinstance(load_calibrator(IsotonicCalibrator.fit(score, correct).to_dict()), IsotonicCalibrator)
