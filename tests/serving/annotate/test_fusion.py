"""The listwise linear fusion learns which evidence points at the truth."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.serving.annotate.fusion import LinearFusion, fit_listwise, listwise_loss, ranks_of_truth, softmax


def _lists(n_queries=200, seed=0):
    rng = np.random.default_rng(seed)
    X_list, truths = [], []
    for _ in range(n_queries):
        n = int(rng.integers(2, 12))
        X = rng.normal(size=(n, 3))
        t = int(rng.integers(n))
        X[t, 0] += 2.0      # feature 0 points at the truth
        X[t, 2] -= 1.0      # feature 2 points away from it
        X_list.append(X)
        truths.append(t)
    return X_list, truths


def test_fit_learns_signs_and_beats_random():
    X_list, truths = _lists()
    model = fit_listwise(X_list, truths, ("good", "noise", "bad"), l2=1e-3)
    assert model.weights[0] > 0 > model.weights[2]
    assert abs(model.weights[1]) < model.weights[0] / 3
    test_X, test_t = _lists(seed=1)
    ranks = ranks_of_truth([model.score(X) for X in test_X], test_t)
    assert np.mean(ranks == 1) > 0.6
    assert listwise_loss(model, test_X, test_t) < np.mean([np.log(len(X)) for X in test_X]), "beats uniform"
    again = LinearFusion.from_dict(model.to_dict())
    np.testing.assert_allclose(again.score(test_X[0]), model.score(test_X[0]))


def test_lists_without_truth_or_with_one_candidate_teach_nothing():
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_listwise([np.zeros((3, 2)), np.zeros((1, 2))], [None, 0], ("a", "b"))
    assert ranks_of_truth([np.array([1.0, 2.0])], [None])[0] > 10**6, "a missing truth counts as a miss"


def test_softmax_and_shape_check():
    p = softmax(np.array([1000.0, 1000.0]))
    np.testing.assert_allclose(p, [0.5, 0.5])
    model = LinearFusion(("a",), np.zeros(1), np.ones(1), np.ones(1))
    with pytest.raises(ValueError, match="expected"):
        model.score(np.zeros((2, 3)))
