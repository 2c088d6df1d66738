"""Build (or incrementally update) a structure index: sources -> standardize -> dedupe -> embed -> shards -> catalog.

Layout of ``<lake>/index/<name>/``::

    manifest.json                      the current version (replaced atomically, last)
    v-<run>/shards/s<serial>/...        shard files (see speclake.index.shards)
    v-<run>/catalog.duckdb             DuckDB catalog, table ``structures``
    v-<run>/structures.parquet         the same rows, for the lake (table ``index_structures``)
    v-<run>/quarantine.parquet         records not indexed, with reasons (table ``index_quarantine``)
    embeddings/<embedder>@<version>/   Parquet parts (inchikey, vector, ok): only new InChIKeys are embedded
    _staging/<run>/                    scratch of a running build (removed at the end)

A crash at any point leaves the previous ``manifest.json`` and the version it names intact.
Unchanged shards (same rows, embedding and index settings) are hard-linked from the previous version.

A build is one :class:`~speclake.lake.run.Run` of kind ``index`` holding the lock ``index-<name>`` (other
indexes and lake writers go on), with a run record; in a plain folder that is no lake, the lock is a file
of the index and there is no run record. The steps are in :mod:`speclake.index.build_steps`.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import duckdb

from speclake.index import build_steps as steps
from speclake.index.build_steps import BuildError
from speclake.index.embed import Embedder, embedder_class, get_embedder
from speclake.index.search import MANIFEST, MANIFEST_FORMAT, index_dir, read_manifest
from speclake.index.settings import IndexSettings
from speclake.index.tables import INDEX_QUARANTINE_SPEC, INDEX_STRUCTURES_SPEC
from speclake.infra.ray import ray_session
from speclake.lake.catalog import Lake, LakeBusy, LakeError, file_lock, publish_part
from speclake.lake.run import Progress, Run, RunReport, count_rows

log = logging.getLogger(__name__)


@dataclass
class BuildReport(RunReport):
    """What a build did, with counts (also saved in the manifest; ``seconds`` there: up to the manifest switch)."""

    index_dir: str = ""
    records_read: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    structures: int = 0
    duplicates_merged: int = 0
    embedded_new: int = 0
    embeddings_reused: int = 0
    shards_built: int = 0
    shards_reused: int = 0
    index_bytes: int = 0


def build_index(
    sources: Sequence[str | os.PathLike[str]],
    lake: str | os.PathLike[str],
    *,
    name: str | None = None,
    settings: IndexSettings | None = None,
    add: bool = False,
    repartition: bool = False,
    progress: Progress | None = None,
) -> BuildReport:
    """Build the index ``<lake>/index/<name>`` from structure ``sources`` (files or lake directories).

    ``add=True`` keeps every structure of the current version and adds the new sources'
    (only those are standardized); otherwise the index holds exactly ``sources``. Either
    way only InChIKeys without a stored embedding of the current embedder version are
    embedded, and only shards whose content changed are rebuilt. A second build of the
    same index while one runs is refused (:class:`BuildError`).
    """
    t0 = time.perf_counter()
    settings = settings or IndexSettings()
    name = name or settings.embedding
    root = index_dir(lake, name).resolve()
    model = embedder_class(settings.embedding).resolve_model(str(lake), settings.embedding_model)
    embedder = get_embedder(settings.embedding, model)
    emb_desc = embedder.describe()
    items = steps.source_items(sources)
    if not items and not add:
        raise BuildError("no structure sources given")
    report = BuildReport(index_dir=str(root))
    with _build_run(lake, root, name, settings, report, progress) as run:
        previous = read_manifest(root) if (root / MANIFEST).is_file() else None
        if add and previous is None:
            log.info("no current index at %s: --add builds a new one", root)
        run_id, version_name = run.run_id, f"v-{run.run_id}"
        scratch = steps.scratch_dir(root, run_id)
        try:
            with ray_session(address=settings.ray_address, num_cpus=settings.num_cpus), \
                    steps.work_db(scratch) as con:
                prev_version = root / previous["version_dir"] if add and previous else None
                edges, shards = _run_steps(run, con, items, root, scratch, settings, repartition, previous,
                                           prev_version, embedder, model)
            with run.stage("publish"):
                staged = scratch / version_name
                report.index_bytes = sum(f.stat().st_size for f in staged.rglob("*") if f.is_file())
                report.seconds = round(time.perf_counter() - t0, 3)
                version = steps.publish_manifest(root, scratch, {
                    "format": MANIFEST_FORMAT,
                    "run_id": run_id,
                    "created_at": time.time(),
                    "version_dir": version_name,
                    "previous_run_id": previous["run_id"] if previous else None,
                    "settings": settings.model_dump(mode="json"),
                    "embedding": emb_desc,
                    "edges": edges,
                    "shards": shards,
                    "count": int(sum(s["count"] for s in shards)),
                    "sources": [{"path": i["path"], "format": i["fmt"]} for i in items],
                    "report": report.as_dict(),
                }, settings.keep_versions)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        log.info("built index %s: %d structures in %d shards (%d built, %d reused), %d quarantined",
                 root, report.structures, len(shards), report.shards_built, report.shards_reused,
                 sum(report.quarantined.values()))
        if isinstance(run.lake, Lake):
            with run.stage("lake_tables"):
                publish_index_tables(lake, name, version, run=run)
    return report


def _run_steps(run: Run, con: duckdb.DuckDBPyConnection, items: list[dict[str, Any]], root: Path, scratch: Path,
               settings: IndexSettings, repartition: bool, previous: dict[str, Any] | None, prev_version: Path | None,
               embedder: Embedder, model: str | None) -> tuple[list[float], list[dict[str, Any]]]:
    """Steps 1-6 of :mod:`~speclake.index.build_steps`, each a timed stage of ``run`` (counts into its report).
    ``previous``: the current manifest (shard reuse); ``prev_version``: its version when adding to it.
    Returns the shard edges and the shards' manifest entries."""
    report: BuildReport = run.report  # type: ignore[assignment]
    version_name, emb_desc = f"v-{run.run_id}", embedder.describe()
    with run.stage("standardize"):
        report.records_read = steps.standardize(con, items, scratch / "standardized", settings)
    with run.stage("dedupe"):
        report.structures, report.duplicates_merged = steps.quarantine_and_dedupe(con, run.run_id, prev_version)
    with run.stage("embed"):
        report.embedded_new = steps.embed_missing(con, steps.embedding_store(root, embedder), scratch, settings,
                                                  embedder, model, run.run_id)
        report.embeddings_reused = report.structures - report.embedded_new
    with run.stage("plan"):
        edges, plan = steps.plan_shards(con, previous, settings, repartition, emb_desc, version_name)
    report.shards_reused = sum(1 for p in plan if p.reuse)
    report.shards_built = len(plan) - report.shards_reused
    with run.stage("shards", total=report.shards_built):
        shards = steps.build_shards(con, plan, root, scratch, settings, emb_desc, run.note)
    with run.stage("catalog"):
        report.quarantined = steps.write_catalog(con, scratch / version_name)
    return edges, shards


