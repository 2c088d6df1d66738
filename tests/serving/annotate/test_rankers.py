"""Rankers: fitted on validation spectra of the sample lake, registered, loaded; the fallback."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from speclake.serving.annotate.ranker_fit import fit_ranker
from speclake.serving.annotate.rankers import FALLBACK, RankerSettings, list_rankers, load_ranker

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def lake(sample_feature_lake, tmp_path_factory):
    """A copy of the indexed sample lake (fitting writes rankers and the library index beside it)."""
    from tests.training.eval_lakes import indexed_lake

    src = indexed_lake(sample_feature_lake, tmp_path_factory)
    dst = tmp_path_factory.mktemp("ranker-lake") / "lake"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_staging"))
    return dst


@pytest.fixture(scope="module")
def fitted(lake):
    """A ranker with the fragmenter's re-ranking stage on its top 3 (the plain fusion is its first stage)."""
    return fit_ranker(lake, RankerSettings(max_formulas=2, fragmenter_top=3))


def test_lake_without_ranker_falls_back_to_uncalibrated_library_prior(lake):
    from speclake.serving.annotate.candidates import CandidateSource
    from speclake.serving.annotate.fusion import lake_queries, library_hits
    from speclake.training.split import SplitSettings

    ranker = load_ranker(lake, FALLBACK)
    queries, _ = lake_queries(lake, "test", SplitSettings(), cap=10)
    with CandidateSource.open(lake) as src:
        cands = src.candidates(queries)
    ranked = ranker.rank(queries, cands, library_hits(lake, queries))
    assert [r.query.query_id for r in ranked] == [q.query_id for q in queries]
    for r in ranked:
        assert r.method == FALLBACK and r.confidence is None, "the fallback is never presented as calibrated"
        assert r.scores == sorted(r.scores, reverse=True)


def test_prior_method_orders_candidates_by_the_library_prior_alone(lake):
    """`--method prior` (the spectrum-free baseline of the benchmarks) ranks every list by its prior column,
    with no confidence; an unknown method names the choices, prior among them."""
    from speclake.serving.annotate.candidates import CandidateSource
    from speclake.serving.annotate.fusion import lake_queries, library_hits
    from speclake.serving.annotate.rankers import PRIOR
    from speclake.training.split import SplitSettings

    ranker = load_ranker(lake, PRIOR)
    queries, _ = lake_queries(lake, "test", SplitSettings(), cap=10)
    with CandidateSource.open(lake) as src:
        cands = src.candidates(queries)
    ranked = ranker.rank(queries, cands, library_hits(lake, queries))
    assert any(len(r.candidates) > 1 for r in ranked)
    for r in ranked:
        priors = [c.features["prior"] for c in r.candidates]
        assert r.method == PRIOR and r.confidence is None and priors == sorted(priors, reverse=True)
    with pytest.raises(ValueError, match="prior"):
        load_ranker(lake, "no-such-ranker")


def test_fit_registers_a_ranker_with_test_metrics_beside_the_prior(lake, fitted):
    ranker_id, metrics = fitted
    d = lake / "models" / "rankers" / ranker_id
    assert {p.name for p in d.iterdir()} >= {"settings.json", "weights.json", "calibration.json", "metrics.json",
                                             "training_structures.json"}
    saved = json.loads((d / "metrics.json").read_text())
    methods = saved["test"]["methods"]
    for name in ("fused", "prior", FALLBACK, "random"):
        assert 0.0 <= methods[name]["all"]["hit1"] <= 1.0, f"test hit@1 of {name}"
        assert methods[name]["all"]["n"] == saved["test"]["n_queries"] > 0
    assert 0.0 <= saved["test"]["calibration"]["ece"] <= 1.0
    assert list_rankers(lake)[0]["ranker_id"] == ranker_id


def test_fusion_never_trains_on_test_or_training_structures(lake, fitted):
    from speclake.serving.annotate.fusion import lake_queries
    from speclake.training.split import SplitSettings, assign_split

    ranker_id, metrics = fitted
    d = lake / "models" / "rankers" / ranker_id
    trained_on = json.loads((d / "training_structures.json").read_text())
    assert trained_on, "the fusion saw validation structures"
    splits = {assign_split(k, SplitSettings()) for k in trained_on}
    assert "validation" in splits and splits <= {"validation", "train"}, "validation + known (training) structures"
    _, test_truths = lake_queries(lake, "test", SplitSettings(), cap=None)
    assert not set(trained_on) & {t["inchikey14"] for t in test_truths}, "no test structure in training (InChIKey-14)"
    assert metrics["validation"]["known_queries"] > 0, "the fusion also learned from known structures"


