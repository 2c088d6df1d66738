"""Assemble the study report page (first version: summary only; plots follow)."""
from __future__ import annotations

import html
import os
from pathlib import Path

DEFAULT_LIMIT = 200


class StudyNotFound(ValueError):
    """The lake has no annotations, errors or files of the study."""


def _studies(con) -> list[str]:
    rows = con.sql("SELECT study FROM annotation_files UNION SELECT study FROM annotations "
                   "UNION SELECT study FROM annotation_errors ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def render_study_report(lake: str | os.PathLike[str], study: str, *, limit: int | None = DEFAULT_LIMIT) -> str:
    """The complete, self-contained HTML report of ``study`` (StudyNotFound when the lake has none of it)."""
    from speclake.lake.sql import connect

    con = connect(lake)
    try:
        studies = _studies(con)
        if study not in studies:
            raise StudyNotFound(f"no study {study!r} in {lake}; studies there: "
                                f"{', '.join(studies) if studies else 'none (run `speclake annotate` first)'}")
        n_files, n_scans = con.sql("SELECT count(*), coalesce(sum(n_scans), 0) FROM annotation_files WHERE study = ?",
                                   params=[study]).fetchone()
    finally:
        con.close()
    title = html.escape(f"speclake report: {study}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
            f"<body><h1>{title}</h1><p>{n_files} files, {n_scans} scans</p></body></html>")


def write_study_report(lake: str | os.PathLike[str], study: str, out: str | os.PathLike[str], *,
                       limit: int | None = DEFAULT_LIMIT) -> Path:
    """Write the report of ``study`` to ``out`` (parent folders made); returns the path."""
    path = Path(out)
    text = render_study_report(lake, study, limit=limit)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
