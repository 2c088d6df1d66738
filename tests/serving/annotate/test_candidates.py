"""Structure candidates by adduct hypothesis and mass window: a hand-made catalog and a real index."""
from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from speclake.pipelines.normalize.adduct import adduct_mz, parse_adduct
from speclake.serving.annotate.candidates import CandidateSource
from speclake.serving.annotate.model import Query
from speclake.serving.annotate.precursor import priors_from_counts

CAFFEINE = 194.080376
CAFFEINE_SMILES = "Cn1cnc2c1c(=O)n(C)c(=O)n2C"


class _Catalog:
    """An in-memory ``structures`` table with the catalog's columns."""

    def __init__(self, rows):
        self.con = duckdb.connect()
        self.con.register("_rows", pa.Table.from_pylist(rows))
        self.con.execute("CREATE TABLE structures AS SELECT * FROM _rows")

    def close(self):
        self.con.close()


def _row(fid, key, mass, formula="C8H10N4O2", source="lake"):
    return {"faiss_id": fid, "inchikey": key, "inchikey14": key[:14], "smiles": CAFFEINE_SMILES, "formula": formula,
            "monoisotopic_mass": mass, "source": source, "compound_name": f"s{fid}"}


def _query(mz, ionmode="positive", qid="q"):
    return Query(qid, "f.mgf", "1", mz, ionmode, np.array([110.0713, 138.0662]), np.array([0.3, 1.0]))


@pytest.fixture
def source():
    rows = [_row(1, "RYYVLZVUVIJVGH-UHFFFAOYSA-N", CAFFEINE),
            _row(2, "RYYVLZVUVIJVGH-XXXXXXXXXX-N", CAFFEINE, source="smiles"),      # same skeleton, other source
            _row(3, "AAAAAAAAAAAAAA-UHFFFAOYSA-N", CAFFEINE + CAFFEINE * 30e-6),     # 30 ppm off: outside
            _row(4, "BBBBBBBBBBBBBB-UHFFFAOYSA-N", CAFFEINE + 1e-4, formula="C8H10N4O2"),  # an isomer
            _row(5, "CCCCCCCCCCCCCC-UHFFFAOYSA-N", 172.0984)]                        # [M+Na]+ of 195.0877 ~ 172.0985
    src = CandidateSource(_Catalog(rows), ppm=10.0,
                          priors=priors_from_counts({"positive": {"[M+H]+": 100, "[M+Na]+": 5}}))
    yield src
    src.close()


def test_window_finds_structures_under_each_adduct_once_per_skeleton(source):
    mz = adduct_mz(CAFFEINE, parse_adduct("[M+H]+"))
    (cands,) = source.candidates([_query(mz)])
    by_key = {c.inchikey14: c for c in cands}
    assert set(by_key) == {"RYYVLZVUVIJVGH", "BBBBBBBBBBBBBB", "CCCCCCCCCCCCCC"}, "30 ppm off is left out"
    assert by_key["RYYVLZVUVIJVGH"].inchikey == "RYYVLZVUVIJVGH-UHFFFAOYSA-N", "the lowest index id per skeleton"
    assert by_key["RYYVLZVUVIJVGH"].adduct == "[M+H]+" and by_key["RYYVLZVUVIJVGH"].adduct_rank == 1
    assert abs(by_key["RYYVLZVUVIJVGH"].mass_error_ppm) < 1e-3
    assert by_key["CCCCCCCCCCCCCC"].adduct == "[M+Na]+" and by_key["CCCCCCCCCCCCCC"].adduct_rank == 2
    for c in cands:
        assert abs(c.mass_error_ppm) <= 10.0


def test_queries_of_a_batch_get_their_own_lists(source):
    mz = adduct_mz(CAFFEINE, parse_adduct("[M+H]+"))
    lists = source.candidates([_query(mz, qid="a"), _query(50.0, qid="b"), _query(mz, "negative", qid="c")])
    assert [len(x) > 0 for x in lists] == [True, False, False], "no structure at 50 m/z; none for [M-H]- here"


def test_formula_ranks_come_from_trees(source):
    mz = adduct_mz(CAFFEINE, parse_adduct("[M+H]+"))
    (cands,) = source.candidates([_query(mz)])
    treed = [c for c in cands if c.formula_rank is not None]
    assert treed and all(c.formula_score is not None for c in treed)
    assert min(c.formula_rank for c in treed) == 1


def test_max_formulas_bounds_the_trees(source):
    source.max_formulas = 0
    mz = adduct_mz(CAFFEINE, parse_adduct("[M+H]+"))
    (cands,) = source.candidates([_query(mz)])
    assert cands and all(c.formula_rank is None for c in cands)


