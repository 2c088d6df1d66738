"""Read-only SQL over the lake for analysts and the HTTP API: one SELECT at a time, nothing else.

>>> lake = ReadOnlyLake("my-lake")
>>> lake.query("SELECT ionmode, count(*) FROM spectra GROUP BY 1").rows
[['negative', 120], ['positive', 242]]
>>> lake.query("COPY spectra TO '/tmp/x.csv'")
SqlRefused: [statement_type] only read-only SELECT/WITH/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN statements run here; this is a COPY statement

Two layers, so one mistake in either does not open the lake:

1. the statement, checked with DuckDB's own parser before it runs (:func:`check_sql`): exactly one
   statement, of a read-only type; its syntax tree (``json_serialize_sql``) holds no file-reading
   table function (``read_csv``, ``read_parquet``, ``glob``, ``read_text`` ...: only ``range``,
   ``generate_series``, ``unnest`` and DuckDB's catalog functions) and no file path used as a table;
2. the connection, hardened after the lake's views exist (:func:`harden`): file access only under the
   lake folder (``allowed_directories``) and ``enable_external_access=false`` (no COPY, ATTACH, INSTALL,
   file readers elsewhere), extension autoload/autoinstall off, a memory limit, then
   ``lock_configuration=true`` so no statement can change a setting back.

Every query runs under a row limit (at most ``max_rows`` rows fetched, ``truncated`` says when there were
more), a result-size limit (``max_bytes`` of Arrow data, else refused) and a timeout: a timer thread
calls ``interrupt()`` on the connection, the query stops, and the connection stays usable.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.catalog import Lake

log = logging.getLogger(__name__)

#: Table functions a read-only query may call (none of them reads a file).
ALLOWED_TABLE_FUNCTIONS = frozenset({
    "range", "generate_series", "unnest", "repeat", "repeat_row",
    "duckdb_tables", "duckdb_views", "duckdb_columns", "duckdb_schemas", "duckdb_types", "duckdb_functions",
    "duckdb_keywords", "duckdb_constraints", "duckdb_indexes", "duckdb_databases",
    "pragma_table_info", "pragma_show", "information_schema_tables",
})
#: Scalar functions refused anywhere in a query (they read the environment or the server's files).
REFUSED_FUNCTIONS = frozenset({"getenv", "read_text", "read_blob", "glob", "query", "query_table"})
#: Statement types that only read (DESCRIBE, SHOW and SUMMARIZE parse as SELECT).
READ_ONLY_TYPES = (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN)
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(ANALYZE\s+)?", re.IGNORECASE)
_PATHLIKE = re.compile(r"[/\\:]|\.(csv|tsv|txt|parquet|pq|json|jsonl|ndjson|gz|zst|db|duckdb|sqlite|xlsx)$",
                       re.IGNORECASE)


class SqlRefused(ValueError):
    """A statement the read-only guard does not run, or a query stopped by one of its limits.

    ``code``: ``empty``, ``multiple_statements``, ``statement_type``, ``table_function``, ``function``,
    ``file_path``, ``unchecked``, ``timeout`` or ``result_too_large``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message


class SqlError(ValueError):
    """A read-only statement DuckDB could not run (syntax error, unknown column ...)."""


class SqlGuardSettings(BaseModel):
    """Limits of read-only queries (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")

    max_rows: int = Field(10_000, ge=1, description="rows returned at most; more are cut and `truncated` set")
    max_bytes: int = Field(64 * 2**20, ge=1024, description="Arrow bytes of a result at most; larger is refused")
    timeout_s: float = Field(10.0, gt=0, description="seconds a query may run before it is interrupted")
    memory_limit: str = Field("1GB", description="DuckDB memory_limit of each connection")
    threads: int = Field(1, ge=1, description="DuckDB threads of each connection")
    connections: int = Field(4, ge=1, description="connections in the pool (queries at the same time)")


@dataclass
class SqlResult:
    """A query's answer: column names and types, rows (JSON-ready values), whether rows were cut."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool
    seconds: float
    max_rows: int
    table: pa.Table | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows, "row_count": len(self.rows),
                "truncated": self.truncated, "max_rows": self.max_rows, "seconds": round(self.seconds, 4)}


