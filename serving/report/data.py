"""What the study report shows, read from the lake: summary counts, rank-1 rows, errors, and per
annotation the query peaks (the study file re-read; ``annotations`` keeps no peaks), the library
spectrum's peaks and the fragmentation tree of the rank-1 formula and adduct; and, when ``speclake
denovo`` ran on the study, its proposal lists and its scans without proposals by reason.

Everything comes from the annotation tables (:mod:`speclake.serving.annotate.tables`), the de novo
tables (:mod:`speclake.training.denovo.tables`) and the lake's ``spectra`` through
:func:`speclake.lake.sql.connect`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, fields
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from speclake.serving.annotate.job import file_sha256

log = logging.getLogger(__name__)

#: Confidence thresholds of the summary (as ``speclake rankers`` reports precision).
CONFIDENCE_LEVELS = (0.5, 0.8, 0.9)

#: Columns of the rank-1 table, in order: (column of ``annotations_top1``, header, kind).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("query_id", "Query id", "text"),
    ("source_file", "File", "file"),
    ("scan_number", "Scan", "int"),
    ("precursor_mz", "Precursor m/z", "mz"),
    ("retention_time", "RT (s)", "num1"),
    ("status", "Status", "text"),
    ("compound_name", "Name", "text"),
    ("formula", "Formula", "text"),
    ("adduct", "Adduct", "text"),
    ("inchikey", "InChIKey", "text"),
    ("confidence", "Confidence", "num3"),
    ("score", "Score", "num3"),
    ("method", "Method", "text"),
    ("mass_error_ppm", "ppm", "num1"),
    ("library_match", "Library match", "text"),
    ("library_compound_name", "Library compound", "text"),
    ("library_entropy", "Entropy sim.", "num3"),
    ("shared_peaks", "Shared peaks", "int"),
    ("n_candidates", "Candidates", "int"),
)


class ReportSettings(BaseModel):
    """How much the report shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    details: int | None = Field(200, ge=0, description="rank-1 annotations with mirror plot, structure and tree "
                                                       "(most confident first); None: every one")
    tolerance_da: float = Field(0.02, gt=0, description="fragment m/z tolerance of matched peaks (library search's)")
    max_errors: int = Field(500, ge=0, description="error rows listed (all are counted)")
    attributions: int = Field(20, ge=0, description="annotations (most confident first) given per-peak "
                                                     "attributions when their ranker used a descriptor model")
    attribution_seconds: float = Field(20.0, gt=0, description="no attribution is started after this many "
                                                               "seconds of attributions (big models are slow)")
    max_rows: int = Field(20_000, ge=1, description="rank-1 rows in the table, most confident first (all are "
                                                    "counted; `speclake export annotations` writes them all)")
    study_dirs: tuple[str, ...] = Field((), description="folders searched (by file name) for study files no longer "
                                                       "at the path annotate recorded")
    denovo_lists: int = Field(100, ge=0, description="de novo proposal lists shown (one per scan and denovo run, "
                                                     "by file and query id; all are counted)")
    denovo_top: int = Field(5, ge=1, description="proposals shown of each de novo list (best rank first)")


class StudyNotFound(ValueError):
    """The lake has no annotations, errors, files or de novo rows of the study."""


@dataclass
class Summary:
    """Counts of the summary section."""

    files: list[dict[str, Any]]
    n_scans: int
    n_annotated: int
    n_no_candidates: int
    n_errors: int
    confident: dict[float, int]
    n_with_confidence: int
    methods: list[dict[str, Any]]
    reasons: list[dict[str, Any]]


@dataclass
class Detail:
    """Everything drawn for one rank-1 annotation."""

    row: dict[str, Any]
    query_mz: list[float] | None = None
    query_intensities: list[float] | None = None
    query_note: str | None = None          # why the query peaks are missing
    library: dict[str, Any] | None = None  # spectra row: accession, name, adduct, precursor m/z, mz, intensities
    tree: Any = None                       # FragTree
    tree_note: str | None = None           # why there is no tree
    attribution: Any = None                # PeakAttribution of the candidate's model evidence
    attribution_note: str | None = None    # what the attribution is, or why there is none


@dataclass
class DenovoList:
    """The top proposals of one scan by one ``speclake denovo`` run: what the run was given, then the rows."""

    source_file: str
    query_id: str
    run_id: str
    model_id: str
    method: str
    precursor_mz: float | None
    near_smiles: str | None
    target_formula: str | None
    formula_source: str | None
    proposals: list[dict[str, Any]]        # denovo_candidates rows, rank order


