"""The lake catalog: table versions, atomic commits, run records.

Layout of a lake directory::

    <lake>/_catalog/catalog.json      current and past versions of every table
    <lake>/_catalog/runs/<run>.json   settings and report of every run
    <lake>/<table>/part-<run>/...      immutable Parquet parts (hive partitions inside)
    <lake>/_staging/<run>/...         scratch space of a running job

A table version is a list of parts. Writers first write a part completely
(under a temporary name, then renamed), then commit the catalog by writing a
new ``catalog.json`` to a temporary file and ``os.replace``-ing it. A crash at
any point leaves the previous catalog, hence the previous table versions,
intact; parts that no version lists are invisible and removed by
:func:`vacuum`.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from speclake.lake.schema import SCHEMA_VERSION, load_stage_tables, table_spec

log = logging.getLogger(__name__)

CATALOG_DIR = "_catalog"
STAGING_DIR = "_staging"
CATALOG_FILE = "catalog.json"

#: Environment variable naming a crash point, used by the crash-safety tests to
#: kill a real writer process at a precise step (``part_written`` or
#: ``catalog_tmp_written``). Unset in normal use.
CRASH_ENV = "SPECLAKE_CRASH_AT"


class LakeError(RuntimeError):
    """The lake directory is missing, locked or inconsistent."""


class LakeBusy(LakeError):
    """Another job holds the lake's writer lock."""


@dataclass(frozen=True)
class TableVersion:
    """One committed version of a table."""

    version: int
    parts: tuple[str, ...]
    row_count: int
    schema_version: int
    run_id: str
    created_at: float
    settings: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def from_json(d: dict[str, Any]) -> "TableVersion":
        return TableVersion(
            version=int(d["version"]), parts=tuple(d["parts"]), row_count=int(d["row_count"]),
            schema_version=int(d["schema_version"]), run_id=str(d["run_id"]),
            created_at=float(d["created_at"]), settings=dict(d.get("settings", {})),
        )


def crash_point(name: str) -> None:
    """Exit the process at once (no cleanup) if ``SPECLAKE_CRASH_AT`` names this point."""
    if os.environ.get(CRASH_ENV) == name:
        log.error("crash point %s reached: exiting without cleanup", name)
        os._exit(86)


