"""The readers' fast segmenting loops give exactly the segments of the generic rule engine."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speclake.pipelines.readers._segment import _FAST, SEGMENTERS, Segment, iter_lines, segment_lines
from tests.conftest import SAMPLE, shared_path

#: Lines that exercise every rule: record starts and ends, restarts, blanks, BOM, CRLF, peaks.
LINES = {
    "msp": [b"Name: caffeine\n", b"NAME: other\r\n", b"name:x\n", b"\n", b"  \n", b"\r\n", b"\xef\xbb\xbfName: a\n",
            b"PrecursorMZ: 195.08\n", b"Num Peaks: 2\n", b"138.06 100\n", b"110.07\t12\n", b"Comments: \"a=b\"\n",
            b"garbage\n", b"Name: no newline"],
    "massbank": [b"ACCESSION: MSBNK-A-1\n", b"  ACCESSION: MSBNK-B-2\r\n", b"//\n", b" // \n", b"\n", b"   \n",
                 b"\xef\xbb\xbfACCESSION: X\n", b"CH$NAME: x\n", b"PK$PEAK: m/z int. rel.int.\n",
                 b"  100.0 10 999\n", b"text\n", b"//"],
}


def _generic(lines: list[bytes], fmt: str, index: int, line: int, offset: int) -> list[Segment]:
    seg = SEGMENTERS[fmt](index)
    out: list[Segment] = []
    for raw in lines:
        feed = raw[3:] if offset == 0 and raw.startswith(b"\xef\xbb\xbf") else raw
        out.extend(seg.feed(feed, offset, line))
        offset += len(raw)
        line += 1
    return out + seg.finish()


def _facts(segments: list[Segment]) -> list[tuple]:
    return [(s.index, s.line, s.offset, s.status, tuple(s.lines)) for s in segments]


@pytest.mark.parametrize("fmt", sorted(_FAST))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_loop_matches_rule_engine(fmt: str, data: st.DataObject) -> None:
    """Random sequences of tricky lines, from any start position, segment identically both ways."""
    lines = data.draw(st.lists(st.sampled_from(LINES[fmt]), max_size=40))
    index, line, offset = data.draw(st.integers(0, 5)), data.draw(st.integers(1, 9)), data.draw(st.sampled_from([0, 17]))
    fast = list(segment_lines(iter(lines), fmt, index, line, offset))
    assert _facts(fast) == _facts(_generic(lines, fmt, index, line, offset))


def _real_file(name: str) -> Path:
    return SAMPLE / name if name.endswith(".gz") else shared_path("formats", name)


@pytest.mark.parametrize(("fmt", "name"), [("massbank", "massbank_sample.txt.gz"), ("msp", "MoNA-export-GC-MS-first10.msp"),
                                           ("msp", "comments_with_quotes.msp"), ("msp", "riken_style_five_spectra.msp")])
def test_fast_loop_matches_rule_engine_on_real_files(fmt: str, name: str) -> None:
    """Real record files segment identically with the fast loop and the rule engine."""
    path = _real_file(name)
    raw = gzip.open(path, "rb").read() if name.endswith(".gz") else path.read_bytes()
    lines = raw.splitlines(keepends=True)
    fast = list(segment_lines(iter(lines), fmt))
    assert fast, "the file has records"
    assert _facts(fast) == _facts(_generic(lines, fmt, 0, 1, 0))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300), start=st.integers(0, 300), length=st.integers(-1, 300), block=st.integers(1, 64))
def test_iter_lines_gives_what_readline_gives(data: bytes, start: int, length: int, block: int) -> None:
    """Block-wise line splitting yields exactly readline's lines for any byte range, \\r and all."""
    import io

    start = min(start, len(data))
    end = -1 if length < 0 else min(len(data), start + length)
    fh = io.BytesIO(data)
    fh.seek(start)
    expected, remaining = [], -1 if end < 0 else end - start
    while remaining != 0:
        line = fh.readline() if remaining < 0 else fh.readline(remaining)
        if not line:
            break
        remaining -= len(line) if remaining > 0 else 0
        expected.append(line)
    assert list(iter_lines(io.BytesIO(data), start, end, block)) == expected
