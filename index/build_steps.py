"""The steps of an index build (driven by :func:`speclake.index.build.build_index`), in order.

1. :func:`standardize`: read + standardize every source (Ray Data) -> view ``std``;
2. :func:`quarantine_and_dedupe`: records not standardized -> table ``quarantine``; one row per
   InChIKey (the previous version's first when adding) -> table ``dedup``;
3. :func:`embed_missing`: embed only InChIKeys without a stored vector -> table ``rows``;
4. :func:`plan_shards`: mass edges, positions in mass order, reuse of unchanged shards -> table ``final``;
5. :func:`build_shards`: changed shards built in parallel (Ray tasks), unchanged ones linked;
6. :func:`write_catalog`: DuckDB catalog, ``structures.parquet``, ``quarantine.parquet``;
7. :func:`publish_manifest`: the version moved in, the manifest replaced (the atomic switch), old versions pruned.

Steps 1-6 share one DuckDB work database (:func:`work_db`) and hand over through its named tables.
Every table they write has the columns of a declared schema: :data:`~speclake.index.standardize.STANDARDIZED_RECORDS`,
:data:`~speclake.lake.schema.QUARANTINE`, :data:`~speclake.index.tables.INDEX_STRUCTURES`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa

from speclake.index.catalog import CATALOG_FILE
from speclake.index.embed import EmbedActor, Embedder
from speclake.index.search import MANIFEST
from speclake.index.settings import IndexSettings
from speclake.index.shards import ID_SHIFT, MASS_MAX, MASS_MIN, META_COLUMNS, build_shard, plan_edges
from speclake.index.sources import detect_format
from speclake.index.standardize import STANDARDIZED_RECORDS
from speclake.index.tables import INDEX_STRUCTURES
from speclake.infra.ray import cluster_cpus
from speclake.lake.run import Progress
from speclake.lake.schema import QUARANTINE

log = logging.getLogger(__name__)


class BuildError(RuntimeError):
    """The build cannot proceed (bad input, concurrent build, Ray failure)."""


#: Target Ray Data block size of the standardization stage (a few batches of raw records).
BLOCK_BYTES = 4 << 20

#: Settings that change a shard's files; a shard is reused only when these are unchanged.
SHARD_SETTINGS = ("flat_max", "ann", "hnsw_m", "hnsw_ef_construction", "train_sample")

#: Columns of a structure record carried from the sources to the catalog (``dedup`` .. ``final``).
RECORD_COLUMNS = tuple(n for n in INDEX_STRUCTURES.names if n not in ("faiss_id", "shard", "n_records"))

_DUCKDB_TYPES = {pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float64(): "DOUBLE", pa.string(): "VARCHAR",
                 pa.bool_(): "BOOLEAN"}


# -- SQL from declared schemas ---------------------------------------------------------------------
def sql_str(value: str | Path) -> str:
    """A DuckDB string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def select_list(schema: pa.Schema, exprs: Mapping[str, str] | None = None, *, default: str | None = None) -> str:
    """``(expr)::TYPE AS column`` for every column of ``schema``, in its order: the expression of ``exprs``,
    else ``default`` (e.g. ``NULL``), else the column of the same name."""
    exprs = dict(exprs or {})
    unknown = sorted(set(exprs) - set(schema.names))
    if unknown:
        raise ValueError(f"{unknown} are not columns of the schema; its columns: {schema.names}")
    out = []
    for f in schema:
        if f.type not in _DUCKDB_TYPES:
            raise ValueError(f"column {f.name}: no DuckDB type for {f.type}; known: {sorted(map(str, _DUCKDB_TYPES))}")
        out.append(f"({exprs.get(f.name, default or f.name)})::{_DUCKDB_TYPES[f.type]} AS {f.name}")
    return ", ".join(out)


def parquet_glob(directory: Path) -> list[str]:
    """The Parquet files directly in ``directory``, sorted."""
    return sorted(str(p) for p in directory.glob("*.parquet"))


