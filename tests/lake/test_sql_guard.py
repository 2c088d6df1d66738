"""Tests of speclake.lake.sql_guard: the read-only SQL guard (statement checks, hardened connection, limits)."""
from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from speclake.lake.catalog import Lake
from speclake.lake.run import Run
from speclake.lake.schema import COMPOUNDS
from speclake.lake.sql_guard import (ReadOnlyLake, SqlError, SqlGuardSettings, SqlRefused, check_sql, harden,
                                     json_value)


def compound_rows(n: int, start: int = 0) -> pa.Table:
    """``n`` compounds rows with made-up but well-formed keys."""
    rows = [{"inchikey": f"{chr(65 + i % 26) * 14}-UHFFFAOYSA-N"[:-1] + "N", "inchikey14": chr(65 + i % 26) * 14,
             "smiles": "C" * (i + 1), "inchi": None, "formula": f"C{i + 1}H{2 * i + 4}", "monoisotopic_mass": 16.0 + 14 * i,
             "compound_name": f"alkane {i}", "chemont_id": None, "chemont_classes": None, "n_spectra": i,
             "sources": ["test"], "licenses": None} for i in range(start, start + n)]
    return pa.Table.from_pylist(rows, schema=COMPOUNDS)


def write_compounds(root: Path, table: pa.Table) -> None:
    lake = Lake(root, create=True)
    with Run(lake, "test") as run:
        run.write_part("compounds", table)
        run.commit()


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory) -> Path:
    """A lake holding 20 compounds (no Spark: one Arrow part)."""
    root = tmp_path_factory.mktemp("guard") / "lake"
    write_compounds(root, compound_rows(20))
    return root


@pytest.fixture(scope="module")
def guard(lake_dir):
    g = ReadOnlyLake(lake_dir, SqlGuardSettings(max_rows=50, timeout_s=1.0, connections=1))
    yield g
    g.close()


@pytest.fixture(scope="module")
def parser():
    con = duckdb.connect()
    yield con
    con.close()


# -- layer 1: the statement -----------------------------------------------------------------------------
@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM compounds",
    "WITH heavy AS (SELECT * FROM compounds WHERE monoisotopic_mass > 100) SELECT count(*) FROM heavy",
    "FROM compounds SELECT inchikey LIMIT 1",
    "DESCRIBE compounds", "SHOW TABLES", "SUMMARIZE compounds",
    "EXPLAIN SELECT * FROM compounds", "EXPLAIN ANALYZE SELECT * FROM compounds",
    "SELECT * FROM range(3)", "SELECT unnest([1, 2])", "SELECT * FROM duckdb_views()",
    "SELECT 1;",
])
def test_read_only_statements_pass_the_check(parser, sql):
    """SELECT/WITH/FROM-first/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN of a SELECT pass; a trailing ';' is dropped."""
    assert check_sql(sql, parser) == sql.rstrip(";")


