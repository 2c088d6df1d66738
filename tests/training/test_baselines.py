"""Classical baselines: fitted on binned spectra, predict_descriptors like a neural model."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from speclake.training.baselines import BaselineSettings, binned_matrix, fit_baseline
from speclake.training.encoding import BinSettings
from speclake.training.metrics import descriptor_auc

BINS = BinSettings(bin_width=1.0, max_mz=200.0)


def _toy(n: int, seed: int) -> tuple[pa.Table, np.ndarray]:
    """Spectra whose peak at m/z 77 marks descriptor 0 and whose peak at 105 marks descriptor 1."""
    rng = np.random.default_rng(seed)
    mzs, ints, y = [], [], []
    for _ in range(n):
        d0, d1 = rng.random() < 0.5, rng.random() < 0.4
        mz = list(rng.uniform(30, 190, size=5))
        if d0:
            mz.append(77.04)
        if d1:
            mz.append(105.03)
        mzs.append(sorted(mz))
        ints.append([1.0] * len(mz))
        y.append([int(d0), int(d1)])
    return pa.table({"mz": mzs, "intensities": ints}), np.array(y, np.uint8)


def test_binned_matrix_matches_bins():
    t = pa.table({"mz": [[77.04, 150.2], [10.0]], "intensities": [[1.0, 0.25], [1.0]]})
    x = binned_matrix(t, BINS).toarray()
    assert x.shape == (2, 200)
    assert x[0, 77] == pytest.approx(1.0) and x[0, 150] == pytest.approx(0.5)  # sqrt-scaled
    assert x[1, 10] == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["logreg", "random_forest"])
def test_baseline_learns_marker_peaks(name):
    train, y = _toy(200, 0)
    test, y_test = _toy(80, 1)
    model = fit_baseline(name, train, y, ["maccs:1", "maccs:2"], BINS, BaselineSettings(rf_trees=30))
    probs = model.predict_descriptors(test)
    assert probs.shape == (80, 2) and ((probs >= 0) & (probs <= 1)).all()
    macro, _ = descriptor_auc(y_test, probs)
    assert macro > 0.9
    assert model.train_seconds > 0 and model.n_train == 200
    assert model.model_id == f"classical:{name}"


def test_logreg_handles_constant_descriptor():
    train, y = _toy(50, 2)
    y[:, 1] = 0
    model = fit_baseline("logreg", train, y, ["maccs:1", "maccs:2"], BINS)
    assert (model.predict_descriptors(train)[:, 1] == 0).all()


def test_unknown_baseline_and_bad_targets():
    train, y = _toy(10, 3)
    with pytest.raises(ValueError, match="logreg, random_forest"):
        fit_baseline("svm", train, y, ["a", "b"], BINS)
    with pytest.raises(ValueError, match="do not match"):
        fit_baseline("logreg", train, y[:, :1], ["a", "b"], BINS)
