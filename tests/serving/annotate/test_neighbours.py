"""arch4 embedding-neighbour evidence (``model:<arch4 id>``): hand-made embeddings, then the sample lake with a
real arch4 model trained on its training split."""
from __future__ import annotations


import numpy as np
import pyarrow as pa
import pytest

from speclake.serving.annotate.evidence import (FEATURES, EvidenceBuilder, FingerprintCache, LibraryReference,
                                                ModelScorer)
from speclake.serving.annotate.model import Candidate, Query
from speclake.serving.annotate.neighbours import NeighbourLibrary, NeighbourScorer
from speclake.training.metrics import tanimoto_matrix
from tests.serving.annotate.small_models import fit_and_register, lake_with_model

CAFFEINE = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"
HEXANOL = "CCCCCCO"
#: m/z of the three peaks the hand-made model embeds (one embedding axis each).
AXES = (50.0, 100.0, 138.0)


class _Model:
    """An arch4 stand-in: a spectrum's embedding is its intensity at each m/z of :data:`AXES`; counts the
    spectra it embeds."""

    arch, model_id = "arch4", "fake-arch4"

    def __init__(self):
        self.embedded = 0

    def embed_spectra(self, examples):
        self.embedded += examples.num_rows
        out = np.zeros((examples.num_rows, len(AXES)), np.float32)
        for i, (mz, inten) in enumerate(zip(examples.column("mz").to_pylist(),
                                            examples.column("intensities").to_pylist())):
            for m, v in zip(mz, inten):
                if m in AXES:
                    out[i, AXES.index(m)] = v
        return out


def _library(ids=("lib-caf", "self", "lib-hex"), peaks=(((138.0, 50.0), (1.0, 0.2)), ((138.0,), (1.0,)),
                                                        ((50.0,), (1.0,))), structures=(0, 1, 1),
             modes=("positive",) * 3) -> NeighbourLibrary:
    """Library spectra ``ids`` with ``peaks`` (m/z, intensities) of structure rows ``structures`` (0: caffeine,
    1: hexanol)."""
    fps = FingerprintCache().get([CAFFEINE, HEXANOL])
    ref = LibraryReference(["RYYVLZVUVIJVGH", "ZSIAUFGUXNUGDI"], fps, dict(zip(ids, structures)))
    table = pa.table({"spectrum_id": list(ids), "mz": [list(p[0]) for p in peaks],
                      "intensities": [list(p[1]) for p in peaks], "precursor_mz": [200.0] * len(ids)})
    return NeighbourLibrary(ref, list(ids), list(modes), peaks=table)


def _query(qid="self", mz=(138.0,), inten=(1.0,), mode="positive") -> Query:
    return Query(qid, "f", "1", 195.0877, mode, np.array(mz, np.float64), np.array(inten, np.float64))


def _cands():
    return [Candidate("RYYVLZVUVIJVGH-UHFFFAOYSA-N", "RYYVLZVUVIJVGH", CAFFEINE, "C8H10N4O2", 194.08, "[M+H]+", 0.0),
            Candidate("ZSIAUFGUXNUGDI-UHFFFAOYSA-N", "ZSIAUFGUXNUGDI", HEXANOL, "C6H14O", 102.1, "[M+H]+", 0.0)]


def test_the_nearest_library_structure_scores_highest_and_a_query_is_never_its_own_neighbour(tmp_path):
    """Query ``self`` (a peak at 138) is also library spectrum ``self`` (hexanol, cosine 1); the next nearest,
    ``lib-caf`` (cosine 0.98), is caffeine. With k=1 the query's own spectrum is skipped, so caffeine scores
    1.0 and hexanol its Tanimoto to caffeine; another query id keeps ``self`` as its neighbour."""
    scorer = NeighbourScorer(_Model(), _library(), tmp_path, k=1)
    [(pos, cos)] = scorer.neighbours([_query()])
    assert [scorer.library.spectrum_ids[p] for p in pos] == ["lib-caf"], "own spectrum skipped"
    assert cos[0] == pytest.approx(1 / np.sqrt(1.04), abs=1e-6)
    caf, hexa = scorer.scores([_query()], [_cands()])[0]
    assert caf == pytest.approx(1.0) and hexa < 0.2, "the neighbour's structure is caffeine"
    other = scorer.scores([_query("a study scan")], [_cands()])[0]
    assert other[1] == pytest.approx(1.0) and other[0] < 0.2, "not the same id: its nearest is 'self' (hexanol)"


