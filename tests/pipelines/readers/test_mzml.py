"""mzML/mzXML reader (pyteomics): MS2 scans with precursor data, MS1 skipped, index ranges."""
from __future__ import annotations

from pathlib import Path

from speclake.pipelines.readers import read_split
from speclake.pipelines.readers.base import RAW_KEYS, RawRecord, Split
from speclake.pipelines.readers.splits import plan_file
from tests.pipelines.readers.conftest import errors, formats_file, records

MZXML = """<?xml version="1.0" encoding="ISO-8859-1"?>
<mzXML xmlns="http://sashimi.sourceforge.net/schema_revision/mzXML_3.2">
 <msRun scanCount="3">
  <scan num="1" msLevel="1" peaksCount="1" polarity="+" retentionTime="PT60S">
   <peaks precision="32" byteOrder="network" contentType="m/z-int" compressionType="none">Q8gAAEUcQAA=</peaks>
  </scan>
  <scan num="2" msLevel="2" peaksCount="1" polarity="+" retentionTime="PT61S" collisionEnergy="35">
   <precursorMz precursorScanNum="1" precursorCharge="1" activationMethod="CID">400.0</precursorMz>
   <peaks precision="32" byteOrder="network" contentType="m/z-int" compressionType="none">Q8gAAEUcQAA=</peaks>
  </scan>
  <scan num="3" msLevel="3" peaksCount="1" polarity="+" retentionTime="PT62S">
   <precursorMz precursorScanNum="2" precursorCharge="1" activationMethod="CID">250.0</precursorMz>
   <peaks precision="32" byteOrder="network" contentType="m/z-int" compressionType="none">Q8gAAEUcQAA=</peaks>
  </scan>
 </msRun>
</mzXML>
"""


def test_mzml_ms2_scans_only(tmp_path: Path):
    """testdata.mzml: 12 spectra, 2 MS1 skipped → 10 MS2 records with precursor m/z, charge, RT."""
    path = formats_file("testdata.mzml")
    results = [r for s in plan_file(str(path), str(tmp_path)) for r in read_split(s)]
    assert len(records(results)) == 10 and not errors(results)
    first = results[0]
    assert first.locator == "scan=2 (index 1)"
    m = first.metadata
    assert set(m) <= set(RAW_KEYS)
    assert m["ms_level"] == "2" and m["ionmode"] == "positive" and m["charge"] == "1"
    assert float(m["precursor_mz"]) == 207.159239418523
    assert m["retention_time"] == "0.616304 s"
    assert m["fragmentation_mode"] == "beam-type collision-induced dissociation"
    assert len(first.mz) == 30


def test_mzml_index_ranges_cover_the_same_scans(tmp_path: Path):
    """Tiny target: the file is cut into spectrum-index ranges giving the same 10 records."""
    path = formats_file("testdata.mzml")
    splits = plan_file(str(path), str(tmp_path), target_bytes=10_000)
    assert len(splits) > 1 and all("index_start" in s.extra for s in splits)
    results = [r for s in splits for r in read_split(s)]
    assert [r.locator for r in results] == [f"scan={i + 1} (index {i})" for i in (1, 2, 3, 4, 5, 6, 7, 8, 10, 11)]


def test_mzxml_msn_chain(tmp_path: Path):
    """mzXML: MS1 skipped; MS3 scan gets precursor_mz_chain from its MS2 parent."""
    path = tmp_path / "run.mzXML"
    path.write_text(MZXML)
    results = list(read_split(Split(str(path), str(path), "mzxml")))
    assert [r.locator for r in results] == ["scan=2 (index 1)", "scan=3 (index 2)"]
    ms2, ms3 = results
    assert isinstance(ms2, RawRecord) and ms2.metadata["precursor_mz"] == "400.0"
    assert ms2.metadata["collision_energy"] == "35.0" and ms2.metadata["fragmentation_mode"] == "CID"
    assert ms3.metadata["precursor_mz_chain"] == ["400.0", "250.0"]
    assert ms3.mz == (400.0,) and ms3.intensities == (2500.0,)


def test_unreadable_and_empty_files(tmp_path: Path):
    """Garbage → one xml_error, empty → one empty_file; neither raises."""
    bad = tmp_path / "bad.mzML"
    bad.write_bytes(b"not xml at all \x00\x01")
    assert [r.reason_code for r in read_split(Split(str(bad), str(bad), "mzml"))] == ["xml_error"]
    empty = tmp_path / "empty.mzML"
    empty.write_bytes(b"")
    assert [r.reason_code for r in read_split(Split(str(empty), str(empty), "mzml"))] == ["empty_file"]
