"""MassBank reader: real records, key mapping, malformed records."""
from __future__ import annotations

from pathlib import Path

from speclake.pipelines.readers.massbank import parse_record
from speclake.pipelines.readers.base import RAW_KEYS, RawRecord
from tests.conftest import shared_path
from tests.pipelines.readers.conftest import errors, read_file, read_whole, records

RECORD = b"""ACCESSION: MSBNK-TEST-TS000001
RECORD_TITLE: Testine; LC-ESI-QTOF; MS3; CE: 20
DATE: 2024.01.01
AUTHORS: Tester T
LICENSE: CC0
CH$NAME: Testine
CH$NAME: 2-Testyl-ethanol
CH$NAME: TST
CH$FORMULA: C2H6O
CH$EXACT_MASS: 46.0419
CH$SMILES: CCO
CH$IUPAC: InChI=1S/C2H6O/c1-2-3/h3H,2H2,1H3
CH$LINK: CAS 64-17-5
CH$LINK: INCHIKEY LFQSCWFLJHTTHZ-UHFFFAOYSA-N
CH$LINK: ChemOnt CHEMONTID:0000001; Organic compounds
CH$LINK: ChemOnt CHEMONTID:0000002; Alcohols
COMMENT: first comment
COMMENT: second comment
AC$INSTRUMENT: Test QTOF
AC$INSTRUMENT_TYPE: LC-ESI-QTOF
AC$MASS_SPECTROMETRY: MS_TYPE MS3
AC$MASS_SPECTROMETRY: ION_MODE POSITIVE
AC$MASS_SPECTROMETRY: COLLISION_ENERGY 20 eV
AC$CHROMATOGRAPHY: RETENTION_TIME 3.2 min
MS$FOCUSED_ION: ION_TYPE [M+H]+
MS$FOCUSED_ION: PRECURSOR_M/Z 47.049/29.039
MS$FOCUSED_ION: PRECURSOR_TYPE [M+H]+/[M+H-H2O]+
PK$SPLASH: splash10-0000-0000000000-000000000000000000000
PK$ANNOTATION: m/z tentative_formula formula_count mass error(ppm)
  19.0178 H3O+ 1 19.0178 0.5
  garbage row here
  27.0229 C2H3+ 1 27.0229 0.001(3.66)
PK$NUM_PEAK: 2
PK$PEAK: m/z int. rel.int.
  19.0178 1200.5 999
  27.0229 300 250
//
"""


N_LINES = RECORD.count(b"\n")


def line_of(data: bytes, needle: bytes) -> int:
    """1-based line number of the first line containing ``needle``."""
    return data[: data.index(needle)].count(b"\n") + 1


def test_record_keys_map_to_matchms_names_with_raw_values():
    """Every MassBank tag the brief names lands under its matchms name, values as written."""
    parsed = parse_record(RECORD.decode(), 1)
    m = parsed.metadata
    assert set(m) <= set(RAW_KEYS), f"non-RAW_KEYS metadata: {set(m) - set(RAW_KEYS)}"
    assert m["accession"] == "MSBNK-TEST-TS000001"
    assert m["compound_name"] == "Testine" and m["synonyms"] == ["2-Testyl-ethanol", "TST"]
    assert m["inchikey"] == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert m["chemont"] == ["CHEMONTID:0000001; Organic compounds", "CHEMONTID:0000002; Alcohols"]
    assert m["ms_level"] == "MS3" and m["ionmode"] == "POSITIVE"
    assert m["collision_energy"] == "20 eV" and m["retention_time"] == "3.2 min"
    assert m["license"] == "CC0" and m["date"] == "2024.01.01"
    assert m["precursor_mz_chain"] == ["47.049", "29.039"], "MS3 chain lists each stage"
    assert m["precursor_mz"] == "29.039", "precursor_mz is the last stage"
    assert m["adduct"] == "[M+H]+/[M+H-H2O]+", "PRECURSOR_TYPE wins over ION_TYPE, kept as written"


