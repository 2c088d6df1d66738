"""Compare two lakes table by table: rows only in one of them, and which columns differ.

    python -m benchmarks.lake_diff LAKE_A LAKE_B [--ignore source_file]

For checking that a faster ingest writes the same lake: run-dependent columns
(``ingest_run_id``, ``quarantine_id``) are always ignored; ``--ignore`` adds more
(e.g. ``source_file`` when the two lakes read the input from different paths).
"""
from __future__ import annotations

import argparse
import logging
import sys

log = logging.getLogger("benchmarks.lake_diff")

KEYS = {"spectra": "spectrum_id", "compounds": "inchikey", "quarantine": "record_locator, reason_code"}


def diff_table(lake_a: str, lake_b: str, table: str, ignore: set[str]) -> tuple[int, int, int, int, list[tuple[str, int]]]:
    """(rows in a, rows in b, rows only in a, rows only in b, [(column, rows differing on the key)])."""
    import duckdb

    from speclake.lake.sql import connect

    con_a, con_b = connect(lake_a), connect(lake_b)
    cols = [r[0] for r in con_a.sql(f"DESCRIBE {table}").fetchall() if r[0] not in ignore]
    con = duckdb.connect()
    con.register("ta", con_a.sql(f"SELECT {', '.join(cols)} FROM {table}").arrow().read_all())
    con.register("tb", con_b.sql(f"SELECT {', '.join(cols)} FROM {table}").arrow().read_all())
    n_a, n_b = (con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("ta", "tb"))
    only_a = con.sql("SELECT count(*) FROM (SELECT * FROM ta EXCEPT SELECT * FROM tb)").fetchall()[0][0]
    only_b = con.sql("SELECT count(*) FROM (SELECT * FROM tb EXCEPT SELECT * FROM ta)").fetchall()[0][0]
    differing = []
    if only_a or only_b:
        for col in cols:
            n = con.sql(f"SELECT count(*) FROM ta JOIN tb USING ({KEYS[table]}) "
                        f"WHERE ta.{col} IS DISTINCT FROM tb.{col}").fetchall()[0][0]
            if n:
                differing.append((col, n))
    return n_a, n_b, only_a, only_b, differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake_a")
    parser.add_argument("lake_b")
    parser.add_argument("--ignore", action="append", default=[], help="a column to leave out (repeatable)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ignore = {"ingest_run_id", "quarantine_id", *args.ignore}
    lines = [f"{'table':<12}{'rows a':>10}{'rows b':>10}{'only a':>9}{'only b':>9}  columns differing"]
    same = True
    for table in KEYS:
        n_a, n_b, only_a, only_b, cols = diff_table(args.lake_a, args.lake_b, table, ignore)
        same = same and not (only_a or only_b)
        lines.append(f"{table:<12}{n_a:>10}{n_b:>10}{only_a:>9}{only_b:>9}  "
                     + (", ".join(f"{c} ({n})" for c, n in cols) or "-"))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
