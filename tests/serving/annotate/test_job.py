"""annotate_study end to end on real files: every scan accounted for, one commit per file, resume, Ray."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from speclake.lake.catalog import Lake
from speclake.lake.sql import connect
from speclake.serving.annotate.job import CRASH_AFTER_FILE, AnnotateSettings, annotate_study, finished_files
from speclake.serving.annotate.queries import read_queries
from tests.conftest import REPO, shared_path


def _sql(lake, sql, *params):
    con = connect(lake)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def _accounted(lake, study, path):
    """query ids of ``path`` in annotations, and in annotation_errors."""
    ann = {r[0] for r in _sql(lake, "SELECT query_id FROM annotations WHERE study=? AND source_file=?", study, str(path))}
    err = [r[0] for r in _sql(lake, "SELECT query_id FROM annotation_errors WHERE study=? AND source_file=?",
                              study, str(path))]
    return ann, err


def test_study_of_real_and_broken_files_accounts_for_every_scan(fresh_lake, pesticides_mgf, bad_mgf, truncated_mzml):
    mzml = shared_path("formats", "testdata.mzml")
    files = [pesticides_mgf, mzml, bad_mgf, truncated_mzml]
    report = annotate_study(files, fresh_lake, "s1", AnnotateSettings(top_k=3))
    assert report.files_annotated == 4 and report.files_skipped == 0
    assert report.n_scans == 76 + 10 + 5 + 9, "every MS2 scan of the four files"
    assert report.n_annotated + report.n_no_candidates + report.n_errors == report.n_scans, "nothing vanishes"
    assert report.n_errors == 4 + 1, "four bad MGF scans and the broken mzML spectrum"
    assert len(Lake(fresh_lake).versions("annotation_files")) == 4, "one commit per file"
    for path in files:
        qf = read_queries(path)
        ann, err = _accounted(fresh_lake, "s1", path)
        assert ann | set(err) == {q.query_id for q in qf.queries} | {e["query_id"] for e in qf.errors}, \
            f"every scan of {path.name} is in annotations or annotation_errors"
        assert not ann & set(err), f"no scan of {path.name} is in both"
    ann, err = _accounted(fresh_lake, "s1", bad_mgf)
    assert ann == {"good scan 1"}, "the rest of the bad file is still annotated"
    codes = dict(_sql(fresh_lake, "SELECT query_id, reason_code FROM annotation_errors WHERE source_file=?", str(bad_mgf)))
    assert codes["empty scan"] == "no_peaks" and codes["nan scan"] == "peak_parse_error"
    assert codes["no polarity"] == "unknown_ionmode"
    ann, err = _accounted(fresh_lake, "s1", truncated_mzml)
    assert len(ann) == 8 and len(err) == 1, "the malformed mzML: 8 scans annotated, the broken one an error"
    mz_ids = {r[0] for r in _sql(fresh_lake, "SELECT DISTINCT query_id FROM annotations WHERE source_file=?", str(mzml))}
    assert "controllerType=0 controllerNumber=1 scan=2" in mz_ids, "mzML native ids kept verbatim"
    rows = _sql(fresh_lake, "SELECT count(*), count(DISTINCT (source_file, query_id)), max(rank) FROM annotations WHERE study='s1'")
    assert rows[0][0] >= rows[0][1] == 76 + 10 + 1 + 8 and (rows[0][2] is None or rows[0][2] <= 3)
    assert report.method == "library+prior" and any("ranker" in m for m in report.missing), \
        "no fitted ranker: says so and uses library+prior"
    # the same files again: every one is skipped by content, nothing is added
    again = annotate_study(files, fresh_lake, "s1", AnnotateSettings(top_k=3))
    assert again.files_skipped == 4 and again.files_annotated == 0 and again.n_scans == 0
    assert len(Lake(fresh_lake).versions("annotation_files")) == 4


def test_suspect_structures_give_ranked_candidates(suspect_lake):
    lake, report = suspect_lake
    assert report.files_annotated == 1 and report.n_scans == 76
    assert report.n_annotated > 40, "with the pesticides' structures indexed most scans get candidates"
    top = _sql(lake, "SELECT count(*), count(DISTINCT query_id), min(rank), max(rank), count(score), "
                     "count(adduct), count(mass_error_ppm) FROM annotations WHERE study='pest' AND status='annotated'")[0]
    assert top[1] == report.n_annotated and top[2] == 1 and top[3] <= 5
    assert top[0] == top[4] == top[5] == top[6], "every rank row has a score, an adduct and a mass error"
    errs = _sql(lake, "SELECT max(abs(mass_error_ppm)) FROM annotations WHERE study='pest'")[0][0]
    assert errs <= 10.0 + 1e-6, "candidates within --ppm"


def test_missing_structure_index_is_reported_and_library_hits_are_used(sample_spectra_lake, tmp_path, pesticides_mgf):
    lake = tmp_path / "lake"
    shutil.copytree(sample_spectra_lake, lake, ignore=shutil.ignore_patterns("_staging", "index"))
    report = annotate_study([pesticides_mgf], lake, "nolib", AnnotateSettings())
    assert any("no structure index" in m and "speclake index build" in m for m in report.missing)
    assert report.n_annotated + report.n_no_candidates == 76, "annotated anyway"


def test_killed_run_resumes_without_redoing_finished_files(fresh_lake, pesticides_mgf, bad_mgf):
    cmd = [sys.executable, "-m", "speclake.cli", "annotate", str(pesticides_mgf), str(bad_mgf),
           "--lake", str(fresh_lake), "--study", "k"]
    env = {**os.environ, "SPECLAKE_CRASH_AT": CRASH_AFTER_FILE}
    killed = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 86, f"killed at the crash point after the first commit: {killed.stderr[-500:]}"
    done = finished_files(Lake(fresh_lake), "k")
    assert list(done.values()) == [str(pesticides_mgf)], "the first file is committed, the second is not"
    first_run = _sql(fresh_lake, "SELECT DISTINCT annotation_run_id FROM annotations WHERE study='k'")
    report = annotate_study([pesticides_mgf, bad_mgf], fresh_lake, "k", AnnotateSettings())
    assert report.files_skipped == 1 and report.files_annotated == 1 and report.n_scans == 5
    per_file = dict(_sql(fresh_lake, "SELECT source_file, count(DISTINCT annotation_run_id) FROM annotations "
                                     "WHERE study='k' GROUP BY 1"))
    assert per_file[str(pesticides_mgf)] == 1, "the finished file was not redone"
    assert _sql(fresh_lake, "SELECT DISTINCT annotation_run_id FROM annotations WHERE study='k' AND source_file=?",
                str(pesticides_mgf)) == first_run
    dup = _sql(fresh_lake, "SELECT count(*) FROM (SELECT query_id, rank FROM annotations WHERE study='k' "
                           "GROUP BY ALL HAVING count(*) > 1)")[0][0]
    assert dup == 0, "no row twice"


@pytest.mark.ray
def test_ray_data_path_gives_the_rows_of_the_in_process_path(fresh_lake, pesticides_mgf):
    local = annotate_study([pesticides_mgf], fresh_lake, "local", AnnotateSettings(top_k=3))
    ray_run = annotate_study([pesticides_mgf], fresh_lake, "ray",
                             AnnotateSettings(top_k=3, ray_min_scans=0, batch_size=32, num_cpus=2))
    assert [f["engine"] for f in ray_run.files] == ["ray"] and [f["engine"] for f in local.files] == ["local"]
    cols = "query_id, rank, status, inchikey, adduct, round(score, 9), library_spectrum_id"
    a = _sql(fresh_lake, f"SELECT {cols} FROM annotations WHERE study='local' ORDER BY ALL")
    b = _sql(fresh_lake, f"SELECT {cols} FROM annotations WHERE study='ray' ORDER BY ALL")
    assert a == b and len(a) >= 76


# -- the row step, without a lake ----------------------------------------------------------------------
def _query(qid="q1"):
    import numpy as np

    from speclake.serving.annotate.model import Query

    return Query(query_id=qid, source_file="s.mgf", record_locator="record 1", precursor_mz=180.0634,
                 ionmode="positive", mz=np.array([50.0, 90.0]), intensities=np.array([0.5, 1.0]), scan_number=4)


def _cand(key, adduct="[M+H]+"):
    from speclake.serving.annotate.model import Candidate

    return Candidate(inchikey=key + "-UHFFFAOYSA-N", inchikey14=key, smiles="CCO", formula="C6H12O6",
                     monoisotopic_mass=180.0634, adduct=adduct, mass_error_ppm=1.5, formula_rank=1)


def _hit(sid, score, shared=3):
    from speclake.serving.library.search import Hit

    return Hit(query=0, rank=1, spectrum_id=sid, ionmode="positive", score=score, entropy=score, cosine=0.7,
               modified_cosine=0.8, shared_peaks=shared, matched_losses=0, library_precursor_mz=181.07,
               precursor_mz_difference=0.0)


def test_ranked_rows_keep_top_k_confidence_on_rank_1_and_library_match():
    from speclake.serving.annotate.model import Ranked
    from speclake.serving.annotate.steps import best_library_hits, ranked_rows

    keys = ["AAAAAAAAAAAAAA", "BBBBBBBBBBBBBB", "CCCCCCCCCCCCCC"]
    info = {"s1": {"inchikey14": keys[1], "library_compound_name": "glucose"}, "s2": {"inchikey14": keys[1]}}
    lib = best_library_hits([_hit("s1", 0.6)], [_hit("s2", 0.9), _hit("s3", 0.95)], info)
    assert lib[keys[1]][0].spectrum_id == "s1" and lib[keys[1]][1] == "identity", "identity hits first"
    ranked = Ranked(_query(), [_cand(k) for k in keys], [3.0, 2.0, 1.0], "m", 0.83)
    rows = ranked_rows(ranked, lib, top_k=2)
    assert [r["rank"] for r in rows] == [1, 2] and all(r["n_candidates"] == 3 for r in rows)
    assert [r["confidence"] for r in rows] == [0.83, None], "confidence is about rank 1"
    assert rows[1]["library_spectrum_id"] == "s1" and rows[1]["library_match"] == "identity"
    assert rows[1]["library_compound_name"] == "glucose" and rows[0]["library_spectrum_id"] is None
    assert rows[0]["query_id"] == "q1" and rows[0]["status"] == "annotated" and rows[0]["scan_number"] == 4


def test_no_candidates_row_keeps_the_best_library_hit():
    from speclake.serving.annotate.model import Ranked
    from speclake.serving.annotate.steps import _best_hit, ranked_rows

    best = _best_hit([], [_hit("s9", 0.4, shared=5)], {"s9": {"library_compound_name": "x"}})
    rows = ranked_rows(Ranked(_query(), [], [], "m", None), {}, 20, best)
    assert len(rows) == 1 and rows[0]["status"] == "no_candidates" and rows[0]["rank"] is None
    assert rows[0]["library_spectrum_id"] == "s9" and rows[0]["library_match"] == "analogue"
    assert rows[0]["shared_peaks"] == 5


def test_lock_names_are_file_safe():
    from speclake.serving.annotate.job import lock_name

    assert lock_name("beer_2026") == "annotate-beer_2026"
    name = lock_name("a/b c")
    assert "/" not in name and " " not in name and name != lock_name("a_b_c")


def test_fitted_ranker_gives_rank_1_confidence(suspect_lake, tmp_path, pesticides_mgf):
    """A ranker fitted with the default settings (the fragmenter re-ranking its top 50) is the study's method;
    every rank-1 row, and only those, has a confidence in [0, 1]."""
    from speclake.serving.annotate.fragmenter import FRAGMENTER_FEATURES
    from speclake.serving.annotate.ranker_fit import fit_ranker
    from speclake.serving.annotate.rankers import RankerSettings, list_rankers, load_ranker

    src, _ = suspect_lake
    lake = tmp_path / "lake"
    shutil.copytree(src, lake, ignore=shutil.ignore_patterns("_staging"))
    fit_ranker(lake, RankerSettings(max_formulas=2))
    ranker_id = list_rankers(lake)[0]["ranker_id"]
    ranker = load_ranker(lake, ranker_id)
    assert ranker.rerank is not None and ranker.rerank.top == 50, "the default ranker re-ranks with the fragmenter"
    assert ranker.names[-len(FRAGMENTER_FEATURES):] == FRAGMENTER_FEATURES
    report = annotate_study([pesticides_mgf], lake, "fitted", AnnotateSettings(top_k=3))
    assert report.method == ranker_id and not any("ranker" in m for m in report.missing)
    by_rank = _sql(lake, "SELECT rank = 1, count(*), count(confidence), min(confidence), max(confidence), "
                         "count(DISTINCT method) FROM annotations WHERE study='fitted' AND status='annotated' "
                         "GROUP BY 1 ORDER BY 1 DESC")
    assert by_rank[0][0] and by_rank[0][1] == by_rank[0][2] == report.n_annotated, "every rank-1 row has a confidence"
    assert 0.0 <= by_rank[0][3] <= by_rank[0][4] <= 1.0 and by_rank[0][5] == 1
    assert all(r[2] == 0 for r in by_rank[1:]), "lower ranks carry none"
