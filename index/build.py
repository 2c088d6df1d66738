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
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speclake.index import tables  # noqa: F401  (registers the index lake tables)
from speclake.index.catalog import CATALOG_FILE
from speclake.index.embed import EmbedActor, Embedder, embedder_class, get_embedder
from speclake.index.search import MANIFEST, MANIFEST_FORMAT, index_dir, read_manifest
from speclake.index.settings import IndexSettings
from speclake.index.shards import ID_SHIFT, MASS_MAX, MASS_MIN, META_COLUMNS, build_shard, plan_edges
from speclake.index.sources import detect_format

log = logging.getLogger(__name__)

#: progress(stage, done, total): called by the build as work completes (total None when unknown).
Progress = Callable[[str, int, "int | None"], None]

#: Target Ray Data block size of the standardization stage (a few batches of raw records).
BLOCK_BYTES = 4 << 20

#: Settings that change a shard's files; a shard is reused only when these are unchanged.
_SHARD_SETTINGS = ("flat_max", "ann", "hnsw_m", "hnsw_ef_construction", "train_sample")


class BuildError(RuntimeError):
    """The build cannot proceed (bad input, concurrent build, Ray failure)."""


@dataclass
class BuildReport:
    """What a build did, with counts and stage times (also saved in the manifest)."""

    run_id: str
    index_dir: str
    records_read: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    structures: int = 0
    duplicates_merged: int = 0
    embedded_new: int = 0
    embeddings_reused: int = 0
    shards_built: int = 0
    shards_reused: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    index_bytes: int = 0


