"""Helpers shared by the line-oriented readers (MassBank, MGF, MSP, JSON Lines).

A reader supplies a *parse* function from one record's text to
:class:`Parsed`; :func:`read_text_split` does the rest: segmentation (the same
as the planner's), byte checks (binary, UTF-8), truncation and locators.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Callable, Iterator

from speclake.pipelines.readers._segment import STRAY, TRUNCATED, Segment, iter_lines, segment_lines
from speclake.pipelines.readers.base import RawRecord, ReadResult, RecordError, Split

log = logging.getLogger(__name__)

EXCERPT_CHARS = 2000
_MISSING = {"", "n/a", "na", "nan", "none", "null"}
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13)) + b"\x7f"
_INCHIKEY = re.compile(r"^[A-Z]{14}-[A-Z]{10}-[A-Z]$")


class RecordProblem(Exception):
    """Raised inside a parse function; becomes a :class:`RecordError`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Parsed:
    """What a parse function returns for one good record."""

    metadata: dict[str, object]
    extra: dict[str, str]
    mz: tuple[float, ...]
    intensities: tuple[float, ...]


ParseFn = Callable[[str, int], Parsed]
IdFn = Callable[[str], str]


def is_missing(value: str) -> bool:
    """Whether a raw value means "no value" (``n/a``, ``N/A``, blank...)."""
    return value.strip().lower() in _MISSING


def looks_like_inchikey(value: str) -> bool:
    """Whether ``value`` has the shape of a standard InChIKey."""
    return bool(_INCHIKEY.match(value.strip()))


def add_extra(extra: dict[str, str], key: str, value: str) -> None:
    """Store ``key: value`` in ``extra``; repeated keys are joined by newlines."""
    extra[key] = f"{extra[key]}\n{value}" if key in extra else value


def number(token: str) -> float:
    """A finite float from ``token``; ValueError otherwise."""
    value = float(token)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {token!r}")
    return value


def locator(record_index: int, line: int, ident: str = "") -> str:
    """``record {n} (line {line})`` plus the record's id, n 1-based."""
    base = f"record {record_index + 1} (line {line})"
    return f"{base} {ident}" if ident else base


def excerpt(text: str) -> str:
    """The first characters of a record, for quarantine."""
    return text[:EXCERPT_CHARS]


def not_text_reason(raw: bytes) -> str | None:
    """Why ``raw`` is binary rather than text, or None when it looks like text."""
    if not raw:
        return None
    if b"\x00" in raw:
        return f"contains NUL bytes (first at byte {raw.index(0)} of the record)"
    controls = len(raw) - len(raw.translate(None, _CONTROL))
    if controls > 0.05 * len(raw):
        return f"{controls} of {len(raw)} bytes are control characters"
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        high = sum(1 for b in raw if b >= 0x80)
        if high > 0.3 * len(raw):
            return f"{high} of {len(raw)} bytes are neither ASCII nor valid UTF-8"
    return None


def _first_line_with(text: str, pattern: re.Pattern[str]) -> str:
    match = pattern.search(text)
    return match.group(1).strip() if match else ""


def id_finder(pattern: str) -> IdFn:
    """An id function taking the first group of a multiline regex."""
    compiled = re.compile(pattern, re.MULTILINE)
    return lambda text: _first_line_with(text, compiled)[:200]


def read_text_split(split: Split, segfmt: str, parse: ParseFn, find_id: IdFn,
                    end_marker: str) -> Iterator[ReadResult]:
    """Read one split of a line-oriented file with ``parse`` per record."""
    count = 0
    with open(split.path, "rb") as fh:
        lines = iter_lines(fh, split.start, split.end)
        for seg in segment_lines(lines, segfmt, split.first_record, split.first_line, split.start):
            count += 1
            yield read_segment(split, seg, parse, find_id, end_marker)
    tail = trailing_error(split)
    if tail is not None:
        yield tail
    elif count == 0:
        yield empty_file(split)


def empty_file(split: Split) -> RecordError:
    """The error standing for a file without any record."""
    return RecordError(split.source_file, locator(split.first_record, split.first_line), split.fmt,
                       "empty_file", "The file contains no records (it is empty or blank).")


def trailing_error(split: Split) -> RecordError | None:
    """The read error the planner recorded on ``split`` (corrupt gzip...), if any."""
    if "error_code" not in split.extra:
        return None
    after = split.first_record + int(split.extra.get("records", "0"))
    return RecordError(split.source_file, f"end of file (after record {after})", split.fmt,
                       split.extra["error_code"], split.extra.get("error", ""))


def read_segment(split: Split, seg: Segment, parse: ParseFn, find_id: IdFn, end_marker: str,
                 locate: Callable[[Segment, str], str] | None = None) -> ReadResult:
    """Turn one segmented record into a RawRecord or a RecordError."""
    raw = seg.raw
    loose = raw.decode("utf-8", "replace").lstrip("\ufeff")
    binary = not_text_reason(raw)
    ident = "" if binary else find_id(loose)
    where = locate(seg, ident) if locate else locator(seg.index, seg.line, ident)

    def error(code: str, reason: str) -> RecordError:
        return RecordError(split.source_file, where, split.fmt, code, reason, excerpt(loose))

    if binary:
        return error("not_text", f"Record starting at line {seg.line} is binary data, not text: {binary}.")
    try:
        text = raw.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        line = seg.line + raw[: exc.start].count(b"\n")
        return error("encoding_error", f"Invalid UTF-8 byte 0x{raw[exc.start]:02X} at line {line} "
                     f"(byte {exc.start} of the record); the file is probably not UTF-8 (e.g. Latin-1).")
    if seg.status == TRUNCATED:
        return error("truncated_record", f"Record starting at line {seg.line} ends without "
                     f"'{end_marker}': the record or the file is truncated.")
    if seg.status == STRAY:
        return error("unexpected_text", f"Text outside any record at line {seg.line}.")
    try:
        parsed = parse(text, seg.line)
    except RecordProblem as problem:
        return error(problem.code, problem.reason)
    return RawRecord(split.source_file, where, split.fmt, parsed.metadata, parsed.extra,
                     parsed.mz, parsed.intensities, excerpt(text))