def test_formula_mode_gives_every_structure_of_the_formula_whatever_the_mz(source):
    """Formula candidates: every skeleton of the given formula (each fixture row is C8H10N4O2, whatever its
    mass: the one 30 ppm off too) at a low-resolution precursor m/z (195.1) no ppm window would match; none
    without a formula or for an unindexed one; the adduct whose ion is closest to the m/z."""
    lists = source.by_formula([_query(195.1), _query(195.1, qid="b"), _query(195.1, qid="c")],
                              ["C8H10N4O2", None, "C99"])
    assert {c.inchikey14 for c in lists[0]} == {"RYYVLZVUVIJVGH", "AAAAAAAAAAAAAA", "BBBBBBBBBBBBBB", "CCCCCCCCCCCCCC"}
    assert lists[1] == [] and lists[2] == [], "no formula, or a formula not indexed: no candidates"
    assert {c.adduct for c in lists[0]} == {"[M+H]+"} and all(c.formula == "C8H10N4O2" for c in lists[0])
    assert abs(lists[0][0].mass_error_ppm - (195.1 - adduct_mz(CAFFEINE, parse_adduct("[M+H]+")))
               / adduct_mz(CAFFEINE, parse_adduct("[M+H]+")) * 1e6) < 0.01, "vs the formula's exact mass"


@pytest.fixture(scope="module")
def lake(sample_feature_lake, tmp_path_factory):
    from tests.training.eval_lakes import indexed_lake

    return indexed_lake(sample_feature_lake, tmp_path_factory)


@pytest.mark.spark
def test_real_index_finds_the_true_structure_of_lake_spectra(lake):
    from speclake.serving.annotate.fusion import lake_queries, truth_rows
    from speclake.training.split import SplitSettings

    queries, truths = lake_queries(lake, "train", SplitSettings(), cap=60)
    with CandidateSource.open(lake) as src:
        lists = src.candidates(queries)
    found = [t is not None for t in truth_rows(lists, truths)]
    # the sample's precursor m/z are within 10 ppm for all but a few records
    assert np.mean(found) >= 0.9, f"true structure found for {np.mean(found):.2f} of the spectra"
    for cands in lists:
        keys = [c.inchikey14 for c in cands]
        assert len(keys) == len(set(keys)), "one row per skeleton"


@dataclass
class _Hit:
    spectrum_id: str
    score: float


@pytest.mark.spark
def test_index_fingerprints_equal_rdkit_and_give_the_same_evidence(lake):
    """Candidates carry the index's packed Morgan bits: the same as RDKit's, so the evidence is unchanged."""
    import dataclasses

    from speclake.serving.annotate.evidence import EvidenceBuilder, FingerprintCache, LibraryReference
    from speclake.serving.annotate.fusion import lake_queries
    from speclake.serving.annotate.precursor import adduct_priors
    from speclake.training.split import SplitSettings

    queries, _ = lake_queries(lake, "train", SplitSettings(), cap=60)
    with CandidateSource.open(lake) as src:
        assert src.morgan_index
        lists = src.candidates(queries)
    cands = [c for cs in lists for c in cs]
    assert cands and all(c.faiss_id is not None and c.fingerprint is not None for c in cands)
    rng = np.random.default_rng(0)
    sample = [cands[i] for i in rng.choice(len(cands), size=min(200, len(cands)), replace=False)]
    np.testing.assert_array_equal(np.stack([c.fingerprint for c in sample]),
                                  FingerprintCache().get([c.smiles for c in sample]))

    ref = LibraryReference.from_lake(lake, splits=("test",))
    sids = sorted(ref.spectrum_structure)[:30]
    hits = {"analogue": [[_Hit(sids[(i + j) % len(sids)], 0.9 - 0.1 * j) for j in range(3)]
                         for i in range(len(queries))],
            "identity": [[_Hit(sids[i % len(sids)], 0.8)] for i in range(len(queries))]}
    plain = [[dataclasses.replace(c, fingerprint=None) for c in cs] for cs in lists]
    with_index = EvidenceBuilder(ref, adduct_priors(lake)).matrices(queries, lists, hits)
    with_rdkit = EvidenceBuilder(ref, adduct_priors(lake)).matrices(queries, plain, hits)
    assert sum(len(x) for x in with_index) == len(cands)
    assert any((x[:, 0] < 1.0).any() for x in with_index), "some priors are computed, not library structures"
    for a, b in zip(with_index, with_rdkit):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)


@pytest.mark.spark
def test_library_reference_from_the_index_equals_rdkit(lake, monkeypatch):
    import speclake.serving.annotate.candidates as candidates_module
    from speclake.serving.annotate.evidence import LibraryReference

    indexed = LibraryReference.from_lake(lake)
    monkeypatch.setattr(candidates_module, "index_fingerprints", lambda *a, **k: {})
    computed = LibraryReference.from_lake(lake)
    assert indexed.keys == computed.keys and indexed.spectrum_structure == computed.spectrum_structure
    np.testing.assert_array_equal(indexed.fps, computed.fps)
