"""Evidence features: library prior, library analogue evidence, trees, mass error, adduct prior."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from speclake.serving.annotate.evidence import FEATURES, EvidenceBuilder, FingerprintCache, LibraryReference
from speclake.serving.annotate.model import Candidate, Query
from speclake.serving.annotate.precursor import priors_from_counts

CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
THEOPHYLLINE = "Cn1c(=O)c2[nH]cnc2n(C)c1=O"
HEXANOL = "CCCCCCO"


@dataclass
class _Hit:
    spectrum_id: str
    score: float


def _reference():
    cache = FingerprintCache()
    return LibraryReference(["RYYVLZVUVIJVGH"], cache.get([CAFFEINE]), {"lib1": 0})


def _cand(key, smiles, adduct="[M+H]+", ppm=1.0, rank=None, score=None):
    return Candidate(key + "-UHFFFAOYSA-N", key, smiles, "C", 0.0, adduct, ppm, formula_rank=rank, formula_score=score)


def _query():
    return Query("q", "f", "1", 195.0877, "positive", np.array([138.07]), np.array([1.0]))


@pytest.fixture
def builder():
    return EvidenceBuilder(_reference(), priors_from_counts({"positive": {"[M+H]+": 90, "[M+Na]+": 9}}))


def test_prior_is_one_for_a_library_structure_and_lower_for_unrelated(builder):
    cands = [_cand("RYYVLZVUVIJVGH", CAFFEINE), _cand("ZFAHNWWNDFHPOH", THEOPHYLLINE), _cand("ZSIAUFGUXNUGDI", HEXANOL)]
    X = builder.features(_query(), cands)
    prior = X[:, FEATURES.index("prior")]
    assert prior[0] == 1.0
    assert 0.0 < prior[2] < prior[1] < 1.0, "a related purine is closer to the library than hexanol"
    again = builder.features(_query(), cands)[:, FEATURES.index("prior")]
    np.testing.assert_array_equal(prior, again, "cached priors are the same")


def test_prior_cache_smaller_than_the_candidates_never_loses_a_prior_in_use():
    """A prior cache of 2 entries over lists of 2 and more distinct skeletons (the study-scale case: more
    candidates than cache): every list still gets its priors, equal to an unbounded cache's."""
    small = EvidenceBuilder(_reference(), {}, prior_cache_size=2)
    big = EvidenceBuilder(_reference(), {})
    lists = [[_cand("ZFAHNWWNDFHPOH", THEOPHYLLINE), _cand("ZSIAUFGUXNUGDI", HEXANOL)],
             [_cand("ZSIAUFGUXNUGDI", HEXANOL), _cand("AAAAAAAAAAAAAA", "CCO"), _cand("BBBBBBBBBBBBBB", "CCCO")],
             [_cand("ZFAHNWWNDFHPOH", THEOPHYLLINE), _cand("CCCCCCCCCCCCCC", "c1ccccc1")]]
    queries = [_query()] * len(lists)
    for a, b in zip(small.matrices(queries, lists), big.matrices(queries, lists)):
        np.testing.assert_array_equal(a[:, FEATURES.index("prior")], b[:, FEATURES.index("prior")])


def test_analogue_evidence_follows_the_hits_structures(builder):
    cands = [_cand("RYYVLZVUVIJVGH", CAFFEINE), _cand("ZSIAUFGUXNUGDI", HEXANOL)]
    X = builder.features(_query(), cands, {"analogue": [_Hit("lib1", 0.8), _Hit("not-in-library", 0.9)]})
    a, top = X[:, FEATURES.index("analogue")], X[:, FEATURES.index("analogue_top")]
    assert a[0] == pytest.approx(1.0) and a[1] < 0.3, "weighted Tanimoto to the library hit's structure"
    assert top[0] == pytest.approx(0.8), "Tanimoto to the best hit x its score"
    assert (X[:, FEATURES.index("identity")] == 0).all(), "no identity hits: no identity evidence"
    q = _query()
    q.query_id = "lib1"
    X_self = builder.features(q, cands, {"analogue": [_Hit("lib1", 0.8)]})
    assert (X_self[:, FEATURES.index("analogue")] == 0).all(), "a query never counts itself as a hit"


def test_tree_mass_error_and_adduct_features(builder):
    cands = [_cand("RYYVLZVUVIJVGH", CAFFEINE, ppm=-2.0, rank=1, score=5.0),
             _cand("ZFAHNWWNDFHPOH", THEOPHYLLINE, adduct="[M+Na]+", ppm=3.0, rank=2, score=2.0),
             _cand("ZSIAUFGUXNUGDI", HEXANOL)]
    X = builder.features(_query(), cands)
    f = {n: X[:, j] for j, n in enumerate(FEATURES)}
    np.testing.assert_allclose(f["tree_gap"], [0.0, 3.0, 20.0])
    np.testing.assert_allclose(f["formula_top"], [1, 0, 0])
    np.testing.assert_allclose(f["abs_ppm"], [2.0, 3.0, 1.0])
    assert f["adduct_logprior"][0] > f["adduct_logprior"][1], "[M+H]+ is the more common adduct"
    assert builder.features(_query(), []).shape == (0, len(FEATURES))