def test_neighbours_are_weighted_by_cosine_to_the_power():
    """k=3 over two neighbours of cosine c1 (caffeine) and c2 (hexanol) and one orthogonal one: the score is
    (c1^p T(., caffeine) + c2^p T(., hexanol)) / (c1^p + c2^p)."""
    lib = _library(ids=("a", "b", "c"), peaks=(((138.0,), (1.0,)), ((100.0,), (1.0,)), ((50.0,), (1.0,))),
                   structures=(0, 1, 0))
    q = _query("q", mz=(138.0, 100.0), inten=(1.0, 0.5))
    c1, c2 = 1 / np.sqrt(1.25), 0.5 / np.sqrt(1.25)
    for p in (1.0, 4.0):
        got = NeighbourScorer(_Model(), lib, None, k=3, power=p).scores([q], [_cands()])[0]
        tan = float(tanimoto_matrix(lib.reference.fps[:1], lib.reference.fps[1:])[0, 0])
        w1, w2 = c1 ** p, c2 ** p
        np.testing.assert_allclose(got, [(w1 + w2 * tan) / (w1 + w2), (w1 * tan + w2) / (w1 + w2)], atol=1e-6)


def test_no_library_no_peaks_or_no_same_ion_mode_spectrum_scores_zero(tmp_path):
    """An empty library, a query without peaks, a query whose ion mode has no library spectrum, and an empty
    candidate list all give zeros (never an error)."""
    empty = NeighbourScorer(_Model(), _library(ids=(), peaks=(), structures=(), modes=()), tmp_path)
    np.testing.assert_array_equal(empty.scores([_query()], [_cands()])[0], [0.0, 0.0])
    scorer = NeighbourScorer(_Model(), _library(), tmp_path)
    no_peaks, negative, none = scorer.scores([_query("x", mz=(), inten=()), _query("y", mode="negative"),
                                              _query("z")], [_cands(), _cands(), []])
    np.testing.assert_array_equal(no_peaks, [0.0, 0.0])
    np.testing.assert_array_equal(negative, [0.0, 0.0])
    assert none.shape == (0,)
    assert scorer.scores([], []) == []


def test_library_embeddings_are_cached_beside_the_model_and_reused(tmp_path):
    """The first scorer embeds the library once and writes ``library-<digest>.npy``; a second scorer with the
    same library reads it (embeds only its queries) and scores the same; another library gets its own file."""
    first = NeighbourScorer(_Model(), _library(), tmp_path)
    a = first.scores([_query()], [_cands()])
    assert first.model.embedded == 3 + 1, "3 library spectra, 1 query"
    files = list(tmp_path.glob("library-*.npy"))
    assert files == [first.cache_path()] and not list(tmp_path.glob(".*tmp")), "one file, no temporary left"
    second = NeighbourScorer(_Model(), _library(), tmp_path)
    b = second.scores([_query()], [_cands()])
    assert second.model.embedded == 1, "library read from the cache, not embedded again"
    np.testing.assert_array_equal(a[0], b[0])
    other = NeighbourScorer(_Model(), _library(ids=("x", "y", "z")), tmp_path)
    other.scores([_query()], [_cands()])
    assert other.model.embedded == 4 and len(list(tmp_path.glob("library-*.npy"))) == 2


def test_an_evidence_builder_gets_one_column_per_arch4_model(tmp_path):
    """A NeighbourScorer is one ``model:<id>`` column after :data:`FEATURES`; ModelScorer refuses arch4."""
    b = EvidenceBuilder(_library().reference, {}, models=[NeighbourScorer(_Model(), _library(), tmp_path, k=1)])
    assert b.names == FEATURES + ("model:fake-arch4",)
    [X] = b.matrices([_query()], [_cands()])
    np.testing.assert_allclose(X[:, -1], b.models[0].scores([_query()], [_cands()])[0])
    with pytest.raises(ValueError, match="NeighbourScorer"):
        ModelScorer(_Model())


# -- the sample lake, a real arch4 model ------------------------------------------------------------------
MODEL_ID = "arch4-neighbours-test"


