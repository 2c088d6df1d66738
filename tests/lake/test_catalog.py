"""Tests of speclake.lake.catalog: versions, atomic commits, crash safety, vacuum."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from speclake.lake.catalog import CRASH_ENV, Lake, LakeError, PendingVersion, publish_part
from speclake.lake.schema import QUARANTINE

REPO = Path(__file__).resolve().parents[2]


def _quarantine_rows(n: int, run: str) -> pa.Table:
    rows = [{"quarantine_id": f"{run}-{i}", "source": "test", "source_file": "f.mgf", "record_locator": f"record {i}",
             "source_format": "mgf", "stage": "read", "reason_code": "no_peaks", "reason": "no peaks",
             "raw_excerpt": "", "ingest_run_id": run} for i in range(n)]
    return pa.Table.from_pylist(rows, schema=QUARANTINE)


def _write_version(lake: Lake, run: str, n: int) -> None:
    tmp = lake.staging(run) / "q"
    tmp.mkdir()
    pq.write_table(_quarantine_rows(n, run), tmp / "part-0.parquet")
    part = publish_part(lake, "quarantine", run, tmp)
    lake.commit({"quarantine": PendingVersion((part,), n)}, run_id=run)


def test_missing_lake_is_a_clear_error(tmp_path: Path) -> None:
    """Opening a directory that is not a lake names the directory and the fix."""
    with pytest.raises(LakeError, match="not a speclake lake"):
        Lake(tmp_path / "nope")


def test_append_table_versions_accumulate_parts(tmp_path: Path) -> None:
    """Each commit of an append table adds its part; row counts add up; old versions stay listed."""
    lake = Lake(tmp_path / "lake", create=True)
    _write_version(lake, "r1", 3)
    _write_version(lake, "r2", 2)
    versions = lake.versions("quarantine")
    assert [v.version for v in versions] == [1, 2], "two commits must make versions 1 and 2"
    assert versions[-1].row_count == 5, "append version 2 must count 3 + 2 rows"
    assert len(lake.files("quarantine")) == 2, "current version reads both parts"
    assert len(lake.files("quarantine", version=1)) == 1, "version 1 still reads only its own part"


def test_commit_refuses_missing_part(tmp_path: Path) -> None:
    """A commit naming a part that was never written fails and leaves the catalog unchanged."""
    lake = Lake(tmp_path / "lake", create=True)
    with pytest.raises(LakeError, match="does not exist"):
        lake.commit({"quarantine": PendingVersion(("quarantine/part-ghost",), 1)}, run_id="x")
    assert lake.current("quarantine") is None, "a refused commit must not create a version"


def test_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    """Two writers on one lake: the second gets a clear error instead of corrupting the catalog."""
    lake = Lake(tmp_path / "lake", create=True)
    other = Lake(tmp_path / "lake")
    with lake.lock():
        with pytest.raises(LakeError, match="another speclake job"):
            with other.lock():
                pass


@pytest.mark.parametrize("point", ["part_written", "catalog_tmp_written"])
def test_writer_killed_midway_leaves_previous_version_readable(tmp_path: Path, point: str) -> None:
    """A real writer process killed at a crash point leaves version 1 intact and readable; vacuum cleans up."""
    lake_dir = tmp_path / "lake"
    lake = Lake(lake_dir, create=True)
    _write_version(lake, "r1", 4)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'tests' / 'lake')!r})
        from test_catalog import _write_version
        from speclake.lake.catalog import Lake
        _write_version(Lake({str(lake_dir)!r}), "r2", 7)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, CRASH_ENV: point},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 86, f"the writer must die at {point}: {proc.stderr[-500:]}"
    reopened = Lake(lake_dir)
    assert reopened.current("quarantine").version == 1, "the crashed commit must not be visible"
    assert pq.read_table(reopened.files("quarantine")).num_rows == 4, "version 1's rows must still read back"
    json.loads(reopened.catalog_path.read_text())  # the catalog file is whole, valid JSON
    removed = reopened.vacuum()
    if point == "catalog_tmp_written" or point == "part_written":
        assert [p.name for p in removed] == ["part-r2"], "vacuum must remove exactly the orphaned part"
    _write_version(reopened, "r3", 1)
    assert reopened.current("quarantine").row_count == 5, "the lake keeps working after a crash"
