"""Query spectra read in process (no Spark) by the ingest readers and normalization."""
from __future__ import annotations

from pathlib import Path

import pytest

from speclake.pipelines.spectrum_files import neutral_mass_of, read_spectra
from tests.conftest import SAMPLE


def test_reads_every_spectrum_of_the_shipped_mgf() -> None:
    """The 76 GNPS pesticide spectra come back normalized (sorted peaks, max intensity 1, canonical adduct)."""
    read = read_spectra(SAMPLE / "gnps_pesticides.mgf")
    assert len(read.spectra) == 76 and read.quarantine == []
    row = read.spectra[0]
    assert row["ionmode"] == "negative" and row["ms_level"] == 2
    assert list(row["mz"]) == sorted(row["mz"]) and max(row["intensities"]) == pytest.approx(1.0)
    assert all(r["adduct"] is None or r["adduct"].endswith("-") for r in read.spectra)


def test_bad_records_are_quarantined_not_raised(tmp_path: Path) -> None:
    """A record with text in its peak list lands in quarantine naming the record; the good one is kept."""
    mgf = tmp_path / "two.mgf"
    mgf.write_text("BEGIN IONS\nTITLE=good\nPEPMASS=181.0707\nCHARGE=1+\nMSLEVEL=2\n50.0 10\n90.5 100\nEND IONS\n"
                   "BEGIN IONS\nTITLE=bad\nPEPMASS=200.1\nCHARGE=1+\nMSLEVEL=2\n50.0 ten\nEND IONS\n")
    read = read_spectra(mgf)
    assert [r["title"] for r in read.spectra] == ["good"]
    assert len(read.quarantine) == 1 and read.quarantine[0]["reason_code"] == "peak_parse_error"
    assert "record 2" in read.quarantine[0]["record_locator"]


def test_unknown_format_names_the_file(tmp_path: Path) -> None:
    """A file of no known format is refused with its name in the message."""
    junk = tmp_path / "notes.docx"
    junk.write_bytes(b"\x00\x01binary")
    with pytest.raises(ValueError, match="notes.docx"):
        read_spectra(junk)


@pytest.mark.parametrize(("row", "expected"), [
    ({"precursor_mz": 181.07066, "adduct": "[M+H]+"}, 180.06338),            # glucose-like [M+H]+
    ({"precursor_mz": 179.05611, "adduct": None, "ionmode": "negative"}, 180.06338),  # [M-H]- by ion mode
    ({"precursor_mz": 361.13405, "adduct": "[2M+H]+"}, 180.06338),
    ({"precursor_mz": None, "adduct": "[M+H]+"}, None),
    ({"precursor_mz": 100.0, "adduct": None, "ionmode": None}, None),
])
def test_neutral_mass_from_precursor_and_adduct(row: dict, expected: float | None) -> None:
    """Neutral mass = (m/z * |z| - adduct shift) / n; unknown when precursor or ion mode is missing."""
    got = neutral_mass_of(row)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected, abs=2e-4)