def test_known_queries_are_training_structures_with_other_library_spectra(lake):
    """Known queries: training-split spectra whose structure has >= 2 spectra, fit and test halves
    structure-disjoint; the evidence never uses the query's own spectrum as a library hit."""
    from collections import Counter

    from speclake.serving.annotate.evidence import EvidenceBuilder, LibraryReference
    from speclake.serving.annotate.fusion import lake_queries, library_hits
    from speclake.serving.annotate.ranker_fit import known_queries
    from speclake.training.split import SplitSettings, assign_split

    settings = RankerSettings()
    (fq, ft), (tq, tt) = known_queries(lake, settings, 20, 20)
    assert ft and tt
    _, train = lake_queries(lake, "train", SplitSettings(), cap=None)
    counts = Counter(t["inchikey14"] for t in train)
    for t in ft + tt:
        assert assign_split(t["inchikey14"], SplitSettings()) == "train" and counts[t["inchikey14"]] >= 2
    assert not {t["inchikey14"] for t in ft} & {t["inchikey14"] for t in tt}
    hits = library_hits(lake, fq[:5], top_k=5)
    assert any(h.spectrum_id == q.query_id for q, hs in zip(fq[:5], hits["identity"]) for h in hs), \
        "a spectrum finds itself in the library"
    builder = EvidenceBuilder(LibraryReference.from_lake(lake, splits=("train",)), {})
    q = fq[0]
    own_only = [h for h in hits["identity"][0] if h.spectrum_id == q.query_id]
    from speclake.serving.annotate.candidates import CandidateSource

    with CandidateSource.open(lake) as src:
        cands = src.candidates([q])[0]
    if cands and own_only:
        X = builder.features(q, cands, {"identity": own_only})
        assert not X[:, 1].any() and not X[:, 2].any(), "the query's own spectrum is no identity evidence"


def test_default_is_the_newest_fitted_ranker_with_a_confidence(lake, fitted):
    from speclake.serving.annotate.candidates import CandidateSource
    from speclake.serving.annotate.fusion import lake_queries, library_hits
    from speclake.training.split import SplitSettings

    ranker = load_ranker(lake)
    assert ranker.name == fitted[0] and ranker.calibrated
    queries, _ = lake_queries(lake, "test", SplitSettings(), cap=10)
    with CandidateSource.open(lake) as src:
        cands = src.candidates(queries)
    for r in ranker.rank(queries, cands, library_hits(lake, queries)):
        if r.candidates:
            assert 0.0 <= r.confidence <= 1.0
            assert set(r.candidates[0].features) >= {"prior", "analogue", "tree_gap", "frag_score"}
            frag = [c.features["frag_score"] for c in r.candidates]
            assert sum(v > min(frag) for v in frag) <= 2, "fragmented: stage 1's top 3; the rest get their lowest"
        else:
            assert r.confidence is None
    with pytest.raises(ValueError, match="unknown ranker"):
        load_ranker(lake, "no-such-ranker")
    assert np.isfinite(ranker.scores(np.zeros((2, len(ranker.fusion.features))))).all()


def test_net_fusion_is_saved_loaded_and_scores_like_at_fit_time(lake):
    """A ranker fitted with the listwise network (fusion="net") records its kind and out-of-fold loss, and the
    loaded ranker's fusion is that network with the same scores; "auto" records the kind it chose and the
    out-of-fold loss of both kinds."""
    from speclake.serving.annotate.fusion_net import NetFusion, load_fusion

    ranker_id, metrics = fit_ranker(lake, RankerSettings(max_formulas=2, fusion="net", net_hidden=4))
    d = lake / "models" / "rankers" / ranker_id
    assert json.loads((d / "settings.json").read_text())["kind"] == "net_listwise"
    assert metrics["fusion"]["kind"] == "net" and set(metrics["fusion"]["oof_loss"]) == {"net"}
    ranker = load_ranker(lake, ranker_id)
    assert isinstance(ranker.fusion, NetFusion)
    X = np.random.default_rng(0).normal(size=(5, len(ranker.fusion.features)))
    saved = load_fusion(json.loads((d / "weights.json").read_text()))
    np.testing.assert_allclose(ranker.fusion.score(X), saved.score(X))
    _, auto = fit_ranker(lake, RankerSettings(max_formulas=2, fusion="auto", net_hidden=4))
    assert auto["fusion"]["kind"] in ("linear", "net") and set(auto["fusion"]["oof_loss"]) == {"linear", "net"}
