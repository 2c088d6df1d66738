"""The library index over a real lake (the bundled MassBank sample): build, self-search, analogues,
incremental updates, merges, rebuilds and crash safety."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from speclake.lake.catalog import LakeError
from speclake.lake.sql import connect
from speclake.serving.library import LibraryIndex, LibrarySettings, Query
from speclake.serving.library import index as index_module

from tests.conftest import SAMPLE

pytestmark = pytest.mark.spark


def _lake_copy(src, tmp_path):
    dst = tmp_path / "lake"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_library"))
    return dst


def _ms2_rows(lake):
    con = connect(lake)
    try:
        return con.execute("SELECT spectrum_id, ionmode, precursor_mz, mz, intensities FROM spectra "
                           "WHERE ms_level = 2 ORDER BY spectrum_id").fetchall()
    finally:
        con.close()


@pytest.fixture(scope="module")
def built(sample_spectra_lake, tmp_path_factory):
    lake = _lake_copy(sample_spectra_lake, tmp_path_factory.mktemp("built"))
    report = LibraryIndex.update(lake)
    return lake, report, LibraryIndex.load(lake)


def test_build_indexes_every_usable_ms2_spectrum_and_counts_the_rest(built) -> None:
    lake, report, index = built
    con = connect(lake)
    total, ms2, no_prec = con.execute(
        "SELECT count(*), count(*) FILTER (ms_level = 2), count(*) FILTER (ms_level = 2 AND precursor_mz IS NULL) "
        "FROM spectra").fetchone()
    con.close()
    assert index.n_spectra == report.spectra_indexed > 0
    assert report.spectra_read == total, "the first build reads every row of spectra"
    assert index.n_spectra + sum(index.skipped.values()) == total, "every row is indexed or counted with a reason"
    assert index.skipped.get("not_ms2", 0) == total - ms2
    assert index.skipped.get("no_precursor", 0) == no_prec
    manifest = json.loads((lake / "_library" / "manifest.json").read_text())
    assert manifest["spectra_version"] == index.spectra_version == 1
    assert manifest["settings"] == LibrarySettings().model_dump(mode="json")
    assert set(index.segments) <= {"positive", "negative", "unknown"}
    for segs in index.segments.values():
        assert all(isinstance(s.ion_mz, np.memmap) for s in segs), "segments are memory-mapped"
        for s in segs:
            assert np.all(np.diff(s.ion_mz) >= 0) and np.all(np.diff(s.nl_mass) >= 0) and np.all(np.diff(s.precursor) >= 0)


def test_identity_search_finds_each_spectrum_with_its_own_peaks_at_rank_1(built) -> None:
    lake, _, index = built
    rows = _ms2_rows(lake)
    indexed = {str(i) for segs in index.segments.values() for s in segs for i in s.ids}
    sample = [r for r in rows if r[0] in indexed][::7][:40]
    queries = [Query(r[3], r[4], r[2], r[1]) for r in sample]
    for (sid, *_), hits in zip(sample, index.search_batch(queries, top_k=10)):
        assert hits[0].score == pytest.approx(1.0, abs=1e-6) and hits[0].entropy == pytest.approx(1.0, abs=1e-6)
        assert hits[0].cosine == pytest.approx(1.0) and hits[0].shared_peaks > 0
        tied = {h.spectrum_id for h in hits if h.score > 1 - 1e-6}
        assert sid in tied, f"{sid} is not among the rank-1 hits {tied}"


def test_analogue_search_finds_a_shifted_spectrum(built) -> None:
    """Precursor +CH2 (14.01565) and the upper half of the fragments shifted with it: analogue search finds
    the original at rank 1 through neutral losses."""
    lake, _, index = built
    rows = [r for r in _ms2_rows(lake) if r[2] is not None and len(r[3]) >= 8]
    sid, mode, prec, mz, it = rows[len(rows) // 2]
    mz = np.asarray(mz)
    shifted = np.where(mz > np.median(mz), mz + 14.01565, mz)
    hits = index.search(shifted, it, prec + 14.01565, mode, mode="analogue", top_k=5)
    tied = {h.spectrum_id for h in hits if h.score > hits[0].score - 1e-9}
    assert sid in tied
    hit = next(h for h in hits if h.spectrum_id == sid)
    assert hit.matched_losses > 0 and hit.precursor_mz_difference == pytest.approx(-14.01565)
    assert hit.modified_cosine >= hit.cosine


def test_update_adds_only_the_new_spectra_as_a_new_segment(sample_spectra_lake, spark, tmp_path) -> None:
    from speclake.pipelines.ingest import IngestSettings, run_ingest

    lake = _lake_copy(sample_spectra_lake, tmp_path)
    first = LibraryIndex.open(lake)
    before = {m: [s["name"] for s in e["segments"]] for m, e in first.manifest["ionmodes"].items()}
    assert LibraryIndex.update(lake).spectra_read == 0, "nothing new: nothing read"
    ingest = run_ingest([str(SAMPLE / "gnps_pesticides.mgf")], lake, IngestSettings(), spark=spark)
    assert ingest.spectra_new > 0
    report = LibraryIndex.update(lake)
    assert report.spectra_read == ingest.spectra_new, "only the new part is read"
    after = LibraryIndex.load(lake)
    assert after.spectra_version == 2
    for mode, names in before.items():
        assert after.manifest["ionmodes"][mode]["segments"][: len(names)] == first.manifest["ionmodes"][mode]["segments"], \
            "old segments are kept as they are"
    assert sum(after.segment_counts().values()) == sum(len(v) for v in before.values()) + report.segments_written
    assert after.n_spectra == first.n_spectra + report.spectra_indexed
    assert report.spectra_indexed + sum(report.skipped.values()) == ingest.spectra_new
    # a new spectrum is found by its own peaks
    con = connect(lake)
    new = con.execute("SELECT spectrum_id, ionmode, precursor_mz, mz, intensities FROM spectra WHERE ms_level = 2 "
                      "AND source_format = 'mgf' AND precursor_mz IS NOT NULL AND num_peaks >= 5 LIMIT 1").fetchone()
    con.close()
    hits = after.search(new[3], new[4], new[2], new[1])
    assert new[0] in {h.spectrum_id for h in hits if h.score > 1 - 1e-6}


def test_segments_beyond_the_limit_are_merged(sample_spectra_lake, spark, tmp_path) -> None:
    from speclake.pipelines.ingest import IngestSettings, run_ingest

    lake = _lake_copy(sample_spectra_lake, tmp_path)
    settings = LibrarySettings(max_segments=1)
    LibraryIndex.open(lake, settings)
    run_ingest([str(SAMPLE / "gnps_pesticides.mgf")], lake, IngestSettings(), spark=spark)
    report = LibraryIndex.update(lake, settings)
    merged = LibraryIndex.load(lake)
    assert report.segments_merged >= 2 and all(n == 1 for n in merged.segment_counts().values())
    on_disk = sorted(p.name for p in (lake / "_library").glob("seg-*"))
    assert on_disk == sorted(s["name"] for e in merged.manifest["ionmodes"].values() for s in e["segments"]), \
        "merged-away segments are removed"
    # the merged index equals a fresh build
    fresh = tmp_path / "fresh"
    shutil.copytree(lake, fresh, ignore=shutil.ignore_patterns("_library"))
    rebuilt = LibraryIndex.open(fresh, settings)
    assert rebuilt.n_spectra == merged.n_spectra
    for mode in merged.segments:
        a, b = merged.segments[mode][0], rebuilt.segments[mode][0]
        assert sorted(map(str, a.ids)) == sorted(map(str, b.ids))
        np.testing.assert_array_equal(np.sort(a.ion_mz), np.sort(b.ion_mz))


def test_changed_settings_rebuild_the_index(built, tmp_path) -> None:
    lake = _lake_copy(built[0], tmp_path)
    LibraryIndex.update(lake)
    report = LibraryIndex.update(lake, LibrarySettings(noise_threshold=0.05))
    assert report.rebuilt == "settings changed"
    assert LibraryIndex.load(lake).settings.noise_threshold == 0.05


def test_a_crash_before_the_manifest_keeps_the_previous_index(sample_spectra_lake, spark, tmp_path, monkeypatch) -> None:
    from speclake.pipelines.ingest import IngestSettings, run_ingest

    lake = _lake_copy(sample_spectra_lake, tmp_path)
    old = LibraryIndex.open(lake)
    run_ingest([str(SAMPLE / "gnps_pesticides.mgf")], lake, IngestSettings(), spark=spark)

    def crash(root, manifest):
        raise OSError("disk full")

    monkeypatch.setattr(index_module, "_write_manifest", crash)
    with pytest.raises(OSError, match="disk full"):
        LibraryIndex.update(lake)
    monkeypatch.undo()
    still = LibraryIndex.load(lake)
    assert still.spectra_version == old.spectra_version and still.n_spectra == old.n_spectra
    assert len(list((lake / "_library").glob("seg-*"))) > sum(still.segment_counts().values()), "orphans left"
    LibraryIndex.update(lake)
    after = LibraryIndex.load(lake)
    assert after.spectra_version == 2
    assert sorted(p.name for p in (lake / "_library").glob("seg-*")) == \
        sorted(s["name"] for e in after.manifest["ionmodes"].values() for s in e["segments"]), "orphans removed"


def test_load_without_an_index_says_how_to_build_one(sample_spectra_lake, tmp_path) -> None:
    lake = _lake_copy(sample_spectra_lake, tmp_path)
    with pytest.raises(LakeError, match="no library index yet"):
        LibraryIndex.load(lake)
