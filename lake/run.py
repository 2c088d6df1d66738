"""The run contract every stage follows (ingest, features, index, training, evaluation, annotation).

One :class:`Run` per job::

    report = MyReport()                                   # a RunReport subclass: the stage's counts
    with Run(lake, "features", settings, report, progress=progress) as run:
        with run.stage("descriptors"):                    # timed, reported to ``progress``
            run.write_part("descriptors", table)          # written under staging, renamed in as a new part
        run.commit()                                      # one atomic catalog replace for every table
    # on leaving: staging removed, lock released, run record saved (also for a failed run)

What it gives each stage, once: a run id (:func:`new_run_id`), the lake writer lock (or a named lock
of its own, e.g. one index), a staging folder, new parts of declared tables from an Arrow table, a
Spark DataFrame or a written folder, one atomic commit, stage timings, one progress signature
(:data:`Progress`), a base report (:class:`RunReport`) and the run record
(``_catalog/runs/<run>.json``: kind, settings, report, status).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from speclake.lake.catalog import Lake, PendingVersion, TableVersion, publish_part
from speclake.lake.schema import PARQUET_CODEC, table_spec

log = logging.getLogger(__name__)

#: progress(stage, done, total): a stage started (done 0), advanced, or finished (done == total);
#: ``total`` is None when unknown. Every stage reports through this one signature.
Progress = Callable[[str, int, "int | None"], None]


def new_run_id() -> str:
    """A sortable, unique run id: UTC time and 8 random hex digits (``20261205T112758-1a2b3c4d``)."""
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def log_progress(kind: str) -> Progress:
    """The default progress: one log line per stage start."""
    def note(stage: str, done: int, total: int | None) -> None:
        if done == 0:
            log.info("%s: %s", kind, stage)
    return note


@dataclass
class RunReport:
    """What every run reports; a stage's report adds its own counts (a dataclass subclass)."""

    run_id: str = ""
    kind: str = ""
    lake: str = ""
    seconds: float = 0.0                                      # wall time of the whole run
    stage_seconds: dict[str, float] = field(default_factory=dict)
    table_versions: dict[str, int] = field(default_factory=dict)  # versions this run committed
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RunError(RuntimeError):
    """A run cannot start or finish (missing input, nothing to do where something was required)."""