@contextmanager
def _build_run(lake_dir: str | os.PathLike[str], root: Path, name: str, settings: IndexSettings, report: BuildReport,
               progress: Progress | None) -> Iterator[Run]:
    """The run of a build: in a lake, holding the lock ``index-<name>``; in a plain folder, over
    :class:`_IndexFolder`. A build of the same index already running: :class:`BuildError`."""
    try:
        lake: Any = Lake(lake_dir)
    except LakeError:
        lake = _IndexFolder(Path(lake_dir).resolve(), root)
    with ExitStack() as stack:
        try:
            run = stack.enter_context(Run(lake, "index", settings, report, progress=progress, lock=f"index-{name}"))
        except LakeBusy as exc:
            raise BuildError(f"another build of index {name!r} is running: {exc}") from None
        yield run


class _IndexFolder:
    """An index built in a folder that is no lake, in the place of the :class:`Lake` of its :class:`Run`:
    the lock is ``<index>/.build.lock``, scratch is the index's ``_staging``, and the run record is not kept
    (the manifest holds the report)."""

    def __init__(self, root: Path, index_root: Path) -> None:
        self.root, self.index_root = root, index_root

    def lock(self, scope: str | None = None, *, wait: bool = False) -> Any:
        return file_lock(self.index_root / ".build.lock", f"another build of {self.index_root} is running", wait=wait)

    def staging(self, run_id: str) -> Path:
        path = self.index_root / "_staging" / run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def clean_staging(self, run_id: str) -> None:
        shutil.rmtree(self.index_root / "_staging" / run_id, ignore_errors=True)

    def record_run(self, run_id: str, record: dict[str, Any]) -> None:
        return None


def publish_index_tables(lake_dir: str | os.PathLike[str], name: str, version_dir: Path, *,
                         run: Run | None = None) -> bool:
    """Make an index version's structures and quarantine the lake tables ``index_structures`` and
    ``index_quarantine`` (rows of index ``name`` replaced, other indexes' rows kept), when ``lake_dir`` is
    a speclake lake. ``run``: the build's run (else a run of kind ``index-publish``, with no lock of its own);
    the commit waits for the lake's writer lock. Returns whether the lake was updated (False: not a lake)."""
    with ExitStack() as stack:
        if run is None:
            try:
                lake = Lake(lake_dir)
            except LakeError:
                return False  # an index built in a plain directory has no lake tables
            run = stack.enter_context(Run(lake, "index-publish", lock=None))
        for spec, file in ((INDEX_STRUCTURES_SPEC, "structures.parquet"), (INDEX_QUARANTINE_SPEC, "quarantine.parquet")):
            out = run.staging / spec.name
            out.mkdir(parents=True, exist_ok=True)
            con = duckdb.connect()
            try:
                cols = steps.select_list(spec.schema, {"index_name": steps.sql_str(name)})
                n = con.execute(f"COPY (SELECT {cols} FROM read_parquet({steps.sql_str(version_dir / file)})) "
                                f"TO {steps.sql_str(out / 'part-0.parquet')} (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]
            finally:
                con.close()
            prev = run.lake.current(spec.name)
            kept = tuple(p for p in (prev.parts if prev else ()) if not _is_part_of(p, name))
            part = publish_part(run.lake, spec.name, f"{name}-{run.run_id}", out)
            run.add_part(spec.name, (*kept, part), int(n) + sum(count_rows(run.lake.root / p) for p in kept),
                         {"index": name, "version": version_dir.name})
        run.commit()
    return True


def _is_part_of(part: str, name: str) -> bool:
    """Whether a part of the index lake tables holds index ``name``'s rows (``part-<name>-<run id>``)."""
    return re.fullmatch(rf"part-{re.escape(name)}-\d{{8}}T\d{{6}}-[0-9a-f]+", Path(part).name) is not None