REFUSED = [
    ("INSERT INTO compounds SELECT * FROM compounds", "statement_type"),
    ("UPDATE compounds SET n_spectra = 0", "statement_type"),
    ("DELETE FROM compounds", "statement_type"),
    ("CREATE TABLE t AS SELECT 1", "statement_type"),
    ("CREATE MACRO m(x) AS x", "statement_type"),
    ("DROP VIEW compounds", "statement_type"),
    ("ALTER VIEW compounds RENAME TO c2", "statement_type"),
    ("COPY compounds TO '/tmp/leak.csv'", "statement_type"),
    ("COPY compounds FROM '/etc/passwd'", "statement_type"),
    ("EXPORT DATABASE '/tmp/leak'", "statement_type"),
    ("ATTACH '/tmp/other.db' AS other", "statement_type"),
    ("DETACH other", "statement_type"),
    ("INSTALL httpfs", "statement_type"),
    ("LOAD httpfs", "statement_type"),
    ("SET enable_external_access = true", "statement_type"),
    ("RESET memory_limit", "statement_type"),
    ("SET VARIABLE x = 1", "statement_type"),
    ("PRAGMA enable_profiling", "statement_type"),
    ("CALL pragma_version()", "statement_type"),
    ("CHECKPOINT", "statement_type"),
    ("VACUUM", "statement_type"),
    ("EXPLAIN ANALYZE DELETE FROM compounds", "statement_type"),
    ("SELECT 1; SELECT 2", "multiple_statements"),
    ("SELECT 1; DROP VIEW compounds", "multiple_statements"),
    ("", "empty"),
    (" ; ", "empty"),
    ("SELECT * FROM read_csv('/etc/passwd')", "table_function"),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", "table_function"),
    ("SELECT * FROM read_parquet('/tmp/*.parquet')", "table_function"),
    ("SELECT * FROM parquet_scan('/tmp/x.parquet')", "table_function"),
    ("SELECT * FROM read_json_auto('/tmp/x.json')", "table_function"),
    ("SELECT * FROM read_text('/etc/hostname')", "table_function"),
    ("SELECT * FROM read_blob('/etc/hostname')", "table_function"),
    ("SELECT * FROM glob('/etc/*')", "table_function"),
    ("SELECT * FROM sniff_csv('/etc/passwd')", "table_function"),
    ("SELECT * FROM query('SELECT 1')", "table_function"),
    ("WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", "table_function"),
    ("SELECT * FROM compounds WHERE inchikey IN (SELECT column0 FROM read_csv('/etc/passwd'))", "table_function"),
    ("SELECT * FROM '/etc/passwd'", "file_path"),
    ("FROM 'data.csv'", "file_path"),
    ("SELECT getenv('HOME')", "function"),
]


@pytest.mark.parametrize("sql,code", REFUSED, ids=[f"{c}:{s[:40]}" for s, c in REFUSED])
def test_writes_files_settings_and_extensions_are_refused_with_a_reason(parser, sql, code):
    """Each statement class that writes, reads files, changes settings or loads code is refused with its code."""
    with pytest.raises(SqlRefused) as err:
        check_sql(sql, parser)
    assert err.value.code == code
    assert err.value.message


def test_a_syntax_error_is_an_sql_error_not_a_refusal(parser):
    """SQL DuckDB cannot parse is reported as SqlError with the parser's message."""
    with pytest.raises(SqlError, match="syntax error"):
        check_sql("SELEC 1", parser)


# -- layer 2: the connection ----------------------------------------------------------------------------
def test_the_hardened_connection_refuses_files_settings_and_extensions_by_itself(lake_dir):
    """Even without the statement check, the hardened connection reads the lake's views but no other file,
    writes no file, loads no extension and changes no setting."""
    from speclake.lake.sql import connect

    con = connect(lake_dir)
    harden(con, Lake(lake_dir).root, SqlGuardSettings())
    assert con.execute("SELECT count(*) FROM compounds").fetchone()[0] == 20
    for sql, exc in [("SELECT * FROM read_csv('/etc/passwd')", duckdb.PermissionException),
                     ("COPY (SELECT 1) TO '/tmp/speclake-guard-leak.csv'", duckdb.PermissionException),
                     ("ATTACH '/tmp/speclake-guard.db' AS other", duckdb.PermissionException),
                     ("LOAD httpfs", duckdb.PermissionException),
                     ("SET enable_external_access = true", duckdb.InvalidInputException),
                     ("SET lock_configuration = false", duckdb.InvalidInputException)]:
        with pytest.raises(exc):
            con.execute(sql)
    assert not Path("/tmp/speclake-guard-leak.csv").exists()
    assert con.execute("SELECT current_setting('enable_external_access')").fetchone()[0] is False
    con.close()


# -- queries and limits ---------------------------------------------------------------------------------
def test_a_query_returns_columns_types_and_json_ready_rows(guard):
    """Rows come back as lists in column order, with Arrow type names; parameters bind to '?'."""
    res = guard.query("SELECT inchikey14, n_spectra FROM compounds WHERE n_spectra < ? ORDER BY n_spectra", [3])
    assert res.columns == ["inchikey14", "n_spectra"]
    assert res.types == ["string", "int64"]
    assert res.rows == [["AAAAAAAAAAAAAA", 0], ["BBBBBBBBBBBBBB", 1], ["CCCCCCCCCCCCCC", 2]]
    assert res.truncated is False


