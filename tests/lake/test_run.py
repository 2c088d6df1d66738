"""Tests of speclake.lake.run: the run contract every stage uses (lock, staging, parts, commit, record)."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from speclake.lake.catalog import Lake, LakeBusy
from speclake.lake.run import Run, RunReport, new_run_id
from speclake.lake.schema import QUARANTINE, all_tables

REPO = Path(__file__).resolve().parents[2]


def _quarantine(n: int, run_id: str) -> pa.Table:
    return pa.Table.from_pylist(
        [{"quarantine_id": f"{run_id}-{i}", "source": "test", "source_file": "f.mgf", "record_locator": f"record {i}",
          "source_format": "mgf", "stage": "read", "reason_code": "no_peaks", "reason": "no peaks",
          "raw_excerpt": "", "ingest_run_id": run_id} for i in range(n)], schema=QUARANTINE)


def one_row(schema: pa.Schema) -> pa.Table:
    """One row of typed placeholder values for any declared table (non-nullable columns filled)."""
    def value(t: pa.DataType):
        if pa.types.is_string(t):
            return "x"
        if pa.types.is_boolean(t):
            return True
        if pa.types.is_integer(t):
            return 1
        if pa.types.is_floating(t):
            return 0.5
        if pa.types.is_timestamp(t):
            return datetime.now(timezone.utc)
        if pa.types.is_list(t):
            return []
        if pa.types.is_map(t):
            return []
        return None

    return pa.Table.from_pylist([{f.name: value(f.type) for f in schema}], schema=schema)


def test_run_writes_parts_commits_once_and_records_itself(tmp_path: Path) -> None:
    """A run's parts become one new version per table at commit; the record holds kind, status and stage times."""
    lake = Lake(tmp_path / "lake", create=True)
    events = []
    with Run(lake, "test", {"k": 1}, progress=lambda s, d, t: events.append((s, d, t))) as run:
        with run.stage("write"):
            assert run.write_part("quarantine", _quarantine(3, run.run_id)) == 3
            assert lake.current("quarantine") is None, "nothing is visible before the commit"
        published = run.commit()
        staging = run.staging
    assert published["quarantine"].row_count == 3
    assert published["quarantine"].settings == {"test": {"k": 1}}
    assert run.report.table_versions == {"quarantine": 1}
    assert ("write", 0, None) in events and ("write", 1, 1) in events
    assert not staging.exists(), "the staging folder is removed when the run ends"
    record = json.loads((lake.root / "_catalog" / "runs" / f"{run.run_id}.json").read_text())
    assert record["kind"] == "test" and record["status"] == "ok" and "write" in record["report"]["stage_seconds"]


def test_failed_run_publishes_nothing_and_says_why(tmp_path: Path) -> None:
    """An exception inside the run leaves the previous version current and records status 'failed' with the error."""
    lake = Lake(tmp_path / "lake", create=True)
    with Run(lake, "test") as run:
        run.write_part("quarantine", _quarantine(2, run.run_id))
        run.commit()
    with pytest.raises(RuntimeError, match="boom"):
        with Run(lake, "test") as failing:
            failing.write_part("quarantine", _quarantine(5, failing.run_id))
            raise RuntimeError("boom")
    assert lake.current("quarantine").row_count == 2
    record = json.loads((lake.root / "_catalog" / "runs" / f"{failing.run_id}.json").read_text())
    assert record["status"] == "failed" and "boom" in record["error"]
    removed = lake.vacuum()
    assert [p.name for p in removed] == [f"part-{failing.run_id}"], "the uncommitted part is an orphan for vacuum"


def test_lake_lock_and_scope_locks(tmp_path: Path) -> None:
    """Two writers of one lake (or of one scope) are refused; a scoped run does not block the lake writer."""
    lake = Lake(tmp_path / "lake", create=True)
    with Run(lake, "a"):
        with pytest.raises(LakeBusy, match="another speclake job is writing"):
            with Run(lake, "b"):
                pass
    with Run(lake, "index", lock="index-x") as scoped:
        with pytest.raises(LakeBusy, match="index-x"):
            with Run(lake, "index", lock="index-x"):
                pass
        with Run(lake, "ingest") as writer:  # the lake writer lock is free meanwhile
            writer.write_part("quarantine", _quarantine(1, writer.run_id))
            writer.commit()
        scoped.write_part("quarantine", _quarantine(1, scoped.run_id))
        scoped.commit()  # takes the lake lock for the commit only
    assert lake.current("quarantine").row_count == 2


def test_run_ids_sort_by_time_and_are_unique() -> None:
    """Run ids start with the UTC time (sortable) and never repeat."""
    ids = {new_run_id() for _ in range(200)}
    assert len(ids) == 200 and all(len(i) == 24 and i[8] == "T" for i in ids)


def test_report_subclass_keeps_base_fields() -> None:
    """A stage's report extends the base report; as_dict has both."""
    from dataclasses import dataclass

    @dataclass
    class R(RunReport):
        n: int = 0

    assert set(R(n=2).as_dict()) >= {"run_id", "kind", "seconds", "stage_seconds", "table_versions", "n"}


def test_tables_and_vacuum_see_every_stage_table_in_a_fresh_process(tmp_path: Path) -> None:
    """`speclake tables` and `speclake vacuum`, each a new process, work on a lake with feature, index and model
    tables (they used to fail with "unknown lake table 'fragtrees'" when the stage modules were not imported)."""
    lake = Lake(tmp_path / "lake", create=True)
    stage_tables = ("fragtrees", "descriptors", "spectrum_features", "index_structures", "model_metrics")
    declared = all_tables()
    with Run(lake, "test") as run:
        for name in stage_tables:
            run.write_part(name, one_row(declared[name].schema))
        run.commit()
    orphan = lake.root / "fragtrees" / "part-orphan"
    orphan.mkdir()
    exe = [sys.executable, "-m", "speclake.cli"]
    listed = subprocess.run([*exe, "tables", "--lake", str(lake.root)], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    for name in stage_tables:
        line = next((ln for ln in listed.stdout.splitlines() if ln.startswith(name + " ")), "")
        assert line.split()[1:3] == ["1", "1"], f"{name}: version 1, 1 row expected in:\n{listed.stdout}"
    vac = subprocess.run([*exe, "vacuum", "--lake", str(lake.root)], capture_output=True, text=True, timeout=120)
    assert vac.returncode == 0, vac.stderr
    assert "removed 1 orphaned part" in vac.stdout and not orphan.exists()
    assert all(lake.current(n).row_count == 1 for n in stage_tables), "vacuum keeps every committed part"