# -- layer 1: the statement ---------------------------------------------------------------------
def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict of a serialized syntax tree, depth first."""
    stack = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, dict):
            yield cur
            stack.extend(cur.values())
        elif isinstance(cur, list):
            stack.extend(cur)


def refused_in_tree(tree: dict[str, Any]) -> SqlRefused | None:
    """The first thing in a ``json_serialize_sql`` tree a read-only query may not use, else None."""
    for node in _walk(tree):
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = str((node.get("function") or {}).get("function_name", "")).lower()
            if name not in ALLOWED_TABLE_FUNCTIONS:
                return SqlRefused("table_function", f"table function {name}() is not allowed (it may read files or run "
                                                    "other SQL): query the lake's tables and views instead")
        elif node.get("class") == "FUNCTION":
            name = str(node.get("function_name", "")).lower()
            if name in REFUSED_FUNCTIONS:
                return SqlRefused("function", f"function {name}() is not allowed in read-only SQL")
        elif kind == "BASE_TABLE":
            name = str(node.get("table_name", ""))
            if _PATHLIKE.search(name):
                return SqlRefused("file_path", f"{name!r} looks like a file path: only the lake's tables and "
                                               "views can be queried")
    return None


def check_sql(sql: str, parser: duckdb.DuckDBPyConnection) -> str:
    """The one read-only statement of ``sql`` (without a trailing semicolon), or :class:`SqlRefused`.

    ``parser``: any DuckDB connection (used for ``json_serialize_sql`` only; nothing is run).
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlError(f"SQL syntax error: {exc}") from exc
    if not statements:
        raise SqlRefused("empty", "no SQL statement given")
    if len(statements) > 1:
        raise SqlRefused("multiple_statements", f"one statement at a time ({len(statements)} given)")
    stmt = statements[0]
    text = stmt.query.strip().rstrip(";").strip()
    if stmt.type not in READ_ONLY_TYPES:
        kind = str(stmt.type).split(".")[-1]
        raise SqlRefused("statement_type", "only read-only SELECT/WITH/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN statements "
                                           f"run here; this statement is {kind}")
    inner = text
    if stmt.type == duckdb.StatementType.EXPLAIN:
        inner = _EXPLAIN.sub("", text, count=1)
        inner_stmts = duckdb.extract_statements(inner)
        if len(inner_stmts) != 1 or inner_stmts[0].type != duckdb.StatementType.SELECT:
            raise SqlRefused("statement_type", "EXPLAIN is allowed for SELECT statements only")
    tree = json.loads(parser.execute("SELECT json_serialize_sql(?)", [inner]).fetchone()[0])
    if tree.get("error"):
        raise SqlRefused("unchecked", f"the statement could not be checked: {tree.get('error_message')}")
    refused = refused_in_tree(tree)
    if refused is not None:
        raise refused
    return text


# -- layer 2: the connection --------------------------------------------------------------------
def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def harden(con: duckdb.DuckDBPyConnection, lake_root: Path, settings: SqlGuardSettings) -> None:
    """Lock ``con`` down (after the lake's views were created): see the module docstring."""
    root = str(lake_root.resolve()) + os.sep
    for stmt in (f"SET allowed_directories = [{_sql_str(root)}]",
                 "SET enable_external_access = false",
                 "SET autoinstall_known_extensions = false",
                 "SET autoload_known_extensions = false",
                 "SET allow_community_extensions = false",
                 f"SET memory_limit = {_sql_str(settings.memory_limit)}",
                 f"SET threads = {int(settings.threads)}",
                 "SET parquet_metadata_cache = true",  # the views re-read the same footers on every query
                 "SET lock_configuration = true"):
        con.execute(stmt)


def open_read_only(lake_dir: str | os.PathLike[str], settings: SqlGuardSettings) -> duckdb.DuckDBPyConnection:
    """A hardened DuckDB connection with one view per lake table and the stages' analyst views."""
    from speclake.lake.sql import connect

    con = connect(lake_dir)
    harden(con, Lake(lake_dir).root, settings)
    return con


