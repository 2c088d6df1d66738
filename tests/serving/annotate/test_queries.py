"""Reading study files as queries: ids per format, blind metadata, bad scans as error rows."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.serving.annotate.queries import query_id_of, query_of, read_queries
from tests.conftest import shared_path


def test_mgf_ids_are_spectrumid_without_title_and_metadata_is_blind(pesticides_mgf):
    qf = read_queries(pesticides_mgf, study="pest")
    assert len(qf.queries) == 76 and qf.errors == [], "every pesticide scan is a query"
    q = qf.queries[0]
    assert q.query_id == "CCMSLIB00001058235", "MGF without TITLE: SPECTRUMID, verbatim"
    assert q.ionmode == "negative" and q.precursor_mz == pytest.approx(183.057)
    assert q.scan_number == 675 and q.usi == "mzspec:pest:gnps_pesticides:scan:675"
    assert q.metadata["smiles_reported"].startswith("C1=CC=C2"), "reported structure kept for display only"
    assert np.all(np.diff(q.mz) >= 0) and q.intensities.max() == pytest.approx(1.0)


def test_mgf_title_wins_and_is_kept_verbatim(bad_mgf):
    qf = read_queries(bad_mgf)
    assert [q.query_id for q in qf.queries] == ["good scan 1"]


def test_mzml_ids_are_native_ids():
    qf = read_queries(shared_path("formats", "testdata.mzml"))
    assert len(qf.queries) == 10 and qf.errors == []
    q = qf.queries[0]
    assert q.query_id == "controllerType=0 controllerNumber=1 scan=2", "mzML native id, verbatim"
    assert q.scan_number == 2 and q.ionmode == "positive" and q.retention_time is not None


def test_bad_scans_become_error_rows_with_reasons(bad_mgf):
    qf = read_queries(bad_mgf)
    codes = {e["query_id"]: e["reason_code"] for e in qf.errors}
    assert qf.n_scans == 5, "nothing vanishes: 1 query + 4 error rows"
    assert codes["empty scan"] == "no_peaks"
    assert codes["nan scan"] == "peak_parse_error"
    assert codes["no precursor"] in ("missing_precursor", "missing_ms_level")
    assert codes["no polarity"] == "unknown_ionmode"
    assert all(e["source_file"] == str(bad_mgf) and e["reason"] for e in qf.errors)


def test_study_ionmode_fills_scans_without_polarity(bad_mgf):
    qf = read_queries(bad_mgf, ionmode="positive")
    assert {q.query_id: q.ionmode for q in qf.queries} == {"good scan 1": "negative", "no polarity": "positive"}, \
        "the file's own polarity wins; --ionmode fills the scans without one"


def test_nan_peaks_from_any_reader_are_errors():
    row = {"source_format": "mzml", "metadata_extra": {"id": "scan=7"}, "source_file": "f.mzML",
           "record_locator": "scan=7 (index 6)", "scan_number": 7, "precursor_mz": 300.1, "ionmode": "positive",
           "mz": [50.0, float("nan")], "intensities": [1.0, 0.5]}
    query, err = query_of(row)
    assert query is None and err["reason_code"] == "nan_peaks" and err["query_id"] == "scan=7"


def test_truncated_mzml_keeps_readable_scans(truncated_mzml):
    qf = read_queries(truncated_mzml)
    assert len(qf.queries) == 8 and len(qf.errors) == 1
    assert qf.errors[0]["reason_code"] == "xml_error" and qf.errors[0]["stage"] == "read"


def test_unreadable_file_is_one_error_row(tmp_path):
    path = tmp_path / "study.xyz"
    path.write_text("not a spectrum file")
    qf = read_queries(path)
    assert qf.queries == [] and qf.errors[0]["reason_code"] == "unreadable_file"


def test_id_order_for_other_formats():
    assert query_id_of({"source_format": "mzxml", "metadata_extra": {"num": "12"}}) == "scan=12"
    assert query_id_of({"source_format": "msp", "accession": "PS010904"}) == "PS010904"
    assert query_id_of({"source_format": "mgf", "record_locator": "record 3 (line 9)"}) == "record 3 (line 9)"


def test_mzml_without_polarity_is_an_error_unless_the_study_gives_one(tmp_path):
    src = shared_path("formats", "testdata.mzml").read_bytes()
    # same lengths, so the offsets of the indexed mzML stay right; without a charge state too (ingest
    # derives the polarity from a charge's sign)
    path = tmp_path / "nopolarity.mzml"
    path.write_bytes(src.replace(b'name="positive scan"', b'name="xxxxxxxx scan"')
                     .replace(b'name="charge state"', b'name="xxxxxx state"'))
    qf = read_queries(path)
    assert qf.queries == [] and len(qf.errors) == 10
    assert {e["reason_code"] for e in qf.errors} == {"unknown_ionmode"}
    assert "--ionmode" in qf.errors[0]["reason"]
    assert len(read_queries(path, ionmode="positive").queries) == 10
