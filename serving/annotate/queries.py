"""Read a study file's MS2 scans as annotation queries; every scan that cannot be one becomes an error row.

The in-process reader of the index (:func:`speclake.pipelines.spectrum_files.read_spectra`) reads the
file with ingest's readers and cleans each scan with ingest's normalization, so a query is cleaned
exactly as the library spectra it is compared with. What comes back:

* :class:`~speclake.serving.annotate.model.Query` objects for the scans that can be annotated;
* error rows (the ``annotation_errors`` columns less study and run id) for every other scan: records
  the readers quarantined (unreadable, no peaks, bad peak lines ...), scans without precursor m/z,
  without peaks, with NaN peaks, or of unknown ion mode (annotation needs positive or negative: the
  file's polarity, else ``ionmode`` given for the whole study).

Query ids, kept verbatim (:func:`query_id_of`): MGF ``TITLE``, else its ``SPECTRUMID``; mzML the
spectrum's native id (``controllerType=0 controllerNumber=1 scan=2``); mzXML ``scan=<num>``; MSP its
``DB#``/accession, else its name; anything else the reader's record locator (``record 3 (line 40)``).

Blind: the scan's reported structure, formula, name, InChIKey, adduct and exact mass go to
``Query.metadata`` (display only); nothing else of the record is read as evidence.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speclake.serving.annotate.model import Query

log = logging.getLogger(__name__)

IONMODES = ("positive", "negative")
#: Characters of a record kept in an error row's ``raw_excerpt``.
EXCERPT_CHARS = 400
#: Reported fields kept for display in ``Query.metadata`` (never used as evidence).
_REPORTED = ("compound_name", "smiles_reported", "inchi_reported", "inchikey_reported", "formula_reported",
             "adduct", "exact_mass_reported", "accession", "title", "instrument", "collision_energy_text",
             "fragmentation_mode", "spectrum_id")
_TITLE_LINE = re.compile(r"^\s*TITLE=(.*)$", re.MULTILINE | re.IGNORECASE)
_ID_LINE = re.compile(r"^\s*SPECTRUM_?ID=(\S+)", re.MULTILINE | re.IGNORECASE)
_MSP_ID = re.compile(r"^\s*(?:DB#|DBNUMBER|ACCESSION)\s*:\s*(.+)$", re.MULTILINE | re.IGNORECASE)
_MSP_NAME = re.compile(r"^\s*NAME\s*:\s*(.+)$", re.MULTILINE | re.IGNORECASE)


@dataclass
class QueryFile:
    """The scans of one study file: queries to annotate and error rows (nothing else is dropped)."""

    path: str
    queries: list[Query] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_scans(self) -> int:
        return len(self.queries) + len(self.errors)


def error_row(source_file: str, query_id: str | None, record_locator: str | None, scan_number: int | None,
              stage: str, reason_code: str, reason: str, raw_excerpt: str | None = None) -> dict[str, Any]:
    """One ``annotation_errors`` row (without study and run id)."""
    return {"source_file": source_file, "query_id": query_id, "record_locator": record_locator,
            "scan_number": scan_number, "stage": stage, "reason_code": reason_code, "reason": reason,
            "raw_excerpt": (raw_excerpt or "")[:EXCERPT_CHARS] or None}


def query_id_of(row: dict[str, Any]) -> str:
    """The verbatim id of a normalized spectrum row (see the module docstring for the order per format)."""
    fmt = row.get("source_format")
    extra = row.get("metadata_extra") or {}
    if fmt == "mgf":
        found = row.get("title") or row.get("accession")
    elif fmt == "mzml":
        found = extra.get("id")
    elif fmt == "mzxml":
        found = f"scan={extra['num']}" if extra.get("num") else None
    elif fmt == "msp":
        found = row.get("accession") or row.get("compound_name")
    else:
        found = row.get("accession") or row.get("title")
    return str(found) if found else str(row.get("record_locator") or "")


def _id_from_excerpt(fmt: str | None, excerpt: str | None, locator: str | None) -> str:
    """The id of a quarantined record, read from its raw text where the format puts it."""
    text = excerpt or ""
    if fmt == "mgf":
        match = _TITLE_LINE.search(text) or _ID_LINE.search(text)
    elif fmt == "msp":
        match = _MSP_ID.search(text) or _MSP_NAME.search(text)
    else:
        match = None
    return match.group(1).strip() if match else str(locator or "")


def _scan_number(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _usi(study: str | None, source_file: str, scan_number: int | None, query_id: str) -> str:
    """A USI-style id of a study scan: ``mzspec:<study>:<file stem>:scan:<n>`` (else ``:nativeId:<id>``)."""
    stem = Path(source_file).name.split(".")[0]
    if scan_number is not None:
        return f"mzspec:{study or 'study'}:{stem}:scan:{scan_number}"
    return f"mzspec:{study or 'study'}:{stem}:nativeId:{query_id}"


def query_of(row: dict[str, Any], *, ionmode: str | None = None, study: str | None = None,
             ) -> tuple[Query | None, dict[str, Any] | None]:
    """A normalized spectrum row as a :class:`Query`, or the error row saying why it cannot be one.

    ``ionmode``: the study's ion mode, used for scans whose file does not say (the file wins otherwise).
    """
    source_file = str(row.get("source_file") or "")
    qid = query_id_of(row)
    locator = row.get("record_locator")
    scan = _scan_number(row.get("scan_number"))

    def fail(code: str, reason: str) -> tuple[None, dict[str, Any]]:
        return None, error_row(source_file, qid, locator, scan, "query", code, reason)

    precursor = row.get("precursor_mz")
    if precursor is None or not math.isfinite(float(precursor)) or float(precursor) <= 0:
        return fail("missing_precursor", f"scan {qid!r} has no precursor m/z")
    mz = np.asarray(row.get("mz") if row.get("mz") is not None else [], dtype=np.float64)
    intensities = np.asarray(row.get("intensities") if row.get("intensities") is not None else [], dtype=np.float64)
    if not len(mz) or not len(intensities):
        return fail("no_peaks", f"scan {qid!r} has no fragment peaks (after cleaning as ingest cleans)")
    if len(mz) != len(intensities):
        return fail("peak_parse_error", f"scan {qid!r} has {len(mz)} m/z values but {len(intensities)} intensities")
    if not (np.isfinite(mz).all() and np.isfinite(intensities).all()):
        return fail("nan_peaks", f"scan {qid!r} has NaN or infinite peak values")
    mode = row.get("ionmode")
    if mode not in IONMODES:
        if ionmode not in IONMODES:
            return fail("unknown_ionmode", f"scan {qid!r}: the file gives no polarity; annotation needs positive "
                                           "or negative (give the study's with --ionmode)")
        mode = ionmode
    order = np.argsort(mz, kind="stable")
    metadata = {k: row[k] for k in _REPORTED if row.get(k) not in (None, "", [])}
    charge = _scan_number(row.get("charge"))
    rt = row.get("retention_time")
    query = Query(query_id=qid, source_file=source_file, record_locator=str(locator or ""),
                  precursor_mz=float(precursor), ionmode=mode, mz=mz[order], intensities=intensities[order],
                  scan_number=scan, retention_time=float(rt) if rt is not None else None, charge=charge,
                  usi=_usi(study, source_file, scan, qid), metadata=metadata)
    return query, None


def read_queries(path: str | Path, *, ionmode: str | None = None, study: str | None = None,
                 source_file: str | None = None) -> QueryFile:
    """Every MS2 scan of ``path`` (mzML, mzXML, MGF, MSP, ...): queries and error rows, never an exception
    for a bad record; a file that cannot be read at all is one error row.

    ``source_file``: the name recorded in the rows (default: the path as given).
    """
    if ionmode is not None and ionmode not in IONMODES:
        raise ValueError(f"ionmode must be one of {', '.join(IONMODES)}, got {ionmode!r}")
    from speclake.pipelines.spectrum_files import read_spectra

    name = str(source_file or path)
    out = QueryFile(path=name)
    try:
        read = read_spectra(path, ms_level=2)
    except (OSError, ValueError, UnicodeError) as exc:  # missing file, unknown format
        out.errors.append(error_row(name, None, None, None, "read", "unreadable_file", f"{type(exc).__name__}: {exc}"))
        return out
    for q in read.quarantine:
        fmt = q.get("source_format")
        locator = q.get("record_locator")
        out.errors.append(error_row(name, _id_from_excerpt(fmt, q.get("raw_excerpt"), locator), locator, None,
                                    str(q.get("stage") or "read"), str(q.get("reason_code") or "unreadable"),
                                    str(q.get("reason") or ""), q.get("raw_excerpt")))
    for row in read.spectra:
        row = {**row, "source_file": name}
        query, err = query_of(row, ionmode=ionmode, study=study)
        if query is not None:
            out.queries.append(query)
        else:
            out.errors.append(err)
    log.info("%s: %d queries, %d error rows", name, len(out.queries), len(out.errors))
    return out


__all__ = ["EXCERPT_CHARS", "IONMODES", "QueryFile", "error_row", "query_id_of", "query_of", "read_queries"]