@dataclass
class Denovo:
    """The study's de novo results: counts, the first proposal lists and the scans without proposals by reason."""

    n_lists: int                           # (scan, run) lists with proposals
    n_proposals: int
    n_errors: int
    reasons: list[dict[str, Any]]          # denovo_errors by stage and reason code: n and an example
    lists: list[DenovoList]


@dataclass
class StudyData:
    """All the report of one study shows."""

    study: str
    lake: str
    summary: Summary
    rows: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    details: list[Detail] = field(default_factory=list)
    denovo: Denovo | None = None           # None: no denovo run wrote a row of the study


def _dicts(con, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    return con.sql(sql, params=params).to_arrow_table().to_pylist()


def studies(con) -> list[str]:
    """Every study with a file, an annotation, an error row or a de novo row."""
    rows = con.sql("SELECT study FROM annotation_files UNION SELECT study FROM annotations "
                   "UNION SELECT study FROM annotation_errors UNION SELECT study FROM denovo_candidates "
                   "UNION SELECT study FROM denovo_errors ORDER BY 1").fetchall()
    return [r[0] for r in rows]


def read_summary(con, study: str) -> Summary:
    """The summary counts of ``study``."""
    files = _dicts(con, """SELECT source_file, n_scans, n_annotated, n_no_candidates, n_errors, finished_at,
                                  file_sha256 FROM annotation_files WHERE study = ? ORDER BY source_file""", [study])
    outcome = dict(con.sql("SELECT outcome, count(*) FROM annotation_outcomes WHERE study = ? GROUP BY 1",
                           params=[study]).fetchall())
    levels = ", ".join(f"count(*) FILTER (WHERE confidence >= {t})" for t in CONFIDENCE_LEVELS)
    counts = con.sql(f"SELECT {levels}, count(confidence) FROM annotations WHERE study = ? AND rank = 1",
                     params=[study]).fetchall()[0]
    methods = _dicts(con, """SELECT coalesce(method, '(none)') AS method, count(*) FILTER (WHERE rank = 1) AS rank1,
                                    count(*) FILTER (WHERE status = 'no_candidates') AS no_candidates,
                                    count(*) AS rows
                             FROM annotations WHERE study = ? GROUP BY 1 ORDER BY rows DESC, 1""", [study])
    reasons = _dicts(con, """SELECT stage, reason_code, count(*) AS n, min(reason) AS example
                             FROM annotation_errors WHERE study = ? GROUP BY 1, 2 ORDER BY n DESC, 1, 2""", [study])
    n_files_scans = sum(int(f["n_scans"]) for f in files)
    n_seen = sum(outcome.values())
    return Summary(files=files, n_scans=max(n_files_scans, n_seen), n_annotated=int(outcome.get("annotated", 0)),
                   n_no_candidates=int(outcome.get("no_candidates", 0)), n_errors=int(outcome.get("error", 0)),
                   confident={t: int(c) for t, c in zip(CONFIDENCE_LEVELS, counts)},
                   n_with_confidence=int(counts[-1]), methods=methods, reasons=reasons)


def read_rows(con, study: str, limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` rank-1 (and no_candidates) rows of ``study``, most confident first."""
    cols = ", ".join(dict.fromkeys([c for c, _, _ in TABLE_COLUMNS] + [
        "record_locator", "smiles", "library_spectrum_id", "library_accession", "library_usi", "library_cosine",
        "library_modified_cosine", "query_usi", "ionmode", "formula_rank"]))
    return _dicts(con, f"""SELECT {cols} FROM annotations_top1 WHERE study = ?
                           ORDER BY confidence DESC NULLS LAST, status, score DESC NULLS LAST, source_file,
                                    scan_number NULLS LAST, query_id LIMIT ?""", [study, limit])


def read_errors(con, study: str, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` error rows of ``study`` (file, scan, stage, reason)."""
    return _dicts(con, """SELECT source_file, query_id, record_locator, scan_number, stage, reason_code, reason
                          FROM annotation_errors WHERE study = ?
                          ORDER BY source_file, scan_number NULLS LAST, record_locator LIMIT ?""", [study, limit])


def read_denovo(con, study: str, n_lists: int, top: int) -> Denovo | None:
    """The first ``n_lists`` de novo proposal lists of ``study`` (by file, query id and run; ``top`` proposals
    each) and its denovo_errors by reason; None when no denovo run wrote a row of the study."""
    n, n_proposals = con.sql("""SELECT count(DISTINCT (source_file, query_id, run_id)), count(*)
                                FROM denovo_candidates WHERE study = ?""", params=[study]).fetchall()[0]
    reasons = _dicts(con, """SELECT stage, reason_code, count(*) AS n, min(reason) AS example
                             FROM denovo_errors WHERE study = ? GROUP BY 1, 2 ORDER BY n DESC, 1, 2""", [study])
    if n_proposals == 0 and not reasons:
        return None
    rows = _dicts(con, """WITH lists AS (SELECT DISTINCT source_file, query_id, run_id FROM denovo_candidates
                                         WHERE study = ? ORDER BY 1, 2, 3 LIMIT ?)
                          SELECT d.* FROM denovo_candidates d JOIN lists USING (source_file, query_id, run_id)
                          WHERE d.study = ? AND d.rank <= ?
                          ORDER BY d.source_file, d.query_id, d.run_id, d.rank""", [study, n_lists, study, top])
    facts = [f.name for f in fields(DenovoList) if f.name != "proposals"]  # the same on every row of a list
    groups = (list(g) for _, g in groupby(rows, key=itemgetter("source_file", "query_id", "run_id")))
    lists = [DenovoList(**{k: group[0][k] for k in facts}, proposals=group) for group in groups]
    return Denovo(n_lists=int(n), n_proposals=int(n_proposals), n_errors=sum(int(r["n"]) for r in reasons),
                  reasons=reasons, lists=lists)


def read_library(con, spectrum_ids: list[str]) -> dict[str, dict[str, Any]]:
    """spectrum_id -> its peaks and labels, for the library spectra of ``spectrum_ids``."""
    if not spectrum_ids:
        return {}
    rows = _dicts(con, """SELECT spectrum_id, accession, compound_name, adduct, precursor_mz, source, mz, intensities
                          FROM spectra WHERE spectrum_id IN (SELECT unnest(?))""", [sorted(set(spectrum_ids))])
    return {r["spectrum_id"]: r for r in rows}


def locate(source_file: str, study_dirs: tuple[str, ...] = ()) -> Path | None:
    """The study file at its recorded path, else a file of the same name in one of ``study_dirs``."""
    path = Path(source_file)
    if path.is_file():
        return path
    found = (Path(d) / path.name for d in study_dirs)
    return next((p for p in found if p.is_file()), None)


def read_query_peaks(source_file: str, expected_sha256: set[str], study: str, study_dirs: tuple[str, ...] = (),
                     ) -> tuple[dict[tuple[str, str], Any], str | None]:
    """(query_id, record_locator) -> Query of a study file re-read as annotate read it, or a note saying
    why its peaks are not available (file moved, or changed since it was annotated)."""
    from speclake.serving.annotate.queries import read_queries

    path = locate(source_file, study_dirs)
    if path is None:
        where = f" nor in {', '.join(study_dirs)}" if study_dirs else ""
        return {}, f"query peaks not shown: the study file {source_file} is not found from here{where}"
    if expected_sha256 and file_sha256(path) not in expected_sha256:
        return {}, f"query peaks not shown: {path} differs from the file annotated (sha256)"
    read = read_queries(path, study=study, source_file=source_file)
    return {(q.query_id, q.record_locator): q for q in read.queries}, None


def fragmentation_tree(query, formula: str | None, adduct: str | None) -> tuple[Any, str | None]:
    """The tree of the query's peaks for (formula, adduct), as annotate's formula ranking computes it,
    or (None, why not)."""
    from speclake.pipelines.features.fragtree import Skipped, compute_tree

    if not formula or not adduct:
        return None, "no fragmentation tree: the annotation has no formula and adduct"
    tree = compute_tree(formula, adduct, query.mz, query.intensities, precursor_mz=float(query.precursor_mz))
    if isinstance(tree, Skipped):
        return None, f"no fragmentation tree for {formula} {adduct}: {tree.reason} ({tree.reason_code})"
    return tree, None


def attribute(lake: str | os.PathLike[str], row: dict[str, Any], query, attributors: dict[str | None, Any],
              ) -> tuple[Any, str]:
    """Per-peak attributions of the row's candidate by the models of its ranker (None and why when none)."""
    from speclake.serving.report.attribution import Attributor

    method = row.get("method")
    if method not in attributors:
        attributors[method] = Attributor(lake, method)
    try:
        return attributors[method].explain(query.mz, query.intensities, row.get("smiles"))
    except (ValueError, RuntimeError) as exc:  # a model that cannot explain this input: said, not fatal
        return None, f"none: attribution failed ({exc})"


def read_details(con, lake: str | os.PathLike[str], study: str, rows: list[dict[str, Any]], files: list[dict[str, Any]],
                 study_dirs: tuple[str, ...] = (), n_attributions: int = 20, attribution_seconds: float = 20.0,
                 ) -> list[Detail]:
    """Peaks, library spectrum and tree of each of ``rows``."""
    library = read_library(con, [r["library_spectrum_id"] for r in rows if r.get("library_spectrum_id")])
    shas: dict[str, set[str]] = {}
    for f in files:
        shas.setdefault(f["source_file"], set()).add(f["file_sha256"])
    queries: dict[str, tuple[dict, str | None]] = {}
    attributors: dict[str | None, Any] = {}
    spent = 0.0  # seconds of attributions so far
    details = []
    for row in rows:
        detail = Detail(row=row, library=library.get(row.get("library_spectrum_id") or ""))
        name = row["source_file"]
        if name not in queries:
            try:
                queries[name] = read_query_peaks(name, shas.get(name, set()), study, study_dirs)
            except (OSError, ValueError) as exc:  # a file unreadable now: the report still renders
                queries[name] = ({}, f"query peaks not shown: {name} could not be re-read ({exc})")
        found, note = queries[name]
        query = found.get((row["query_id"], row.get("record_locator") or ""))
        if query is None:
            detail.query_note = note or f"query peaks not shown: scan {row['query_id']!r} not found in {name}"
            detail.tree_note = "no fragmentation tree: the query peaks are not available"
        else:
            detail.query_mz, detail.query_intensities = query.mz.tolist(), query.intensities.tolist()
            if row.get("status") == "annotated":
                detail.tree, detail.tree_note = fragmentation_tree(query, row.get("formula"), row.get("adduct"))
                if len(details) < n_attributions and spent < attribution_seconds:
                    start = time.monotonic()
                    detail.attribution, detail.attribution_note = attribute(lake, row, query, attributors)
                    spent += time.monotonic() - start
                elif len(details) < n_attributions:
                    detail.attribution_note = (f"not computed: the attributions of this report took their "
                                               f"{attribution_seconds:g} s")
                else:
                    detail.attribution_note = (f"not computed: attributions are given to the {n_attributions} most "
                                               "confident annotations (`speclake report --attributions N`)")
            else:
                detail.tree_note = "no fragmentation tree: no candidate structure"
        details.append(detail)
    return details


def read_study(lake: str | os.PathLike[str], study: str, settings: ReportSettings) -> StudyData:
    """Everything the report of ``study`` shows (StudyNotFound naming the lake's studies when it has none)."""
    from speclake.lake.sql import connect

    con = connect(lake)
    try:
        known = studies(con)
        if study not in known:
            raise StudyNotFound(f"no study {study!r} in {lake}; studies there: "
                                f"{', '.join(known) if known else 'none (run `speclake annotate` first)'}")
        summary = read_summary(con, study)
        rows = read_rows(con, study, settings.max_rows)
        errors = read_errors(con, study, settings.max_errors)
        n = len(rows) if settings.details is None else settings.details
        details = read_details(con, lake, study, rows[:n], summary.files, settings.study_dirs, settings.attributions,
                               settings.attribution_seconds)
        denovo = read_denovo(con, study, settings.denovo_lists, settings.denovo_top)
    finally:
        con.close()
    log.info("report of %s: %d rank-1 rows, %d detailed, %d errors, %d de novo lists", study, len(rows), len(details),
             summary.n_errors, denovo.n_lists if denovo else 0)
    return StudyData(study=study, lake=str(lake), summary=summary, rows=rows, errors=errors, details=details,
                     denovo=denovo)


__all__ = ["CONFIDENCE_LEVELS", "Denovo", "DenovoList", "Detail", "ReportSettings", "StudyData", "StudyNotFound",
           "Summary", "TABLE_COLUMNS", "fragmentation_tree", "read_denovo", "read_study"]
