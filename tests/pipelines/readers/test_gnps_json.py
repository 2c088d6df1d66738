"""GNPS JSON reader: arrays read in place, staged JSON Lines, malformed JSON."""
from __future__ import annotations

import json
from pathlib import Path

from speclake.pipelines.readers import read_split
from speclake.pipelines.readers.base import RAW_KEYS, Split
from tests.pipelines.readers.conftest import errors, fingerprint, formats_file, read_file, records


def test_gnps_array_keys_and_peaks(tmp_path: Path):
    """gnps_spectra.json: 5 records; GNPS keys map to matchms names; peaks from peaks_json."""
    path = formats_file("gnps_spectra.json")
    results = read_file(path, tmp_path)
    assert len(records(results)) == 5 and not errors(results)
    first = results[0]
    assert first.locator == "record 1 CCMSLIB00000001547"
    m = first.metadata
    assert set(m) <= set(RAW_KEYS)
    assert m["compound_name"] == "3-Des-Microcystein_LR" and m["precursor_mz"] == "981.54"
    assert m["adduct"] == "M+H" and m["ionmode"] == "Positive" and m["library"] == "GNPS-LIBRARY"
    assert "inchi" not in m, "INCHI N/A is missing"
    expected = json.loads(json.load(open(path))[0]["peaks_json"])
    assert len(first.mz) == len(expected) and first.mz[0] == expected[0][0]
    assert results[3].metadata["inchikey"] == "CGZKSPLDUIRCIO-RPCRKUJJSA-N", "INCHI_AUX holding a key"
    assert "annotation_history" in first.extra


def test_staged_chunks_equal_array_read(tmp_path: Path):
    """Tiny target: one staged JSON Lines chunk per record; same locators and peaks as one split."""
    path = formats_file("gnps_spectra.json")
    whole = read_file(path, tmp_path / "a")
    split = read_file(path, tmp_path / "b", target_bytes=1)
    assert fingerprint(split) == fingerprint(whole)


def test_jsonl_file_and_bad_line(tmp_path: Path):
    """A user JSON Lines file: a broken line is json_error with its line; other lines read."""
    rec = {"spectrum_id": "X1", "peaks_json": "[[100.0, 5.0]]", "Precursor_MZ": "200"}
    path = tmp_path / "lib.jsonl"
    path.write_text(json.dumps(rec) + "\n{broken\n" + json.dumps({**rec, "spectrum_id": "X2"}) + "\n")
    results = read_file(path, tmp_path / "s")
    codes = [getattr(r, "reason_code", "ok") for r in results]
    assert codes == ["ok", "json_error", "ok"]
    assert results[1].locator == "record 2 (line 2)" and "Line 2" in results[1].reason
    assert results[2].locator == "record 3 (line 3) X2"


def test_truncated_array_keeps_records_before_the_error(tmp_path: Path):
    """An array cut mid-way: records before the cut are read, then one json_error (in place and staged)."""
    rec = {"spectrum_id": "X1", "peaks_json": "[[100.0, 5.0]]"}
    text = json.dumps([rec, {**rec, "spectrum_id": "X2"}, rec])
    path = tmp_path / "cut.json"
    path.write_text(text[: len(text) - 20])
    for target in (1, 8 * 2**20):
        results = read_file(path, tmp_path / f"s{target}", target_bytes=target)
        assert [getattr(r, "reason_code", "ok") for r in results] == ["ok", "ok", "json_error"], target
        assert results[2].locator == "record 3"


def test_empty_and_non_record_items(tmp_path: Path):
    """Empty file and [] → empty_file; a number in the array and missing peaks → errors, not crashes."""
    for name, content in (("e.json", ""), ("a.json", "[]")):
        path = tmp_path / name
        path.write_text(content)
        assert [r.reason_code for r in read_file(path, tmp_path / "s")] == ["empty_file"]
    path = tmp_path / "odd.json"
    path.write_text(json.dumps([3, {"spectrum_id": "N"}, {"peaks_json": "[[1, 2], [\"x\"]]"}]))
    results = list(read_split(Split(str(path), str(path), "gnps_json")))
    assert [r.reason_code for r in results] == ["json_error", "no_peaks", "peak_parse_error"]
