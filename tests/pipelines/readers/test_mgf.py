"""MGF reader: the GNPS pesticides library, key mapping, malformed spectra."""
from __future__ import annotations

from pathlib import Path

from speclake.pipelines.readers.base import RAW_KEYS, RawRecord
from speclake.pipelines.readers.mgf import parse_record
from tests.pipelines.readers.conftest import errors, formats_file, read_file, read_whole, records

SPECTRUM = b"""BEGIN IONS
PEPMASS=183.057 1500.5
CHARGE=1
MSLEVEL=2
IONMODE=negative
NAME=Fuberidazole M-H
SMILES=C1=CC=C2C(=C1)NC(=N2)C3=CC=CO3
INCHIAUX=N/A
INCHI= 
SPECTRUMID=CCMSLIB00000000001
RTINSECONDS=302.1
70.78 213.6
94.91 10964.5
END IONS
"""


def test_pesticides_has_76_spectra_with_gnps_metadata(tmp_path: Path):
    """pesticides.mgf: 76 spectra, first one's metadata and 53 peaks, last one's 70 peaks."""
    results = read_file(formats_file("pesticides.mgf"), tmp_path)
    assert len(results) == 76 and not errors(results)
    first, last = results[0], results[-1]
    assert first.locator == "record 1 (line 1) CCMSLIB00001058235"
    assert first.metadata["precursor_mz"] == "183.057"
    assert first.metadata["compound_name"] == "Pesticide6_Fuberidazole_C11H8N2O_2-(2-Furyl)-1H-benzimidazole M-H"
    assert first.metadata["adduct"] == "M-H", "trailing GNPS adduct taken from NAME"
    assert first.metadata["ionmode"] == "negative" and first.metadata["scan_number"] == "675"
    assert first.metadata["instrument"] == "-Q-Exactive Plus Orbitrap Res 70k"
    assert "inchi" in first.metadata and "INCHIAUX" in first.extra, "N/A INCHIAUX stays out of metadata"
    assert len(first.mz) == 53 and first.mz[0] == 70.786774 and first.intensities[0] == 213.612045
    assert last.metadata["accession"] == "CCMSLIB00001058471" and len(last.mz) == 70


def test_testdata_missing_values_are_not_metadata(tmp_path: Path):
    """testdata.mgf: 30 spectra; IONMODE=n/a and blank SMILES do not reach metadata."""
    results = read_file(formats_file("testdata.mgf"), tmp_path)
    assert len(records(results)) == 30
    first = results[0]
    assert "ionmode" not in first.metadata and first.extra["IONMODE"] == "n/a"
    assert "smiles" not in first.metadata


def test_keys_and_missing_values():
    """PEPMASS tokens, RTINSECONDS unit, n/a and blank values treated as missing."""
    m = parse_record(SPECTRUM.decode(), 1).metadata
    assert set(m) <= set(RAW_KEYS)
    assert m["precursor_mz"] == "183.057" and m["precursor_intensity"] == "1500.5"
    assert m["retention_time"] == "302.1 s"
    assert "inchi" not in m and "inchikey" not in m
    assert m["accession"] == "CCMSLIB00000000001"


def test_adduct_key_wins_over_name_suffix():
    """With an ADDUCT key, NAME's trailing adduct is not used."""
    text = SPECTRUM.decode().replace("CHARGE=1", "ADDUCT=[M-H]-")
    assert parse_record(text, 1).metadata["adduct"] == "[M-H]-"


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "x.mgf"
    path.write_bytes(data)
    return path


def test_malformed_spectra_are_errors_and_neighbours_survive(tmp_path: Path):
    """Truncated, text-in-peaks, latin-1 and binary spectra each give their error; good ones read."""
    second = SPECTRUM.replace(b"00000000001", b"00000000002")
    text_peak = SPECTRUM.replace(b"70.78 213.6", b"70.78 abc")
    latin = SPECTRUM.replace(b"Fuberidazole", "Fuberidazolé".encode("latin-1"))
    binary = b"BEGIN IONS\n" + bytes(range(1, 256)) * 3 + b"\nEND IONS\n"
    truncated = SPECTRUM.replace(b"END IONS\n", b"")
    data = SPECTRUM + text_peak + latin + binary + second + truncated
    results = read_whole(_file(tmp_path, data), "mgf")
    codes = [getattr(r, "reason_code", "ok") for r in results]
    assert codes == ["ok", "peak_parse_error", "encoding_error", "not_text", "ok", "truncated_record"], codes
    n = SPECTRUM.count(b"\n")
    assert results[1].locator == f"record 2 (line {n + 1}) CCMSLIB00000000001"
    assert f"line {n + 12}" in results[1].reason
    assert results[4].metadata["accession"] == "CCMSLIB00000000002"


def test_empty_file_and_stray_text(tmp_path: Path):
    """Empty file → empty_file; text between spectra → one unexpected_text error."""
    assert [r.reason_code for r in read_whole(_file(tmp_path, b""), "mgf")] == ["empty_file"]
    results = read_whole(_file(tmp_path, SPECTRUM + b"stray words\n" + SPECTRUM), "mgf")
    assert [getattr(r, "reason_code", "ok") for r in results] == ["ok", "unexpected_text", "ok"]
    assert isinstance(results[2], RawRecord) and results[2].locator.startswith("record 3 ")
