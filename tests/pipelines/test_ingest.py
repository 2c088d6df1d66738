"""Integration tests of the Spark ingest job (real local[2] Spark, real DuckDB, real files)."""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from speclake.lake.catalog import CRASH_ENV, Lake
from speclake.lake.sql import connect
from speclake.pipelines.ingest import IngestSettings, run_ingest
from tests.conftest import SAMPLE, shared_path

pytestmark = pytest.mark.spark

# A real MassBank record (Eawag, CC BY), the template for the malformed variants below.
GOOD_RECORD = """ACCESSION: MSBNK-Eawag-EA000401
RECORD_TITLE: Metamitron-desamino; LC-ESI-ITFT; MS2; CE: 35%; R=7500; [M+H]+
DATE: 2014.01.14
AUTHORS: Stravs M, Schymanski E, Singer H, Department of Environmental Chemistry, Eawag
LICENSE: CC BY
CH$NAME: Metamitron-desamino
CH$COMPOUND_CLASS: N/A; Environmental Standard
CH$FORMULA: C10H9N3O
CH$EXACT_MASS: 187.0746
CH$SMILES: c(ccc1C(=NN=C2C)C(=O)N2)cc1
CH$IUPAC: InChI=1S/C10H9N3O/c1-7-11-10(14)9(13-12-7)8-5-3-2-4-6-8/h2-6H,1H3,(H,11,12,14)
CH$LINK: INCHIKEY OUSYWCQYMPDAEO-UHFFFAOYSA-N
CH$LINK: ChemOnt CHEMONTID:0004107; Organic compounds; Organoheterocyclic compounds; Triazines; 1,2,4-triazines
AC$INSTRUMENT: LTQ Orbitrap XL Thermo Scientific
AC$INSTRUMENT_TYPE: LC-ESI-ITFT
AC$MASS_SPECTROMETRY: MS_TYPE MS2
AC$MASS_SPECTROMETRY: ION_MODE POSITIVE
AC$MASS_SPECTROMETRY: COLLISION_ENERGY 35 % (nominal)
AC$CHROMATOGRAPHY: RETENTION_TIME 5.1 min
MS$FOCUSED_ION: PRECURSOR_M/Z 188.0818
MS$FOCUSED_ION: PRECURSOR_TYPE [M+H]+
PK$SPLASH: splash10-03di-0900000000-7ebbace7bb3df63350bc
PK$NUM_PEAK: 7
PK$PEAK: m/z int. rel.int.
  77.0385 63034.2 5
  85.0396 204249.9 17
  104.0495 867945.5 75
  119.0604 1525675.9 132
  147.0555 36406.7 3
  160.0871 11464205.7 999
  188.082 990072.7 86
//
"""


def test_massbank_data_tree_of_one_record_files_is_packed_into_few_tasks(spark, tmp_path: Path) -> None:
    """A MassBank-data checkout (contributor folders of one-record .txt files) ingests whole, with the
    files packed into a handful of parse tasks, not one Spark task per file."""
    tree = tmp_path / "MassBank-data"
    accessions = [f"MSBNK-Test{c}-TR{i:06d}" for c in "ABC" for i in range(40)]
    for accession in accessions:
        folder = tree / accession.split("-")[1]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{accession}.txt").write_text(_variant(accession))
    report = _ingest(spark, [tree], tmp_path / "lake")
    assert report.splits == 120 and 1 <= report.parse_tasks <= 8, (report.splits, report.parse_tasks)
    assert report.spectra_accepted == 120 and report.quarantined == 0
    got = {r[0] for r in connect(tmp_path / "lake").sql("SELECT accession FROM spectra").fetchall()}
    assert got == set(accessions), "every file's record is in the lake"