class Lake:
    """A lake directory: read versions, commit new ones, list files."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = False) -> None:
        load_stage_tables()  # every stage's tables are known to every command that opens a lake
        self.root = Path(root).resolve()
        if not (self.root / CATALOG_DIR / CATALOG_FILE).exists():
            if not create:
                raise LakeError(f"{self.root} is not a speclake lake (no {CATALOG_DIR}/{CATALOG_FILE}); run `speclake ingest` first")
            self._init()

    # -- layout ---------------------------------------------------------------
    @property
    def catalog_path(self) -> Path:
        return self.root / CATALOG_DIR / CATALOG_FILE

    def staging(self, run_id: str) -> Path:
        """Scratch directory of one run (removed by :meth:`clean_staging`)."""
        path = self.root / STAGING_DIR / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_staging(self, run_id: str) -> None:
        shutil.rmtree(self.root / STAGING_DIR / run_id, ignore_errors=True)

    def new_part_path(self, table: str, run_id: str) -> Path:
        """Where a writer puts a new part; it must not exist yet."""
        table_spec(table)
        return self.root / table / f"part-{run_id}"

    def _init(self) -> None:
        (self.root / CATALOG_DIR / "runs").mkdir(parents=True, exist_ok=True)
        self._write_catalog({"schema_version": SCHEMA_VERSION, "tables": {}})
        log.info("created lake at %s", self.root)

    # -- reading --------------------------------------------------------------
    def _read_catalog(self) -> dict[str, Any]:
        with open(self.catalog_path, encoding="utf-8") as fh:
            return json.load(fh)

    def versions(self, table: str) -> list[TableVersion]:
        """All committed versions of ``table``, oldest first."""
        table_spec(table)
        entry = self._read_catalog()["tables"].get(table, {})
        return [TableVersion.from_json(v) for v in entry.get("versions", [])]

    def current(self, table: str) -> TableVersion | None:
        """The latest committed version of ``table``, or None if it was never written."""
        versions = self.versions(table)
        return versions[-1] if versions else None

    def files(self, table: str, version: int | None = None) -> list[str]:
        """Parquet files of a table version (the current one by default)."""
        tv = self._pick(table, version)
        if tv is None:
            return []
        out: list[str] = []
        for part in tv.parts:
            out.extend(sorted(str(p) for p in (self.root / part).rglob("*.parquet")))
        return out

    def _pick(self, table: str, version: int | None) -> TableVersion | None:
        versions = self.versions(table)
        if version is None:
            return versions[-1] if versions else None
        for tv in versions:
            if tv.version == version:
                return tv
        raise LakeError(f"table {table!r} has no version {version}; versions: {[v.version for v in versions]}")

    def tables(self) -> dict[str, TableVersion]:
        """Current version of every table written so far."""
        return {name: v for name in self._read_catalog()["tables"] if (v := self.current(name)) is not None}

    # -- writing --------------------------------------------------------------
    @contextmanager
    def lock(self, scope: str | None = None, *, wait: bool = False) -> Iterator[None]:
        """Exclusive lock: the lake's writer lock (``scope`` None: one writing job per lake at a time),
        or a named lock of its own (``scope``, e.g. ``index-fingerprint``: one build of that index at a
        time). ``wait`` blocks until the lock is free instead of raising :class:`LakeBusy`."""
        name = "lock" if scope is None else f"lock-{scope}"
        what = f"another speclake job is writing to {self.root}" if scope is None else \
            f"another speclake {scope} job is running in {self.root}"
        with file_lock(self.root / CATALOG_DIR / name, what, wait=wait):
            yield

    def commit(self, changes: dict[str, "PendingVersion"], *, run_id: str) -> dict[str, TableVersion]:
        """Atomically publish new versions of several tables at once."""
        catalog = self._read_catalog()
        now = time.time()
        published: dict[str, TableVersion] = {}
        for table, pending in changes.items():
            spec = table_spec(table)
            entry = catalog["tables"].setdefault(table, {"versions": []})
            prev = TableVersion.from_json(entry["versions"][-1]) if entry["versions"] else None
            if spec.mode == "append" and prev is not None:
                parts = prev.parts + tuple(pending.new_parts)
                rows = prev.row_count + pending.row_count
            else:
                parts, rows = tuple(pending.new_parts), pending.row_count
            for part in pending.new_parts:
                if not (self.root / part).is_dir():
                    raise LakeError(f"cannot commit {table}: part {part} does not exist")
            tv = TableVersion(
                version=(prev.version + 1) if prev else 1, parts=parts, row_count=rows,
                schema_version=SCHEMA_VERSION, run_id=run_id, created_at=now, settings=pending.settings,
            )
            entry["versions"].append(asdict(tv))
            published[table] = tv
        self._write_catalog(catalog)
        for table, tv in published.items():
            log.info("committed %s version %d (%d rows)", table, tv.version, tv.row_count)
        return published

    def _write_catalog(self, catalog: dict[str, Any]) -> None:
        tmp = self.catalog_path.with_suffix(".json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(catalog, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        crash_point("catalog_tmp_written")
        os.replace(tmp, self.catalog_path)
        _fsync_dir(self.catalog_path.parent)

    def record_run(self, run_id: str, record: dict[str, Any]) -> Path:
        """Save a run's settings and report beside the catalog."""
        path = self.root / CATALOG_DIR / "runs" / f"{run_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def vacuum(self) -> list[Path]:
        """Remove parts that no committed version lists, and stale staging dirs."""
        listed = {part for name in self._read_catalog()["tables"] for tv in self.versions(name) for part in tv.parts}
        removed: list[Path] = []
        for table_dir in self.root.iterdir():
            if not table_dir.is_dir() or table_dir.name.startswith("_"):
                continue
            for part in table_dir.glob("part-*"):
                if str(part.relative_to(self.root)) not in listed:
                    shutil.rmtree(part, ignore_errors=True)
                    removed.append(part)
        shutil.rmtree(self.root / STAGING_DIR, ignore_errors=True)
        return removed


@dataclass(frozen=True)
class PendingVersion:
    """New parts of a table, written and renamed into place, not yet committed."""

    new_parts: tuple[str, ...]
    row_count: int
    settings: dict[str, Any] = field(default_factory=dict)


def publish_part(lake: Lake, table: str, run_id: str, written_dir: Path) -> str:
    """Move a completely written directory into the table as a new part; return its lake-relative path."""
    final = lake.new_part_path(table, run_id)
    if final.exists():
        raise LakeError(f"part {final} already exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(written_dir, final)
    _fsync_dir(final.parent)
    crash_point("part_written")
    return str(final.relative_to(lake.root))


@contextmanager
def file_lock(path: Path, busy: str, *, wait: bool = False) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed); :class:`LakeBusy` with ``busy`` when taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LakeBusy(busy) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
