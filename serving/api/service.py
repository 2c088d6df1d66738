"""What the HTTP API does, without HTTP: annotate spectra, look up spectra, compounds and studies.

One :class:`LakeService` per server: it holds one :class:`~speclake.serving.annotate.steps.Annotator`
(opened once, used under a lock: its indexes are not shared between threads) and one
:class:`~speclake.lake.sql_guard.ReadOnlyLake` (a small pool of hardened DuckDB connections) that also
answers the lookups, with parameters, never with text pasted into SQL.

A spectrum given as JSON peaks is written as a one-record MGF and read back with
:func:`~speclake.serving.annotate.queries.read_queries`, so it is cleaned exactly as ``speclake annotate``
cleans a study file's scans (and as ingest cleaned the library); uploads go the same way.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.sql_guard import ReadOnlyLake, SqlGuardSettings, json_value
from speclake.serving.annotate.job import AnnotateSettings

log = logging.getLogger(__name__)

#: Record-file suffixes an upload may have (``.gz`` allowed on top); anything else is sniffed by content.
UPLOAD_SUFFIXES = (".mgf", ".mzml", ".mzxml", ".msp", ".txt", ".mb", ".json")
_INCHIKEY = re.compile(r"^[A-Z]{14}(-[A-Z]{10}-[A-Z])?$")
_QUERY_COLUMNS = ("source_file", "query_id", "record_locator", "scan_number", "query_usi", "precursor_mz",
                  "retention_time", "ionmode")


class ApiSettings(BaseModel):
    """Settings of the HTTP API (unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")

    api_key: str | None = Field(None, description="required in X-API-Key on every route but /health; None: open")
    max_upload_bytes: int = Field(5 * 2**20, ge=1024, description="largest request body (uploads, JSON)")
    max_scans: int = Field(100, ge=1, description="scans of one uploaded file annotated at most")
    max_peaks: int = Field(10_000, ge=1, description="peaks of one JSON spectrum at most")
    max_top_k: int = Field(100, ge=1, description="largest top_k a request may ask for")
    max_page: int = Field(1000, ge=1, description="largest page of /studies/{name}/annotations")
    annotate: AnnotateSettings = Field(default_factory=AnnotateSettings)
    sql: SqlGuardSettings = Field(default_factory=SqlGuardSettings)


class NotFound(LookupError):
    """An unknown spectrum, compound or study (HTTP 404)."""


class BadInput(ValueError):
    """Input the server understood but cannot use (HTTP 422); ``code`` names the problem."""

    def __init__(self, code: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = details or []


class UnsupportedFormat(ValueError):
    """An uploaded file in no format the readers know (HTTP 415)."""


def mgf_record(precursor_mz: float, ionmode: str, peaks: Sequence[tuple[float, float]], *, charge: int = 1,
               title: str = "query") -> str:
    """One MGF record of a spectrum given as numbers (read back by the same readers as a study file)."""
    sign = "+" if ionmode == "positive" else "-"
    safe_title = " ".join(str(title).split()) or "query"
    lines = ["BEGIN IONS", f"TITLE={safe_title}", f"PEPMASS={precursor_mz!r}", f"CHARGE={charge}{sign}",
             f"IONMODE={ionmode}"]
    lines += [f"{mz!r} {inten!r}" for mz, inten in peaks]
    lines.append("END IONS")
    return "\n".join(lines) + "\n"


def upload_suffix(filename: str | None) -> str:
    """The suffix an uploaded file keeps on disk (a known record-file suffix, else none: sniffed)."""
    name = (filename or "").lower()
    gz = name.endswith(".gz")
    base = name[:-3] if gz else name
    ext = os.path.splitext(base)[1]
    if ext not in UPLOAD_SUFFIXES:
        return ""
    return ext + (".gz" if gz else "")


def group_scans(rows: list[dict[str, Any]], top_k: int) -> list[dict[str, Any]]:
    """``annotations`` rows of a batch as one entry per scan (in the order met), candidates cut to ``top_k``."""
    scans: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["source_file"], row["query_id"])
        scan = scans.get(key)
        if scan is None:
            scan = scans[key] = {"query_id": row["query_id"], "record_locator": row.get("record_locator"),
                                 "precursor_mz": row["precursor_mz"], "ionmode": row["ionmode"], "candidates": []}
        if len(scan["candidates"]) < top_k:
            scan["candidates"].append({k: json_value(v) for k, v in row.items() if k not in _QUERY_COLUMNS})
    return list(scans.values())


def error_out(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("query_id", "record_locator", "stage", "reason_code", "reason")}


class LakeService:
    """The API's work over one lake (see the module docstring). Thread-safe."""

    def __init__(self, lake_dir: str | os.PathLike[str], settings: ApiSettings) -> None:
        self.settings = settings
        self.sql = ReadOnlyLake(lake_dir, settings.sql)
        self.lake_dir = str(self.sql.lake.root)
        self._annotator = None
        self._annotator_lock = threading.Lock()

    # -- annotation ------------------------------------------------------------------------------
    def annotator(self):
        """The one Annotator (opened on first use: library index, structure index, ranker)."""
        with self._annotator_lock:
            if self._annotator is None:
                from speclake.serving.annotate.steps import Annotator

                steps = self.settings.annotate.model_copy(update={"top_k": self.settings.max_top_k}).steps()
                self._annotator = Annotator(self.lake_dir, steps)
                for note in self._annotator.missing:
                    log.warning("annotation: %s", note)
            return self._annotator

    @property
    def annotator_ready(self) -> bool:
        return self._annotator is not None

    @property
    def missing(self) -> list[str]:
        """What the lake lacks for annotation (read without waiting for a running annotation)."""
        annotator = self._annotator
        return list(annotator.missing) if annotator is not None else []

    def annotate_file(self, path: str | Path, *, source_file: str, ionmode: str | None, top_k: int,
                      max_scans: int | None = None) -> dict[str, Any]:
        """Annotate every MS2 scan of a record file: ``{method, missing, scans, errors}``.

        Raises :class:`UnsupportedFormat` for a file no reader knows, :class:`BadInput` when it has no MS2
        scan, none that can be annotated (each one's reason given) or more than ``max_scans``; scans that
        fail beside annotated ones are listed in ``errors``.
        """
        from speclake.pipelines.readers.splits import detect_format
        from speclake.serving.annotate.queries import read_queries

        try:
            detect_format(str(path))
        except ValueError as exc:
            why = str(exc).replace(str(path), source_file)
            raise UnsupportedFormat(f"{source_file}: not a spectrum file speclake reads (MGF, mzML, mzXML, MSP, "
                                    f"MassBank): {why}") from exc
        read = read_queries(path, ionmode=ionmode, source_file=source_file)
        if read.n_scans == 0:
            raise BadInput("no_scans", f"{source_file}: no MS2 scan found in the file")
        if not read.queries:
            raise BadInput("not_annotatable", f"{source_file}: none of its {read.n_scans} scans can be annotated",
                           [error_out(e) for e in read.errors])
        limit = max_scans or self.settings.max_scans
        if read.n_scans > limit:
            raise BadInput("too_many_scans", f"{source_file} has {read.n_scans} MS2 scans; the API annotates at most "
                                             f"{limit} per request (use `speclake annotate` for a study)")
        annotator = self.annotator()
        with self._annotator_lock:
            rows, errors = annotator.annotate(read.queries) if read.queries else ([], [])
            method = annotator.ranker.name
            missing = list(annotator.missing)
        return {"method": method, "missing": missing, "scans": group_scans(rows, top_k),
                "errors": [error_out(e) for e in read.errors + errors]}

    def annotate_peaks(self, precursor_mz: float, ionmode: str, peaks: Sequence[tuple[float, float]], *,
                       charge: int = 1, top_k: int = 20, query_id: str = "query") -> dict[str, Any]:
        """Annotate one spectrum given as numbers (written as one MGF record, then as :meth:`annotate_file`).

        Raises :class:`BadInput` when the cleaned spectrum cannot be a query (e.g. no peak left).
        """
        if len(peaks) > self.settings.max_peaks:
            raise BadInput("too_many_peaks", f"{len(peaks)} peaks; at most {self.settings.max_peaks} per spectrum")
        with tempfile.TemporaryDirectory(prefix="speclake-api-") as tmp:
            path = Path(tmp) / "query.mgf"
            path.write_text(mgf_record(precursor_mz, ionmode, peaks, charge=charge, title=query_id))
            try:
                out = self.annotate_file(path, source_file="request", ionmode=ionmode, top_k=top_k, max_scans=1)
            except BadInput as exc:
                reasons = "; ".join(e["reason"] for e in exc.details) or str(exc)
                raise BadInput("not_annotatable", f"the spectrum cannot be annotated: {reasons}",
                               exc.details) from exc
        if not out["scans"]:
            reasons = "; ".join(e["reason"] for e in out["errors"]) or "no scan could be read"
            raise BadInput("not_annotatable", f"the spectrum cannot be annotated: {reasons}", out["errors"])
        return out

    # -- lookups ---------------------------------------------------------------------------------
    def spectrum(self, key: str) -> dict[str, Any]:
        """A library spectrum by spectrum id, USI or accession: metadata and peaks."""
        res = self.sql.query(
            "SELECT * EXCLUDE (intensities_raw, peak_annotations, ingest_run_id) FROM spectra "
            "WHERE spectrum_id = ? OR usi = ? OR accession = ? "
            "ORDER BY spectrum_id <> ?, usi IS DISTINCT FROM ?, spectrum_id LIMIT 1",
            [key, key, key, key, key])
        if not res.rows:
            hint = (" (study scans are not stored in the lake: see /studies/{name}/annotations)"
                    if key.startswith("mzspec:") else "")
            raise NotFound(f"no library spectrum with spectrum id, USI or accession {key!r}{hint}")
        row = dict(zip(res.columns, res.rows[0]))
        mz, inten = row.pop("mz") or [], row.pop("intensities") or []
        row["peaks"] = [[m, i] for m, i in zip(mz, inten)]
        return row

    def compound(self, key: str) -> dict[str, Any]:
        """The compounds of a full InChIKey or its 14-character first block, and their library spectra."""
        key = key.strip().upper()
        if not _INCHIKEY.match(key):
            raise BadInput("invalid_inchikey", f"{key!r} is not an InChIKey (AAAAAAAAAAAAAA-BBBBBBBBSA-N) or its "
                                               "14-letter first block")
        column = "inchikey14" if len(key) == 14 else "inchikey"
        res = self.sql.query(f"SELECT * FROM compounds WHERE {column} = ? ORDER BY inchikey", [key])
        if not res.rows:
            raise NotFound(f"no compound with InChIKey {key!r} in the lake")
        spectra = self.sql.query(f"SELECT spectrum_id FROM spectra WHERE {column} = ? ORDER BY spectrum_id", [key],
                                 max_rows=100)
        return {"inchikey": key, "compounds": [dict(zip(res.columns, r)) for r in res.rows],
                "spectrum_ids": [r[0] for r in spectra.rows]}

    def studies(self) -> list[dict[str, Any]]:
        """Every annotated study: files, scans and their outcomes."""
        res = self.sql.query(
            "SELECT study, count(*) AS files, sum(n_scans) AS scans, sum(n_annotated) AS annotated, "
            "sum(n_no_candidates) AS no_candidates, sum(n_errors) AS errors, "
            "CAST(max(finished_at) AS VARCHAR) AS last_finished_at "
            "FROM annotation_files GROUP BY study ORDER BY study")
        return [dict(zip(res.columns, r)) for r in res.rows]

    def annotations(self, study: str, *, rank: int | None = None, min_confidence: float | None = None,
                    formula: str | None = None, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """One page of a study's ``annotations`` rows, filtered (rank, confidence >= x, formula)."""
        known = self.sql.query("SELECT count(*) FROM annotation_files WHERE study = ?", [study]).rows[0][0]
        if not known:
            raise NotFound(f"no study {study!r} in the lake (GET /studies lists them)")
        where, params = ["study = ?"], [study]
        if rank is not None:
            where.append("rank = ?")
            params.append(rank)
        if min_confidence is not None:
            where.append("confidence >= ?")
            params.append(min_confidence)
        if formula:
            where.append("formula = ?")
            params.append(formula)
        cond = " AND ".join(where)
        total = self.sql.query(f"SELECT count(*) FROM annotations WHERE {cond}", params).rows[0][0]
        page = self.sql.query(f"SELECT * EXCLUDE (study) FROM annotations WHERE {cond} "
                              "ORDER BY source_file, query_id, rank NULLS LAST LIMIT ? OFFSET ?",
                              params + [limit, offset], max_rows=limit)
        return {"study": study, "total": total, "offset": offset, "limit": limit,
                "rows": [dict(zip(page.columns, r)) for r in page.rows]}

    def close(self) -> None:
        with self._annotator_lock:
            if self._annotator is not None:
                self._annotator.close()
                self._annotator = None
        self.sql.close()


__all__ = ["ApiSettings", "BadInput", "LakeService", "NotFound", "UnsupportedFormat", "group_scans", "mgf_record",
           "upload_suffix"]