def test_rows_past_the_limit_are_cut_and_flagged(guard):
    """A cross join far past the row limit returns exactly max_rows rows, flagged truncated, quickly."""
    t0 = time.perf_counter()
    res = guard.query("SELECT a.inchikey, b.inchikey, r.range FROM compounds a, compounds b, range(1000000) r")
    assert time.perf_counter() - t0 < 5
    assert len(res.rows) == 50 and res.truncated is True
    assert len(guard.query("SELECT * FROM compounds", max_rows=5).rows) == 5
    assert guard.query("SELECT * FROM compounds").truncated is False


def test_a_query_past_the_timeout_is_interrupted_and_the_connection_goes_on(guard):
    """A query longer than timeout_s is interrupted (SqlRefused 'timeout' soon after the limit); the same
    pooled connection answers the next query."""
    t0 = time.perf_counter()
    with pytest.raises(SqlRefused) as err:
        guard.query("SELECT count(*) FROM range(300000000) a, range(100000) b WHERE a.range * b.range = 7")
    assert err.value.code == "timeout"
    assert time.perf_counter() - t0 < 3.0
    assert guard.query("SELECT count(*) FROM compounds").rows == [[20]]


def test_a_result_over_the_size_limit_is_refused(lake_dir):
    """A result holding more Arrow bytes than max_bytes is refused, not returned."""
    small = ReadOnlyLake(lake_dir, SqlGuardSettings(max_bytes=2048, max_rows=100_000, connections=1))
    try:
        with pytest.raises(SqlRefused) as err:
            small.query("SELECT repeat('x', 1000) AS pad FROM range(100)")
        assert err.value.code == "result_too_large"
        assert small.query("SELECT 1").rows == [[1]]
    finally:
        small.close()


def test_a_new_commit_is_seen_by_the_next_query(tmp_path):
    """After another run commits a new version of a table (compounds: each version replaces the last), the pooled
    connection reopens and sees the new version."""
    root = tmp_path / "lake"
    write_compounds(root, compound_rows(3))
    g = ReadOnlyLake(root, SqlGuardSettings(connections=1))
    try:
        assert g.query("SELECT count(*) FROM compounds").rows == [[3]]
        write_compounds(root, compound_rows(4, start=3))
        assert g.query("SELECT count(*), min(n_spectra) FROM compounds").rows == [[4, 3]]
    finally:
        g.close()


def test_values_become_plain_json():
    """NaN and infinities become null, decimals floats, timestamps ISO 8601, bytes hex, maps objects."""
    when = datetime(2026, 12, 5, 12, 0, tzinfo=timezone.utc)
    assert json_value(math.nan) is None and json_value(math.inf) is None
    assert json_value(Decimal("1.25")) == 1.25
    assert json_value(when) == "2026-12-05T12:00:00+00:00"
    assert json_value(b"\x01\xff") == "01ff"
    assert json_value([("collision", "35"), ("mode", "HCD")]) == {"collision": "35", "mode": "HCD"}
    assert json_value([1.0, math.nan]) == [1.0, None]


# -- speclake sql --read-only ----------------------------------------------------------------------------
def test_cli_read_only_prints_results_and_refuses_in_one_line(lake_dir, tmp_path):
    """`speclake sql --read-only` prints a SELECT, writes --out, and refuses COPY with one error line (exit 1)."""
    from speclake.cli import main

    runner = CliRunner()
    ok = runner.invoke(main, ["sql", "--read-only", "--lake", str(lake_dir), "--max-rows", "2",
                              "SELECT inchikey14 FROM compounds ORDER BY 1"])
    assert ok.exit_code == 0, ok.output
    assert "AAAAAAAAAAAAAA" in ok.output and "more rows" in ok.output
    out = tmp_path / "c.csv"
    wrote = runner.invoke(main, ["sql", "--read-only", "--lake", str(lake_dir), "--out", str(out),
                                 "SELECT * FROM compounds"])
    assert wrote.exit_code == 0 and out.read_text().count("\n") == 21
    refused = runner.invoke(main, ["sql", "--read-only", "--lake", str(lake_dir),
                                   f"COPY compounds TO '{tmp_path / 'leak.csv'}'"])
    assert refused.exit_code == 1
    assert "statement_type" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "leak.csv").exists()
