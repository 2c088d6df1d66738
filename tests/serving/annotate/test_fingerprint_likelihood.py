"""CSI:FingerID-style fingerprint likelihood (``fpll:<id>``): per-bit Platt calibration and reliability on
hand-made validation data, and on the sample lake with a real model trained on its training split."""
from __future__ import annotations

import json

import numpy as np
import pytest

from speclake.serving.annotate.evidence import FEATURES, EvidenceBuilder, LibraryReference, ModelScorer
from speclake.serving.annotate.fingerprint_likelihood import (BitReliability, FingerprintScorer, ReliabilitySettings,
                                                              fit_platt, load_reliability,
                                                              validation_reliability, with_fingerprint_likelihood)
from speclake.serving.annotate.model import Candidate, Query
from tests.serving.annotate.small_models import fit_and_register, lake_with_model

NAMES = ["maccs:1", "maccs:2", "maccs:3", "chemont:C0000000"]


class _Model:
    """A descriptor-model stand-in predicting fixed probabilities for every spectrum; counts its calls."""

    arch, model_id, split = "arch1", "hand-made", None

    def __init__(self, probs):
        self.descriptor_names = list(NAMES)
        self.probs = np.asarray(probs, np.float64)
        self.calls = 0

    def predict_descriptors(self, examples):
        self.calls += 1
        return np.tile(self.probs, (examples.num_rows, 1))


def _scorer(probs, rows: dict[str, list[int]]) -> ModelScorer:
    """A ModelScorer of :class:`_Model` whose candidates ``A``, ``B`` ... carry hand-made MACCS keys ``rows``
    (filled into its per-SMILES descriptor cache instead of computed with RDKit)."""
    s = ModelScorer(_Model(probs))
    for smi, on in rows.items():
        s._cache[smi] = {"morgan_on": [], "maccs_on": on, "substructure_on": []}
    return s


def _query() -> Query:
    return Query("q", "f", "1", 200.0, "positive", np.array([50.0, 100.0]), np.array([0.5, 1.0]))


def _cand(smiles: str) -> Candidate:
    return Candidate(f"{smiles * 14}-X-N", smiles * 14, smiles, "C", 0.0, "[M+H]+", 0.0)


