"""Tests of index.build: quarantine of corrupt records, incremental add, reuse, manifest."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from speclake.index.build import BuildError, build_index
from speclake.index.search import StructureIndex
from speclake.index.settings import IndexSettings
from tests.index.conftest import read_smiles
from tests.index.test_sources import write_sdf

SMALL = IndexSettings(shard_target_size=40, flat_max=30, exact_scan_max=8)


def write_smiles(path: Path, records: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{r}\n" for s, r in records))
    return path


def test_corrupt_records_quarantined(ray_local, tmp_path: Path, shipped_smiles: Path) -> None:
    """Corrupt SDF and SMILES records end in quarantine with reason codes and locators; the rest is indexed."""
    recs = read_smiles(shipped_smiles, 30)
    sdf = write_sdf(tmp_path / "Compound_000000001_000000030.sdf.gz", recs[:10],
                    corrupt={1: "no_m_end", 4: "bad_atoms"})
    smi_recs = recs[10:] + [("C1CC(", "BAD1"), ("c1cccc1X", "BAD2")]
    smi = write_smiles(tmp_path / "more.smi", smi_recs)
    (tmp_path / "cids.tsv").write_text("101\tCCO\n102\t\n")
    report = build_index([sdf, smi, tmp_path / "cids.tsv"], tmp_path / "lake", settings=SMALL)
    assert report.records_read == 10 + 22 + 2
    assert report.quarantined == {"invalid_molblock": 1, "invalid_structure": 2, "malformed_sdf_record": 1,
                                  "missing_smiles": 1}
    idx = tmp_path / "lake" / "index" / "fingerprint"
    manifest = json.loads((idx / "manifest.json").read_text())
    q = pq.read_table(idx / manifest["version_dir"] / "quarantine.parquet").to_pylist()
    by_code = {r["reason_code"]: r for r in q}
    assert by_code["malformed_sdf_record"]["record_locator"].startswith("record:2,")
    assert by_code["malformed_sdf_record"]["stage"] == "read"
    assert by_code["invalid_molblock"]["record_locator"].startswith("record:5,")
    assert {r["record_locator"] for r in q if r["reason_code"] == "invalid_structure"} == {"line:21", "line:22"}
    assert all(r["reason"] for r in q)
    with StructureIndex.open(idx) as ix:
        assert len(ix) == report.structures == 10 - 2 + 20 + 1
        names = ix.catalog.sql("SELECT compound_name FROM structures WHERE source = 'pubchem_sdf' "
                               "AND record_id = ?", [recs[0][1]]).column(0).to_pylist()
        assert names == [f"name of {recs[0][1]}"]


def test_incremental_add(ray_local, tmp_path: Path, shipped_smiles: Path) -> None:
    """--add embeds only new InChIKeys, keeps old structures, reuses unchanged shards, finds the new ones;
    the manifest records settings, embedding version and shards."""
    recs = read_smiles(shipped_smiles, 300)
    first = write_smiles(tmp_path / "a.smi", recs[:200])
    lake = tmp_path / "lake"
    r1 = build_index([first], lake, settings=SMALL)
    assert r1.embedded_new == r1.structures and r1.shards_reused == 0
    check_manifest(lake / "index" / "fingerprint", r1.structures)
    # same sources again: nothing embedded, every shard reused; scratch of a crashed build is removed
    stale = lake / "index" / "fingerprint" / "_staging" / "20000101T000000-dead00"
    stale.mkdir(parents=True)
    r2 = build_index([first], lake, settings=SMALL)
    assert not stale.exists()
    assert (r2.embedded_new, r2.shards_built, r2.shards_reused) == (0, 0, r1.shards_built)
    # add 100 new plus 20 already indexed
    second = write_smiles(tmp_path / "b.smi", recs[180:300])
    r3 = build_index([second], lake, settings=SMALL, add=True)
    assert r3.records_read == 120
    assert r3.embedded_new == 100
    assert r3.structures == r1.structures + 100
    assert r3.duplicates_merged >= 20
    idx = lake / "index" / "fingerprint"
    with StructureIndex.open(idx) as ix:
        assert len(ix) == r3.structures
        smi, rid = recs[250]
        mass = ix.catalog.sql("SELECT monoisotopic_mass FROM structures WHERE record_id = ?", [rid]).column(0)[0].as_py()
        hit = ix.query(mass=mass, ppm=5, smiles=smi, k=1).to_pylist()[0]
        assert hit["record_id"] == rid and hit["score"] == 1.0
        old_smi, old_rid = recs[5]
        assert ix.catalog.lookup(inchikeys=[]).num_rows == 0
        assert old_rid in ix.catalog.sql("SELECT record_id FROM structures").column(0).to_pylist()
    manifest = json.loads((idx / "manifest.json").read_text())
    assert manifest["previous_run_id"] is not None
    assert len([p for p in idx.glob("v-*")]) <= SMALL.keep_versions
    assert not (idx / "_staging").exists()


def check_manifest(idx: Path, count: int) -> None:
    """The manifest stores the settings (re-validated with extra='forbid'), embedding version and shards."""
    manifest = json.loads((idx / "manifest.json").read_text())
    assert IndexSettings.model_validate(manifest["settings"]) == SMALL
    assert manifest["embedding"]["version"].startswith("morgan-r2-2048")
    assert sum(s["count"] for s in manifest["shards"]) == manifest["count"] == count
    for s in manifest["shards"]:
        assert s["lo_edge"] <= s["mass_min"] <= s["mass_max"] < s["hi_edge"]
        assert s["index_type"] in {"flat", "binary_hnsw"}
    with pytest.raises(ValueError):
        IndexSettings.model_validate({**manifest["settings"], "typo": 1})
    report = manifest["report"]
    assert report["kind"] == "index" and isinstance(report["seconds"], float) and report["seconds"] > 0
    assert set(report["stage_seconds"]) == {"standardize", "dedupe", "embed", "plan", "shards", "catalog"}


def test_builds_publish_lake_tables_per_index(ray_local, tmp_path: Path, shipped_smiles: Path) -> None:
    """In a speclake lake, every build makes its index's rows the lake tables index_structures and
    index_quarantine (queryable with SQL); rebuilding one index replaces its rows and keeps the other's."""
    from click.testing import CliRunner

    from speclake.index.cli import index_cli
    from speclake.lake import sql
    from speclake.lake.catalog import Lake

    lake = tmp_path / "lake"
    Lake(lake, create=True)
    good = tmp_path / "good.smi"
    good.write_text("".join(f"{s}\t{r}\n" for s, r in read_smiles(shipped_smiles, 40)))
    bad = tmp_path / "bad.smi"
    bad.write_text("C1CC(\tBROKEN\n")
    first = build_index([good, bad], lake, settings=IndexSettings(shard_target_size=20))
    build_index([good], lake, name="second", settings=IndexSettings(shard_target_size=100))

    def counts(table: str) -> dict[str, int]:
        rows = sql.query(lake, f"SELECT index_name, count(*) AS n FROM {table} GROUP BY 1").to_pylist()
        return {r["index_name"]: r["n"] for r in rows}

    assert counts("index_structures") == {"fingerprint": first.structures, "second": first.structures}
    assert counts("index_quarantine") == {"fingerprint": 1}
    row = sql.query(lake, "SELECT reason_code, record_locator FROM index_quarantine").to_pylist()[0]
    assert row["reason_code"] == "invalid_structure" and "line" in row["record_locator"]
    build_index([bad], lake, add=True, settings=IndexSettings(shard_target_size=20))  # a new version of 'fingerprint'
    assert counts("index_structures") == {"fingerprint": first.structures, "second": first.structures}
    assert Lake(lake).current("index_structures").version == 3
    res = CliRunner().invoke(index_cli, ["publish", "--lake", str(lake), "--name", "second"])
    assert res.exit_code == 0 and "published" in res.output, res.output
    assert counts("index_structures")["second"] == first.structures