def _variant(accession: str, **replace: str) -> str:
    text = GOOD_RECORD.replace("MSBNK-Eawag-EA000401", accession)
    for old, new in replace.items():
        text = text.replace(old.replace("_SP_", " "), new)
    return text


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of malformed inputs, each next to good records that must survive."""
    d = tmp_path_factory.mktemp("bad")
    good = _variant("MSBNK-Test-GOOD0001")
    (d / "peaktext.txt").write_text(good + _variant("MSBNK-Test-BADPEAK1", **{"  85.0396 204249.9 17": "  85.0396 abc 17"}))
    (d / "missing_precursor.txt").write_text(_variant("MSBNK-Test-NOPREC01", **{"MS$FOCUSED_ION: PRECURSOR_M/Z 188.0818\n": ""}))
    (d / "bad_smiles.txt").write_text(_variant("MSBNK-Test-BADSMI01", **{
        "CH$SMILES: c(ccc1C(=NN=C2C)C(=O)N2)cc1": "CH$SMILES: C1CC(N",
        "CH$IUPAC: InChI=1S/C10H9N3O/c1-7-11-10(14)9(13-12-7)8-5-3-2-4-6-8/h2-6H,1H3,(H,11,12,14)": "CH$IUPAC: N/A"}))
    (d / "bad_adduct.txt").write_text(_variant("MSBNK-Test-ADDUCT01", **{"PRECURSOR_TYPE [M+H]+": "PRECURSOR_TYPE [M+Xyz]7"}))
    (d / "truncated.txt").write_text(_variant("MSBNK-Test-GOOD0002") + _variant("MSBNK-Test-TRUNC001").split("PK$PEAK")[0])
    (d / "empty.mgf").write_bytes(b"")
    (d / "garbage.msp").write_bytes(bytes(range(256)) * 8)
    (d / "latin1.txt").write_bytes(_variant("MSBNK-Test-LATIN001", **{"CH$NAME: Metamitron-desamino": "CH$NAME: Métamitron"}).encode("latin-1"))
    return d


def _ingest(spark, inputs: list[Path | str], lake: Path, **kw) -> object:
    return run_ingest([str(p) for p in inputs], lake, IngestSettings(**kw), spark=spark)


def test_bundled_sample_ingests_and_every_record_is_accounted_for(spark, tmp_path: Path) -> None:
    """The repo's sample ingests; records read = spectra accepted + quarantined (+ in-run duplicates); SQL agrees."""
    report = _ingest(spark, sorted(p for p in SAMPLE.iterdir() if p.name != "README.md"), tmp_path / "lake")
    assert report.spectra_accepted > 250, f"the sample has ~370 spectra, got {report.spectra_accepted}"
    con = connect(tmp_path / "lake")
    n_spectra = con.sql("SELECT count(*) FROM spectra").fetchall()[0][0]
    n_quarantine = con.sql("SELECT count(*) FROM quarantine").fetchall()[0][0]
    assert n_spectra == report.spectra_new == report.spectra_accepted, "a fresh lake holds every accepted spectrum"
    assert n_quarantine == report.quarantined, "every quarantined record is a quarantine row"
    assert report.records_read >= n_spectra + n_quarantine, "records read cover spectra and quarantine"
    modes = {r[0] for r in con.sql("SELECT DISTINCT ionmode FROM spectra").fetchall()}
    assert {"positive", "negative"} <= modes, f"sample has both ion modes, got {modes}"
    orphans = con.sql("SELECT count(*) FROM spectra s LEFT JOIN compounds c USING (inchikey) "
                      "WHERE s.inchikey IS NOT NULL AND c.inchikey IS NULL").fetchall()[0][0]
    assert orphans == 0, "every spectrum's InChIKey is in compounds"
    top = con.sql("SELECT max(list_max(intensities)) FROM spectra").fetchall()[0][0]
    assert abs(top - 1.0) < 1e-6, "intensities are scaled to max 1"


def test_reingest_adds_nothing(spark, tmp_path: Path) -> None:
    """Ingesting the same files twice adds zero rows and no new table version."""
    inputs = [SAMPLE / "gnps_pesticides.mgf"]
    first = _ingest(spark, inputs, tmp_path / "lake")
    versions = {k: v.version for k, v in Lake(tmp_path / "lake").tables().items()}
    second = _ingest(spark, inputs, tmp_path / "lake")
    assert first.spectra_new == 76, f"the pesticides MGF has 76 spectra, got {first.spectra_new}"
    assert second.spectra_new == 0 and second.quarantine_new == 0, "a re-ingest must add nothing"
    assert second.spectra_already_in_lake == 76, "all 76 are recognised as already present"
    assert {k: v.version for k, v in Lake(tmp_path / "lake").tables().items()} == versions, "no new versions"


