"""Input discovery, format detection and split planning.

:func:`plan_splits` streams every input once (line iteration, never a whole
file in memory) and cuts it into :class:`Split` s of about ``target_bytes`` at
record boundaries found by the same segmenters the readers use
(:mod:`._segment`), so the records of a file are the same however it is split.

- Plain text files (MassBank, MGF, MSP, JSON Lines): byte ranges of the file.
- Gzip text files: decompressed once into ``staging_dir``, then cut into byte
  ranges of that file like plain text.
- GNPS JSON arrays: read in place when small, else streamed with ``ijson`` into
  staged JSON Lines chunks (``extra={"layout": "jsonl", "origin": "array"}``).
- mzML/mzXML: one split per file, or ranges of spectrum indexes
  (``extra["index_start"]``/``["index_end"]``) for files over ``target_bytes``;
  gzip ones are staged decompressed first.

Every split's ``extra["records"]`` is the number of records the planner counted
(mzML: spectra, MS1 included). A stream that cannot be read to its end
(corrupt gzip) marks the last split with ``extra["error_code"]``/``["error"]``,
which the readers turn into one RecordError after the records read.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import re
import shutil
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import ijson

from speclake.pipelines.readers._segment import segment_lines
from speclake.pipelines.readers.base import Split
from speclake.pipelines.readers.gnps_json import _plain

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("massbank", "mgf", "msp", "gnps_json", "mzml", "mzxml")
DEFAULT_TARGET_BYTES = 8 * 2**20
SNIFF_BYTES = 8192

_EXTENSIONS: dict[str, str] = {
    ".mgf": "mgf", ".msp": "msp", ".json": "gnps_json", ".jsonl": "gnps_json",
    ".mzml": "mzml", ".mzxml": "mzxml",
}
_SNIFFED_EXTENSIONS = (".txt", ".mb", ".dat", ".text", "")
_STAGED_EXT = {"massbank": ".txt", "mgf": ".mgf", "msp": ".msp", "gnps_json": ".jsonl",
               "mzml": ".mzML", "mzxml": ".mzXML"}
_SKIP_STEMS = frozenset({"readme", "license", "licence", "copying", "changelog", "changes",
                         "authors", "contributors", "notice", "list", "index", "requirements"})
_BOM = b"\xef\xbb\xbf"
_READ_ERRORS = (OSError, EOFError, zlib.error)


# -- format detection --------------------------------------------------------

def _split_gz(path: str) -> tuple[str, bool]:
    """``("x.mgf", True)`` for ``x.mgf.gz``."""
    if path.lower().endswith(".gz"):
        return path[:-3], True
    return path, False


def is_gzip(path: str) -> bool:
    """Whether ``path`` names a gzip file (by extension)."""
    return _split_gz(path)[1]


def open_binary(path: str) -> BinaryIO:
    """Open ``path`` for binary reading, decompressing ``.gz`` on the fly."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")  # type: ignore[return-value]


def sniff_format(head: bytes) -> str | None:
    """The format suggested by the first bytes of a file, or None."""
    text = head.lstrip(_BOM).lstrip()
    lowered = text.lower()
    if re.search(rb"(?m)^ACCESSION:", text):
        return "massbank"
    if re.search(rb"(?mi)^\s*BEGIN IONS\s*$", text):
        return "mgf"
    if re.search(rb"(?mi)^name:", text) and (b"num peaks" in lowered or b"precursormz" in lowered
                                             or b"db#" in lowered):
        return "msp"
    if b"<mzxml" in lowered:
        return "mzxml"
    if b"<mzml" in lowered or b"<indexedmzml" in lowered:
        return "mzml"
    if text[:1] in (b"[", b"{"):
        return "gnps_json"
    return None


def _unknown(path: str, why: str) -> ValueError:
    return ValueError(f"cannot detect the format of {path!r} ({why}); supported formats: "
                      f"{', '.join(FORMATS)} (by extension .mgf .msp .json .jsonl .mzML .mzXML, "
                      f"optionally .gz, or MassBank/MGF/MSP text recognised by content)")


def detect_format(path: str) -> str:
    """One of :data:`FORMATS` for ``path``, by extension, else by sniffing its head."""
    base, _ = _split_gz(path)
    ext = os.path.splitext(base)[1].lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    try:
        with open_binary(path) as fh:
            head = fh.read(SNIFF_BYTES)
    except _READ_ERRORS as exc:
        raise _unknown(path, f"unreadable: {exc}") from exc
    fmt = sniff_format(head)
    if fmt is not None:
        return fmt
    if not head.strip() and ext in (".txt", ".mb"):
        return "massbank"  # an empty record file of a MassBank checkout
    raise _unknown(path, "empty file" if not head.strip() else "content not recognised")


# -- input discovery ---------------------------------------------------------