@pytest.mark.parametrize("in_lake", [True, False], ids=["lake", "plain-folder"])
def test_concurrent_build_of_one_index_refused(ray_local, tmp_path: Path, shipped_smiles: Path, in_lake: bool) -> None:
    """While a build of an index runs, a second build of the same index is refused with BuildError (in a lake
    the lake's writer lock stays free meanwhile); a finished build in a lake leaves a run record of kind 'index'."""
    from speclake.lake.catalog import Lake

    lake = tmp_path / "lake"
    if in_lake:
        Lake(lake, create=True)
    src = write_smiles(tmp_path / "a.smi", read_smiles(shipped_smiles, 20))
    started, release = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hold(stage: str, done: int, total: int | None) -> None:
        if stage == "standardize" and done == 0:
            started.set()
            release.wait(60)

    def first() -> None:
        try:
            outcome["report"] = build_index([src], lake, settings=SMALL, progress=hold)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(60), "the first build did not start"
        with pytest.raises(BuildError, match="another build of index 'fingerprint' is running"):
            build_index([src], lake, settings=SMALL)
        if in_lake:
            with Lake(lake).lock():  # other lake writers are not blocked by an index build
                pass
    finally:
        release.set()
        thread.join(120)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.structures == 20
    runs = sorted((lake / "_catalog" / "runs").glob("*.json")) if in_lake else []
    if in_lake:
        assert [p.stem for p in runs] == [report.run_id], "one run record: the refused build left none"
        record = json.loads(runs[0].read_text())
        assert (record["kind"], record["status"]) == ("index", "ok")
        assert record["settings"] == SMALL.model_dump(mode="json")
        assert record["report"]["structures"] == 20 and record["report"]["seconds"] > 0
        assert set(record["report"]["table_versions"]) == {"index_structures", "index_quarantine"}
        assert "lake_tables" in record["report"]["stage_seconds"]
    else:
        assert not (lake / "_catalog").exists(), "a plain folder is not made a lake"