def train_small_arch4(lake, model_id: str = MODEL_ID, steps: int = 60) -> None:
    """A real arch4 model trained with its pair loss (embedding cosine = Tanimoto) on every pair of the lake's
    training-split spectra, and registered; a direct torch loop instead of Ray Train."""
    import torch

    from speclake.serving.annotate.fusion import lake_queries
    from speclake.training import metrics as M
    from speclake.training.inputs import as_batch
    from speclake.training.models import ModelContext, build_model
    from speclake.training.models.arch4 import pair_loss
    from speclake.training.split import SplitSettings
    from speclake.training.tasks import spectrum_embeddings

    torch.manual_seed(0)
    ctx = ModelContext(arch="arch4", model={"hidden": [64], "embedding_dim": 16, "dropout": 0.0},
                       bins={"bin_width": 1.0, "max_mz": 1000.0})
    module = build_model(ctx)
    queries, truths = lake_queries(lake, "train", SplitSettings(), cap=None)
    batch = as_batch(ModelScorer.examples(queries))
    fps = FingerprintCache().get([t["smiles"] for t in truths])
    tan = torch.as_tensor(M.tanimoto_matrix(fps, fps), dtype=torch.float32)
    left, right = torch.triu_indices(len(queries), len(queries), 1)
    fit_and_register(lake, model_id, ctx, module,
                     lambda: pair_loss(spectrum_embeddings(module, batch, ctx), left, right, tan[left, right]), steps)


@pytest.fixture(scope="module")
def arch4_lake(annotate_lake, tmp_path_factory):
    """A copy of the indexed sample lake with :data:`MODEL_ID` trained and registered."""
    return lake_with_model(annotate_lake, tmp_path_factory, "arch4", train_small_arch4)


@pytest.mark.spark
def test_a_registered_arch4_model_scores_known_queries_by_their_library_neighbours(arch4_lake, monkeypatch):
    """model_scorers includes the arch4 model; its library is the training split; a known (training-split)
    query never finds itself; ranking the distinct structures of 40 known queries, the truth (other spectra of
    it are in the library) mostly ranks first; the structure index's candidates score in [0, 1]; a second
    scorer reads the cached library embeddings instead of embedding them again."""
    from collections import Counter

    from speclake.serving.annotate import neighbours
    from speclake.serving.annotate.candidates import CandidateSource
    from speclake.serving.annotate.evidence import model_scorers
    from speclake.serving.annotate.fusion import lake_queries
    from speclake.training.split import SplitSettings, assign_split

    [scorer] = model_scorers(arch4_lake, split=SplitSettings())
    assert isinstance(scorer, NeighbourScorer) and scorer.feature == f"model:{MODEL_ID}"
    lib = scorer.library
    assert len(lib) > 0 and {assign_split(lib.reference.keys[r], SplitSettings()) for r in lib.rows} == {"train"}
    queries, truths = lake_queries(arch4_lake, "train", SplitSettings(), cap=40)
    for q, (pos, cos) in zip(queries, scorer.neighbours(queries)):
        assert 0 < len(pos) <= 10 and q.query_id not in {lib.spectrum_ids[p] for p in pos}
        assert np.all(np.diff(cos) <= 1e-6), "nearest first"
    pool = list({t["inchikey14"]: Candidate(t["inchikey14"] + "-X-N", t["inchikey14"], t["smiles"], "C", 0.0,
                                            "[M+H]+", 0.0) for t in truths}.values())
    keys = [c.inchikey14 for c in pool]
    spectra_of = Counter(lib.rows.tolist())
    first = [s[keys.index(t["inchikey14"])] >= s.max() for s, t in zip(scorer.scores(queries, [pool] * len(queries)),
                                                                         truths)
             if spectra_of[lib.reference.key_row[t["inchikey14"]]] > 1]
    assert len(pool) >= 5 and len(first) >= 10 and np.mean(first) > 0.5, \
        f"truth first in {np.mean(first):.2f} of {len(first)} known queries among {len(pool)} structures"
    with CandidateSource.open(arch4_lake) as src:
        cands = src.candidates(queries)
    scores = scorer.scores(queries, cands)
    assert any(len(s) for s in scores) and all(((s >= 0) & (s <= 1 + 1e-9)).all() for s in scores)
    path = scorer.cache_path()
    assert path.parent.name == MODEL_ID and path.is_file()

    def no_embedding(self):
        raise AssertionError("the cached library embeddings were computed again")
    monkeypatch.setattr(neighbours.NeighbourLibrary, "examples", no_embedding)
    [again] = model_scorers(arch4_lake, [MODEL_ID])
    for a, b in zip(scores, again.scores(queries, cands)):
        np.testing.assert_allclose(a, b, atol=1e-6)
