"""The annotation tables: declared once, written through a Run, readable in SQL with the analyst views."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow as pa

from speclake.lake.catalog import Lake
from speclake.lake.run import Run
from speclake.lake.schema import all_tables
from speclake.lake.sql import connect
from speclake.serving.annotate.job import _table
from speclake.serving.annotate.tables import ANNOTATION_FILES, ANNOTATIONS


def test_tables_are_declared_through_the_entry_point():
    tables = all_tables()
    for name in ("annotations", "annotation_errors", "annotation_files"):
        assert name in tables, f"{name} declared (speclake.tables entry point)"
    cols = set(tables["annotations"].schema.names)
    for col in ("study", "query_id", "rank", "status", "inchikey14", "confidence", "library_spectrum_id",
                "library_match", "n_candidates", "annotation_run_id", "query_usi", "adduct_rank", "formula_rank"):
        assert col in cols, f"annotations has {col}"


def test_rows_round_trip_and_views_answer(tmp_path):
    lake = Lake(tmp_path / "lake", create=True)
    row = {"source_file": "a.mgf", "query_id": "q1", "record_locator": "record 1", "scan_number": 3,
           "precursor_mz": 200.1, "ionmode": "positive", "rank": 1, "status": "annotated", "inchikey": "X" * 27,
           "inchikey14": "X" * 14, "smiles": "CCO", "score": 0.9, "method": "library+prior", "confidence": 0.8,
           "n_candidates": 4}
    empty = {"source_file": "a.mgf", "query_id": "q2", "record_locator": "record 2", "status": "no_candidates",
             "n_candidates": 0}
    ledger = {"source_file": "a.mgf", "file_sha256": "ab" * 32, "n_scans": 2, "n_annotated": 1,
              "n_no_candidates": 1, "n_errors": 0, "finished_at": datetime.now(timezone.utc)}
    with Run(lake, "annotate", None, lock="annotate-s") as run:
        const = {"study": "s", "annotation_run_id": run.run_id}
        run.write_part("annotations", _table([row, empty], ANNOTATIONS, **const), suffix="-1")
        run.write_part("annotation_files", _table([ledger], ANNOTATION_FILES, **const), suffix="-1")
        run.commit()
    con = connect(lake.root)  # the analyst views come with every connection
    try:
        assert con.sql("SELECT count(*) FROM annotations WHERE study='s'").fetchall()[0][0] == 2
        top = con.sql("SELECT query_id, status, confidence FROM annotations_top1 ORDER BY query_id").fetchall()
        assert top == [("q1", "annotated", 0.8), ("q2", "no_candidates", None)]
        outcomes = con.sql("SELECT outcome, count(*) FROM annotation_outcomes GROUP BY 1 ORDER BY 1").fetchall()
        assert outcomes == [("annotated", 1), ("no_candidates", 1)]
    finally:
        con.close()


def test_table_helper_fills_missing_columns_with_nulls():
    t = _table([{"source_file": "f", "query_id": "q", "status": "no_candidates"}], ANNOTATIONS, study="s",
               annotation_run_id="r")
    assert t.schema == ANNOTATIONS and t.column("rank").to_pylist() == [None]
    assert isinstance(t, pa.Table)
