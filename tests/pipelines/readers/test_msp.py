"""MSP reader: NIST, MoNA, MassBank-export and RIKEN dialects; malformed records."""
from __future__ import annotations

from pathlib import Path

from speclake.pipelines.readers.base import RAW_KEYS
from speclake.pipelines.readers.msp import comment_pairs, parse_record
from tests.pipelines.readers.conftest import errors, formats_file, read_file, read_whole, records

NIST = """Name: Testane
DB#: T-1
Precursor_type: [M+H]+
PrecursorMZ: 100.5
Num Peaks: 5
51 2; 55 8;
57 7.33; 58 1.33
60\t14 "b1 ion"
"""


def test_massbank_export_msp(tmp_path: Path):
    """massbank_five_spectra.msp: 5 records; first (ADP) metadata and its 2 peaks."""
    results = read_file(formats_file("massbank_five_spectra.msp"), tmp_path)
    assert len(records(results)) == 5
    adp = results[0]
    assert adp.locator == "record 1 (line 1) PS010904"
    assert adp.metadata["compound_name"] == "ADP" and adp.metadata["precursor_mz"] == "428.31"
    assert adp.metadata["synonyms"] == ["Adenosine-5'-diphosphate Di(monocyclohexylammonium)salt"]
    assert adp.metadata["ionmode"] == "POSITIVE" and adp.metadata["ms_level"] == "MS2"
    assert adp.mz == (135.0, 136.0) and adp.intensities == (83.0, 999.0)
    assert results[1].metadata["adduct"] == "[M-H]-"


def test_riken_style_upper_case_keys(tmp_path: Path):
    """riken_style_five_spectra.msp: records start with INCHIKEY; upper-case keys map the same."""
    results = read_file(formats_file("riken_style_five_spectra.msp"), tmp_path)
    assert len(records(results)) == 5
    kojic = results[1]
    assert kojic.metadata["compound_name"] == "Kojic acid"
    assert kojic.metadata["adduct"] == "[M-H]-" and kojic.metadata["precursor_mz"] == "141.0193"
    assert kojic.metadata["inchikey"] == "BEJNERDRQOWKJM-UHFFFAOYSA-N"
    assert kojic.metadata["instrument_type"] == "LC-ESI-ITFT"
    assert len(results[2].mz) == 3


def test_mona_comments_fill_missing_keys(tmp_path: Path):
    """MoNA GC-MS export: 10 records, 75 peaks in the first; SMILES/InChI/ion type/licence from Comments."""
    results = read_file(formats_file("MoNA-export-GC-MS-first10.msp"), tmp_path)
    assert len(records(results)) == 10 and not errors(results)
    first = results[0]
    assert len(first.mz) == 75
    m = first.metadata
    assert set(m) <= set(RAW_KEYS)
    assert m["license"] == "CC BY-NC-SA" and m["adduct"] == "[M]+*" and m["ionmode"] == "positive"
    assert m["smiles"] == "[O-1][N+1](=O)c(c4)c(c1)c(c3c4)c(c2cc3)c(ccc2)c1", "first SMILES pair wins"
    assert m["inchi"].startswith("InChI=1S/C16H9NO2")
    assert first.extra["Comments: ionization energy"] == "70 eV"


def test_nist_quoted_comments(tmp_path: Path):
    """comments_with_quotes.msp: key="value" pairs parsed (values with commas kept whole); 248 peaks."""
    results = read_file(formats_file("comments_with_quotes.msp"), tmp_path)
    rec = results[0]
    assert len(rec.mz) == 248
    assert rec.extra["Comments: ColumnType"] == "Semi-standard non-polar, TG-5SILMSwith10mGuard, 30mx0.25mmx0.25um"
    assert rec.extra["Comments: Resolution"] == "60,000"
    assert comment_pairs('"a=1" "b=x=y"') == [("a", "1"), ("b", "x=y")]


def test_multi_pair_lines_and_quoted_annotations():
    """NIST '51 2; 55 8;' lines and a quoted annotation after a peak parse to 5 peaks."""
    parsed = parse_record(NIST, 1)
    assert parsed.mz == (51.0, 55.0, 57.0, 58.0, 60.0)
    assert parsed.intensities == (2.0, 8.0, 7.33, 1.33, 14.0)
    assert parsed.extra["peak_comments"] == "60\tb1 ion"


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "x.msp"
    path.write_bytes(data)
    return path


def test_malformed_records(tmp_path: Path):
    """Num Peaks mismatch, text in peaks, no peaks, latin-1: each its error; good records read."""
    good = NIST.encode() + b"\n"
    mismatch = good.replace(b"Num Peaks: 5", b"Num Peaks: 6")
    text = good.replace(b"57 7.33", b"57 much")
    nopeaks = b"Name: Nothing\nDB#: T-9\nNum Peaks: 0\n\n"
    latin = good.replace(b"Testane", "Testané".encode("latin-1"))
    results = read_whole(_file(tmp_path, good + mismatch + text + nopeaks + latin + good), "msp")
    codes = [getattr(r, "reason_code", "ok") for r in results]
    assert codes == ["ok", "num_peaks_mismatch", "peak_parse_error", "no_peaks", "encoding_error", "ok"]
    assert results[2].locator == "record 3 (line 19) T-1" and "line 25" in results[2].reason
    assert results[3].locator == "record 4 (line 28) T-9"


def test_missing_blank_line_between_records_still_splits_at_name(tmp_path: Path):
    """Two records without a blank line between them are still two records (split at Name:)."""
    data = NIST.encode() + NIST.encode().replace(b"T-1", b"T-2")
    results = read_whole(_file(tmp_path, data), "msp")
    assert [r.metadata["accession"] for r in records(results)] == ["T-1", "T-2"]
