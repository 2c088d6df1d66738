"""Hand-checked retrieval, descriptor and stratum metrics."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.training import metrics as M


def test_rank_of_truth_is_pessimistic_on_ties():
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    assert M.rank_of_truth(scores, 0) == 1
    assert M.rank_of_truth(scores, 1) == 3  # tied with index 2: placed after it
    assert M.rank_of_truth(scores, 2) == 3
    assert M.rank_of_truth(scores, 3) == 4
    assert M.rank_of_truth(np.zeros(7), 0) == 7  # a constant scorer never scores a hit@1
    assert M.rank_of_truth(np.array([np.nan, 0.2]), 0) == 2  # NaN is worst


def test_rank_of_truth_rejects_bad_index():
    with pytest.raises(ValueError, match="outside"):
        M.rank_of_truth(np.array([1.0]), 1)


def test_hit_at_k_and_summary():
    ranks = [1, 3, 6, 25]
    assert M.hit_at_k(ranks, 1) == 0.25
    assert M.hit_at_k(ranks, 5) == 0.5
    assert M.hit_at_k(ranks, 20) == 0.75
    s = M.retrieval_summary(ranks, [1.0, 0.5, 0.25, 0.25])
    assert s == {"hit1": 0.25, "hit5": 0.5, "hit20": 0.75, "top1_tanimoto": 0.5}


def test_expected_random_hit_is_k_over_n():
    assert M.expected_random_hit([1, 4, 40], 5) == pytest.approx((1 + 1 + 5 / 40) / 3)
    assert M.expected_random_hit([10], 1) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        M.expected_random_hit([0], 1)


def test_top1_tanimoto_takes_tied_decoy_first():
    scores = np.array([1.0, 1.0, 0.0])
    tan = np.array([1.0, 0.3, 0.2])
    assert M.top1_tanimoto(scores, 0, tan) == pytest.approx(0.3)
    assert M.top1_tanimoto(np.array([2.0, 1.0, 0.0]), 0, tan) == pytest.approx(1.0)
    assert list(M.pessimistic_order(scores, 0)) == [1, 0, 2]


def test_tanimoto_of_packed_fingerprints_by_hand():
    fps = M.pack_fingerprints([[0, 1, 2], [1, 2, 3], [], [100, 2047]], 2048)
    t = M.tanimoto_matrix(fps, fps)
    assert t[0, 1] == pytest.approx(2 / 4)
    assert t[0, 0] == 1.0 and t[3, 3] == 1.0
    assert t[2, 2] == 0.0 and t[0, 3] == 0.0
    assert list(M.max_tanimoto(fps[:2], fps[1:2])) == pytest.approx([0.5, 1.0])
    assert list(M.max_tanimoto(fps[:2], fps[:0])) == [0.0, 0.0]
    with pytest.raises(ValueError):
        M.pack_fingerprints([[2048]], 2048)


def test_tanimoto_agrees_with_rdkit():
    from rdkit import DataStructs

    rng = np.random.default_rng(1)
    bits = [sorted(rng.choice(256, size=rng.integers(1, 40), replace=False).tolist()) for _ in range(12)]
    packed = M.pack_fingerprints(bits, 256)
    mine = M.tanimoto_matrix(packed, packed, rows=5, cols=7)  # forces several blocks
    vecs = []
    for b in bits:
        v = DataStructs.ExplicitBitVect(256)
        for i in b:
            v.SetBit(int(i))
        vecs.append(v)
    for i, v in enumerate(vecs):
        assert mine[i] == pytest.approx(DataStructs.BulkTanimotoSimilarity(v, vecs), abs=1e-6)


def test_descriptor_auc_by_hand():
    y = np.array([[0, 1], [0, 1], [1, 1], [1, 1]])
    p = np.array([[0.1, 0.3], [0.4, 0.3], [0.35, 0.3], [0.8, 0.3]])
    macro, micro = M.descriptor_auc(y, p)
    assert macro == pytest.approx(0.75)  # column 1 has one class only: left out of the macro mean
    # micro over 8 entries: positives (0.35, 0.8, 0.3 x4) vs negatives (0.1, 0.4)
    pos, neg = [0.35, 0.8, 0.3, 0.3, 0.3, 0.3], [0.1, 0.4]
    expected = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg])
    assert micro == pytest.approx(expected)
    assert M.descriptor_auc(np.array([[0], [1]]), np.array([[0.5], [0.5]]))[0] == 0.5  # ties averaged


def test_descriptor_f1_by_hand():
    y = np.array([[1, 0, 1], [1, 1, 1], [0, 0, 1]])
    p = np.array([[0.9, 0.6, 0.2], [0.2, 0.7, 0.9], [0.1, 0.1, 0.9]])
    macro, micro = M.descriptor_f1(y, p)
    # col0: tp1 fn1 -> 2/3; col1: tp1 fp1 -> 2/3; col2 all positive: not in macro
    assert macro == pytest.approx(2 / 3)
    # micro: tp = 1 + 1 + 2 = 4, fp = 1, fn = 1 + 1 = 2 -> 8 / 11
    assert micro == pytest.approx(8 / 11)


def test_novelty_strata_edges():
    assert M.novelty_stratum(0.49) == "<0.5"
    assert M.novelty_stratum(0.5) == "0.5-0.7"
    assert M.novelty_stratum(0.89) == "0.7-0.9"
    assert M.novelty_stratum(0.9) == ">=0.9"
    assert M.novelty_labels() == ["<0.5", "0.5-0.7", "0.7-0.9", ">=0.9"]


def test_bootstrap_interval_resamples_structures():
    # one structure with 9 hits, one with 1 miss: resampling structures gives means 1.0, 0.9 or 0.0
    values = [1.0] * 9 + [0.0]
    groups = ["A"] * 9 + ["B"]
    lo, hi = M.bootstrap_interval(values, groups, n=2000, seed=0)
    assert lo == pytest.approx(0.0) and hi == pytest.approx(1.0)
    lo, hi = M.bootstrap_interval([1.0, 1.0, 1.0], ["A", "B", "C"], n=100)
    assert lo == hi == 1.0
    assert np.isnan(M.bootstrap_interval([], [], n=10)[0])
    assert np.isnan(M.bootstrap_interval([1.0], ["A"], n=0)[0])


def test_column_auc_equals_the_per_column_auc_with_ties():
    """The vectorised AUC of every column equals the one-column AUC (ties averaged); a one-class column is NaN."""
    rng = np.random.default_rng(3)
    y = rng.random((50, 6)) < 0.3
    p = np.round(rng.random((50, 6)), 1)   # many ties
    y[:, 5] = False                         # one class only: undefined
    got = M.column_auc(y, p)
    np.testing.assert_allclose(got[:5], [M._auc(y[:, j], p[:, j]) for j in range(5)])
    assert np.isnan(got[5])