def test_repeated_and_unmapped_tags_go_to_extra():
    """COMMENT repeats are joined, CH$LINK subtags and ION_TYPE (shadowed) are kept in extra."""
    extra = parse_record(RECORD.decode(), 1).extra
    assert extra["COMMENT"] == "first comment\nsecond comment"
    assert extra["CH$LINK: CAS"] == "64-17-5"
    assert extra["MS$FOCUSED_ION: ION_TYPE"] == "[M+H]+"
    assert extra["MS$FOCUSED_ION: PRECURSOR_M/Z"] == "47.049/29.039"


def test_peaks_use_int_column_and_annotations_parse_by_header():
    """Peaks take the int. column; annotation rows give (mz, formula, ppm); a bad row is noted, not fatal."""
    parsed = parse_record(RECORD.decode(), 1)
    assert parsed.mz == (19.0178, 27.0229)
    assert parsed.intensities == (1200.5, 300.0)
    assert parsed.metadata["peak_annotations"] == [(19.0178, "H3O+", 0.5), (27.0229, "C2H3+", 3.66)]
    expected = f"line {line_of(RECORD, b'garbage row')}"
    assert expected in parsed.extra["annotation_rows_skipped"], parsed.extra["annotation_rows_skipped"]


def test_real_massbank_file_reads_every_record(tmp_path: Path):
    """Univ_Toyama.txt.gz: all 244 records read, locators number them 1..244 with accessions."""
    path = shared_path("massbank", "Univ_Toyama.txt.gz")
    results = read_file(path, tmp_path)
    assert len(results) == 244 and not errors(results), [e.reason for e in errors(results)][:3]
    first = results[0]
    assert first.locator == "record 1 (line 1) MSBNK-Univ_Toyama-TY000001"
    assert results[-1].locator.startswith("record 244 (line ")
    assert all(r.fmt == "massbank" and r.source_file == str(path) for r in results)


def test_agilent_first_record_values(tmp_path: Path, massbank_gz: Path):
    """Agilent.txt.gz record 1: metadata values and 22 peaks as in the file."""
    results = read_file(massbank_gz, tmp_path)
    assert len(records(results)) == 33
    rec = results[0]
    assert isinstance(rec, RawRecord)
    assert rec.metadata["compound_name"] == "Hexaflumuron"
    assert rec.metadata["precursor_mz"] == "458.9743403052"
    assert rec.metadata["adduct"] == "[M-H]-"
    assert rec.metadata["instrument"] == "N/A", "values stay raw; normalization decides about N/A"
    assert rec.metadata["splash"] == "splash10-00di-1910000000-6ef8268efd1785883ee8"
    assert len(rec.mz) == 22 and rec.mz[0] == 68.995758 and rec.intensities[0] == 4.306271
    assert rec.raw_excerpt.startswith("ACCESSION: MSBNK-AGILENT-AG000004")


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "records.txt"
    path.write_bytes(data)
    return path


def _second(data: bytes) -> bytes:
    return data.replace(b"MSBNK-TEST-TS000001", b"MSBNK-TEST-TS000002")


def test_truncated_record_in_the_middle_and_at_the_end(tmp_path: Path):
    """A record without // is truncated_record (middle: closed by next ACCESSION; end of file)."""
    truncated = RECORD.replace(b"//\n", b"")
    path = _write(tmp_path, truncated + _second(RECORD) + truncated[:300])
    results = read_whole(path, "massbank")
    codes = [getattr(r, "reason_code", "ok") for r in results]
    assert codes == ["truncated_record", "ok", "truncated_record"], codes
    assert results[0].locator == "record 1 (line 1) MSBNK-TEST-TS000001"
    assert results[1].metadata["accession"] == "MSBNK-TEST-TS000002"
    third_line = truncated.count(b"\n") + N_LINES + 1
    assert results[2].locator == f"record 3 (line {third_line}) MSBNK-TEST-TS000001"


