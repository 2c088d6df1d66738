"""Format detection, input discovery and split planning (same records however a file is split)."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from speclake.pipelines.readers import read_split
from speclake.pipelines.readers.splits import detect_format, expand_inputs, plan_file, plan_splits
from tests.conftest import shared_path
from tests.pipelines.readers.conftest import errors, fingerprint, formats_file, read_file


@pytest.mark.parametrize("name, content, fmt", [
    ("a.mgf", b"", "mgf"), ("a.MGF.gz", None, "mgf"), ("a.msp", b"", "msp"), ("a.json", b"", "gnps_json"),
    ("a.mzML", b"", "mzml"), ("a.mzXML", b"", "mzxml"),
    ("rec.txt", b"ACCESSION: MSBNK-X\n", "massbank"), ("Eawag.txt.gz", None, "massbank"),
    ("lib.txt", b"# c\nBEGIN IONS\nPEPMASS=1\n", "mgf"), ("lib.txt", b"NAME: x\nNum Peaks: 1\n", "msp"),
    ("lib.dat", b"Name: x\nDB#: 1\n", "msp"),
])
def test_detect_format_by_extension_and_content(tmp_path: Path, name: str, content: bytes | None, fmt: str):
    """Extensions (also under .gz) decide; .txt and unknown extensions are sniffed."""
    path = tmp_path / name
    if content is None:
        path.write_bytes(gzip.compress(b"ACCESSION: MSBNK-X\n//\n" if fmt == "massbank" else b"BEGIN IONS\n"))
    else:
        path.write_bytes(content)
    assert detect_format(str(path)) == fmt


def test_detect_format_unknown_names_supported_formats(tmp_path: Path):
    """Unrecognised content raises ValueError listing the supported formats."""
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="massbank, mgf, msp, gnps_json, mzml, mzxml"):
        detect_format(str(path))


def test_expand_inputs_walks_a_massbank_checkout(tmp_path: Path):
    """Directories: record files found recursively, README/LICENSE/list and hidden dirs skipped, sorted."""
    for rel in ("Eawag/EA000001.txt", "Eawag/EA000002.txt", "Athens/AU1.txt", "README.md", "LICENSE.txt",
                "list.txt", ".git/x.txt", ".scripts/y.txt", "notes.pdf"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("ACCESSION: X\n//\n")
    extra = tmp_path / "single.mgf"
    extra.write_text("")
    found = expand_inputs([str(tmp_path), str(extra)])
    assert [Path(p).relative_to(tmp_path).as_posix() for p in found] == [
        "Athens/AU1.txt", "Eawag/EA000001.txt", "Eawag/EA000002.txt", "single.mgf"]
    with pytest.raises(FileNotFoundError):
        expand_inputs([str(tmp_path / "missing")])


def _assert_same_records(path: Path, tmp_path: Path, min_splits: int) -> None:
    whole = read_file(path, tmp_path / "one")
    splits = plan_file(str(path), str(tmp_path / "many"), target_bytes=700)
    many = [r for s in splits for r in read_split(s)]
    assert len(splits) >= min_splits, f"only {len(splits)} splits"
    assert fingerprint(many) == fingerprint(whole)
    assert sum(int(s.extra["records"]) for s in splits) == len(whole), "planner counts what readers yield"
    for s in splits:
        assert int(s.extra["records"]) == len(list(read_split(s))), s


def test_massbank_gz_splits_equal_one_split(tmp_path: Path):
    """Univ_Toyama.txt.gz (244 records) staged in ~700-byte chunks reads exactly as one split."""
    _assert_same_records(shared_path("massbank", "Univ_Toyama.txt.gz"), tmp_path, min_splits=50)


@pytest.mark.parametrize("name", ["pesticides.mgf", "MoNA-export-GC-MS-first10.msp", "massbank_five_spectra.msp"])
def test_text_byte_range_splits_equal_one_split(tmp_path: Path, name: str):
    """Uncompressed MGF/MSP cut into byte ranges read exactly as one split."""
    _assert_same_records(formats_file(name), tmp_path, min_splits=3)


def test_byte_range_splits_start_on_records(tmp_path: Path):
    """Each byte-range split starts at its first record's byte, with its true index and line."""
    path = formats_file("pesticides.mgf")
    data = path.read_bytes()
    splits = plan_file(str(path), str(tmp_path), target_bytes=20_000)
    assert splits[0].start == 0 and splits[-1].end == len(data)
    for prev, cur in zip(splits, splits[1:]):
        assert prev.end == cur.start and data[cur.start:].startswith(b"BEGIN IONS")
        assert cur.first_line == data[: cur.start].count(b"\n") + 1
        assert cur.first_record == data[: cur.start].count(b"BEGIN IONS")
        assert cur.path == str(path) == cur.source_file


def test_gzip_is_staged_once_and_cut_with_true_positions(tmp_path: Path, massbank_gz: Path, massbank_text: bytes):
    """A gzip input is decompressed once under staging_dir and cut into byte ranges at record starts;
    first_line/first_record refer to the original file."""
    splits = plan_file(str(massbank_gz), str(tmp_path), target_bytes=10_000)
    assert len(splits) > 2
    staged = Path(splits[0].path)
    assert staged.parent == tmp_path and staged.read_bytes() == massbank_text, "the decompressed file"
    assert all(s.path == str(staged) and s.source_file == str(massbank_gz) for s in splits)
    assert splits[0].start == 0 and splits[-1].end == len(massbank_text)
    for prev, cur in zip(splits, splits[1:]):
        assert prev.end == cur.start and massbank_text[cur.start:].startswith(b"ACCESSION:")
        assert cur.first_line == massbank_text[: cur.start].count(b"\n") + 1
        assert cur.first_record == massbank_text[: cur.start].count(b"ACCESSION:")
    results = [r for s in splits for r in read_split(s)]
    assert len(results) == 33 and not errors(results)
    assert results[5].locator.startswith("record 6 (line ")


def test_gnps_json_staged_when_large(tmp_path: Path):
    """A JSON array over target_bytes is staged as JSON Lines chunks marked layout=jsonl."""
    splits = plan_file(str(formats_file("gnps_spectra.json")), str(tmp_path), target_bytes=10_000)
    assert len(splits) >= 2 and all(s.extra["layout"] == "jsonl" for s in splits)
    assert [s.first_record for s in splits] == sorted({s.first_record for s in splits})


def test_empty_files_still_get_a_split(tmp_path: Path):
    """Empty inputs of every text format produce one split whose reader yields empty_file."""
    for name in ("e.txt", "e.mgf", "e.msp", "e.json", "e.mgf.gz"):
        path = tmp_path / name
        path.write_bytes(gzip.compress(b"") if name.endswith(".gz") else b"")
        splits = plan_splits([str(path)], str(tmp_path / "stage"))
        assert len(splits) == 1, name
        assert [r.reason_code for r in read_split(splits[0])] == ["empty_file"], name


def test_corrupt_gzip_reports_read_error(tmp_path: Path, massbank_gz: Path):
    """A gzip cut short: records before the cut are read, the cut record is truncated, then read_error."""
    path = tmp_path / "cut.txt.gz"
    path.write_bytes(massbank_gz.read_bytes()[:3000])
    results = read_file(path, tmp_path / "stage")
    codes = [getattr(r, "reason_code", "ok") for r in results]
    assert codes[-1] == "read_error" and codes[-2] == "truncated_record" and codes.count("ok") >= 1