def test_malformed_inputs_land_in_quarantine_with_reasons(spark, bad_inputs: Path, tmp_path: Path) -> None:
    """Each kind of bad input ends in quarantine with a clear reason naming file and record; good records survive."""
    report = _ingest(spark, [bad_inputs], tmp_path / "lake")
    con = connect(tmp_path / "lake")
    q = {(Path(f).name, code) for f, code in con.sql("SELECT source_file, reason_code FROM quarantine").fetchall()}
    expected = {
        ("peaktext.txt", "peak_parse_error"), ("missing_precursor.txt", "missing_precursor"),
        ("bad_smiles.txt", "invalid_structure"), ("bad_adduct.txt", "unknown_adduct"),
        ("truncated.txt", "truncated_record"), ("empty.mgf", "empty_file"), ("latin1.txt", "encoding_error"),
    }
    assert expected <= q, f"missing quarantine reasons: {expected - q}"
    assert any(name == "garbage.msp" for name, _ in q), "binary garbage must be quarantined, not dropped"
    accessions = {r[0] for r in con.sql("SELECT accession FROM spectra").fetchall()}
    assert {"MSBNK-Test-GOOD0001", "MSBNK-Test-GOOD0002"} <= accessions, "good records next to bad ones survive"
    locators = [r[0] for r in con.sql("SELECT record_locator FROM quarantine WHERE reason_code='peak_parse_error'").fetchall()]
    assert locators and "record 2" in locators[0], f"the locator names the record: {locators}"
    assert report.records_read == report.spectra_accepted + report.quarantined, "nothing vanished"


REAL_FILES = {  # file in ../shared/data/formats -> records it holds (every one must be accounted for)
    "pesticides.mgf": 76, "massbank_five_spectra.msp": 5, "riken_style_five_spectra.msp": 5,
    "MoNA-export-GC-MS-first10.msp": 10, "gnps_spectra.json": 5, "testdata.mzml": 10, "testdata.mgf": 30,
    "comments_with_quotes.msp": 1,
}


def test_every_reader_on_real_files(spark, tmp_path: Path) -> None:
    """All real files of ../shared/data/formats ingest in one run; per file, spectra + quarantine = its records."""
    formats = shared_path("formats")
    report = _ingest(spark, [formats / name for name in REAL_FILES], tmp_path / "lake")
    con = connect(tmp_path / "lake")
    per_file: dict[str, int] = {}
    for table in ("spectra", "quarantine"):
        for path, n in con.sql(f"SELECT source_file, count(*) FROM {table} GROUP BY 1").fetchall():
            per_file[Path(path).name] = per_file.get(Path(path).name, 0) + n
    spectra_files = {Path(r[0]).name for r in con.sql("SELECT DISTINCT source_file FROM spectra").fetchall()}
    for name, expected in REAL_FILES.items():
        assert per_file.get(name) == expected, f"{name}: expected {expected} records, lake has {per_file.get(name)}"
        assert name in spectra_files, f"{name}: some spectra must be accepted ({report.quarantine_reasons})"
    formats_seen = {r[0] for r in con.sql("SELECT DISTINCT source_format FROM spectra").fetchall()}
    assert formats_seen == {"mgf", "msp", "gnps_json", "mzml"}, f"every reader contributes: {formats_seen}"