# -- set-up ----------------------------------------------------------------------------------------
def source_items(sources: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """One ``{path, file_no, fmt}`` per source (its position is its dedupe priority); BuildError for a missing one."""
    items = []
    for i, src in enumerate(sources):
        p = Path(src)
        if not p.exists():
            raise BuildError(f"structure source {p} does not exist")
        items.append({"path": str(p.resolve()), "file_no": i, "fmt": detect_format(p)})
    return items


def scratch_dir(root: Path, run_id: str) -> Path:
    """``<index>/_staging/<run>`` with an empty ``v-<run>/shards``; scratch of crashed builds is removed
    (the caller holds the build lock)."""
    for stale in sorted((root / "_staging").glob("*")):
        if stale.name != run_id:
            log.warning("removing scratch of an unfinished build: %s", stale)
            shutil.rmtree(stale, ignore_errors=True)
    scratch = root / "_staging" / run_id
    (scratch / f"v-{run_id}" / "shards").mkdir(parents=True)
    return scratch


@contextmanager
def work_db(scratch: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """The DuckDB work database of a build (spilling under ``scratch``)."""
    con = duckdb.connect(str(scratch / "work.duckdb"))
    try:
        con.execute(f"SET temp_directory = {sql_str(scratch / 'duckdb_tmp')}")
        yield con
    finally:
        con.close()


# -- 1. standardize --------------------------------------------------------------------------------
def read_sources(batch: pa.Table, batch_size: int) -> Iterator[pa.Table]:
    """Ray Data UDF: rows ``{path, file_no, fmt}`` in, those sources' raw record batches out."""
    from speclake.index.sources import iter_source

    for item in batch.to_pylist():
        yield from iter_source(item["path"], item["file_no"], batch_size, item["fmt"])


def standardize(con: duckdb.DuckDBPyConnection, items: list[dict[str, Any]], out_dir: Path,
                settings: IndexSettings) -> int:
    """Read and standardize ``items`` into Parquet under ``out_dir``; view ``std`` over it. Returns the records read.

    Reading is light and sequential per file (num_cpus=0 so it runs beside the actors); standardization
    (RDKit + InChI) is the heavy part: an actor pool of one actor per CPU. Small blocks: a reader's output
    is otherwise coalesced into ~128 MiB blocks (~600k records), and one big SMILES file would feed only a
    handful of actors.
    """
    if items:
        import ray.data

        from speclake.index.standardize import StandardizeActor

        ctx = ray.data.DataContext.get_current()
        saved = ctx.target_max_block_size
        ctx.target_max_block_size = BLOCK_BYTES
        try:
            ds = ray.data.from_items(items, override_num_blocks=len(items))
            ds = ds.map_batches(read_sources, fn_kwargs={"batch_size": settings.batch_size}, batch_size=1,
                                batch_format="pyarrow", num_cpus=0)
            ds = ds.map_batches(StandardizeActor, batch_size=settings.batch_size, batch_format="pyarrow",
                                compute=ray.data.ActorPoolStrategy(size=cluster_cpus()), num_cpus=1)
            ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": 0})
        finally:
            ctx.target_max_block_size = saved
    files = parquet_glob(out_dir)
    source = f"read_parquet({files!r})" if files else f"(SELECT {select_list(STANDARDIZED_RECORDS, default='NULL')} WHERE false)"
    con.execute(f"CREATE VIEW std AS SELECT * FROM {source}")
    return int(con.sql("SELECT count(*) FROM std").fetchall()[0][0])


# -- 2. quarantine + dedupe ------------------------------------------------------------------------
def quarantine_and_dedupe(con: duckdb.DuckDBPyConnection, run_id: str, previous_version: Path | None) -> tuple[int, int]:
    """Records not standardized -> ``quarantine``; one row per InChIKey -> ``dedup`` (first by source order,
    ``n_records`` counting all). ``previous_version``: a version whose structures come first and whose
    quarantine is kept (``--add``). Returns (structures, duplicates merged)."""
    stage = ("CASE WHEN inchikey IS NULL AND smiles_in IS NULL AND inchi_in IS NULL AND reason_code IN "
             "('missing_smiles', 'malformed_sdf_record', 'truncated_record') THEN 'read' ELSE 'structure' END")
    q = select_list(QUARANTINE, {
        "quarantine_id": "substr(sha256(source_file || '|' || record_locator || '|' || reason_code), 1, 24)",
        "source": "coalesce(source, 'unknown')", "source_format": "source", "stage": stage,
        "ingest_run_id": sql_str(run_id)})
    con.execute(f"CREATE TABLE quarantine AS SELECT {q} FROM std WHERE reason_code IS NOT NULL")
    cols = ", ".join(RECORD_COLUMNS)
    prev_rows = ""
    if previous_version is not None:
        con.execute(f"ATTACH {sql_str(previous_version / CATALOG_FILE)} AS prev (READ_ONLY)")
        prev_rows = (f"SELECT 0 AS prio, -1 AS file_no, faiss_id AS record_no, {cols}, n_records AS n "
                     "FROM prev.structures UNION ALL ")
        old_q = previous_version / "quarantine.parquet"
        if old_q.is_file():
            con.execute(f"INSERT INTO quarantine SELECT {select_list(QUARANTINE)} FROM read_parquet({sql_str(old_q)}) "
                        "WHERE quarantine_id NOT IN (SELECT quarantine_id FROM quarantine)")
    con.execute(f"""CREATE TABLE dedup AS
        SELECT * EXCLUDE (prio, file_no, record_no, n, rn) FROM (
            SELECT *, sum(n) OVER w AS n_records,
                row_number() OVER (PARTITION BY inchikey ORDER BY prio, file_no, record_no) AS rn
            FROM ({prev_rows}
                SELECT 1 AS prio, file_no, record_no, {cols}, 1 AS n FROM std WHERE reason_code IS NULL)
            WINDOW w AS (PARTITION BY inchikey))
        WHERE rn = 1""")
    n_ok = con.sql("SELECT count(*) FROM std WHERE reason_code IS NULL").fetchall()[0][0]
    n_prev = con.sql("SELECT count(*) FROM prev.structures").fetchall()[0][0] if prev_rows else 0
    structures = con.sql("SELECT count(*) FROM dedup").fetchall()[0][0]
    return int(structures), int(n_ok + n_prev - structures)


# -- 3. embed --------------------------------------------------------------------------------------
def embedding_store(root: Path, embedder: Embedder) -> Path:
    """``<index>/embeddings/<embedder>@<version>``: stored vectors of every InChIKey ever embedded."""
    store = root / "embeddings" / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{embedder.name}@{embedder.version}")
    store.mkdir(parents=True, exist_ok=True)
    return store


def embed_missing(con: duckdb.DuckDBPyConnection, store: Path, scratch: Path, settings: IndexSettings,
                  embedder: Embedder, model: str | None, run_id: str) -> int:
    """Embed the ``dedup`` InChIKeys without a vector in ``store`` (added to it); ``rows`` = ``dedup`` + vector,
    InChIKeys the embedder failed on -> ``quarantine``. Returns how many were embedded."""
    stored = parquet_glob(store)
    new = f"WHERE inchikey NOT IN (SELECT inchikey FROM read_parquet({stored!r}))" if stored else ""
    todo = con.sql(f"SELECT inchikey, smiles FROM dedup {new} ORDER BY inchikey").to_arrow_table()
    if len(todo):
        _embed_with_ray(todo, scratch / "embedded", settings, type(embedder), model)
        for j, f in enumerate(parquet_glob(scratch / "embedded")):
            os.replace(f, store / f"part-{run_id}-{j:05d}.parquet")
    stored = parquet_glob(store)
    if not stored:
        raise BuildError("no structures to index: every record was quarantined")
    con.execute(f"""CREATE TABLE vec AS SELECT inchikey, any_value(vector) AS vector, bool_and(ok) AS ok
        FROM read_parquet({stored!r}) WHERE inchikey IN (SELECT inchikey FROM dedup) GROUP BY inchikey""")
    failed = select_list(QUARANTINE, {
        "quarantine_id": "substr(sha256(d.source_file || '|' || d.inchikey || '|embedding_failed'), 1, 24)",
        "source": "d.source", "source_file": "d.source_file", "record_locator": "'inchikey:' || d.inchikey",
        "source_format": "d.source", "stage": "'structure'", "reason_code": "'embedding_failed'",
        "reason": sql_str(f"the {embedder.name} embedder could not embed the standardized SMILES"),
        "raw_excerpt": "d.smiles", "ingest_run_id": sql_str(run_id)})
    con.execute(f"INSERT INTO quarantine SELECT {failed} FROM dedup d JOIN vec v USING (inchikey) WHERE NOT v.ok")
    con.execute("CREATE TABLE rows AS SELECT d.*, v.vector FROM dedup d JOIN vec v USING (inchikey) WHERE v.ok")
    return len(todo)


def _embed_with_ray(todo: pa.Table, out_dir: Path, settings: IndexSettings, embedder_cls: type[Embedder],
                    model: str | None) -> None:
    """Embed ``todo`` (inchikey, smiles) with an actor pool (one per GPU when the embedder uses one, else per CPU)."""
    import ray
    import ray.data

    n_gpus = int(ray.cluster_resources().get("GPU", 0))
    gpu = embedder_cls.uses_gpu and n_gpus > 0 and settings.use_gpu is not False
    actors = n_gpus if gpu else cluster_cpus()
    chunk = max(settings.batch_size, min(50_000, len(todo) // (4 * actors) + 1))
    ds = ray.data.from_arrow([todo.slice(i, chunk) for i in range(0, len(todo), chunk)])
    ds = ds.map_batches(EmbedActor, fn_constructor_args=(embedder_cls, model), batch_size=settings.batch_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                        num_gpus=1 if gpu else None)
    ds.write_parquet(str(out_dir), ray_remote_args={"num_cpus": 0})


# -- 4. shard plan ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedShard:
    """One shard of the new version: its mass range, serial, directory and content hash; ``reuse``: the
    previous version's manifest entry when the content is unchanged."""

    idx: int
    lo: float
    hi: float
    serial: int
    dir: str
    members: str
    reuse: dict[str, Any] | None


def shard_edges(masses: np.ndarray, previous: dict[str, Any] | None, settings: IndexSettings,
                repartition: bool) -> list[float]:
    """Shard edges: the previous version's (so unchanged shards are reused), split where a shard grew past 2x."""
    if previous is None or repartition or previous["settings"].get("shard_target_size") != settings.shard_target_size:
        return plan_edges(masses, settings.shard_target_size)
    bounds = [MASS_MIN, *previous["edges"], MASS_MAX]
    out: list[float] = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        inside = masses[(masses >= lo) & (masses < hi)]
        if len(inside) > 2 * settings.shard_target_size:
            out.extend(e for e in plan_edges(inside, settings.shard_target_size) if lo < e < hi)
        if hi != MASS_MAX:
            out.append(float(hi))
    return sorted(set(out))


def plan_shards(con: duckdb.DuckDBPyConnection, previous: dict[str, Any] | None, settings: IndexSettings,
                repartition: bool, embedding: dict[str, Any], version_name: str) -> tuple[list[float], list[PlannedShard]]:
    """Place every ``rows`` row in a mass-range shard at its position in mass order (-> ``final``, with the
    shard's serial) and decide which shards are unchanged. Returns (edges, shards in mass order)."""
    keyed = con.sql("SELECT inchikey, monoisotopic_mass FROM rows").to_arrow_table()
    masses = keyed.column("monoisotopic_mass").to_numpy()
    edges = shard_edges(masses, previous, settings, repartition)
    con.register("placement", pa.table({
        "inchikey": keyed.column("inchikey"),
        "shard_idx": pa.array(np.searchsorted(np.asarray(edges), masses, side="right").astype(np.int32)),
    }))
    con.execute("""CREATE TABLE placed AS SELECT r.*, p.shard_idx,
            row_number() OVER (PARTITION BY p.shard_idx ORDER BY r.monoisotopic_mass, r.inchikey) - 1 AS position
        FROM rows r JOIN placement p USING (inchikey)""")
    con.unregister("placement")
    shard_settings = json.dumps({k: getattr(settings, k) for k in SHARD_SETTINGS}, sort_keys=True)
    content = {
        int(i): hashlib.sha256(f"{h}|{embedding['version']}|{shard_settings}".encode()).hexdigest()[:24]
        for i, h in con.execute("""SELECT shard_idx, md5(string_agg(inchikey || '|' || smiles || '|'
                || monoisotopic_mass::VARCHAR, chr(10) ORDER BY position)) FROM placed GROUP BY shard_idx""").fetchall()
    }
    bounds = [MASS_MIN, *edges, MASS_MAX]
    prev_shards = {}
    if previous is not None and previous["embedding"] == embedding:
        prev_shards = {(s["lo_edge"], s["hi_edge"], s["members"]): s for s in previous["shards"]}
    next_serial = 1 + max([s["serial"] for s in previous["shards"]], default=-1) if previous else 0
    plan: list[PlannedShard] = []
    for idx in sorted(content):
        lo, hi = float(bounds[idx]), float(bounds[idx + 1])
        reuse = prev_shards.get((lo, hi, content[idx]))
        serial = reuse["serial"] if reuse else next_serial
        if not reuse:
            next_serial += 1
        plan.append(PlannedShard(idx, lo, hi, serial, f"{version_name}/shards/s{serial:05d}", content[idx], reuse))
    con.register("serials", pa.table({"shard_idx": pa.array([p.idx for p in plan], pa.int32()),
                                      "serial": pa.array([p.serial for p in plan], pa.int64())}))
    con.execute("CREATE TABLE final AS SELECT p.*, s.serial FROM placed p JOIN serials s USING (shard_idx)")
    con.unregister("serials")
    return edges, plan


# -- 5. shards -------------------------------------------------------------------------------------
def build_shards(con: duckdb.DuckDBPyConnection, plan: list[PlannedShard], root: Path, scratch: Path,
                 settings: IndexSettings, embedding: dict[str, Any], note: Progress) -> list[dict[str, Any]]:
    """Build the changed shards under ``scratch`` (one Ray task each, ``note("shards", done, total)`` as they
    finish) and hard-link the unchanged ones from ``root``. Returns their manifest entries in mass order."""
    import ray

    build_remote = ray.remote(num_cpus=1)(build_shard)
    inputs = scratch / "shard_inputs"
    inputs.mkdir()
    entries: list[dict[str, Any]] = []
    pending: dict[Any, PlannedShard] = {}
    for p in plan:
        if p.reuse:
            _link_or_copy(root / p.reuse["dir"], scratch / p.dir)
            entries.append(dict(p.reuse, dir=p.dir))
            continue
        src = inputs / f"s{p.serial:05d}.parquet"
        con.execute(f"COPY (SELECT position, vector, {', '.join(META_COLUMNS)} FROM final WHERE shard_idx = {p.idx} "
                    f"ORDER BY position) TO {sql_str(src)} (FORMAT parquet)")
        pending[build_remote.remote(str(src), str(scratch / p.dir), p.serial, embedding,
                                    settings.model_dump_json())] = p
    total, done = len(pending), 0
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        p = pending.pop(ready[0])
        info = ray.get(ready[0])
        info.update(lo_edge=p.lo, hi_edge=p.hi, dir=p.dir, members=p.members)
        info["bytes"] = sum(f.stat().st_size for f in (scratch / p.dir).iterdir())
        entries.append(info)
        (inputs / f"s{p.serial:05d}.parquet").unlink()
        done += 1
        note("shards", done, total)
    return sorted(entries, key=lambda s: s["lo_edge"])


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                shutil.copy2(f, dst / f.name)


# -- 6. catalog ------------------------------------------------------------------------------------
def write_catalog(con: duckdb.DuckDBPyConnection, version: Path) -> dict[str, int]:
    """``final`` -> the version's DuckDB catalog (:data:`INDEX_STRUCTURES`) and ``structures.parquet``;
    ``quarantine`` -> ``quarantine.parquet``. Returns the quarantined records by reason code."""
    cat_path = version / CATALOG_FILE
    cols = select_list(INDEX_STRUCTURES, {"faiss_id": f"(serial << {ID_SHIFT}) | position", "shard": "serial"})
    con.execute(f"ATTACH {sql_str(cat_path)} AS cat")
    con.execute(f"CREATE TABLE cat.structures AS SELECT {cols} FROM final ORDER BY faiss_id")
    con.execute("DETACH cat")
    con.execute(f"ATTACH {sql_str(cat_path)} AS cat (READ_ONLY)")
    con.execute(f"COPY (SELECT * FROM cat.structures) TO {sql_str(version / 'structures.parquet')} "
                "(FORMAT parquet, COMPRESSION zstd)")
    con.execute("DETACH cat")
    con.execute(f"COPY (SELECT * FROM quarantine ORDER BY source_file, record_locator) TO "
                f"{sql_str(version / 'quarantine.parquet')} (FORMAT parquet)")
    return dict(con.execute("SELECT reason_code, count(*) FROM quarantine GROUP BY 1 ORDER BY 1").fetchall())


# -- 7. publish ------------------------------------------------------------------------------------
def publish_manifest(root: Path, scratch: Path, manifest: dict[str, Any], keep_versions: int) -> Path:
    """Move the version out of ``scratch`` into ``root``, then replace the manifest (the switch: a crash
    before it leaves the previous version current); remove ``scratch`` and versions beyond ``keep_versions``.
    Returns the version directory."""
    version = root / manifest["version_dir"]
    os.rename(scratch / manifest["version_dir"], version)
    tmp = root / f".{MANIFEST}.{manifest['run_id']}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / MANIFEST)
    shutil.rmtree(scratch, ignore_errors=True)
    prune_versions(root, version.name, keep_versions)
    return version


def prune_versions(root: Path, current: str, keep: int) -> None:
    """Keep the ``keep`` newest versions (``current`` among them); remove an empty ``_staging``."""
    versions = sorted((p for p in root.glob("v-*") if p.is_dir()), key=lambda p: p.name)
    old = [p for p in versions if p.name != current]
    for p in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    staging = root / "_staging"
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
