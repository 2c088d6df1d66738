"""DuckDB over the lake: every table is a view over its current Parquet parts.

>>> con = connect("my-lake")
>>> con.sql("SELECT ionmode, count(*) FROM spectra GROUP BY 1").fetchall()
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import duckdb
import pyarrow as pa

from speclake.lake.catalog import Lake
from speclake.lake.schema import TABLES, VIEWS, TableSpec

log = logging.getLogger(__name__)

def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _file_list(files: list[str]) -> str:
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def _select_list(spec: TableSpec, con: duckdb.DuckDBPyConnection, present: set[str]) -> str:
    """Columns in schema order; hive partition columns cast back to their declared type.

    A declared column absent from every part (written before the column was added to the
    schema) reads as NULL of its declared type, so older parts stay queryable.
    """
    empty_types = con.sql(f"SELECT * FROM __empty_{spec.name}").types
    cols = []
    for i, f in enumerate(spec.schema):
        if f.name not in present:
            cols.append(f"CAST(NULL AS {empty_types[i]}) AS {_quote(f.name)}")
        elif f.name in spec.partition_by:
            cols.append(f"CAST({_quote(f.name)} AS {empty_types[i]}) AS {_quote(f.name)}")
        else:
            cols.append(_quote(f.name))
    return ", ".join(cols)


def view_sql(lake: Lake, name: str, con: duckdb.DuckDBPyConnection, version: int | None = None) -> str:
    """The SELECT that defines table ``name``'s view."""
    files = lake.files(name, version)
    spec = TABLES.get(name)
    if not files:
        return f"SELECT * FROM __empty_{name}"
    hive = bool(spec and spec.partition_by)
    source = f"read_parquet({_file_list(files)}, hive_partitioning={'true' if hive else 'false'}, union_by_name=true)"
    if spec is None:
        return f"SELECT * FROM {source}"
    present = {row[0] for row in con.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    return f"SELECT {_select_list(spec, con, present)} FROM {source}"


def connect(
    lake_dir: str | os.PathLike[str],
    *,
    database: str = ":memory:",
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open DuckDB with one view per lake table (current versions), plus empty views for tables not yet written."""
    lake = Lake(lake_dir)  # opening the lake declares every stage's tables
    con = duckdb.connect(database)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    names = set(TABLES) | set(lake.tables())
    for name in sorted(names):
        spec = TABLES.get(name)
        if spec is not None:
            con.register(f"__empty_{name}", pa.Table.from_batches([], schema=spec.schema))
        if spec is None and not lake.files(name):
            continue
        con.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS {view_sql(lake, name, con)}")
    for name, select in VIEWS.items():  # the stages' analyst views, over the table views
        try:
            con.execute(f"CREATE OR REPLACE VIEW {_quote(name)} AS {select}")
        except duckdb.Error as exc:
            log.warning("view %s not created: %s", name, exc)
    log.debug("opened DuckDB over %s with views %s", lake.root, sorted(names))
    return con


def query(lake_dir: str | os.PathLike[str], sql: str) -> pa.Table:
    """Run one SQL statement over the lake and return an Arrow table."""
    con = connect(lake_dir)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def export(result: duckdb.DuckDBPyRelation, out: str | os.PathLike[str]) -> Path:
    """Write a query result to CSV or Parquet, chosen by the file extension."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        result.write_csv(str(path))
    elif suffix in (".parquet", ".pq"):
        result.write_parquet(str(path))
    else:
        raise ValueError(f"cannot write {path.name}: use a .csv or .parquet file name")
    return path
