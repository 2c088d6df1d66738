"""Candidate scoring: CSI:FingerID likelihood, analogues, joint embeddings, the library prior, lambda."""
from __future__ import annotations

import math

import numpy as np
import pytest

from speclake.training import metrics as M
from speclake.training import scoring as S


def test_candidate_score_log_likelihood_by_hand():
    p = np.array([0.9, 0.2])
    cands = np.array([[1, 0], [0, 1]])
    got = S.descriptor_log_likelihood(p, cands)
    assert got[0] == pytest.approx(math.log(0.9) + math.log(0.8))
    assert got[1] == pytest.approx(math.log(0.1) + math.log(0.2))
    masked = S.descriptor_log_likelihood(p, cands, mask=np.array([True, False]))
    assert masked == pytest.approx([math.log(0.9), math.log(0.1)])
    weighted = S.descriptor_log_likelihood(p, cands, weights=np.array([0.5, 2.0]))
    assert weighted[0] == pytest.approx(0.5 * math.log(0.9) + 2 * math.log(0.8))


def test_candidate_score_log_likelihood_clips_certain_predictions():
    got = S.descriptor_log_likelihood(np.array([1.0, 0.0]), np.array([[0, 1]]), clip=1e-3)
    assert np.isfinite(got).all()
    assert got[0] == pytest.approx(2 * math.log(1e-3))
    with pytest.raises(ValueError):
        S.descriptor_log_likelihood(np.array([0.5]), np.array([[1, 0]]))


def test_candidate_score_descriptor_matrix_skips_chemont():
    names = ["morgan:3", "maccs:160", "substructure:2", "chemont:Flavonoids"]
    mat, mask = S.descriptor_matrix([{"morgan_on": [3, 9], "maccs_on": [1], "substructure_on": [2]}], names)
    assert mat.tolist() == [[1, 0, 1, 0]]
    assert mask.tolist() == [True, True, True, False]


def test_candidate_score_reliability_weights():
    y = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    p = np.array([[0.1, 0.9, 0.5], [0.2, 0.1, 0.5], [0.8, 0.8, 0.5], [0.9, 0.2, 0.5]])
    w = S.reliability_weights(y, p)
    assert w[0] == pytest.approx(1.0)   # perfect
    assert w[1] == pytest.approx(0.0)   # worse than random -> 0
    assert w[2] == pytest.approx(0.5)   # undefined (one class) -> mean of the others


def test_candidate_score_analogue_scores_follow_the_best_hit():
    fps = M.pack_fingerprints([[1, 2, 3, 4], [10, 11, 12], [1, 2, 3, 4], [10, 11, 12, 13]], 64)
    hits, cands = fps[:2], fps[2:]
    only_first = S.analogue_scores(np.array([0.9, 0.0]), hits, cands)
    assert only_first == pytest.approx([1.0, 0.0])
    both = S.analogue_scores(np.array([0.5, 0.5]), hits, cands)
    assert both == pytest.approx([0.5, 0.5 * 3 / 4])
    assert list(S.top_hits(np.array([0.1, 0.7, 0.7, 0.3]), 2)) == [1, 2]


def test_candidate_score_embedding_scores_are_cosines():
    got = S.embedding_scores(np.array([1.0, 0.0]), np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    assert got == pytest.approx([1.0, 0.0, math.sqrt(0.5)])


def test_prior_ranks_near_duplicate_of_training_structure_first():
    from speclake.pipelines.features.descriptors import DescriptorSettings
    from speclake.training.evaluate import structure_rows

    fp = DescriptorSettings()
    train = ["CC(=O)Oc1ccccc1C(=O)O", "Cn1cnc2c1c(=O)n(C)c(=O)n2C"]  # aspirin, caffeine
    cands = ["CCCCCCCCCCCCCCCC(=O)O",            # palmitic acid: unlike any training structure
             "CC(=O)Oc1ccc(C)cc1C(=O)O"]         # methyl-aspirin: a near-duplicate
    pack = lambda smi: M.pack_fingerprints([r["morgan_on"] for r in structure_rows(smi, fp)], fp.morgan_bits)
    prior = M.max_tanimoto(pack(cands), pack(train))
    assert prior[1] > 0.5 > prior[0]
    assert M.rank_of_truth(prior, 1) == 1
    assert M.rank_of_truth(prior, 0) == 2


def test_candidate_score_random_scores_are_seeded():
    a = S.random_scores(5, np.random.default_rng(3))
    b = S.random_scores(5, np.random.default_rng(3))
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 5


def test_candidate_score_choose_lambda_prefers_prior_when_it_helps():
    # the model cannot tell truth (index 0) from decoy; the prior can
    model = [np.array([0.0, 0.1]), np.array([0.0, 0.1])]
    prior = [np.array([0.9, 0.1]), np.array([0.8, 0.2])]
    lam = S.choose_lambda(model, prior, [0, 0], (0.0, 1.0, 4.0))
    assert lam == 4.0  # z-scores differ by 2; 1.0 * 0.8 (prior gap) is not enough, 4 * 0.6 is
    assert S.choose_lambda(model, prior, [1, 1], (0.0, 1.0, 4.0)) == 0.0
    combined = S.combine_with_prior(np.array([1.0, 3.0]), np.array([1.0, 0.0]), 4.0)
    assert combined == pytest.approx([-1 + 4, 1])


def test_candidate_score_sparse_and_dense_agree():
    rng = np.random.default_rng(0)
    names = [f"morgan:{i}" for i in range(30)] + ["chemont:X"]
    rows = [{"morgan_on": sorted(rng.choice(40, 8, replace=False).tolist())} for _ in range(12)]
    dense, mask = S.descriptor_matrix(rows, names)
    sparse, _ = S.descriptor_matrix(rows, names, sparse=True)
    p = rng.random(len(names))
    w = rng.random(len(names))
    a = S.descriptor_log_likelihood(p, dense, mask=mask, weights=w)
    b = S.descriptor_log_likelihood(p, sparse, mask=mask, weights=w)
    assert a == pytest.approx(b)
    # explicit sum for one row
    y = dense[3].astype(float)
    pc = np.clip(p, 1e-3, 1 - 1e-3)
    expected = np.sum(w * mask * (y * np.log(pc) + (1 - y) * np.log(1 - pc)))
    assert a[3] == pytest.approx(expected)