# -- values as JSON --------------------------------------------------------------------------------
def json_value(value: Any) -> Any:
    """A query value as plain JSON (NaN/inf -> None, timestamps ISO 8601, bytes hex, maps as objects)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(x, tuple) and len(x) == 2 for x in value):  # an Arrow map as key/value pairs
            return {str(k): json_value(v) for k, v in value}
        return [json_value(v) for v in value]
    return str(value)


def table_rows(table: pa.Table) -> list[list[Any]]:
    """Rows of an Arrow table as lists of JSON-ready values."""
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [[json_value(col[r]) for col in columns] for r in range(table.num_rows)]


# -- the pool ----------------------------------------------------------------------------------------
class _Conn:
    """A hardened connection and the catalog state its views were made from."""

    def __init__(self, lake_dir: str, settings: SqlGuardSettings, state: tuple[int, int]) -> None:
        self.con = open_read_only(lake_dir, settings)
        self.state = state


class ReadOnlyLake:
    """A pool of hardened connections over one lake; :meth:`query` runs one guarded statement.

    A connection whose lake catalog changed since it was opened (a new annotation run committed) is
    reopened before it is used, so queries see the current table versions. Thread-safe.
    """

    def __init__(self, lake_dir: str | os.PathLike[str], settings: SqlGuardSettings | None = None) -> None:
        self.lake = Lake(lake_dir)
        self.settings = settings or SqlGuardSettings()
        self._parser = duckdb.connect(":memory:")
        self._parser_lock = threading.Lock()
        self._pool: queue.Queue[_Conn | None] = queue.Queue()
        for _ in range(self.settings.connections):
            self._pool.put(None)  # opened on first use

    def _state(self) -> tuple[int, int]:
        st = self.lake.catalog_path.stat()
        return st.st_mtime_ns, st.st_size

    def _acquire(self) -> _Conn:
        conn = self._pool.get()
        state = self._state()
        if conn is None or conn.state != state:
            if conn is not None:
                conn.con.close()
            try:
                conn = _Conn(str(self.lake.root), self.settings, state)
            except BaseException:
                self._pool.put(None)
                raise
        return conn

    def warm(self) -> None:
        """Open every pooled connection now (a server does it at start, so no request waits for the views)."""
        conns = [self._acquire() for _ in range(self.settings.connections)]
        for conn in conns:
            self._pool.put(conn)

    def check(self, sql: str) -> str:
        """The statement :meth:`query` would run, or :class:`SqlRefused` / :class:`SqlError`."""
        with self._parser_lock:
            return check_sql(sql, self._parser)

    def query(self, sql: str, params: list[Any] | None = None, *, max_rows: int | None = None) -> SqlResult:
        """Run one read-only statement under the row, size and time limits (see the module docstring).

        ``params``: values of ``?`` placeholders. ``max_rows``: a lower row limit for this query.
        """
        text = self.check(sql)
        limit = min(max_rows or self.settings.max_rows, self.settings.max_rows)
        conn = self._acquire()
        try:
            return self._run(conn.con, text, params, limit)
        finally:
            self._pool.put(conn)

    def _run(self, con: duckdb.DuckDBPyConnection, text: str, params: list[Any] | None, limit: int) -> SqlResult:
        timer = threading.Timer(self.settings.timeout_s, con.interrupt)
        t0 = time.perf_counter()
        timer.start()
        try:
            if _EXPLAIN.match(text):
                table = con.sql(text, params=params).to_arrow_table()
            else:
                rel = con.sql(text, params=params) if params else con.sql(text)
                table = rel.limit(limit + 1).to_arrow_table()
        except duckdb.InterruptException as exc:
            raise SqlRefused("timeout", f"the query ran past the limit of {self.settings.timeout_s:g} s and was "
                                        "interrupted; add filters or a LIMIT") from exc
        except duckdb.Error as exc:
            if time.perf_counter() - t0 >= self.settings.timeout_s and "interrupt" in str(exc).lower():
                raise SqlRefused("timeout", f"the query ran past {self.settings.timeout_s:g} s and was "
                                            "interrupted") from exc
            raise SqlError(f"{type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
        seconds = time.perf_counter() - t0
        truncated = table.num_rows > limit
        table = table.slice(0, limit) if truncated else table
        if table.nbytes > self.settings.max_bytes:
            raise SqlRefused("result_too_large", f"the result holds {table.nbytes / 2**20:.1f} MiB, over the limit of "
                                                 f"{self.settings.max_bytes / 2**20:.1f} MiB; select fewer columns "
                                                 "or rows")
        return SqlResult(columns=table.column_names, types=[str(t) for t in table.schema.types],
                         rows=table_rows(table), truncated=truncated, seconds=seconds, max_rows=limit, table=table)

    def close(self) -> None:
        while not self._pool.empty():
            conn = self._pool.get_nowait()
            if conn is not None:
                conn.con.close()
        self._parser.close()


def flat_table(table: pa.Table) -> pa.Table:
    """``table`` with list, map and struct columns as JSON text (CSV holds no nested values)."""
    for i, f in enumerate(table.schema):
        if pa.types.is_nested(f.type):
            text = [None if v is None else json.dumps(json_value(v)) for v in table.column(i).to_pylist()]
            table = table.set_column(i, pa.field(f.name, pa.string()), pa.array(text, pa.string()))
    return table


def export_table(table: pa.Table, out: str | os.PathLike[str]) -> Path:
    """Write a result to CSV or Parquet, chosen by the file extension."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        pacsv.write_csv(flat_table(table), str(path))
    elif suffix in (".parquet", ".pq"):
        pq.write_table(table, str(path))
    else:
        raise ValueError(f"cannot write {path.name}: use a .csv or .parquet file name")
    return path


def read_only_cli(lake_dir: str | os.PathLike[str], sql: str, *, out: str | None = None, max_rows: int = 40,
                  timeout_s: float = 30.0) -> str:
    """``speclake sql --read-only``: run ``sql`` through the guard; the printed table, or where it was
    written (``out``: up to the guard's default row limit). Refusals raise :class:`SqlRefused`."""
    from speclake.cli import format_table

    limits = SqlGuardSettings(timeout_s=timeout_s, connections=1)
    if not out:
        limits = limits.model_copy(update={"max_rows": max_rows})
    guard = ReadOnlyLake(lake_dir, limits)
    try:
        result = guard.query(sql)
    finally:
        guard.close()
    if out:
        path = export_table(result.table, out)
        cut = f", cut at the row limit of {result.max_rows}" if result.truncated else ""
        return f"wrote {path} ({len(result.rows)} rows{cut})"
    text = format_table(result.columns, [tuple(r) for r in result.rows], max_rows)
    return text + ("\n... (more rows; use --max-rows or --out)" if result.truncated else "")


__all__ = ["ALLOWED_TABLE_FUNCTIONS", "ReadOnlyLake", "SqlError", "SqlGuardSettings", "SqlRefused", "SqlResult",
           "check_sql", "export_table", "flat_table", "harden", "read_only_cli", "json_value", "open_read_only", "refused_in_tree", "table_rows"]