def test_text_in_peak_list_names_the_line(tmp_path: Path):
    """A text row in PK$PEAK is peak_parse_error naming its line; the next record is still read."""
    bad = RECORD.replace(b"  27.0229 300 250", b"  27.0229 lots 250")
    results = read_whole(_write(tmp_path, bad + _second(RECORD)), "massbank")
    assert results[0].reason_code == "peak_parse_error"
    assert f"line {line_of(bad, b'lots')}" in results[0].reason, results[0].reason
    assert isinstance(results[1], RawRecord)


def test_num_peak_mismatch_and_no_peaks(tmp_path: Path):
    """PK$NUM_PEAK disagreeing with the block → num_peaks_mismatch; an empty block → no_peaks."""
    mismatch = RECORD.replace(b"PK$NUM_PEAK: 2", b"PK$NUM_PEAK: 3")
    empty = _second(RECORD).split(b"  19.0178 1200.5")[0] + b"//\n"
    results = read_whole(_write(tmp_path, mismatch + empty + RECORD), "massbank")
    assert [getattr(r, "reason_code", "ok") for r in results] == ["num_peaks_mismatch", "no_peaks", "ok"]


def test_empty_file_yields_one_error(tmp_path: Path):
    """An empty (or blank) file gives exactly one empty_file error, so the file does not vanish."""
    for content in (b"", b"\n\n  \n"):
        results = read_whole(_write(tmp_path, content), "massbank")
        assert [r.reason_code for r in results] == ["empty_file"]


def test_latin1_record_is_encoding_error_and_neighbours_read(tmp_path: Path):
    """Latin-1 bytes in one record → encoding_error naming the line; records around it are read."""
    latin = _second(RECORD).replace(b"COMMENT: first comment", "COMMENT: café".encode("latin-1"))
    results = read_whole(_write(tmp_path, RECORD + latin + RECORD), "massbank")
    codes = [getattr(r, "reason_code", "ok") for r in results]
    assert codes == ["ok", "encoding_error", "ok"]
    assert results[1].locator == f"record 2 (line {N_LINES + 1}) MSBNK-TEST-TS000002"
    assert f"line {N_LINES + line_of(latin, b'COMMENT: caf')}" in results[1].reason, results[1].reason


def test_binary_garbage_is_not_text(tmp_path: Path):
    """A block of binary bytes between records → not_text; the records around it are read."""
    garbage = bytes(range(256)) * 4 + b"\n//\n"
    results = read_whole(_write(tmp_path, RECORD + garbage + RECORD), "massbank")
    assert [getattr(r, "reason_code", "ok") for r in results] == ["ok", "not_text", "ok"]


def test_bundled_sample_reads_cleanly(tmp_path: Path):
    """speclake/sample's library files (what `speclake ingest` reads by default; the study/ folder beside them
    is the demo's LC-MS/MS run, not library): 293 CC BY/CC0 MassBank records + 76 GNPS spectra, no errors,
    annotations present."""
    from speclake.cli import sample_inputs
    from speclake.pipelines.readers import read_split
    from speclake.pipelines.readers.splits import plan_splits

    results = [r for s in plan_splits(sample_inputs(), str(tmp_path)) for r in read_split(s)]
    assert not errors(results), [e.reason for e in errors(results)][:3]
    by_fmt = {fmt: [r for r in results if r.fmt == fmt] for fmt in ("massbank", "mgf")}
    assert (len(by_fmt["massbank"]), len(by_fmt["mgf"])) == (293, 76)
    assert {r.metadata["license"] for r in by_fmt["massbank"]} == {"CC BY", "CC0"}
    assert sum("peak_annotations" in r.metadata for r in by_fmt["massbank"]) >= 100
    assert {r.metadata["ms_level"] for r in by_fmt["massbank"]} == {"MS", "MS2", "MS3", "MSn"}