def _sql_str(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".build.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BuildError(f"another build of {root} is running") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _ray_session(settings: IndexSettings) -> Iterator[None]:
    """Use the running Ray, or connect/start one for this build (and stop it afterwards)."""
    import ray

    if ray.is_initialized():
        yield
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, ignore_reinit_error=True, log_to_driver=False)
    else:
        ray.init(num_cpus=settings.num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _read_sources(ds_items: list[dict[str, Any]], batch_size: int) -> Iterator[pa.Table]:
    from speclake.index.sources import iter_source

    for item in ds_items:
        yield from iter_source(item["path"], item["file_no"], batch_size, item["fmt"])


def _read_batch(batch: pa.Table, batch_size: int) -> Iterator[pa.Table]:
    yield from _read_sources(batch.to_pylist(), batch_size)


def _standardize_stage(sources: list[dict[str, Any]], out_dir: Path, settings: IndexSettings) -> None:
    import ray.data

    import ray

    from speclake.index.standardize import StandardizeActor

    # Reading is light and sequential per file (num_cpus=0 so it runs beside the actors);
    # standardization (RDKit + InChI) is the heavy part: an actor pool of one actor per CPU.
    # Small blocks: a reader's output is otherwise coalesced into ~128 MiB blocks (~600k records),
    # and one big SMILES file would feed only a handful of actors.
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)))
    ctx = ray.data.DataContext.get_current()
    saved = ctx.target_max_block_size
    ctx.target_max_block_size = BLOCK_BYTES
    try:
        ds = ray.data.from_items(sources, override_num_blocks=len(sources))
        ds = ds.map_batches(_read_batch, fn_kwargs={"batch_size": settings.batch_size}, batch_size=1,
                            batch_format="pyarrow", num_cpus=0)
        ds = ds.map_batches(StandardizeActor, batch_size=settings.batch_size, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
        ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": 0})
    finally:
        ctx.target_max_block_size = saved


def _embed_stage(todo: pa.Table, out_dir: Path, settings: IndexSettings, embedder_cls: type[Embedder],
                 model: str | None = None) -> None:
    import ray
    import ray.data

    n_cpus = int(ray.cluster_resources().get("CPU", 1))
    n_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpu = embedder_cls.uses_gpu and n_gpus > 0 and settings.use_gpu is not False
    actors = max(1, n_gpus if gpu else n_cpus)
    chunk = max(settings.batch_size, min(50_000, len(todo) // (4 * actors) + 1))
    blocks = [todo.slice(i, chunk) for i in range(0, len(todo), chunk)]
    ds = ray.data.from_arrow(blocks)
    ds = ds.map_batches(EmbedActor, fn_constructor_args=(embedder_cls, model), batch_size=settings.batch_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=1 if gpu else None)
    ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": 0})


def _parquet_glob(directory: Path) -> list[str]:
    return sorted(str(p) for p in directory.glob("*.parquet"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


def _plan(masses: np.ndarray, previous: dict[str, Any] | None, settings: IndexSettings,
          repartition: bool) -> list[float]:
    """Shard edges: the previous version's (so unchanged shards are reused), split where a shard grew past 2x."""
    if previous is None or repartition or previous["settings"].get("shard_target_size") != settings.shard_target_size:
        return plan_edges(masses, settings.shard_target_size)
    edges = list(previous["edges"])
    bounds = [MASS_MIN, *edges, MASS_MAX]
    out: list[float] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        inside = masses[(masses >= lo) & (masses < hi)]
        if len(inside) > 2 * settings.shard_target_size:
            out.extend(e for e in plan_edges(inside, settings.shard_target_size) if lo < e < hi)
        if hi != MASS_MAX:
            out.append(float(hi))
    return sorted(set(out))


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
    embedded, and only shards whose content changed are rebuilt.
    """
    settings = settings or IndexSettings()
    name = name or settings.embedding
    root = index_dir(lake, name).resolve()
    model = embedder_class(settings.embedding).resolve_model(str(lake), settings.embedding_model)
    embedder = get_embedder(settings.embedding, model)
    emb_desc = embedder.describe()
    items = []
    for i, src in enumerate(sources):
        p = Path(src)
        if not p.exists():
            raise BuildError(f"structure source {p} does not exist")
        items.append({"path": str(p.resolve()), "file_no": i, "fmt": detect_format(p)})
    if not items and not add:
        raise BuildError("no structure sources given")
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    report = BuildReport(run_id=run_id, index_dir=str(root))
    tick = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        report.seconds[stage] = round(now - tick, 3)
        tick = now
        if progress:
            progress(stage, 1, 1)

    with _build_lock(root), _ray_session(settings):
        previous = read_manifest(root) if (root / MANIFEST).is_file() else None
        if add and previous is None:
            log.info("no current index at %s: --add builds a new one", root)
        for stale in sorted((root / "_staging").glob("*")):  # left by a crashed build (we hold the lock)
            log.warning("removing scratch of an unfinished build: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
        staging = root / "_staging" / run_id
        version_name = f"v-{run_id}"
        version = staging / version_name
        (version / "shards").mkdir(parents=True)
        con = duckdb.connect(str(staging / "work.duckdb"))
        con.execute(f"SET temp_directory = {_sql_str(staging / 'duckdb_tmp')}")
        try:
            # 1. read + standardize (Ray Data)
            std_dir = staging / "standardized"
            if items:
                _standardize_stage(items, std_dir, settings)
            lap("standardize")
            std_files = _parquet_glob(std_dir)
            if std_files:
                con.execute(f"CREATE VIEW std AS SELECT * FROM read_parquet({std_files!r})")
            else:
                con.execute("CREATE VIEW std AS SELECT NULL::INT AS file_no, NULL::BIGINT AS record_no, "
                            "NULL::VARCHAR AS source, NULL::VARCHAR AS source_file, NULL::VARCHAR AS record_locator, "
                            "NULL::VARCHAR AS record_id, NULL::VARCHAR AS compound_name, NULL::VARCHAR AS smiles_in, "
                            "NULL::VARCHAR AS inchi_in, NULL::VARCHAR AS inchikey, NULL::VARCHAR AS inchikey14, "
                            "NULL::VARCHAR AS smiles, NULL::VARCHAR AS formula, NULL::DOUBLE AS monoisotopic_mass, "
                            "NULL::VARCHAR AS reason_code, NULL::VARCHAR AS reason, NULL::VARCHAR AS raw_excerpt "
                            "WHERE false")
            report.records_read = con.sql("SELECT count(*) FROM std").fetchall()[0][0]
            prev_version = root / previous["version_dir"] if previous else None

            # 2. quarantine + dedupe by InChIKey (previous structures first when adding)
            con.execute(
                f"""CREATE TABLE quarantine AS SELECT
                    substr(sha256(source_file || '|' || record_locator || '|' || reason_code), 1, 24) AS quarantine_id,
                    coalesce(source, 'unknown') AS source, source_file, record_locator, source AS source_format,
                    CASE WHEN inchikey IS NULL AND smiles_in IS NULL AND inchi_in IS NULL
                              AND reason_code IN ('missing_smiles', 'malformed_sdf_record', 'truncated_record')
                         THEN 'read' ELSE 'structure' END AS stage,
                    reason_code, reason, raw_excerpt, {_sql_str(run_id)} AS ingest_run_id
                FROM std WHERE reason_code IS NOT NULL""")
            prev_rows = ""
            if add and prev_version is not None:
                con.execute(f"ATTACH {_sql_str(prev_version / CATALOG_FILE)} AS prev (READ_ONLY)")
                prev_rows = """SELECT 0 AS prio, -1 AS file_no, faiss_id AS record_no, inchikey, inchikey14, smiles,
                        formula, monoisotopic_mass, source, source_file, record_id, compound_name, n_records AS n
                    FROM prev.structures UNION ALL """
                old_q = prev_version / "quarantine.parquet"
                if old_q.is_file():
                    con.execute(f"INSERT INTO quarantine SELECT * FROM read_parquet({_sql_str(old_q)}) "
                                f"WHERE quarantine_id NOT IN (SELECT quarantine_id FROM quarantine)")
            con.execute(f"""CREATE TABLE dedup AS
                SELECT * EXCLUDE (prio, file_no, record_no, n, rn) FROM (
                    SELECT *, sum(n) OVER w AS n_records,
                        row_number() OVER (PARTITION BY inchikey ORDER BY prio, file_no, record_no) AS rn
                    FROM ({prev_rows}
                        SELECT 1 AS prio, file_no, record_no, inchikey, inchikey14, smiles, formula,
                            monoisotopic_mass, source, source_file, record_id, compound_name, 1 AS n
                        FROM std WHERE reason_code IS NULL)
                    WINDOW w AS (PARTITION BY inchikey))
                WHERE rn = 1""")
            n_ok = con.sql("SELECT count(*) FROM std WHERE reason_code IS NULL").fetchall()[0][0]
            n_prev = con.sql("SELECT count(*) FROM prev.structures").fetchall()[0][0] if prev_rows else 0
            report.structures = con.sql("SELECT count(*) FROM dedup").fetchall()[0][0]
            report.duplicates_merged = int(n_ok + n_prev - report.structures)
            lap("dedupe")

            # 3. embed only InChIKeys without a stored vector of this embedder version
            store = root / "embeddings" / _slug(f"{embedder.name}@{embedder.version}")
            store.mkdir(parents=True, exist_ok=True)
            stored = _parquet_glob(store)
            stored_sql = (f"SELECT inchikey FROM read_parquet({stored!r})" if stored
                          else "SELECT NULL::VARCHAR AS inchikey WHERE false")
            todo = con.sql(f"SELECT inchikey, smiles FROM dedup WHERE inchikey NOT IN ({stored_sql}) "
                               "ORDER BY inchikey").to_arrow_table()
            report.embedded_new = len(todo)
            report.embeddings_reused = report.structures - len(todo)
            if len(todo):
                emb_dir = staging / "embedded"
                _embed_stage(todo, emb_dir, settings, type(embedder), model)
                for j, f in enumerate(_parquet_glob(emb_dir)):
                    os.replace(f, store / f"part-{run_id}-{j:05d}.parquet")
            stored = _parquet_glob(store)
            if not stored:
                raise BuildError("no structures to index: every record was quarantined")
            con.execute(f"""CREATE TABLE vec AS SELECT inchikey, any_value(vector) AS vector, bool_and(ok) AS ok
                FROM read_parquet({stored!r}) WHERE inchikey IN (SELECT inchikey FROM dedup) GROUP BY inchikey""")
            con.execute(f"""INSERT INTO quarantine SELECT
                    substr(sha256(d.source_file || '|' || d.inchikey || '|embedding_failed'), 1, 24), d.source,
                    d.source_file, 'inchikey:' || d.inchikey, d.source, 'structure', 'embedding_failed',
                    'the {embedder.name} embedder could not embed the standardized SMILES', d.smiles,
                    {_sql_str(run_id)}
                FROM dedup d JOIN vec v USING (inchikey) WHERE NOT v.ok""")
            con.execute("CREATE TABLE rows AS SELECT d.*, v.vector FROM dedup d JOIN vec v USING (inchikey) WHERE v.ok")
            lap("embed")

            # 4. shard plan: mass edges, positions in mass order, reuse of unchanged shards
            keyed = con.sql("SELECT inchikey, monoisotopic_mass FROM rows").to_arrow_table()
            masses = keyed.column("monoisotopic_mass").to_numpy()
            edges = _plan(masses, previous, settings, repartition)
            con.register("placement", pa.table({
                "inchikey": keyed.column("inchikey"),
                "shard_idx": pa.array(np.searchsorted(np.asarray(edges), masses, side="right").astype(np.int32)),
            }))
            con.execute("""CREATE TABLE placed AS SELECT r.*, p.shard_idx,
                    row_number() OVER (PARTITION BY p.shard_idx ORDER BY r.monoisotopic_mass, r.inchikey) - 1 AS position
                FROM rows r JOIN placement p USING (inchikey)""")
            con.unregister("placement")
            shard_settings = json.dumps({k: getattr(settings, k) for k in _SHARD_SETTINGS}, sort_keys=True)
            content = {
                int(i): hashlib.sha256(f"{h}|{emb_desc['version']}|{shard_settings}".encode()).hexdigest()[:24]
                for i, h in con.execute("""SELECT shard_idx, md5(string_agg(inchikey || '|' || smiles || '|'
                        || monoisotopic_mass::VARCHAR, chr(10) ORDER BY position)) FROM placed GROUP BY shard_idx"""
                                        ).fetchall()
            }
            bounds = [MASS_MIN, *edges, MASS_MAX]
            prev_shards = {}
            if previous is not None and previous["embedding"] == emb_desc:
                prev_shards = {(s["lo_edge"], s["hi_edge"], s["members"]): s for s in previous["shards"]}
            next_serial = 1 + max([s["serial"] for s in previous["shards"]], default=-1) if previous else 0
            plan: list[dict[str, Any]] = []
            for idx in sorted(content):
                lo, hi = float(bounds[idx]), float(bounds[idx + 1])
                reuse = prev_shards.get((lo, hi, content[idx]))
                serial = reuse["serial"] if reuse else next_serial
                if not reuse:
                    next_serial += 1
                plan.append({"idx": idx, "lo": lo, "hi": hi, "serial": serial, "reuse": reuse,
                             "dir": f"{version_name}/shards/s{serial:05d}"})
            con.register("serials", pa.table({"shard_idx": pa.array([p["idx"] for p in plan], pa.int32()),
                                              "serial": pa.array([p["serial"] for p in plan], pa.int64())}))
            con.execute("CREATE TABLE final AS SELECT p.*, s.serial FROM placed p JOIN serials s USING (shard_idx)")
            con.unregister("serials")
            lap("plan")

            # 5. build changed shards in parallel (Ray tasks), link unchanged ones
            import ray

            build_remote = ray.remote(num_cpus=1)(build_shard)
            pending: dict[Any, dict[str, Any]] = {}
            inputs = staging / "shard_inputs"
            inputs.mkdir()
            meta_cols = ", ".join(c for c in META_COLUMNS)
            shard_entries: list[dict[str, Any]] = []
            for p in plan:
                out_dir = staging / p["dir"]
                if p["reuse"]:
                    _link_or_copy(root / p["reuse"]["dir"], out_dir)
                    entry = dict(p["reuse"], dir=p["dir"])
                    shard_entries.append(entry)
                    report.shards_reused += 1
                    continue
                src = inputs / f"s{p['serial']:05d}.parquet"
                con.execute(f"COPY (SELECT position, vector, {meta_cols} FROM final WHERE shard_idx = {p['idx']} "
                            f"ORDER BY position) TO {_sql_str(src)} (FORMAT parquet)")
                ref = build_remote.remote(str(src), str(out_dir), p["serial"], emb_desc, settings.model_dump_json())
                pending[ref] = p
            total = len(pending)
            done = 0
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                p = pending.pop(ready[0])
                info = ray.get(ready[0])
                info.update(lo_edge=p["lo"], hi_edge=p["hi"], dir=p["dir"], members=content[p["idx"]])
                info["bytes"] = sum(f.stat().st_size for f in (staging / p["dir"]).iterdir())
                shard_entries.append(info)
                (inputs / f"s{p['serial']:05d}.parquet").unlink()
                done += 1
                report.shards_built += 1
                if progress:
                    progress("shards", done, total)
            shard_entries.sort(key=lambda s: s["lo_edge"])
            lap("shards")

            # 6. catalog (DuckDB + Parquet) and quarantine, then the manifest
            cat_path = version / CATALOG_FILE
            con.execute(f"ATTACH {_sql_str(cat_path)} AS cat")
            con.execute(f"""CREATE TABLE cat.structures AS SELECT
                    (serial << {ID_SHIFT}) | position AS faiss_id, serial::INT AS shard, inchikey, inchikey14, smiles,
                    formula, monoisotopic_mass, source, source_file, record_id, compound_name, n_records::BIGINT AS n_records
                FROM final ORDER BY faiss_id""")
            con.execute("DETACH cat")
            con.execute(f"ATTACH {_sql_str(cat_path)} AS cat (READ_ONLY)")
            con.execute(f"COPY (SELECT * FROM cat.structures) TO {_sql_str(version / 'structures.parquet')} "
                        "(FORMAT parquet, COMPRESSION zstd)")
            con.execute("DETACH cat")
            con.execute(f"COPY (SELECT * FROM quarantine ORDER BY source_file, record_locator) TO "
                        f"{_sql_str(version / 'quarantine.parquet')} (FORMAT parquet)")
            report.quarantined = dict(con.execute(
                "SELECT reason_code, count(*) FROM quarantine GROUP BY 1 ORDER BY 1").fetchall())
            lap("catalog")
        finally:
            con.close()

        report.index_bytes = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
        manifest = {
            "format": MANIFEST_FORMAT,
            "run_id": run_id,
            "created_at": time.time(),
            "version_dir": version_name,
            "previous_run_id": previous["run_id"] if previous else None,
            "settings": settings.model_dump(mode="json"),
            "embedding": emb_desc,
            "edges": edges,
            "shards": shard_entries,
            "count": int(sum(s["count"] for s in shard_entries)),
            "sources": [{"path": i["path"], "format": i["fmt"]} for i in items],
            "report": asdict(report),
        }
        os.rename(version, root / version_name)
        tmp = root / f".{MANIFEST}.{run_id}.tmp"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, root / MANIFEST)
        shutil.rmtree(staging, ignore_errors=True)
        _prune_versions(root, version_name, settings.keep_versions)
        lap("publish")
    log.info("built index %s: %d structures in %d shards (%d built, %d reused), %d quarantined",
             root, report.structures, len(shard_entries), report.shards_built, report.shards_reused,
             sum(report.quarantined.values()))
    publish_index_tables(lake, name, root / version_name, run_id)
    return report


def publish_index_tables(lake_dir: str | os.PathLike[str], name: str, version_dir: Path, run_id: str | None = None,
                         *, attempts: int = 20) -> bool:
    """Make an index version's structures and quarantine the lake tables ``index_structures`` and
    ``index_quarantine`` (rows of index ``name`` replaced, other indexes' rows kept), when ``lake_dir`` is
    a speclake lake. Returns whether the lake was updated (False: not a lake, or its writer lock stayed busy)."""
    import duckdb

    from speclake.index.tables import INDEX_QUARANTINE_SPEC, INDEX_STRUCTURES_SPEC
    from speclake.lake.catalog import Lake, LakeBusy, LakeError, PendingVersion, publish_part

    try:
        lake = Lake(lake_dir)
    except LakeError:
        return False  # an index built in a plain directory has no lake tables
    run_id = run_id or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    prefix = f"part-{name}-"
    for attempt in range(attempts):
        try:
            with lake.lock():
                pending: dict[str, PendingVersion] = {}
                staging = lake.staging(f"index-{run_id}")
                try:
                    for spec, file in ((INDEX_STRUCTURES_SPEC, "structures.parquet"),
                                       (INDEX_QUARANTINE_SPEC, "quarantine.parquet")):
                        out = staging / spec.name
                        out.mkdir(parents=True, exist_ok=True)
                        con = duckdb.connect()
                        try:
                            n = con.execute(
                                f"COPY (SELECT {_sql_str(name)} AS index_name, * FROM read_parquet({_sql_str(version_dir / file)})) "
                                f"TO {_sql_str(out / 'part-0.parquet')} (FORMAT parquet, COMPRESSION zstd)").fetchone()[0]
                            prev = lake.current(spec.name)
                            kept = [p for p in (prev.parts if prev else ()) if not Path(p).name.startswith(prefix)]
                            n_kept = con.execute(
                                f"SELECT count(*) FROM read_parquet({[str(lake.root / p / '*.parquet') for p in kept]!r})"
                            ).fetchone()[0] if kept else 0
                        finally:
                            con.close()
                        part = publish_part(lake, spec.name, f"{name}-{run_id}", out)
                        pending[spec.name] = PendingVersion(new_parts=(*kept, part), row_count=int(n) + int(n_kept),
                                                            settings={"index": name, "version": version_dir.name})
                    lake.commit(pending, run_id=run_id)
                finally:
                    lake.clean_staging(f"index-{run_id}")
            return True
        except LakeBusy:
            time.sleep(min(5.0, 0.2 * (attempt + 1)))
    log.warning("index %s built, but the lake tables index_structures/index_quarantine were not updated: %s is busy "
                "(run 'speclake index publish' later)", name, lake.root)
    return False


def _prune_versions(root: Path, current: str, keep: int) -> None:
    versions = sorted((p for p in root.glob("v-*") if p.is_dir()), key=lambda p: p.name)
    old = [p for p in versions if p.name != current]
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    staging = root / "_staging"
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