def _is_record_file(name: str) -> bool:
    if name.startswith("."):
        return False
    base, _ = _split_gz(name)
    stem, ext = os.path.splitext(base)
    if stem.lower() in _SKIP_STEMS:
        return False
    return ext.lower() in _EXTENSIONS or ext.lower() in (".txt", ".mb")


def _walk(root: str) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if _is_record_file(name):
                yield os.path.join(dirpath, name)


def expand_inputs(paths: list[str]) -> list[str]:
    """Files named plus record files found under directories, sorted, no duplicates."""
    found: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            found.update(_walk(path))
        elif os.path.isfile(path):
            found.add(path)
        else:
            raise FileNotFoundError(f"input not found: {path!r}")
    return sorted(found)


# -- planning ----------------------------------------------------------------

@dataclass(frozen=True)
class _Cut:
    offset: int
    line: int
    record: int


class _Stager:
    """Writes the decompressed chunks of one source file under the staging dir."""

    def __init__(self, source: str, fmt: str, staging_dir: str) -> None:
        os.makedirs(staging_dir, exist_ok=True)
        digest = hashlib.sha1(os.path.abspath(source).encode()).hexdigest()[:10]
        stem = re.sub(r"[^\w.-]", "_", Path(_split_gz(source)[0]).stem)
        self._prefix = os.path.join(staging_dir, f"{stem}-{digest}")
        self._ext = _STAGED_EXT[fmt]
        self.paths: list[str] = []
        self._fh: BinaryIO | None = None
        self.next_chunk()

    def next_chunk(self) -> None:
        self.close()
        path = f"{self._prefix}-{len(self.paths):05d}{self._ext}"
        self.paths.append(path)
        self._fh = open(path, "wb")

    def write(self, data: bytes) -> None:
        if self._fh is None:
            raise RuntimeError("stager is closed")
        self._fh.write(data)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _mark_error(splits: list[Split], exc: BaseException) -> list[Split]:
    """Record on the last split that the stream ended in a read error."""
    last = splits[-1]
    extra = {**last.extra, "error_code": "read_error",
             "error": f"The file could not be read to its end: {type(exc).__name__}: {exc}."}
    splits[-1] = Split(last.path, last.source_file, last.fmt, last.start, last.end,
                       last.first_record, last.first_line, extra)
    return splits


def _cuts(path: str, segfmt: str, target: int) -> tuple[list[_Cut], int]:
    """Record starts where the plain file ``path`` is cut into splits of about ``target`` bytes, and the
    record count."""
    cuts, total = [_Cut(0, 1, 0)], 0
    with open(path, "rb") as fh:
        for seg in segment_lines(iter(fh), segfmt):
            last = cuts[-1]
            if seg.offset - last.offset >= target and seg.index > last.record:
                cuts.append(_Cut(seg.offset, seg.line, seg.index))
            total = seg.index + 1
    return cuts, total


def _plan_lines(path: str, fmt: str, segfmt: str, staging_dir: str, target: int,
                extra: dict[str, str]) -> list[Split]:
    """Byte-range splits of a line-oriented file; a gzip file is first decompressed under staging."""
    local, error = _stage_whole(path, fmt, staging_dir) if is_gzip(path) else (path, None)
    cuts, total = _cuts(local, segfmt, target)
    end = os.path.getsize(local)
    splits = []
    for i, cut in enumerate(cuts):
        last = i + 1 == len(cuts)
        count = (total if last else cuts[i + 1].record) - cut.record
        meta = {**extra, "records": str(count)}
        if len(cuts) == 1:
            splits.append(Split(local, path, fmt, 0, -1, 0, 1, meta))
        else:
            splits.append(Split(local, path, fmt, cut.offset, end if last else cuts[i + 1].offset,
                                cut.record, cut.line, meta))
    if error is not None:
        splits = _mark_error(splits, error)
    return splits


def _first_char(path: str) -> bytes:
    """First non-blank byte of the (decompressed) file; b"" if none or unreadable."""
    try:
        with open_binary(path) as fh:
            head = fh.read(SNIFF_BYTES).lstrip(_BOM).lstrip()
    except _READ_ERRORS:
        return b""
    return head[:1]


def _plan_json_array(path: str, staging_dir: str, target: int) -> list[Split]:
    """Stage the items of a JSON array as JSON Lines chunks of about ``target`` bytes."""
    stager = _Stager(path, "gnps_json", staging_dir)
    extra = {"layout": "jsonl", "origin": "array"}
    starts = [0]
    written = index = 0
    error: str | None = None
    try:
        with open_binary(path) as fh:
            for obj in ijson.items(fh, "item"):
                if written >= target:
                    stager.next_chunk()
                    starts.append(index)
                    written = 0
                line = json.dumps(_plain(obj), ensure_ascii=False).encode("utf-8") + b"\n"
                stager.write(line)
                written += len(line)
                index += 1
    except (ijson.JSONError, ValueError, UnicodeDecodeError, *_READ_ERRORS) as exc:
        log.warning("JSON of %s is broken after %d records: %s", path, index, exc)
        error = f"JSON syntax error after {index} records: {exc}."
    finally:
        stager.close()
    splits = []
    for i, first in enumerate(starts):
        count = (starts[i + 1] if i + 1 < len(starts) else index) - first
        splits.append(Split(stager.paths[i], path, "gnps_json", 0, -1, first, 1, {**extra, "records": str(count)}))
    if error is not None:
        last = splits[-1]
        records = str(int(last.extra["records"]) + 1)  # the error stands for the unread rest
        splits[-1] = Split(last.path, path, "gnps_json", 0, -1, last.first_record, 1,
                           {**last.extra, "records": records, "json_error": error, "json_error_record": str(index)})
    return splits


