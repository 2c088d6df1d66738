"""Record segmentation shared by the split planner and the text readers.

One segmenter per line-oriented format decides where each record starts and
ends. The planner cuts splits only where :func:`segment_lines` begins a record,
and the readers run the *same* segmentation over each split, so both always
count and number records identically.

Rules (lines compared after stripping whitespace):

- massbank: a record ends with a line ``//``; a line ``ACCESSION:`` always
  begins a new record (an open record without ``//`` is then truncated).
  Blank lines between records are skipped.
- mgf: ``BEGIN IONS`` ... ``END IONS``; a ``BEGIN IONS`` inside an open record
  truncates it. Blank and comment lines (``#;!/``) between records are skipped;
  any other text between records is one *stray* segment.
- msp: runs of non-blank lines separated by blank lines; a ``Name:`` line in a
  record that already has one also begins a new record.
- jsonl: every non-blank line is one record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

COMPLETE = "complete"
TRUNCATED = "truncated"
STRAY = "stray"

_BOM = b"\xef\xbb\xbf"
_MGF_COMMENT = (b"#", b";", b"!", b"/")


@dataclass
class Segment:
    """One record's raw lines and where it starts in the original file."""

    index: int                      # 0-based record index in the original file
    line: int                       # 1-based line of the record's first line
    offset: int                     # byte offset of the first line in the file read
    status: str = COMPLETE          # complete | truncated | stray
    lines: list[bytes] = field(default_factory=list)

    @property
    def raw(self) -> bytes:
        """The record's bytes as read."""
        return b"".join(self.lines)


class Segmenter:
    """Incremental line segmenter; subclasses define the format's rules."""

    def __init__(self, first_index: int = 0) -> None:
        self.count = first_index          # index of the next record to start
        self._open: Segment | None = None

    # -- rules, overridden per format -------------------------------------
    def _opens(self, s: bytes) -> bool:
        """Whether stripped line ``s`` begins a record when none is open."""
        return bool(s)

    def _restarts(self, s: bytes) -> bool:
        """Whether ``s`` closes the open record and begins a new one."""
        return False

    def _closes(self, s: bytes) -> bool:
        """Whether ``s`` is the last line of the open record."""
        return False

    def _restart_status(self) -> str:
        return COMPLETE

    def _eof_status(self) -> str:
        return COMPLETE

    def _note(self, s: bytes) -> None:
        """Hook: remember facts about the open record's lines."""

    def _begin_status(self, s: bytes) -> str:
        return COMPLETE

    # -- engine ------------------------------------------------------------
    def feed(self, line: bytes, offset: int, lineno: int) -> list[Segment]:
        """Consume one line; return the records it completed."""
        s = line.strip()
        done: list[Segment] = []
        if self._open is not None and self._restarts(s):
            self._open.status = self._restart_status()
            done.append(self._open)
            self._open = None
        if self._open is None:
            if not self._opens(s):
                return done
            self._open = Segment(self.count, lineno, offset, self._begin_status(s))
            self.count += 1
            self._reset_notes()
        self._open.lines.append(line)
        self._note(s)
        if self._closes(s):
            done.append(self._open)
            self._open = None
        return done

    def finish(self) -> list[Segment]:
        """Close the input; return a record left open at the end."""
        if self._open is None:
            return []
        seg, self._open = self._open, None
        if seg.status == COMPLETE:
            seg.status = self._eof_status()
        return [seg]

    def _reset_notes(self) -> None:
        """Hook: forget per-record facts when a record begins."""


class MassBankSegmenter(Segmenter):
    """``ACCESSION:`` ... ``//``."""

    def _restarts(self, s: bytes) -> bool:
        return s.startswith(b"ACCESSION:")

    def _closes(self, s: bytes) -> bool:
        return s == b"//"

    def _restart_status(self) -> str:
        return TRUNCATED

    def _eof_status(self) -> str:
        return TRUNCATED


def _is_begin(s: bytes) -> bool:
    return s.upper() == b"BEGIN IONS"


class MgfSegmenter(Segmenter):
    """``BEGIN IONS`` ... ``END IONS``; other text between records is stray."""

    def _opens(self, s: bytes) -> bool:
        return bool(s) and not s.startswith(_MGF_COMMENT)

    def _begin_status(self, s: bytes) -> str:
        return COMPLETE if _is_begin(s) else STRAY

    def _restarts(self, s: bytes) -> bool:
        return _is_begin(s)

    def _closes(self, s: bytes) -> bool:
        return s.upper() == b"END IONS"

    def _restart_status(self) -> str:
        return TRUNCATED if self._open is not None and self._open.status == COMPLETE else STRAY

    def _eof_status(self) -> str:
        return TRUNCATED


