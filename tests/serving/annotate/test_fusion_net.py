"""The listwise network fusion learns what a linear fusion cannot: evidence whose worth depends on the query."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.serving.annotate.fusion import fit_listwise, ranks_of_truth
from speclake.serving.annotate.fusion_net import (NetFusion, better_kind, expand, fit_fusion, fit_listwise_net,
                                                  load_fusion, oof_loss)

FEATURES = ("context", "a", "b")


def _context_lists(n_queries=300, seed=0):
    """Lists where a query-level column (the same for every candidate, like ``analogue_top``) says which of
    two evidence columns points at the truth: a when context is 1, b when it is 0, the other one is noise."""
    rng = np.random.default_rng(seed)
    X_list, truths = [], []
    for _ in range(n_queries):
        n = int(rng.integers(5, 15))
        ctx = float(rng.integers(2))
        X = np.column_stack([np.full(n, ctx), rng.normal(size=n), rng.normal(size=n)])
        t = int(rng.integers(n))
        X[t, 1 if ctx else 2] += 2.5
        X_list.append(X)
        truths.append(t)
    return X_list, truths


def _hit1(model, X_list, truths) -> float:
    return float(np.mean(ranks_of_truth([model.score(X) for X in X_list], truths) == 1))


def test_net_learns_a_query_dependent_interaction_the_linear_fusion_cannot():
    """With the context column, the net ranks the truth first far more often than the linear fusion, whose
    query-level weight cancels in the softmax; out-of-fold loss then chooses the net."""
    X_list, truths = _context_lists()
    linear = fit_listwise(X_list, truths, FEATURES)
    net = fit_listwise_net(X_list, truths, FEATURES, hidden=8, members=2, linear=linear)
    test_X, test_t = _context_lists(seed=1)
    h_lin, h_net = _hit1(linear, test_X, test_t), _hit1(net, test_X, test_t)
    assert h_net > h_lin + 0.15, (h_lin, h_net)
    assert h_net > 0.7
    losses = {"linear": oof_loss(linear, test_X, test_t), "net": oof_loss(net, test_X, test_t)}
    assert better_kind(losses) == "net"


def test_without_an_interaction_the_linear_kind_is_kept():
    """When the net has nothing more to learn, a loss that is not lower keeps the simpler linear fusion."""
    same = np.array([1.0, 2.0, np.nan])
    assert better_kind({"linear": same, "net": same.copy()}) == "linear"
    assert better_kind({"linear": same, "net": same - 0.1}) == "net"


def test_round_trip_and_shape_checks():
    """A saved net scores as before; a wrong column count is an error; empty lists give empty scores."""
    X_list, truths = _context_lists(60)
    net = fit_fusion(X_list, truths, FEATURES, kind="net", hidden=4, members=1)
    again = load_fusion(net.to_dict())
    assert isinstance(again, NetFusion)
    np.testing.assert_allclose(again.score(X_list[0]), net.score(X_list[0]))
    assert net.score(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="expected"):
        net.score(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="unknown fusion kind"):
        fit_fusion(X_list, truths, FEATURES, kind="forest")
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_listwise_net([np.zeros((1, 3))], [0], FEATURES)


def test_expand_adds_distance_to_the_lists_best():
    """The relative columns are 0 for the list's best value of each column and negative below it."""
    E = expand(np.array([[1.0, 5.0], [3.0, 2.0]]))
    np.testing.assert_allclose(E, [[1, 5, -2, 0], [3, 2, 0, -3]])


def test_fit_rows_keep_the_truth_when_it_ranks_low():
    """Lists longer than max_rows are cut to the linear fusion's top plus the truth, so a truth ranked last by
    the linear part still teaches the net."""
    X_list, truths = _context_lists(80, seed=3)
    net = fit_listwise_net(X_list, truths, FEATURES, hidden=4, members=1, max_rows=3)
    assert net.n_queries == 80
    assert np.isfinite(net.score(X_list[0])).all()
