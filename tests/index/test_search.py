"""Tests of index.search on a built index of a few thousand real structures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speclake.index.search import SpectrumQueryUnavailable, StructureIndex
from speclake.pipelines.normalize.masses import ppm_window


@pytest.fixture(scope="module")
def index(built_index: Path) -> StructureIndex:
    ix = StructureIndex.open(built_index)
    yield ix
    ix.close()


def all_rows(ix: StructureIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes = np.concatenate([np.asarray(s.codes) for s in ix.shards])
    masses = np.concatenate([np.asarray(s.mass) for s in ix.shards])
    ids = np.concatenate([(np.int64(s.info.serial) << 32) | np.arange(s.info.count) for s in ix.shards])
    return codes, masses, ids


def exact_tanimoto(codes: np.ndarray, q: np.ndarray) -> np.ndarray:
    inter = np.unpackbits(codes & q, axis=1).sum(1)
    union = np.unpackbits(codes | q, axis=1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def test_index_has_several_shard_types(index: StructureIndex) -> None:
    """The fixture index has several mass-range shards, some with a binary HNSW index."""
    assert len(index.shards) >= 3
    assert {s.info.index_type for s in index.shards} >= {"binary_hnsw"}
    assert len(index) == index.catalog.sql("SELECT count(*) AS n FROM structures").column("n")[0].as_py()


def test_mass_filter_exact(index: StructureIndex) -> None:
    """Candidates of a ppm window are exactly the catalog's rows with mass BETWEEN lo AND hi (DuckDB)."""
    _, masses, ids = all_rows(index)
    rng = np.random.default_rng(1)
    for m in list(rng.choice(masses, 30)) + [float(np.median(masses)) + 0.0004]:
        for ppm in (1.0, 10.0, 200.0):
            lo, hi = ppm_window(float(m), ppm)
            duck = index.catalog.filter_ids(mass_lo=lo, mass_hi=hi)
            res = index.search(np.asarray(index.shards[0].codes[0]), [float(m)], ppm=ppm, k=5000)
            got = res.ids[0][res.ids[0] >= 0]
            assert res.n_candidates[0] == len(duck)
            assert sorted(got.tolist()) == sorted(duck.tolist())
            assert np.all((masses[np.isin(ids, got)] >= lo) & (masses[np.isin(ids, got)] <= hi))


def test_approximate_agrees_with_exact(index: StructureIndex) -> None:
    """Precursor-window queries equal exact search; whole-index queries (binary HNSW on large shards + exact
    re-ranking) reach recall@20 >= 0.95 against exact; exact=True equals brute force over everything."""
    codes, _, _ = all_rows(index)
    rng = np.random.default_rng(2)
    rows = rng.choice(len(codes), 40, replace=False)
    approx = index.search(codes[rows], None, k=20)
    exact = index.search(codes[rows], None, k=20, exact=True)
    assert approx.used_ann.all() and not exact.used_ann.any()
    recall = [np.sum(approx.scores[i] >= exact.scores[i][-1] - 1e-12) / 20 for i in range(len(rows))]
    assert np.mean(recall) >= 0.95
    _, masses, _ = all_rows(index)
    win = index.search(codes[rows], masses[rows].tolist(), ppm=50, k=20)
    win_exact = index.search(codes[rows], masses[rows].tolist(), ppm=50, k=20, exact=True)
    np.testing.assert_array_equal(win.ids, win_exact.ids)
    for i, r in enumerate(rows):  # exact search is exact: scores equal brute force over everything
        ref = np.sort(exact_tanimoto(codes, codes[r]))[::-1][:20]
        np.testing.assert_allclose(exact.scores[i], ref, atol=1e-12)


def test_query_by_smiles_rows(index: StructureIndex, shipped_smiles: Path) -> None:
    """A SMILES query within its own mass finds itself first, with metadata and 0 ppm error."""
    smi, rid = open(shipped_smiles).readline().rstrip("\n").split("\t")
    hit = index.catalog.sql("SELECT monoisotopic_mass, inchikey FROM structures WHERE record_id = ?", [rid])
    mass, key = hit.column(0)[0].as_py(), hit.column(1)[0].as_py()
    t = index.query(mass=mass, ppm=10, smiles=smi, k=5)
    first = t.to_pylist()[0]
    assert (first["rank"], first["inchikey"], first["record_id"], first["score"]) == (1, key, rid, 1.0)
    assert abs(first["mass_error_ppm"]) < 1e-6
    assert t.column("score").to_pylist() == sorted(t.column("score").to_pylist(), reverse=True)


def test_query_batch_matches_single(index: StructureIndex) -> None:
    """query_batch gives the same hits as one query at a time, numbered by input position."""
    codes, masses, _ = all_rows(index)
    rows = [3, 50, len(codes) - 1]  # first, middle and last row, whatever the index size
    batch = index.query_batch(masses=masses[rows].tolist(), ppm=20, vectors=codes[rows], k=7)
    for qi, r in enumerate(rows):
        single = index.query(mass=float(masses[r]), ppm=20, vector=codes[r], k=7)
        part = batch.filter(batch.column("query").to_numpy() == qi)
        assert part.column("faiss_id").to_pylist() == single.column("faiss_id").to_pylist()


def test_formula_filter_through_duckdb(index: StructureIndex) -> None:
    """A formula filter returns only structures of that formula."""
    f = index.catalog.sql("SELECT formula, count(*) n FROM structures GROUP BY 1 ORDER BY 2 DESC LIMIT 1")
    formula = f.column("formula")[0].as_py()
    codes, _, _ = all_rows(index)
    t = index.query(vector=codes[0], formula=formula, k=50)
    assert t.num_rows == min(50, f.column("n")[0].as_py())
    assert set(t.column("formula").to_pylist()) == {formula}


def test_spectrum_query_needs_learned_embedding(index: StructureIndex) -> None:
    """Querying a fingerprint index by spectrum fails clearly instead of pretending."""
    with pytest.raises(SpectrumQueryUnavailable, match="learned spectrum/structure embedding"):
        index.query(mass=300.0, spectrum=object())


def test_bad_query_smiles(index: StructureIndex) -> None:
    """An unparseable query SMILES is a ValueError naming it."""
    with pytest.raises(ValueError, match="C1CC"):
        index.query(mass=300.0, smiles="C1CC(")