def _is_name(s: bytes) -> bool:
    return s[:5].lower() == b"name:"


class MspSegmenter(Segmenter):
    """Blank-line separated blocks; a second ``Name:`` begins a new record."""

    _has_name = False

    def _reset_notes(self) -> None:
        self._has_name = False

    def _note(self, s: bytes) -> None:
        if _is_name(s):
            self._has_name = True

    def _restarts(self, s: bytes) -> bool:
        return _is_name(s) and self._has_name

    def _closes(self, s: bytes) -> bool:
        return not s


class JsonLinesSegmenter(Segmenter):
    """One record per non-blank line."""

    def _closes(self, s: bytes) -> bool:
        return True


SEGMENTERS: dict[str, type[Segmenter]] = {
    "massbank": MassBankSegmenter,
    "mgf": MgfSegmenter,
    "msp": MspSegmenter,
    "jsonl": JsonLinesSegmenter,
}


def iter_lines(fh: BinaryIO, start: int, end: int, block_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Lines of ``fh`` from byte ``start`` to ``end`` (-1: end of file), each with its ``\n``,
    streamed in blocks of ``block_bytes`` (exactly what ``readline`` would give)."""
    fh.seek(start)
    remaining = -1 if end < 0 else end - start
    carry = b""
    while remaining != 0:
        data = fh.read(block_bytes if remaining < 0 else min(block_bytes, remaining))
        if not data:
            break
        if remaining > 0:
            remaining -= len(data)
        lines = (carry + data).split(b"\n") if carry else data.split(b"\n")
        carry = lines.pop()
        for line in lines:
            yield line + b"\n"
    if carry:
        yield carry


def segment_lines(lines: Iterator[bytes], fmt: str, first_index: int = 0, first_line: int = 1,
                  offset: int = 0) -> Iterator[Segment]:
    """Segment a stream of lines into records of ``fmt``."""
    fast = _FAST.get(fmt)
    if fast is not None:
        yield from fast(lines, first_index, first_line, offset)
        return
    seg = SEGMENTERS[fmt](first_index)
    lineno = first_line
    for line in lines:
        feed = line[3:] if offset == 0 and line.startswith(_BOM) else line
        yield from seg.feed(feed, offset, lineno)
        offset += len(line)
        lineno += 1
    yield from seg.finish()


# -- fast paths: the same rules as the segmenter classes, inlined for the readers' hot loop --------
# (tests/pipelines/readers/test_segment.py checks they give exactly the generic engine's segments)

def _segment_msp(lines: Iterator[bytes], index: int, lineno: int, offset: int) -> Iterator[Segment]:
    """:class:`MspSegmenter` rules in one loop."""
    open_: Segment | None = None
    has_name = False
    for line in lines:
        if open_ is not None and line[:1].isdigit():  # a peak line: neither blank nor "Name:" (most lines)
            open_.lines.append(line)
            offset += len(line)
            lineno += 1
            continue
        feed = line[3:] if offset == 0 and line.startswith(_BOM) else line
        s = feed.strip()
        if not s:
            if open_ is not None:
                open_.lines.append(feed)
                yield open_
                open_ = None
        else:
            is_name = s[:5].lower() == b"name:"
            if open_ is not None and is_name and has_name:
                yield open_
                open_ = None
            if open_ is None:
                open_ = Segment(index, lineno, offset, COMPLETE)
                index += 1
                has_name = False
            open_.lines.append(feed)
            has_name = has_name or is_name
        offset += len(line)
        lineno += 1
    if open_ is not None:
        yield open_


def _segment_massbank(lines: Iterator[bytes], index: int, lineno: int, offset: int) -> Iterator[Segment]:
    """:class:`MassBankSegmenter` rules in one loop."""
    open_: Segment | None = None
    for line in lines:
        feed = line[3:] if offset == 0 and line.startswith(_BOM) else line
        s = feed.strip()
        if open_ is not None and s.startswith(b"ACCESSION:"):
            open_.status = TRUNCATED
            yield open_
            open_ = None
        if open_ is None and s:
            open_ = Segment(index, lineno, offset, COMPLETE)
            index += 1
        if open_ is not None:
            open_.lines.append(feed)
            if s == b"//":
                yield open_
                open_ = None
        offset += len(line)
        lineno += 1
    if open_ is not None:
        open_.status = TRUNCATED
        yield open_


_FAST = {"msp": _segment_msp, "massbank": _segment_massbank}
