"""Tests of speclake.lake.sql: DuckDB views over the lake."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from speclake.lake.catalog import Lake, PendingVersion, publish_part
from speclake.lake.sql import connect, export, query

from .test_catalog import _quarantine_rows


def test_empty_lake_has_typed_empty_views(tmp_path: Path) -> None:
    """Tables never written are still queryable, empty, with their declared columns."""
    Lake(tmp_path / "lake", create=True)
    con = connect(tmp_path / "lake")
    assert con.sql("SELECT count(*) FROM spectra").fetchall()[0][0] == 0, "an unwritten table reads as empty"
    cols = con.sql("SELECT * FROM spectra").columns
    assert cols[:3] == ["spectrum_id", "source", "source_file"], "empty view must carry the schema's columns"


def test_views_read_current_version_and_export(tmp_path: Path) -> None:
    """A written table is visible in SQL; results export to CSV and Parquet; bad suffix is refused."""
    lake = Lake(tmp_path / "lake", create=True)
    tmp = lake.staging("r1") / "q"
    tmp.mkdir()
    pq.write_table(_quarantine_rows(3, "r1"), tmp / "p.parquet")
    lake.commit({"quarantine": PendingVersion((publish_part(lake, "quarantine", "r1", tmp),), 3)}, run_id="r1")
    table = query(tmp_path / "lake", "SELECT reason_code, count(*) AS n FROM quarantine GROUP BY 1")
    assert table.to_pylist() == [{"reason_code": "no_peaks", "n": 3}], "the view must return the written rows"
    con = connect(tmp_path / "lake")
    out_csv = export(con.sql("SELECT * FROM quarantine"), tmp_path / "q.csv")
    assert out_csv.read_text().count("\n") == 4, "CSV has a header and 3 rows"
    out_pq = export(con.sql("SELECT * FROM quarantine"), tmp_path / "q.parquet")
    assert pq.read_table(out_pq).num_rows == 3, "Parquet export keeps 3 rows"
    with pytest.raises(ValueError, match=".csv or .parquet"):
        export(con.sql("SELECT 1"), tmp_path / "q.xlsx")


def test_parts_written_before_a_column_was_added_read_it_as_null(tmp_path: Path) -> None:
    """A part lacking a declared column (older schema) reads that column as typed NULL; other tables unaffected."""
    lake = Lake(tmp_path / "lake", create=True)
    tmp = lake.staging("r1") / "q"
    tmp.mkdir()
    pq.write_table(_quarantine_rows(2, "r1").drop_columns(["raw_excerpt"]), tmp / "p.parquet")
    lake.commit({"quarantine": PendingVersion((publish_part(lake, "quarantine", "r1", tmp),), 2)}, run_id="r1")
    con = connect(tmp_path / "lake")
    rows = con.sql("SELECT raw_excerpt, typeof(raw_excerpt) FROM quarantine").fetchall()
    assert rows == [(None, "VARCHAR")] * 2, "the missing column must read as NULL of its declared type"
    assert con.sql("SELECT count(*) FROM spectra").fetchall()[0][0] == 0, "other views still open"