@pytest.fixture(scope="module")
def lake(sample_feature_lake, tmp_path_factory):
    from tests.training.eval_lakes import indexed_lake

    return indexed_lake(sample_feature_lake, tmp_path_factory)


@pytest.mark.spark
def test_reference_from_lake_holds_training_structures_only_when_asked(lake):
    from speclake.training.split import SplitSettings, assign_split

    every = LibraryReference.from_lake(lake)
    train = LibraryReference.from_lake(lake, splits=("train",))
    assert set(train.keys) < set(every.keys)
    assert all(assign_split(k, SplitSettings()) == "train" for k in train.keys)
    assert all(train.keys[r] in train.key_row for r in train.spectrum_structure.values())
    assert (np.bitwise_count(every.fps).sum(axis=1) > 0).all(), "every library structure has a fingerprint"


class _DescriptorModel:
    """A registered-model stand-in predicting caffeine's Morgan bits present, hexanol's absent."""

    arch, model_id = "arch1", "fake-arch1"

    def __init__(self):
        from speclake.pipelines.features.descriptors import DescriptorSettings, compute_descriptors

        self.caf = set(compute_descriptors(CAFFEINE, DescriptorSettings()).morgan_on)
        self.hex = set(compute_descriptors(HEXANOL, DescriptorSettings()).morgan_on) - self.caf
        self.bits = sorted(self.caf | self.hex)
        self.descriptor_names = [f"morgan:{b}" for b in self.bits] + ["chemont:C0000000"]

    def predict_descriptors(self, examples):
        p = [0.9 if b in self.caf else 0.1 for b in self.bits] + [0.5]
        return np.tile(p, (examples.num_rows, 1))


class _JointModel:
    arch, model_id = "arch5", "fake-arch5"

    def embed_spectra(self, examples):
        return np.tile([1.0, 0.0], (examples.num_rows, 1))

    def embed_structures(self, smiles):
        return np.array([[1.0, 0.0] if s == CAFFEINE else [0.0, 1.0] for s in smiles])


def test_registered_models_add_one_evidence_column_each():
    from speclake.serving.annotate.evidence import ModelScorer

    models = [ModelScorer(_DescriptorModel()), ModelScorer(_JointModel())]
    b = EvidenceBuilder(_reference(), priors_from_counts({}), models=models)
    assert b.names[-2:] == ("model:fake-arch1", "model:fake-arch5")
    cands = [[_cand("RYYVLZVUVIJVGH", CAFFEINE), _cand("ZSIAUFGUXNUGDI", HEXANOL)], []]
    X, empty = b.matrices([_query(), _query()], cands)
    assert X.shape == (2, len(FEATURES) + 2) and empty.shape == (0, len(FEATURES) + 2)
    ll, cos = X[:, -2], X[:, -1]
    assert ll[0] > ll[1], "the predicted fingerprint is caffeine's: higher likelihood"
    np.testing.assert_allclose(cos, [1.0, 0.0])
    with pytest.raises(ValueError, match="not used as evidence"):
        ModelScorer(type("M", (), {"arch": "arch3", "model_id": "x"})())


def test_a_batch_larger_than_the_structure_cache_still_scores_every_candidate():
    """A model scorer whose structure cache holds fewer SMILES than one call brings (full-scale candidate
    lists: ~1M distinct structures per batch) keeps this call's values until it has returned them."""
    from speclake.serving.annotate.evidence import ModelScorer

    scorer = ModelScorer(_JointModel(), cache_size=1)
    cands = [[_cand("RYYVLZVUVIJVGH", CAFFEINE), _cand("ZSIAUFGUXNUGDI", HEXANOL)],
             [_cand("ZSIAUFGUXNUGDI", HEXANOL), _cand("RYYVLZVUVIJVGH", CAFFEINE)]]
    first, second = scorer.scores([_query(), _query()], cands)
    np.testing.assert_allclose(first, [1.0, 0.0])
    np.testing.assert_allclose(second, [0.0, 1.0])
    assert len(scorer._cache) == 1


def test_max_tanimoto_equals_the_tanimoto_matrix_maximum():
    from speclake.training import metrics as M

    rng = np.random.default_rng(1)
    on = lambda: sorted(rng.choice(2048, size=rng.integers(0, 60), replace=False).tolist())  # noqa: E731
    ref = LibraryReference([f"K{i:013d}" for i in range(300)], M.pack_fingerprints([on() for _ in range(300)], 2048),
                           {})
    fps = M.pack_fingerprints([on() for _ in range(50)] + [[]], 2048)
    got = EvidenceBuilder(ref, {})._max_tanimoto(fps)
    np.testing.assert_array_equal(got, M.tanimoto_matrix(fps, ref.fps).max(axis=1).astype(np.float64))


def test_a_candidate_fingerprint_from_the_index_is_used_only_with_the_same_settings():
    from speclake.pipelines.features.descriptors import DescriptorSettings

    given = FingerprintCache().get([CAFFEINE])[0]
    cand = Candidate("X-Y-N", "XXXXXXXXXXXXXX", HEXANOL, "C", 0.0, "[M+H]+", 0.0, fingerprint=given)
    np.testing.assert_array_equal(FingerprintCache().of([cand])[0], given)
    other = FingerprintCache(DescriptorSettings(morgan_radius=3))
    np.testing.assert_array_equal(other.of([cand])[0], other.get([HEXANOL])[0])