def _validation(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Validation targets and predictions: bit 1 always predicted wrong, bit 2 right, bit 3 over-confident
    (0.97 whenever present or not, present half the time), ChemOnt right."""
    rng = np.random.default_rng(seed)
    y = rng.random((n, len(NAMES))) < 0.5
    p = np.empty(y.shape)
    p[:, 0] = np.where(y[:, 0], 0.1, 0.9)
    p[:, 1] = np.where(y[:, 1], 0.8, 0.2)
    p[:, 2] = 0.97
    p[:, 3] = np.where(y[:, 3], 0.9, 0.1)
    return y, p


def _fit(y, p) -> BitReliability:
    return BitReliability.fit(NAMES, y, p, np.array([True, True, True, False]))


def test_a_bit_always_wrong_on_validation_weighs_zero_and_stops_influencing_the_ranking():
    rel = _fit(*_validation())
    assert rel.weight[0] == 0.0 and rel.auc[0] == 0.0, "AUC 0: weight max(0, 2 AUC - 1) = 0"
    # the query's prediction says key 1 is present; A has it, B not; they agree on every other key
    scorer = _scorer([0.95, 0.5, 0.5, 0.5], {"A": [1, 2], "B": [2]})
    fp = FingerprintScorer(scorer, rel)
    s_fp = fp.scores([_query()], [[_cand("A"), _cand("B")]])[0]
    s_plain = scorer.scores([_query()], [[_cand("A"), _cand("B")]])[0]
    assert s_plain[0] > s_plain[1] + 1.0, "unweighted, the wrong bit decides"
    assert s_fp[0] == pytest.approx(s_fp[1]), "weighted, it no longer moves the ranking"


def test_a_reliable_bit_separates_two_candidates_that_differ_only_in_it():
    rel = _fit(*_validation())
    assert rel.weight[1] == pytest.approx(1.0), "AUC 1 on validation"
    fp = FingerprintScorer(_scorer([0.5, 0.9, 0.5, 0.5], {"A": [2], "B": []}), rel)
    a, b = fp.scores([_query()], [[_cand("A"), _cand("B")]])[0]
    assert a - b > 1.0, "the candidate with the predicted key is clearly more likely"
    fp_absent = FingerprintScorer(_scorer([0.5, 0.1, 0.5, 0.5], {"A": [2], "B": []}), rel)
    a, b = fp_absent.scores([_query()], [[_cand("A"), _cand("B")]])[0]
    assert b - a > 1.0, "predicted absent: the candidate without it wins"


def test_calibration_maps_over_confident_probabilities_down():
    y, p = _validation(n=400)
    rel = _fit(y, p)
    rate = y[:, 2].mean()
    got = rel.calibrate(np.array([[0.5, 0.5, 0.97, 0.5]]))[0, 2]
    assert got == pytest.approx(rate, abs=0.05), "0.97 said, present half the time: calibrated to its rate"
    right = rel.calibrate(np.array([[0.5, 0.8, 0.5, 0.5]]))[0, 1]
    assert 0.8 <= right < 1.0, "a bit right every time is not pulled down"
    a, b = fit_platt(np.zeros((0, 2)), np.zeros((0, 2), bool))
    np.testing.assert_allclose(np.c_[a, b], [[1.0, 0.0], [1.0, 0.0]], err_msg="no data: the identity map")


def test_rare_and_candidate_less_descriptors_weigh_zero():
    y, p = _validation()
    y[:, 1] = False
    y[:3, 1] = True          # present in 3 validation spectra: too few to know its reliability
    p[:, 1] = np.where(y[:, 1], 0.9, 0.1)
    rel = BitReliability.fit(NAMES, y, p, np.array([True, True, True, False]),
                             settings=ReliabilitySettings(min_class=5))
    assert rel.auc[1] == 1.0 and rel.weight[1] == 0.0, "perfect on 3 positives is no measured reliability"
    assert rel.auc[3] == 1.0 and rel.weight[3] == 0.0, "ChemOnt: no candidate structure yields it"
    with pytest.raises(ValueError, match="do not match"):
        BitReliability.fit(NAMES[:2], y, p)


def test_without_reliability_the_column_is_the_plain_likelihood_and_predictions_are_shared():
    scorer = _scorer([0.9, 0.2, 0.6, 0.5], {"A": [1, 3], "B": [2]})
    cols = with_fingerprint_likelihood("unused-lake", [scorer], mode="off")
    assert cols == [scorer]
    fp = FingerprintScorer(scorer, None)
    assert fp.feature == "fpll:hand-made"
    b = EvidenceBuilder(LibraryReference([], np.zeros((0, 32), np.uint64), {}), {}, models=[scorer, fp])
    assert b.names[-2:] == ("model:hand-made", "fpll:hand-made")
    X = b.matrices([_query()], [[_cand("A"), _cand("B")]])[0]
    np.testing.assert_allclose(X[:, len(FEATURES)], X[:, len(FEATURES) + 1])
    assert scorer.model.calls == 1, "both columns of one batch read one prediction"
    with pytest.raises(ValueError, match="does not match"):
        FingerprintScorer(scorer, BitReliability.fit(NAMES[:1], np.zeros((2, 1)), np.zeros((2, 1))))
    with pytest.raises(ValueError, match="mode"):
        with_fingerprint_likelihood("unused-lake", [scorer], mode="both")


def test_a_validation_spectrum_scored_as_a_query_gets_the_statistics_of_the_other_fold():
    y, p = _validation(n=80)
    keys = [f"K{i % 20:013d}" for i in range(80)]          # 20 structures, 4 spectra each
    ids = [f"S{i}" for i in range(80)]
    mask = np.array([True, True, True, False])
    rel = BitReliability.cross_fit(NAMES, y, p, mask, structures=keys, spectra=ids)
    assert {rel.fold[i] for i in range(80) if keys[i] == keys[0]} == {rel.fold[0]}, "folds split structures"
    k = int(rel.fold[0])
    other = BitReliability.fit(NAMES, y[rel.fold != k], p[rel.fold != k], mask)
    lake_q = Query("S0", "lake", "S0", 200.0, "positive", np.array([50.0]), np.array([1.0]))
    study_q = Query("S0", "study.mgf", "1", 200.0, "positive", np.array([50.0]), np.array([1.0]))
    probs, w = rel.for_queries([lake_q, study_q], np.tile([0.5, 0.8, 0.97, 0.5], (2, 1)))
    np.testing.assert_allclose(w[0], other.weight, err_msg="validation spectrum S0: its fold left out")
    np.testing.assert_allclose(probs[0], other.calibrate(np.array([[0.5, 0.8, 0.97, 0.5]]))[0])
    np.testing.assert_allclose(w[1], rel.weight, err_msg="a study scan of the same title: every structure")
    assert not np.allclose(rel.fold_a[k], rel.a), "the left-out fold changes the fit"


def test_statistics_round_trip_through_their_file(tmp_path):
    y, p = _validation()
    rel = BitReliability.cross_fit(NAMES, y, p, None, structures=[f"K{i % 7:013d}" for i in range(len(y))],
                                   spectra=[f"S{i}" for i in range(len(y))], key={"model_id": "hand-made"})
    back = BitReliability.load(rel.save(tmp_path / "bit_reliability-x.npz"))
    assert back.names == rel.names and back.structures == rel.structures and back.key == rel.key
    assert back.spectra == rel.spectra
    for f in ("a", "b", "weight", "auc", "n_pos", "n_neg", "fold", "fold_a", "fold_b", "fold_weight"):
        np.testing.assert_array_equal(getattr(back, f), getattr(rel, f))


# -- the sample lake, a real model ------------------------------------------------------------------------
MODEL_ID = "arch2-flat-fpll-test"


def train_small_model(lake, model_id: str = MODEL_ID, steps: int = 150) -> None:
    """An arch2-flat model (MACCS keys) trained with Adam on the lake's training-split spectra (blind inputs,
    as annotation feeds it) and registered; a direct torch loop instead of Ray Train, which takes minutes."""
    import torch

    from speclake.serving.annotate.fusion import lake_queries
    from speclake.training.models import ModelContext, build_model
    from speclake.training.scoring import descriptor_matrix
    from speclake.training.split import SplitSettings
    from speclake.training.tasks import descriptor_logits
    from speclake.training.inputs import as_batch
    from speclake.training.eval_data import structure_rows
    from speclake.pipelines.features.descriptors import DescriptorSettings

    torch.manual_seed(0)
    names = [f"maccs:{i}" for i in range(1, 167)]
    ctx = ModelContext(arch="arch2-flat", model={"trunk": [64], "dropout": 0.0},
                       bins={"bin_width": 1.0, "max_mz": 1000.0}, descriptors=names)
    module = build_model(ctx)
    queries, truths = lake_queries(lake, "train", SplitSettings(), cap=None)
    batch = as_batch(ModelScorer.examples(queries))
    y, _ = descriptor_matrix(structure_rows([t["smiles"] for t in truths], DescriptorSettings(), processes=1), names)
    target = torch.as_tensor(y, dtype=torch.float32)
    fit_and_register(lake, model_id, ctx, module, lambda: torch.nn.functional.binary_cross_entropy_with_logits(
        descriptor_logits(module, batch, ctx), target), steps)


@pytest.fixture(scope="module")
def model_lake(annotate_lake, tmp_path_factory):
    """A copy of the indexed sample lake with :data:`MODEL_ID` trained and registered."""
    return lake_with_model(annotate_lake, tmp_path_factory, "fpll", train_small_model)


@pytest.mark.spark
def test_bit_reliability_reads_validation_structures_only_and_is_cached_beside_the_model(model_lake, monkeypatch):
    from speclake.serving.annotate import fingerprint_likelihood as fl
    from speclake.serving.annotate.evidence import model_scorers
    from speclake.serving.annotate.fusion import lake_queries
    from speclake.training.split import SplitSettings, assign_split

    scorer = model_scorers(model_lake, [MODEL_ID])[0]
    rel = load_reliability(model_lake, scorer)
    assert rel is not None and rel.structures
    assert {assign_split(k, SplitSettings()) for k in rel.structures} == {"validation"}
    _, test = lake_queries(model_lake, "test", SplitSettings(), cap=None)
    _, train = lake_queries(model_lake, "train", SplitSettings(), cap=None)
    assert not set(rel.structures) & {t["inchikey14"] for t in test + train}, "no test or training structure"
    assert (rel.weight > 0).any() and (rel.weight < 1).any(), "the trained model is reliable on some keys only"
    files = list((model_lake / "models" / MODEL_ID).glob("bit_reliability-*.npz"))
    assert len(files) == 1 and BitReliability.load(files[0]).key == rel.key

    def no_recompute(*a, **k):
        raise AssertionError("the cached statistics were recomputed")
    monkeypatch.setattr(fl, "validation_reliability", no_recompute)
    np.testing.assert_array_equal(load_reliability(model_lake, scorer).weight, rel.weight)
    monkeypatch.undo()
    other = load_reliability(model_lake, scorer, settings=ReliabilitySettings(min_class=3))
    assert other.key != rel.key and len(list(files[0].parent.glob("bit_reliability-*.npz"))) == 2, \
        "other settings: other statistics, in their own file"
    none = validation_reliability(model_lake, scorer, SplitSettings(train=0.9, validation=0.0, test=0.1))
    assert none is None, "no validation split: no statistics (the column falls back to the plain likelihood)"


@pytest.mark.spark
def test_a_ranker_fitted_with_the_fingerprint_likelihood_loads_and_ranks(model_lake):
    from speclake.serving.annotate.candidates import CandidateSource
    from speclake.serving.annotate.fusion import lake_queries, library_hits
    from speclake.serving.annotate.ranker_fit import fit_ranker
    from speclake.serving.annotate.rankers import RankerSettings, load_ranker
    from speclake.training.split import SplitSettings

    assert RankerSettings().fingerprint_likelihood == "off", "measured no better than model:<id>: off by default"
    ranker_id, metrics = fit_ranker(model_lake, RankerSettings(max_formulas=2, models=[MODEL_ID],
                                                               fingerprint_likelihood="add", fragmenter_top=0))
    assert metrics["features"][-2:] == [f"model:{MODEL_ID}", f"fpll:{MODEL_ID}"]
    assert "alone:fpll:" + MODEL_ID in metrics["test"]["methods"]
    ranker = load_ranker(model_lake, ranker_id)
    assert ranker.names[-1] == f"fpll:{MODEL_ID}" and ranker.evidence.models[-1].reliability is not None
    queries, _ = lake_queries(model_lake, "test", SplitSettings(), cap=5)
    with CandidateSource.open(model_lake) as src:
        cands = src.candidates(queries)
    ranked = ranker.rank(queries, cands, library_hits(model_lake, queries))
    scored = [c for r in ranked for c in r.candidates]
    assert scored and all(np.isfinite(c.features[f"fpll:{MODEL_ID}"]) for c in scored)


@pytest.mark.spark
def test_a_ranker_fitted_before_the_fingerprint_likelihood_still_loads(model_lake):
    from speclake.serving.annotate.calibration import IsotonicCalibrator
    from speclake.serving.annotate.fusion import LinearFusion
    from speclake.serving.annotate.rankers import load_ranker, rankers_root

    def write(ranker_id: str, extra: tuple[str, ...]) -> None:
        features = FEATURES + extra
        fusion = LinearFusion(features, np.zeros(len(features)), np.ones(len(features)), np.ones(len(features)))
        d = rankers_root(model_lake) / ranker_id
        d.mkdir(parents=True)
        (d / "settings.json").write_text(json.dumps({"created": "2026-12-01T00:00:00+00:00"}))
        (d / "weights.json").write_text(json.dumps(fusion.to_dict()))
        (d / "calibration.json").write_text(json.dumps(IsotonicCalibrator.fit([0.1, 0.9], [False, True]).to_dict()))

    write("old-ranker", (f"model:{MODEL_ID}",))
    old = load_ranker(model_lake, "old-ranker")
    assert old.names[-1] == f"model:{MODEL_ID}" and len(old.evidence.models) == 1
    write("odd-ranker", ("embedding:x",))
    with pytest.raises(ValueError, match="fit it again"):
        load_ranker(model_lake, "odd-ranker")
