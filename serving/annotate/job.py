"""``annotate_study``: every MS2 scan of a study's files annotated into the lake, one commit per file.

One :class:`~speclake.lake.run.Run` of kind ``annotate`` under the lock ``annotate-<study>`` (other
studies and lake writers go on; the lake lock is held only for each commit)::

    plan     sha256 of every file; files already in ``annotation_files`` for the study are skipped
    prepare  --structures added to the structure index; the library index brought up to date;
             the ranker loaded; what the lake lacks is reported (and annotation goes on without it)
    priors   the library prior of every indexed structure not yet computed for this library
             (:mod:`.priors`; once per index shard and library, then read by every scan)
    per file read (ingest's readers + cleaning) -> library search -> candidates -> rank -> rows,
             in process, or through Ray Data actors when the file has more than ``ray_min_scans``
             scans; then its ``annotations``, ``annotation_errors`` and ``annotation_files`` parts
             are committed together (one atomic catalog replace)

Resume: a killed run leaves every finished file committed (its ledger row included) and nothing of
the file it was in; the next run skips the finished files by content (sha256) and redoes the rest.
Nothing vanishes: each scan ends in ``annotations`` (ranked rows or one ``no_candidates`` row) or in
``annotation_errors``; the report counts both.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.catalog import Lake, crash_point
from speclake.lake.run import Progress, Run, RunReport
from speclake.serving.annotate.queries import IONMODES, read_queries
from speclake.serving.annotate.steps import Annotator, StepSettings
from speclake.serving.annotate.tables import ANNOTATION_ERRORS, ANNOTATION_FILES, ANNOTATIONS

log = logging.getLogger(__name__)

#: Crash point (``SPECLAKE_CRASH_AT``) right after a file's commit: the tests kill a run there.
CRASH_AFTER_FILE = "annotate_file_committed"
#: Study file types read from a folder given as input.
STUDY_SUFFIXES = (".mzml", ".mzxml", ".mgf", ".msp")


class AnnotateSettings(BaseModel):
    """Settings of an annotation run (saved in the run record; unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(20, ge=1, description="ranked structures kept per scan")
    method: str | None = Field(None, description="registered ranker; None: the lake's best (library+prior fallback)")
    ppm: float = Field(10.0, gt=0, description="precursor m/z tolerance of candidates and identity search")
    index_name: str = Field("fingerprint", description="structure index under <lake>/index/")
    ionmode: str | None = Field(None, description="ion mode of scans whose file gives none (positive|negative)")
    structures: list[str] = Field(default_factory=list, description="structure files added to the index first")
    library_top_k: int = Field(10, ge=1, description="library hits per scan and search mode")
    # measured on 2 cores (2026-12-05, 1,520-scan MGF, lake sample + suspects index): in process 178 scans/s
    # end to end (~210/s annotate step); through a local Ray with 2 actors 112 scans/s (Ray + actor start
    # ~9 s), so Ray Data pays off from ~3,000-3,600 scans of one file (more cores or a cluster: sooner)
    ray_min_scans: int = Field(3000, ge=0, description="files with more scans than this go through Ray Data")
    batch_size: int = Field(256, ge=1, description="scans per batch (one library search, one ranker call)")
    precompute_priors: int = Field(5_000_000, ge=0, description="precompute the library prior of every indexed "
                                   "structure when the index holds at most this many (0: never; else per candidate)")
    ray_address: str | None = Field(None, description="Ray cluster address; None starts a local Ray when needed")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (default: all)")

    def model_post_init(self, __context: Any) -> None:
        if self.ionmode is not None and self.ionmode not in IONMODES:
            raise ValueError(f"ionmode must be one of {', '.join(IONMODES)}, got {self.ionmode!r}")

    def steps(self) -> StepSettings:
        return StepSettings(top_k=self.top_k, method=self.method, ppm=self.ppm, index_name=self.index_name,
                            library_top_k=self.library_top_k)


@dataclass
class AnnotateReport(RunReport):
    """What an annotation run did: per file and in total."""

    study: str = ""
    method: str = ""
    files: list[dict[str, Any]] = field(default_factory=list)     # one entry per input file
    files_annotated: int = 0
    files_skipped: int = 0                                        # already annotated (same sha256)
    n_scans: int = 0                                              # scans of the files annotated by this run
    n_annotated: int = 0                                          # scans with ranked candidates
    n_no_candidates: int = 0                                      # scans with one no_candidates row
    n_errors: int = 0                                             # scans in annotation_errors
    n_rows: int = 0                                               # annotations rows written
    missing: list[str] = field(default_factory=list)              # what the lake lacks, and how to make it
    priors: dict[str, int] = field(default_factory=dict)          # index structures' priors computed / reused
    scans_per_second: float = 0.0                                 # scans / seconds of the per-file work

    @property
    def n_done(self) -> int:
        return self.n_annotated + self.n_no_candidates


def lock_name(study: str) -> str:
    """The lock of a study's runs (``annotate-<study>``; characters unsafe in a file name replaced)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", study)
    if safe != study:
        safe += "-" + hashlib.sha256(study.encode()).hexdigest()[:8]
    return f"annotate-{safe}"


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def study_files(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files to annotate: files as given, folders expanded to their study files (sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file()
                          and any(f.name.lower().endswith(s) or f.name.lower().endswith(s + ".gz")
                                  for s in STUDY_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"study file not found: {p}")
    if not out:
        raise ValueError("no study files to annotate (give mzML, mzXML, MGF or MSP files or folders)")
    return out


def finished_files(lake: Lake, study: str) -> dict[str, str]:
    """``sha256 -> source_file`` of the files of ``study`` already in ``annotation_files``."""
    out: dict[str, str] = {}
    for f in lake.files("annotation_files"):
        t = pq.read_table(f, columns=["study", "file_sha256", "source_file"])
        for s, sha, name in zip(*(t.column(c).to_pylist() for c in ("study", "file_sha256", "source_file"))):
            if s == study:
                out.setdefault(sha, name)
    return out


def _table(rows: list[dict[str, Any]], schema: pa.Schema, **const: Any) -> pa.Table:
    cols = {f.name: [const[f.name]] * len(rows) if f.name in const else [r.get(f.name) for r in rows]
            for f in schema}
    return pa.table({n: pa.array(v, schema.field(n).type) for n, v in cols.items()}, schema=schema)


@dataclass
class _FileRows:
    """A file's output, gathered batch by batch: annotation rows as Arrow tables (not millions of dicts)."""

    const: dict[str, Any]
    tables: list[pa.Table] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    annotated: int = 0
    empty: int = 0
    rows: int = 0

    def add(self, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> int:
        """Add one batch; returns the scans it accounts for."""
        scans = {(r["query_id"], r["record_locator"]) for r in rows}
        empty = sum(1 for r in rows if r["status"] == "no_candidates")
        self.annotated += len(scans) - empty
        self.empty += empty
        self.rows += len(rows)
        self.errors += errors
        if rows:
            self.tables.append(_table(rows, ANNOTATIONS, **self.const))
        return len(scans) + len(errors)

    def annotations(self) -> pa.Table:
        return pa.concat_tables(self.tables) if self.tables else _table([], ANNOTATIONS, **self.const)


def _annotate_local(annotator: Annotator, queries: list, batch_size: int, out: _FileRows, tick) -> None:
    for start in range(0, len(queries), batch_size):
        tick(out.add(*annotator.annotate(queries[start:start + batch_size])))


def _annotate_ray(lake_dir: str, settings: AnnotateSettings, queries: list, out: _FileRows, tick) -> None:
    """The same batches through Ray Data: one :class:`~.steps.RayAnnotator` actor per CPU (at most one per batch)."""
    import pickle

    import ray

    from speclake.infra.ray import cluster_cpus
    from speclake.serving.annotate.steps import RayAnnotator, query_record

    records = [query_record(q) for q in queries]
    for r in records:
        r["mz"], r["intensities"] = r["mz"].tolist(), r["intensities"].tolist()
    n_batches = -(-len(records) // settings.batch_size)
    actors = max(1, min(cluster_cpus(), n_batches))
    ds = ray.data.from_items(records).map_batches(
        RayAnnotator, fn_constructor_args=(lake_dir, settings.steps()), batch_size=settings.batch_size,
        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors))
    for row in ds.iter_rows():
        tick(out.add(*pickle.loads(row["payload"])))


def _commit_file(run: Run, path: Path, sha: str, file_no: int, n_scans: int, read_errors: list[dict[str, Any]],
                 out: _FileRows) -> dict[str, Any]:
    """Write a finished file's annotations, errors and ledger row, and commit them together (one atomic
    catalog replace); returns the file's report entry."""
    errors = read_errors + out.errors
    entry = {"source_file": str(path), "file_sha256": sha, "status": "annotated", "n_scans": n_scans,
             "n_annotated": out.annotated, "n_no_candidates": out.empty, "n_errors": len(errors)}
    ledger = {k: v for k, v in entry.items() if k != "status"}
    ledger["finished_at"] = datetime.now(timezone.utc)
    suffix = f"-{file_no}"
    run.write_part("annotations", out.annotations(), suffix=suffix)
    run.write_part("annotation_errors", _table(errors, ANNOTATION_ERRORS, **out.const), suffix=suffix)
    run.write_part("annotation_files", _table([ledger], ANNOTATION_FILES, **out.const), suffix=suffix)
    run.commit()
    return entry


def annotate_study(files: Sequence[str | os.PathLike[str]], lake: str | os.PathLike[str], study: str,
                   settings: AnnotateSettings | None = None, *, progress: Progress | None = None) -> AnnotateReport:
    """Annotate every MS2 scan of ``files`` into ``lake`` as study ``study`` (see the module doc).

    ``progress``: ``(stage, done, total)``; the stage ``scans`` counts scans done of the scans read so far.
    """
    if not study or not study.strip():
        raise ValueError("study must be a non-empty name")
    settings = settings or AnnotateSettings()
    paths = study_files(files)
    lake_obj = Lake(lake)
    report = AnnotateReport(study=study)
    with Run(lake_obj, "annotate", settings, report, progress=progress, lock=lock_name(study)) as run:
        todo: list[tuple[Path, str]] = []
        with run.stage("plan"):
            done = finished_files(lake_obj, study)
            for p in paths:
                sha = file_sha256(p)
                if sha in done:
                    report.files_skipped += 1
                    report.files.append({"source_file": str(p), "file_sha256": sha, "status": "skipped",
                                         "reason": f"already annotated as {done[sha]}"})
                    continue
                done[sha] = str(p)
                todo.append((p, sha))
        if not todo:
            log.info("study %s: every file is already annotated", study)
            return report
        with run.stage("prepare"):
            _prepare(lake_obj, settings, report)
            annotator = Annotator(lake_obj.root, settings.steps())
            report.method = annotator.ranker.name
            report.missing += annotator.missing
            report.warnings += annotator.missing
        with run.stage("priors"):
            if annotator.source is not None and len(annotator.source.index or ()) <= settings.precompute_priors:
                report.priors = annotator.ensure_priors(lambda done, total: run.note("priors", done, total)) or {}
        seen = {"read": 0, "done": 0}

        def tick(n: int) -> None:
            seen["done"] += n
            run.note("scans", seen["done"], seen["read"])

        work_seconds = 0.0
        ray_started = False
        with ExitStack() as engines:
            try:
                for file_no, (path, sha) in enumerate(todo, start=1):
                    t0 = time.perf_counter()
                    qf = read_queries(path, ionmode=settings.ionmode, study=study, source_file=str(path))
                    t_read = run.lap("read", t0)
                    seen["read"] += qf.n_scans
                    tick(len(qf.errors))
                    out = _FileRows({"study": study, "annotation_run_id": run.run_id})
                    if len(qf.queries) > settings.ray_min_scans:
                        if not ray_started:  # first big file: start (or join) Ray once for the run
                            from speclake.infra.ray import ray_session
                            ray_started = True
                            engines.enter_context(ray_session(address=settings.ray_address,
                                                              num_cpus=settings.num_cpus))
                        engine = "ray"
                        _annotate_ray(str(lake_obj.root), settings, qf.queries, out, tick)
                    else:
                        engine = "local"
                        _annotate_local(annotator, qf.queries, settings.batch_size, out, tick)
                    t_ann = run.lap("annotate", t_read)
                    entry = _commit_file(run, path, sha, file_no, qf.n_scans, qf.errors, out)
                    run.lap("write", t_ann)
                    crash_point(CRASH_AFTER_FILE)
                    work_seconds += time.perf_counter() - t0
                    report.files_annotated += 1
                    for key in ("n_scans", "n_annotated", "n_no_candidates", "n_errors"):
                        setattr(report, key, getattr(report, key) + entry[key])
                    report.n_rows += out.rows
                    report.files.append({**entry, "engine": engine, "seconds": round(time.perf_counter() - t0, 3)})
                    if entry["n_annotated"] + entry["n_no_candidates"] + entry["n_errors"] != entry["n_scans"]:
                        report.warnings.append(f"{path}: {entry['n_scans']} scans but {entry['n_annotated']} "
                                               f"annotated, {entry['n_no_candidates']} without candidates and "
                                               f"{entry['n_errors']} errors")  # a scan vanished: say so loudly
            finally:
                annotator.close()
        report.scans_per_second = round(report.n_scans / work_seconds, 2) if work_seconds > 0 else 0.0
    return report


def _prepare(lake: Lake, settings: AnnotateSettings, report: AnnotateReport) -> None:
    """Add ``--structures`` to the structure index and bring the library index up to date."""
    if settings.structures:
        from speclake.training.candidates import ensure_index

        ensure_index(lake.root, settings.structures, index_name=settings.index_name, num_cpus=settings.num_cpus)
    if lake.current("spectra") is None:
        report.missing.append("the lake has no spectra: no library search (run `speclake ingest` first)")
        return
    from speclake.lake.catalog import LakeBusy
    from speclake.serving.library.index import LibraryIndex

    try:
        LibraryIndex.update(lake.root)
    except LakeBusy as exc:  # another job updates it: search the index as it is published now
        report.warnings.append(f"library index not updated ({exc}); searching it as it is")


__all__ = ["AnnotateReport", "AnnotateSettings", "CRASH_AFTER_FILE", "annotate_study", "file_sha256",
           "finished_files", "study_files"]
