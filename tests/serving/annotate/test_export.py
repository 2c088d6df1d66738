"""Export: speclake's, SIRIUS-style and GNPS-style columns, for a blind MGF (TITLE, PEPMASS, CHARGE, IONMODE, peaks)."""
from __future__ import annotations

import csv
import shutil

import pyarrow.parquet as pq
import pytest

from speclake.serving.annotate.export import GNPS_COLUMNS, SIRIUS_COLUMNS, export_annotations, export_table
from speclake.serving.annotate.job import AnnotateSettings, annotate_study
from speclake.serving.annotate.tables import ANNOTATIONS
from tests.conftest import SAMPLE
from tests.serving.annotate.conftest import blind_mgf

SIRIUS = ("structurePerIdRank", "molecularFormula", "adduct", "InChIkey2D", "smiles", "name", "ConfidenceScore",
          "retentionTimeInSeconds", "precursorMz", "id")
GNPS = ("#Scan#", "SpectrumFile", "Compound_Name", "MZErrorPPM", "SharedPeaks", "MQScore", "SpectrumID", "LibMZ")


@pytest.fixture(scope="module")
def blind_lake(suspect_lake, tmp_path_factory):
    lake, _ = suspect_lake
    root = tmp_path_factory.mktemp("blind")
    dst = root / "lake"
    shutil.copytree(lake, dst, ignore=shutil.ignore_patterns("_staging"))
    study = blind_mgf(SAMPLE / "gnps_pesticides.mgf", root / "blind.mgf", n=25)
    text = study.read_text()
    assert "SMILES" not in text and "NAME" not in text and "SCANS" not in text, "blind: only the five fields"
    report = annotate_study([study], dst, "blind", AnnotateSettings(top_k=5))
    assert report.n_scans == 25 and report.n_errors == 0
    return dst, report


def test_export_has_speclake_sirius_and_gnps_columns(blind_lake, tmp_path):
    lake, report = blind_lake
    table = export_table(lake, "blind")
    names = table.column_names
    for col in [f.name for f in ANNOTATIONS] + list(SIRIUS) + list(GNPS):
        assert col in names, f"export has {col}"
    rows = table.to_pylist()
    assert {r["id"] for r in rows} == {f"blind scan {i}" for i in range(1, 26)}, "TITLE is the id, verbatim"
    assert all(r["#Scan#"] == r["id"] for r in rows), "#Scan#: the query id when the file gives no scan number"
    assert {r["SpectrumFile"] for r in rows} == {"blind.mgf"}
    ranked = [r for r in rows if r["status"] == "annotated"]
    assert ranked and report.n_annotated == len({r["id"] for r in ranked})
    assert all(r["structurePerIdRank"] == r["rank"] and len(r["InChIkey2D"]) == 14 and r["molecularFormula"]
               for r in ranked)
    libs = [r for r in rows if r["SpectrumID"] is not None]
    assert all(r["LibMZ"] is not None and r["MZErrorPPM"] is not None for r in libs)
    assert all(r["SharedPeaks"] == r["shared_peaks"] and r["MQScore"] == r["library_cosine"] for r in libs)


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".parquet"])
def test_export_files(blind_lake, tmp_path, suffix):
    lake, _ = blind_lake
    path, n = export_annotations(lake, "blind", tmp_path / f"blind{suffix}")
    if suffix == ".parquet":
        header = pq.read_schema(path).names
        assert pq.read_metadata(path).num_rows == n
    else:
        with open(path, newline="") as fh:
            reader = csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            header = next(reader)
            assert sum(1 for _ in reader) == n
    assert header[:3] == ["study", "source_file", "query_id"]
    assert header[-len(SIRIUS_COLUMNS) - len(GNPS_COLUMNS):] == [c for c, _ in SIRIUS_COLUMNS + GNPS_COLUMNS]


def test_rank1_export_has_one_row_per_scan(blind_lake):
    lake, _ = blind_lake
    table = export_table(lake, "blind", rank1=True)
    assert table.num_rows == 25 and len(set(table.column("id").to_pylist())) == 25


def test_unknown_study_and_bad_file_name_are_clear_errors(blind_lake, tmp_path):
    lake, _ = blind_lake
    with pytest.raises(ValueError, match="no annotations of study 'nope'.*blind"):
        export_table(lake, "nope")
    with pytest.raises(ValueError, match=r"\.tsv, \.csv, \.parquet"):
        export_annotations(lake, "blind", tmp_path / "out.xlsx")
