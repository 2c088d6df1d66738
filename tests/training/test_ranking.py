"""Validation hit@1 of the training loop: candidate lists and ranking on hand-made cases (no Ray, no lake)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from speclake.training.encoding import BinSettings
from speclake.training.models import ModelContext, arch_settings
from speclake.training.ranking import (RankingSet, ValidationRanker, candidate_lists, csr_lists, csr_of,
                                       truth_ranks)


def test_candidate_lists_take_the_formula_then_the_nearest_masses():
    """Same-formula structures first; a short list is topped up by nearest mass; the truth always stays in."""
    formulas = ["C6H6", "C6H6", "C7H8", "C6H6", None, "C2H6O"]
    masses = [78.05, 78.05, 92.06, 78.05, 80.0, 46.04]
    offsets, members, truth, topped = candidate_lists(formulas, masses, [0, 5], cap=10, minimum=3,
                                                      rng=np.random.default_rng(0))
    lists = [members[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
    assert lists[0] == [0, 1, 3]  # the three C6H6 isomers: long enough, no top-up
    assert lists[1] == [0, 1, 5]  # C2H6O alone: topped up with the two nearest in mass (ties by row)
    assert [lists[q][t] for q, t in enumerate(truth)] == [0, 5]
    assert topped == 1


def test_candidate_lists_are_capped_with_the_truth_kept():
    """A formula with more isomers than the cap gives cap-long lists that still hold their truth."""
    formulas = ["C10H16"] * 50
    offsets, members, truth, topped = candidate_lists(formulas, np.full(50, 136.1), list(range(0, 50, 7)), cap=5,
                                                      minimum=2, rng=np.random.default_rng(1))
    assert np.diff(offsets).tolist() == [5] * 8
    for q, t in enumerate(range(0, 50, 7)):
        assert members[offsets[q] + truth[q]] == t
    assert topped == 0


def test_pessimistic_ties_give_a_constant_scorer_no_hit():
    """Ranks follow training.metrics: a constant scorer ranks the truth last, a clear winner first."""
    ranks = truth_ranks([np.zeros(4), np.array([0.1, 0.9, 0.3]), np.array([2.0])], [1, 1, 0])
    assert ranks.tolist() == [4, 1, 1]


class FixedLogits(nn.Module):
    """A 'descriptor model' that ignores the spectra and returns the given logits."""

    def __init__(self, logits: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.logits.shape[0]:
            raise ValueError("one row of logits per spectrum expected")
        return self.logits


def _descriptor_set() -> tuple[RankingSet, ModelContext, np.ndarray]:
    names = ["morgan:1", "morgan:2", "morgan:3", "maccs:5", "chemont:CHEMONTID:0000001"]
    structures = [{"morgan": [1, 2], "maccs": []}, {"morgan": [3], "maccs": []}, {"morgan": [], "maccs": [5]},
                  {"morgan": [1, 3], "maccs": [5]}]
    bits = {fam: csr_of([s[fam] for s in structures]) for fam in ("morgan", "maccs")}
    bits["substructure"] = csr_of([[] for _ in structures])
    queries = {"mz": [[100.0], [150.0]], "intensities": [[1.0], [1.0]], "precursor_mz": [200.0, 250.0],
               "ionmode": ["positive", "positive"]}
    rs = RankingSet("arch2-flat", queries, np.array([0, 3, 6]), np.array([0, 1, 3, 1, 2, 3]), np.array([0, 2]),
                    bits=bits)
    ctx = ModelContext("arch2-flat", arch_settings("arch2-flat").model_dump(mode="json"),
                       bins=BinSettings().model_dump(), descriptors=names)
    truth_bits = np.array([[1, 1, 0, 0, 1], [1, 0, 1, 1, 0]], np.float64)  # structures 0 and 3 (ChemOnt ignored)
    return rs, ctx, truth_bits


def test_a_perfect_descriptor_predictor_hits_every_list_and_its_opposite_none():
    """Probabilities matching the truth's descriptors rank it first (hit@1 = 1); the complement ranks it last (0)."""
    rs, ctx, truth_bits = _descriptor_set()
    ranker = ValidationRanker(RankingSet.from_config(rs.to_config()), ctx)
    perfect = ranker.ranks(FixedLogits(np.where(truth_bits > 0, 8.0, -8.0)))
    anti = ranker.ranks(FixedLogits(np.where(truth_bits > 0, -8.0, 8.0)))
    assert perfect.tolist() == [1, 1]
    assert anti.tolist() == [3, 3]
    assert np.mean(perfect <= 1) == 1.0 and np.mean(anti <= 1) == 0.0


class IdentityEncoder(nn.Module):
    """An 'arch4' whose embedding is the binned spectrum itself (L2-normalised)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=1)


def test_arch4_ranks_by_the_structures_of_its_nearest_library_spectra():
    """A query identical to the library spectrum of its own structure ranks the truth first; identical to the
    library spectrum of another structure, it does not."""
    structures = [[1, 2, 3], [40, 41], [1, 2, 50]]   # Morgan on-bits of the candidate structures
    rs = RankingSet("arch4", {"mz": [[100.0], [300.0]], "intensities": [[1.0], [1.0]], "precursor_mz": [400.0, 400.0],
                              "ionmode": ["positive", "positive"]},
                    np.array([0, 3, 6]), np.array([0, 1, 2, 0, 1, 2]), np.array([0, 0]),
                    bits={"morgan": csr_of(structures)},
                    library={"mz": [[100.0], [300.0]], "intensities": [[1.0], [1.0]], "precursor_mz": [400.0, 400.0],
                             "ionmode": ["positive", "positive"]},
                    library_bits=csr_of([[1, 2, 3], [40, 41]]))
    ctx = ModelContext("arch4", arch_settings("arch4").model_dump(mode="json"), bins=BinSettings().model_dump())
    ranks = ValidationRanker(rs, ctx).ranks(IdentityEncoder())
    assert ranks.tolist()[0] == 1       # nearest library spectrum has the true structure
    assert ranks.tolist()[1] > 1        # nearest library spectrum has structure 1, not the truth
    assert csr_lists(rs.bits["morgan"]) == structures


def test_a_ranking_set_refuses_another_architecture():
    """A ranking set built for one architecture is not scored with another's context."""
    rs, _, _ = _descriptor_set()
    ctx = ModelContext("arch1", arch_settings("arch1").model_dump(mode="json"), bins=BinSettings().model_dump(),
                       descriptors=["morgan:1"])
    with pytest.raises(ValueError, match="ranking set of arch2-flat"):
        ValidationRanker(rs, ctx)