def _plan_gnps(path: str, staging_dir: str, target: int) -> list[Split]:
    first = _first_char(path)
    if first == b"{" or _split_gz(path)[0].lower().endswith(".jsonl"):
        return _plan_lines(path, "gnps_json", "jsonl", staging_dir, target, {"layout": "jsonl"})
    if not is_gzip(path) and os.path.getsize(path) <= target:
        return [Split(path, path, "gnps_json", extra={"layout": "array"})]
    return _plan_json_array(path, staging_dir, target)


def _gunzip(src: BinaryIO, dst: _Stager, chunk_bytes: int = 1 << 16) -> None:
    """Decompress every gzip member of ``src`` into ``dst``, writing all that decodes before
    raising on a truncated (EOFError) or corrupt (zlib.error) stream."""
    inflater, fed = zlib.decompressobj(wbits=31), False
    while chunk := src.read(chunk_bytes):
        while chunk:
            fed = True
            dst.write(inflater.decompress(chunk))
            chunk = b""
            if inflater.eof:  # a member ended: the rest is the next member
                chunk = inflater.unused_data
                inflater, fed = zlib.decompressobj(wbits=31), False
    if fed and not inflater.eof:
        raise EOFError("Compressed file ended before the end-of-stream marker was reached")


def _stage_whole(path: str, fmt: str, staging_dir: str) -> tuple[str, BaseException | None]:
    """Decompress ``path`` into one staged file; the read error, if any."""
    stager = _Stager(path, fmt, staging_dir)
    error = None
    try:
        if is_gzip(path):
            with open(path, "rb") as fh:
                _gunzip(fh, stager)
        else:
            with open(path, "rb") as fh:
                shutil.copyfileobj(fh, stager)  # type: ignore[arg-type]
    except _READ_ERRORS as exc:
        log.warning("gzip stream of %s ends early: %s", path, exc)
        error = exc
    finally:
        stager.close()
    return stager.paths[0], error


def _spectrum_count(path: str, fmt: str) -> int:
    from pyteomics import mzml, mzxml

    opener = mzxml.MzXML if fmt == "mzxml" else mzml.PreIndexedMzML
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with opener(path, use_index=True) as reader:
            return len(reader)


def _plan_ms_run(path: str, fmt: str, staging_dir: str, target: int) -> list[Split]:
    local, error = _stage_whole(path, fmt, staging_dir) if is_gzip(path) else (path, None)
    size = os.path.getsize(local)
    if error is not None:
        return _mark_error([Split(local, path, fmt)], error)
    if size <= target:
        return [Split(local, path, fmt)]
    try:
        total = _spectrum_count(local, fmt)
    except Exception as exc:  # unreadable XML: one split, the reader reports it
        log.warning("cannot index %s: %s", path, exc)
        return [Split(local, path, fmt)]
    parts = max(1, min(total, math.ceil(size / target)))
    per = math.ceil(total / parts) if total else 1
    splits = []
    for start in range(0, max(total, 1), per):
        stop = min(start + per, total)
        splits.append(Split(local, path, fmt, first_record=start,
                            extra={"index_start": str(start), "index_end": str(stop),
                                   "records": str(stop - start)}))
    return splits


def plan_file(path: str, staging_dir: str, target_bytes: int = DEFAULT_TARGET_BYTES,
              fmt: str | None = None) -> list[Split]:
    """Splits of one file (format detected unless given)."""
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}")
    if target_bytes < 1:
        raise ValueError(f"target_bytes must be positive, got {target_bytes}")
    if fmt == "gnps_json":
        return _plan_gnps(path, staging_dir, target_bytes)
    if fmt in ("mzml", "mzxml"):
        return _plan_ms_run(path, fmt, staging_dir, target_bytes)
    return _plan_lines(path, fmt, fmt, staging_dir, target_bytes, {})


def plan_splits(paths: list[str], staging_dir: str, target_bytes: int = DEFAULT_TARGET_BYTES) -> list[Split]:
    """Splits of about ``target_bytes`` for every input file (directories expanded)."""
    splits: list[Split] = []
    for path in expand_inputs(paths):
        file_splits = plan_file(path, staging_dir, target_bytes)
        log.info("planned %d split(s) for %s", len(file_splits), path)
        splits.extend(file_splits)
    return splits