def test_ingest_killed_before_commit_keeps_previous_version(spark, tmp_path: Path) -> None:
    """A real ingest process killed after writing its parts but before the commit leaves version 1 readable."""
    lake_dir = tmp_path / "lake"
    _ingest(spark, [SAMPLE / "gnps_pesticides.mgf"], lake_dir)
    env = {**os.environ, CRASH_ENV: "part_written", "SPECLAKE_SPARK_MASTER": "local[1]"}
    proc = subprocess.run([sys.executable, "-m", "speclake.cli", "ingest", str(SAMPLE / "massbank_sample.txt.gz"),
                           "--lake", str(lake_dir)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 86, f"the ingest must die at the crash point: {proc.stderr[-800:]}"
    con = connect(lake_dir)
    assert con.sql("SELECT count(*) FROM spectra").fetchall()[0][0] == 76, "only version 1's 76 spectra are visible"
    assert Lake(lake_dir).current("spectra").version == 1, "the killed run committed nothing"


def test_compounds_do_not_depend_on_ingest_order(spark, tmp_path: Path) -> None:
    """Two tautomer SMILES of one InChIKey, ingested in either order: the same compounds row (smallest SMILES)."""
    keto, enol = "O=C(O)c1ccc(=O)[nH]c1", "O=C(O)c1ccc(O)nc1"  # 6-hydroxynicotinic acid, one InChIKey
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text(_variant("MSBNK-Test-TAUT0001", **{"CH$SMILES: c(ccc1C(=NN=C2C)C(=O)N2)cc1": f"CH$SMILES: {keto}"}))
    second.write_text(_variant("MSBNK-Test-TAUT0002", **{"CH$SMILES: c(ccc1C(=NN=C2C)C(=O)N2)cc1": f"CH$SMILES: {enol}",
                                                          "CH$NAME: Metamitron-desamino": "CH$NAME: 6-hydroxynicotinic acid"}))
    rows = []
    for order, name in (((first, second), "ab"), ((second, first), "ba")):
        for path in order:
            _ingest(spark, [path], tmp_path / name)
        rows.append(connect(tmp_path / name).sql(
            "SELECT inchikey, smiles, compound_name, n_spectra, sources FROM compounds ORDER BY inchikey").fetchall())
    assert rows[0] == rows[1], "ingest order changed the compounds table"
    (_, smiles, name, n_spectra, _), = rows[0]
    assert smiles == min(smiles_of(keto), smiles_of(enol)) and n_spectra == 2
    assert name == "6-hydroxynicotinic acid", "the smallest name"


def smiles_of(smiles: str) -> str:
    from speclake.pipelines.normalize.structure import standardize_structure

    return standardize_structure(smiles, None).smiles


def test_cli_ingest_reports_counts_reasons_and_stage_seconds(spark, bad_inputs: Path, tmp_path: Path) -> None:
    """`speclake ingest` prints the records read, both table counts, the quarantine reasons and seconds per stage."""
    from click.testing import CliRunner

    from speclake.cli import main

    result = CliRunner().invoke(main, ["ingest", str(bad_inputs / "bad_smiles.txt"), str(bad_inputs / "peaktext.txt"),
                                       "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 0, result.output
    assert "3 records read in" in result.output and "spectra (accepted)" in result.output
    assert "invalid_structure" in result.output and "peak_parse_error" in result.output
    assert "seconds: plan" in result.output and "parse" in result.output.split("seconds:")[1]


def test_ingest_command_returns_after_its_jvm_has_exited(tmp_path: Path) -> None:
    """`speclake ingest` (a new process) returns only after the Spark JVM it started has exited: scripts that
    chain commands must not overlap JVMs (it used to run on, re-parented, for 30-50 s)."""
    import time

    import psutil

    mgf = SAMPLE / "gnps_pesticides.mgf"
    proc = psutil.Popen([sys.executable, "-m", "speclake.cli", "ingest", str(mgf), "--lake", str(tmp_path / "lake"),
                         "--master", "local[1]"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    jvms: set[int] = set()
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:  # watch the command's process tree for its JVM
        try:
            jvms |= {c.pid for c in proc.children(recursive=True) if "java" in c.name()}
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read()
    assert proc.wait(timeout=5) == 0 and "records read" in out, out
    assert jvms, "the command's Spark JVM was never seen"
    alive = [pid for pid in jvms if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"JVMs of the finished command still running: {alive}"