def count_rows(path: Path) -> int:
    """Rows of every Parquet file under ``path`` (0 when it does not exist)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in path.rglob("*.parquet")) if path.exists() else 0


class Run:
    """One run of a stage on a lake: see the module docstring.

    ``lock``: ``"lake"`` (the writer lock, held for the whole run), a scope name (a lock of its own,
    e.g. ``index-<name>``: runs of other scopes and lake writers go on; :meth:`commit` then takes the
    lake lock for the moment of the commit), or None (no lock).
    """

    def __init__(self, lake: Lake, kind: str, settings: Any = None, report: RunReport | None = None, *,
                 progress: Progress | None = None, lock: str | None = "lake", run_id: str | None = None) -> None:
        self.lake = lake
        self.kind = kind
        self.settings = settings
        self.run_id = run_id or new_run_id()
        self.report = report if report is not None else RunReport()
        self.report.run_id, self.report.kind, self.report.lake = self.run_id, kind, str(lake.root)
        self.progress: Progress = progress or log_progress(kind)
        self.lock_scope = lock
        self.pending: dict[str, PendingVersion] = {}
        self.committed: dict[str, TableVersion] = {}
        self._t0 = time.perf_counter()
        self._stack: list[Any] = []
        self._staging: Path | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        if self.lock_scope is not None:
            cm = self.lake.lock(None if self.lock_scope == "lake" else self.lock_scope)
            cm.__enter__()
            self._stack.append(cm)
        self._staging = self.lake.staging(self.run_id)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.lake.clean_staging(self.run_id)
            self.report.seconds = round(time.perf_counter() - self._t0, 3)
            status = "ok" if exc_type is None else "failed"
            record = {"kind": self.kind, "status": status, "settings": settings_dict(self.settings),
                      "report": report_dict(self.report)}
            if exc_type is not None:
                record["error"] = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            try:
                self.lake.record_run(self.run_id, record)
            except OSError as err:  # the record is informative; never mask the run's own outcome
                log.warning("could not save the record of run %s: %s", self.run_id, err)
        finally:
            while self._stack:
                self._stack.pop().__exit__(exc_type, exc, tb)

    # -- layout ----------------------------------------------------------------------------------
    @property
    def staging(self) -> Path:
        """Scratch folder of this run (made when the run starts, removed when it ends)."""
        if self._staging is None:
            raise RuntimeError(f"run {self.run_id} has not started: use it as `with Run(...) as run:`")
        return self._staging

    # -- progress and timings --------------------------------------------------------------------
    def note(self, stage: str, done: int = 0, total: int | None = None) -> None:
        self.progress(stage, done, total)

    @contextmanager
    def stage(self, name: str, total: int | None = None) -> Iterator[None]:
        """Time a stage (added to ``report.stage_seconds[name]``) and announce its start and end."""
        t0 = time.perf_counter()
        self.progress(name, 0, total)
        try:
            yield
        finally:
            self.add_seconds(name, time.perf_counter() - t0)
        self.progress(name, total if total is not None else 1, total if total is not None else 1)

    def add_seconds(self, name: str, seconds: float) -> None:
        """Add ``seconds`` to stage ``name``'s time (for work timed outside :meth:`stage`)."""
        self.report.stage_seconds[name] = round(self.report.stage_seconds.get(name, 0.0) + seconds, 3)

    def lap(self, name: str, since: float) -> float:
        """Add the time from ``since`` (a ``time.perf_counter()`` value) to stage ``name``; return now."""
        now = time.perf_counter()
        self.add_seconds(name, now - since)
        return now

    # -- writing ---------------------------------------------------------------------------------
    def write_part(self, table: str, data: Any, *, settings: Mapping[str, Any] | None = None,
                   keep_empty: bool = False, suffix: str = "") -> int:
        """Write ``data`` as a new part of lake table ``table`` and queue it for :meth:`commit`.

        ``data``: an Arrow table (checked against the declared schema), a Spark DataFrame, or a folder
        of Parquet files already written under this run's staging. Returns the rows written; an empty
        part is dropped unless ``keep_empty`` (a ``replace`` table emptied on purpose).
        """
        spec = table_spec(table)
        out = self.staging / f"out-{table}{suffix}"
        if isinstance(data, pa.Table):
            if not data.schema.equals(spec.schema, check_metadata=False):
                data = data.select([f.name for f in spec.schema]).cast(spec.schema)
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(data, out / "part-00000.parquet", compression=PARQUET_CODEC)
        elif isinstance(data, (str, os.PathLike)):
            if Path(data).resolve() != out.resolve():
                shutil.rmtree(out, ignore_errors=True)
                os.replace(data, out)
        else:  # a Spark DataFrame
            data.write.mode("overwrite").parquet(str(out))
        n = count_rows(out)
        if n == 0 and not keep_empty:
            shutil.rmtree(out, ignore_errors=True)
            return 0
        for junk in list(out.rglob("_SUCCESS")) + list(out.rglob(".*.crc")):
            junk.unlink()
        part = publish_part(self.lake, table, self.run_id + suffix, out)
        self.add_part(table, (part,), n, settings)
        return n

    def add_part(self, table: str, parts: tuple[str, ...], rows: int, settings: Mapping[str, Any] | None = None,
                 ) -> None:
        """Queue published parts (lake-relative paths) as the next version of ``table``."""
        base = {self.kind: settings_dict(self.settings)} if self.settings is not None else {}
        prev = self.pending.get(table)
        if prev is not None:
            parts, rows = prev.new_parts + tuple(parts), prev.row_count + rows
        self.pending[table] = PendingVersion(new_parts=tuple(parts), row_count=rows,
                                             settings={**base, **dict(settings or {})})

    def commit(self) -> dict[str, TableVersion]:
        """Publish every queued part in one atomic catalog replace; returns the new versions."""
        if not self.pending:
            return {}
        if self.lock_scope == "lake":
            published = self.lake.commit(self.pending, run_id=self.run_id)
        else:
            with self.lake.lock(wait=True):
                published = self.lake.commit(self.pending, run_id=self.run_id)
        self.pending = {}
        self.committed.update(published)
        self.report.table_versions.update({name: tv.version for name, tv in published.items()})
        return published


def settings_dict(settings: Any) -> Any:
    """Settings as JSON-ready data: pydantic models dumped, dataclasses as dicts, the rest as given."""
    if settings is None:
        return None
    if hasattr(settings, "model_dump"):
        return settings.model_dump(mode="json")
    if is_dataclass(settings):
        return asdict(settings)
    return settings


def report_dict(report: Any) -> dict[str, Any]:
    if hasattr(report, "as_dict"):
        return report.as_dict()
    if is_dataclass(report):
        return asdict(report)
    return dict(report.__dict__)


__all__ = ["Progress", "Run", "RunError", "RunReport", "count_rows", "log_progress", "new_run_id",
           "settings_dict"]
