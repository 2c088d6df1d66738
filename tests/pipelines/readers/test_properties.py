"""Property-based tests: readers never raise, and every record is accounted for, on any input."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speclake.pipelines.readers import read_split
from speclake.pipelines.readers.base import RawRecord, RecordError, Split
from speclake.pipelines.readers.splits import plan_file
from tests.conftest import shared_path

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TEXT_FORMATS = {"massbank": ".txt", "mgf": ".mgf", "msp": ".msp"}
FILE_ERRORS = {"empty_file", "read_error"}


def _write(data: bytes, suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    handle.write(data)
    handle.close()
    return Path(handle.name)


def _results(path: Path, fmt: str, target: int) -> tuple[list, int]:
    with tempfile.TemporaryDirectory() as staging:
        splits = plan_file(str(path), staging, target, fmt)
        results = [r for s in splits for r in read_split(s)]
    return results, sum(int(s.extra.get("records", "0")) for s in splits)


def _check_accounted(results: list, planned: int) -> None:
    assert results, "a file never vanishes: at least one result"
    assert all(isinstance(r, (RawRecord, RecordError)) for r in results)
    per_record = [r for r in results if not (isinstance(r, RecordError) and r.reason_code in FILE_ERRORS)]
    assert len(per_record) == planned, f"{len(per_record)} results for {planned} planned records"


@SETTINGS
@given(data=st.binary(max_size=3000), fmt=st.sampled_from(sorted(TEXT_FORMATS)), target=st.integers(1, 4000))
def test_random_bytes_into_text_readers(data: bytes, fmt: str, target: int):
    """Random bytes: never raises; every item is a result type; one result per planned record."""
    path = _write(data, TEXT_FORMATS[fmt])
    try:
        results, planned = _results(path, fmt, target)
        _check_accounted(results, planned)
    finally:
        path.unlink()


@SETTINGS
@given(data=st.binary(max_size=2000), layout=st.sampled_from(["array", "jsonl"]))
def test_random_bytes_into_gnps_json(data: bytes, layout: str):
    """Random bytes as a JSON array or JSON Lines split: never raises, yields only result types."""
    path = _write(data, ".json")
    try:
        results = list(read_split(Split(str(path), str(path), "gnps_json", extra={"layout": layout})))
        assert results and all(isinstance(r, (RawRecord, RecordError)) for r in results)
    finally:
        path.unlink()


@settings(max_examples=25, deadline=None)
@given(data=st.binary(max_size=2000), fmt=st.sampled_from(["mzml", "mzxml"]),
       prefix=st.sampled_from([b"", b"<?xml version='1.0'?><mzML>", b"<mzXML><msRun><scan num='1'>"]))
def test_random_bytes_into_mzml(data: bytes, fmt: str, prefix: bytes):
    """Random (or XML-looking) bytes into the mzML/mzXML reader: never raises."""
    path = _write(prefix + data, "." + fmt)
    try:
        results = list(read_split(Split(str(path), str(path), fmt)))
        assert all(isinstance(r, (RawRecord, RecordError)) for r in results)
    finally:
        path.unlink()


# -- mutated real records ------------------------------------------------------

def _real_lines(fmt: str) -> list[bytes]:
    import gzip

    if fmt == "massbank":
        text = gzip.decompress(shared_path("massbank", "Agilent.txt.gz").read_bytes())
        text = b"//\n".join(text.split(b"//\n")[:6]) + b"//\n"
    elif fmt == "mgf":
        text = b"END IONS\n".join(shared_path("formats", "pesticides.mgf").read_bytes().split(b"END IONS\n")[:5])
        text += b"END IONS\n"
    elif fmt == "msp":
        text = shared_path("formats", "massbank_five_spectra.msp").read_bytes()
    else:
        items = json.loads(shared_path("formats", "gnps_spectra.json").read_text())
        text = b"".join(json.dumps(i).encode() + b"\n" for i in items)
    return text.splitlines(keepends=True)


_ID_PREFIX = {"massbank": b"ACCESSION:", "mgf": b"SPECTRUMID=", "msp": b"DB#:"}


def _ids_by_line(lines: list[bytes], fmt: str) -> list[tuple[int, int, str]]:
    """(first line, last line, id) of each original record."""
    spans, start, ident = [], 0, ""
    for i, line in enumerate(lines):
        if fmt == "gnps_json":
            spans.append((i, i, json.loads(line)["spectrum_id"]))
            continue
        if line.startswith(_ID_PREFIX[fmt]):
            ident = line.split(_ID_PREFIX[fmt][-1:], 1)[1].strip().decode()
        end = (fmt == "massbank" and line.strip() == b"//") or (fmt == "mgf" and line.strip() == b"END IONS") \
            or (fmt == "msp" and not line.strip())
        if end or i == len(lines) - 1:
            spans.append((start, i, ident))
            start = i + 1
    return spans


_MUTATIONS = st.sampled_from(["delete", "duplicate", "truncate", "garbage", "latin1"])


@SETTINGS
@given(fmt=st.sampled_from(["massbank", "mgf", "msp", "gnps_json"]), kind=_MUTATIONS,
       where=st.floats(0, 0.999), target=st.integers(1, 5000), cut=st.integers(0, 60))
def test_mutated_real_records(fmt: str, kind: str, where: float, target: int, cut: int):
    """A deleted/duplicated/truncated/garbage/latin-1 line: never raises, every record accounted for,
    records two or more away from the damage are still read intact."""
    lines = _real_lines(fmt)
    k = int(where * len(lines))
    mutated = list(lines)
    if kind == "delete":
        del mutated[k]
    elif kind == "duplicate":
        mutated.insert(k, lines[k])
    elif kind == "truncate":
        mutated = mutated[:k] + [lines[k][: cut % max(1, len(lines[k]))]]
    elif kind == "garbage":
        mutated.insert(k, b"\x00\xff garbage \x01 text\n")
    else:
        mutated[k] = lines[k].rstrip(b"\n") + "é".encode("latin-1") + b"\n"
    suffix = ".jsonl" if fmt == "gnps_json" else TEXT_FORMATS[fmt]
    path = _write(b"".join(mutated), suffix)
    try:
        results, planned = _results(path, fmt, target)
        whole, _ = _results(path, fmt, 10**9)
    finally:
        path.unlink()
    _check_accounted(results, planned)
    assert [r.locator for r in results] == [r.locator for r in whole], "splitting changes nothing"
    read_ids = {r.metadata.get("accession") for r in results if isinstance(r, RawRecord)}
    spans = _ids_by_line(lines, fmt)
    damaged = [i for i, (a, b, _) in enumerate(spans) if a <= k <= b + 1]
    for i, (_, _, ident) in enumerate(spans):
        if kind != "truncate" and all(abs(i - d) >= 2 for d in damaged):
            assert ident in read_ids, f"untouched record {ident} lost after {kind} at line {k + 1}"
        if kind == "truncate" and damaged and i < min(damaged) - 1:
            assert ident in read_ids, f"record {ident} before the truncation lost"


@pytest.mark.parametrize("fmt", ["massbank", "mgf", "msp"])
def test_whitespace_only_inputs_are_empty_files(fmt: str):
    """Blank-only files give exactly one empty_file error."""
    path = _write(b" \n\n\t\n", TEXT_FORMATS[fmt])
    try:
        results, planned = _results(path, fmt, 10)
    finally:
        path.unlink()
    assert planned == 0 and [r.reason_code for r in results] == ["empty_file"]
