"""Tests of the ingest job's per-task steps that need no Spark: packing splits into parse tasks."""
from __future__ import annotations

from pathlib import Path

import pytest

from speclake.pipelines.ingest_steps import group_splits
from speclake.pipelines.readers.base import Split


def _ranges(*sizes: int) -> list[Split]:
    splits, start = [], 0
    for size in sizes:
        splits.append(Split("f.msp", "f.msp", "msp", start, start + size))
        start += size
    return splits


def test_consecutive_splits_are_packed_up_to_the_target() -> None:
    """Splits keep their order; a task closes before the split that would take it past the target."""
    assert group_splits(_ranges(3, 3, 3, 5, 1, 9), target_bytes=6) == [[0, 1], [2], [3, 4], [5]]


def test_a_split_larger_than_the_target_is_a_task_of_its_own() -> None:
    """A split is never divided: one bigger than the target gets a task alone."""
    assert group_splits(_ranges(1, 50, 1), target_bytes=10) == [[0], [1], [2]]


def test_tasks_shrink_so_every_core_gets_work() -> None:
    """With little data, tasks are made smaller than the target so there are at least min_tasks."""
    splits = _ranges(*[10] * 8)
    assert len(group_splits(splits, target_bytes=1_000, min_tasks=1)) == 1
    assert group_splits(splits, target_bytes=1_000, min_tasks=4) == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_whole_file_splits_are_sized_by_the_file(tmp_path: Path) -> None:
    """A whole-file split (end -1) counts its file's size: many small files share a task, a big one does not."""
    files = []
    for name, size in (("a.txt", 100), ("b.txt", 100), ("big.txt", 5_000), ("c.txt", 100)):
        (tmp_path / name).write_bytes(b"x" * size)
        files.append(Split(str(tmp_path / name), str(tmp_path / name), "massbank"))
    missing = Split(str(tmp_path / "gone.txt"), str(tmp_path / "gone.txt"), "massbank")
    assert group_splits(files + [missing], target_bytes=1_000) == [[0, 1], [2], [3, 4]]


def test_no_splits_no_tasks_and_bad_target() -> None:
    """Nothing to read gives no task; a non-positive target is an error, not an endless loop."""
    assert group_splits([], target_bytes=10) == []
    with pytest.raises(ValueError, match="positive"):
        group_splits(_ranges(1), target_bytes=0)


def test_rows_to_batch_equals_from_pylist() -> None:
    """The column-wise builder gives exactly ``from_pylist``'s batch: numpy and plain-list peaks,
    missing lists, maps, nested lists and nulls."""
    import numpy as np
    import pyarrow as pa

    from speclake.pipelines.ingest_steps import rows_to_batch

    schema = pa.schema([("mz", pa.list_(pa.float64())), ("i", pa.list_(pa.float32())), ("name", pa.string()),
                        ("extra", pa.map_(pa.string(), pa.string())), ("notes", pa.list_(pa.string())),
                        ("n", pa.int32())])
    rows = [{"mz": np.array([50.5, 101.25]), "i": np.array([1.0, 0.5], dtype=np.float32), "name": "a",
             "extra": {"k": "v"}, "notes": ["x"], "n": 2},
            {"mz": None, "i": [0.25], "name": None, "extra": {}, "notes": [], "n": None},
            {"mz": np.zeros(0), "i": np.array([], dtype=np.float32)},
            {"mz": [1.0, 2.0, 3.0], "i": None, "name": "é", "notes": None, "n": 7}]
    expected = pa.RecordBatch.from_pylist(rows, schema=schema)
    assert rows_to_batch(rows, schema).equals(expected)
    assert rows_to_batch([], schema).equals(pa.RecordBatch.from_pylist([], schema=schema))
