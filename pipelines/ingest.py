"""The Spark ingest job: spectral-library files in, lake tables out.

Stages (each a Spark job over Arrow batches, see :mod:`ingest_steps`):

1. plan: split the inputs at record boundaries (driver, streaming, while Spark starts);
2. parse: read + normalize every record of every split (consecutive splits packed
   into tasks of about ``split_bytes``, so 100k one-record files are not 100k
   tasks); each task stages its spectrum rows as Parquet itself, and one light key
   row per record (ids, reported structure, or the whole quarantine row), so
   neither peak lists nor key rows become JVM rows;
3. structures: standardize each distinct reported structure once (RDKit);
4. decide: join the key rows with their structures, structure errors to
   quarantine, which spectra are new (not in the lake, first of duplicates);
5. write: one task per staged file adds the structure columns (InChIKey check,
   precursor ppm error) to its chosen rows and writes them in the spectra
   table's partition layout; compounds (merged) and quarantine by Spark; each
   as a new part, then one atomic catalog commit.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from speclake.infra.spark import SparkSettings, start_spark, stop_spark
from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunReport
from speclake.lake.schema import COMPOUNDS, QUARANTINE
from speclake.pipelines import ingest_steps as steps
from speclake.pipelines.normalize.spectrum import NormalizeSettings
from speclake.pipelines.readers.base import Split

log = logging.getLogger(__name__)


class IngestSettings(BaseModel):
    """Settings of one ingest run; saved with the run record and every table version."""

    model_config = ConfigDict(extra="forbid")

    source: str | None = None  # library label for every input; default: from format / file name
    split_bytes: int = 8 * 2**20
    normalize: NormalizeSettings = Field(default_factory=NormalizeSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)


@dataclass
class IngestReport(RunReport):
    """What one run did: every input record is counted once."""

    inputs: list[str] = field(default_factory=list)
    records_read: int = 0
    splits: int = 0
    parse_tasks: int = 0
    spectra_accepted: int = 0
    spectra_new: int = 0
    spectra_already_in_lake: int = 0
    duplicates_in_run: int = 0
    quarantined: int = 0
    quarantine_new: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)
    compounds_total: int = 0
    compounds_new: int = 0

    @property
    def records_per_second(self) -> float:
        return self.records_read / self.seconds if self.seconds else 0.0


def _spark_schema(schema):  # -> pyspark StructType
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _unreadable_inputs(paths: list[str]) -> tuple[list[str], list[dict[str, Any]]]:
    """Split inputs into readable files and quarantine rows for files whose format is unknown."""
    from speclake.pipelines.readers.splits import detect_format, expand_inputs

    good, bad = [], []
    for path in expand_inputs(paths):
        try:
            detect_format(path)
        except (ValueError, OSError) as exc:
            bad.append({"source": "unknown", "source_file": path, "record_locator": "file", "source_format": None,
                        "stage": "read", "reason_code": "unsupported_format", "reason": str(exc), "raw_excerpt": ""})
        else:
            good.append(path)
    return good, bad


def run_ingest(
    inputs: list[str],
    lake_dir: str | os.PathLike[str],
    settings: IngestSettings | None = None,
    *,
    spark: Any = None,
    progress: Progress | None = None,
) -> IngestReport:
    """Ingest spectral-library files or directories into the lake at ``lake_dir``.

    Returns once the run is committed and a Spark session started here has stopped (its JVM exited).
    """
    from speclake.pipelines.readers.splits import plan_splits

    settings = settings or IngestSettings()
    for path in inputs:
        if not Path(path).exists():
            raise FileNotFoundError(f"input not found: {path}")
    lake = Lake(lake_dir, create=True)
    report = IngestReport(inputs=[str(p) for p in inputs])
    started = False
    with Run(lake, "ingest", settings, report, progress=progress) as run:
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="spark-start") as pool:
                starting = pool.submit(start_spark, settings.spark, spark)  # the JVM starts meanwhile
                with run.stage("plan"):
                    files, unreadable = _unreadable_inputs(inputs)
                    splits = plan_splits(files, str(run.staging / "chunks"),
                                         target_bytes=settings.split_bytes) if files else []
                with run.stage("spark_start"):
                    spark, started = starting.result()
            _run_stages(spark, run, splits, unreadable, settings)
        finally:
            if started:
                with run.stage("spark_stop"):
                    stop_spark(spark)
    return report


def _run_stages(spark: Any, run: Run, splits: list[Split], unreadable: list[dict[str, Any]],
                settings: IngestSettings) -> None:
    from pyspark.sql import functions as F

    lake, run_id, report, staging = run.lake, run.run_id, run.report, run.staging
    tick = time.perf_counter()

    # -- parse: tasks stage the spectrum rows and the key rows themselves (no row passes the JVM) ----
    parsed_dir, keys_dir, tasks_dir = staging / "parsed", staging / "keys", staging / "tasks"
    for folder in (parsed_dir, keys_dir):
        folder.mkdir(parents=True, exist_ok=True)
    groups = steps.group_splits(splits, settings.split_bytes, min_tasks=2 * spark.sparkContext.defaultParallelism)
    report.splits, report.parse_tasks = len(splits), len(groups)
    run.note("parse", 0, len(groups))
    keys_schema = _spark_schema(steps.KEYS)
    if groups:
        steps.write_tasks(splits, groups, str(tasks_dir))
        source, settings_json = settings.source, settings.normalize.model_dump_json()
        tasks, parsed, keyed = str(tasks_dir), str(parsed_dir), str(keys_dir)
        spark.range(len(groups), numPartitions=len(groups)).mapInArrow(
            lambda it: steps.parse_task_batches(it, tasks_dir=tasks, source_override=source,
                                                settings_json=settings_json, parsed_dir=parsed, keys_dir=keyed),
            _spark_schema(steps.PARSE_TASK_OUT)).collect()
    keys = (spark.read.schema(keys_schema).parquet(str(keys_dir)) if any(keys_dir.glob("*.parquet"))
            else spark.createDataFrame([], keys_schema))
    run.lap("parse", tick)
    tick = time.perf_counter()

    # -- structures, once per distinct reported structure ---------------------------------------
    run.note("structures")
    spectra = keys.where(F.col("kind") == "spectrum")
    distinct = (spectra.where(F.col("smiles_reported").isNotNull() | F.col("inchi_reported").isNotNull())
                .select("smiles_reported", "inchi_reported").distinct())
    structures_path = str(staging / "structures")
    distinct.mapInArrow(steps.standardize_batches, _spark_schema(steps.STRUCTURES)) \
        .write.mode("overwrite").parquet(structures_path)
    structures = spark.read.schema(_spark_schema(steps.STRUCTURES)).parquet(structures_path)
    run.lap("structures", tick)
    tick = time.perf_counter()

    # -- join the key rows with their structures (Spark SQL, small rows) --------------------------
    run.note("join")
    s = structures.select(
        F.col("smiles_reported").alias("_s"), F.col("inchi_reported").alias("_i"), "inchikey", "inchikey14",
        F.col("smiles").alias("structure_smiles"), F.col("inchi").alias("structure_inchi"),
        F.col("formula").alias("structure_formula"), F.col("monoisotopic_mass").alias("structure_mass"),
        "error_code", "error")
    joined = spectra.join(
        F.broadcast(s), spectra["smiles_reported"].eqNullSafe(s["_s"]) & spectra["inchi_reported"].eqNullSafe(s["_i"]),
        "left").drop("_s", "_i")
    good = joined.where(F.col("error_code").isNull())
    structure_errors = joined.where(F.col("error_code").isNotNull()).select(
        "source", "source_file", "record_locator", "source_format", F.lit("structure").alias("stage"),
        F.col("error_code").alias("reason_code"), F.coalesce("error", F.lit("invalid structure")).alias("reason"),
        F.concat(F.lit("SMILES: "), F.coalesce("smiles_reported", F.lit("")), F.lit("\nInChI: "),
                 F.coalesce("inchi_reported", F.lit(""))).alias("raw_excerpt"))
    run.lap("join", tick)
    tick = time.perf_counter()

    # -- which spectra are new: decided on the key rows, then one task per staged file writes them --
    run.note("write")
    ids = good.select("spectrum_id", F.struct("source_file", "record_locator").alias("_loc"))
    keepers = (ids.groupBy("spectrum_id")  # one row per id: its first locator, and how often it came
               .agg(F.min("_loc").alias("_loc"), F.count("*").alias("_n")).cache())
    n_distinct, n_rows = keepers.agg(F.count("*"), F.sum("_n")).collect()[0]
    n_rows = n_rows or 0
    run.lap("write.decide", tick)
    existing = _existing(spark, lake, "spectra", "spectrum_id")
    new_keys = (keepers.join(existing, "spectrum_id", "left_anti") if existing is not None else keepers).select(
        F.col("spectrum_id").alias("_id"), F.col("_loc.source_file").alias("_f"), F.col("_loc.record_locator").alias("_l"))
    selector = F.broadcast(new_keys) if n_distinct <= 2_000_000 else new_keys
    new_rows = good.join(selector, (good["spectrum_id"] == selector["_id"]) & (good["source_file"] == selector["_f"])
                         & (good["record_locator"] == selector["_l"]), "left_semi").cache()
    any_new = n_distinct > 0 if existing is None else bool(new_keys.limit(1).count())

    quarantine_rows = keys.where(F.col("kind") == "quarantine").select(*_quarantine_cols(F)) \
        .unionByName(structure_errors.select(*_quarantine_cols(F)))
    if unreadable:
        quarantine_rows = quarantine_rows.unionByName(
            spark.createDataFrame(unreadable, _spark_schema(steps.pa.schema(steps.QUARANTINE_FACTS + [
                steps.pa.field(n, steps.pa.string()) for n in ("source", "source_file", "record_locator", "source_format")]))
            ).select(*_quarantine_cols(F)))
    sep = "\u001f"
    quarantine_rows = quarantine_rows.withColumn(
        "quarantine_id",
        F.substring(F.sha2(F.concat_ws(sep, "source_file", "record_locator", "reason_code"), 256), 1, 24),
    ).withColumn("ingest_run_id", F.lit(run_id)).cache()
    q_existing = _existing(spark, lake, "quarantine", "quarantine_id")
    q_unique = quarantine_rows.dropDuplicates(["quarantine_id"])
    q_new = q_unique.join(q_existing, "quarantine_id", "left_anti") if q_existing is not None else q_unique
    current_compounds = lake.current("compounds")

    def spectra_part() -> int:
        return _write_spectra(run, new_rows, structures_path, len(groups))

    def quarantine_part() -> int:
        return run.write_part("quarantine", q_new.select(*[F.col(f.name) for f in QUARANTINE]))

    def compounds_part() -> int:
        if not any_new and current_compounds is not None:
            return current_compounds.row_count
        return run.write_part("compounds", _compounds(spark, lake, new_rows), keep_empty=True)

    # the three parts are independent Spark jobs: run together, the small ones fill the cores the
    # spectra tasks leave idle
    timed_parts = {"spectra": spectra_part, "quarantine": quarantine_part, "compounds": compounds_part}
    with ThreadPoolExecutor(len(timed_parts), thread_name_prefix="ingest-write") as pool:
        futures = {name: pool.submit(_timed, fn) for name, fn in timed_parts.items()}
        results = {name: f.result() for name, f in futures.items()}
    for name, (_, seconds) in results.items():
        run.add_seconds(f"write.{name}", seconds)
    n_new, n_q_new, n_compounds = (results[name][0] for name in ("spectra", "quarantine", "compounds"))
    n_compounds_new = n_compounds - (current_compounds.row_count if current_compounds is not None else 0)

    # -- counts: every record read is a spectrum row (possibly a duplicate) or a quarantine row -------
    reasons = {r["reason_code"]: r["n"] for r in quarantine_rows.groupBy("reason_code").agg(F.count("*").alias("n")).collect()}
    report.quarantine_reasons = dict(sorted(reasons.items(), key=lambda kv: -kv[1]))
    report.quarantined = sum(reasons.values())
    report.spectra_accepted = n_distinct
    report.spectra_new = n_new
    report.spectra_already_in_lake = n_distinct - n_new
    report.duplicates_in_run = n_rows - n_distinct
    report.quarantine_new = n_q_new
    report.records_read = n_rows + report.quarantined
    report.compounds_total, report.compounds_new = n_compounds, n_compounds_new
    quarantine_rows.unpersist()
    keepers.unpersist()
    new_rows.unpersist()
    run.lap("write", tick)

    run.note("commit")
    run.commit()


def _timed(fn: Callable[[], int]) -> tuple[int, float]:
    t0 = time.perf_counter()
    return fn(), time.perf_counter() - t0


def _quarantine_cols(F: Any) -> list[Any]:
    return [F.col(n) for n in ("source", "source_file", "record_locator", "source_format", "stage", "reason_code",
                               "reason", "raw_excerpt")]


def _existing(spark: Any, lake: Lake, table: str, key: str) -> Any:
    """The key column of a table's current version, or None when the table is empty."""
    files = lake.files(table)
    if not files:
        return None
    return spark.read.parquet(*files).select(key).distinct()


def _write_spectra(run: Run, new_rows: Any, structures_path: str, n_files: int) -> int:
    """Write the new spectra as a new part: one task per staged parse file takes its chosen rows,
    adds the structure columns and writes them in the table's partition layout; return the row count."""
    from pyspark.sql import functions as F

    out = run.staging / "out-spectra"
    chosen = new_rows.groupBy("parsed_file").agg(F.collect_list("row").alias("rows"))
    out_dir, run_id = str(out), run.run_id
    chosen.repartition(max(1, n_files)).mapInArrow(  # round robin: about one staged file per task
        lambda it: steps.finalize_batches(it, structures_dir=structures_path, out_dir=out_dir, run_id=run_id),
        "parsed_file string, n long").agg(F.sum("n")).collect()
    return run.write_part("spectra", out) if out.exists() else 0


def _compounds(spark: Any, lake: Lake, new_spectra: Any) -> Any:
    """The whole compounds table after this run: existing rows merged with the new spectra's structures.

    Order-independent: each InChIKey keeps the smallest of its standardized structures (tautomers
    written differently share a key), names and ChemOnt classes, so the same spectra give the same
    table whatever the order or batches they were ingested in.
    """
    from pyspark.sql import functions as F

    cols = [f.name for f in COMPOUNDS]
    rows = new_spectra.where(F.col("inchikey").isNotNull()).select(
        "inchikey", "inchikey14", F.col("structure_smiles").alias("smiles"), F.col("structure_inchi").alias("inchi"),
        F.col("structure_formula").alias("formula"), F.col("structure_mass").alias("monoisotopic_mass"),
        "compound_name", "chemont_id", "chemont_classes", F.lit(1).cast("long").alias("n_spectra"),
        F.array("source").alias("sources"),
        F.when(F.col("license").isNotNull(), F.array("license")).otherwise(F.array().cast("array<string>")).alias("licenses"),
    ).select(*cols)
    files = lake.files("compounds")
    if files:
        rows = spark.read.parquet(*files).select(*cols).unionByName(rows)
    structure = ("smiles", "inchi", "formula", "monoisotopic_mass", "inchikey14")
    merged = rows.groupBy("inchikey").agg(
        F.min(F.struct(*structure)).alias("_s"),
        F.min("compound_name").alias("compound_name"),
        F.min(F.when(F.col("chemont_id").isNotNull(), F.struct("chemont_id", "chemont_classes"))).alias("_c"),
        F.sum("n_spectra").alias("n_spectra"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("sources")))).alias("sources"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("licenses")))).alias("licenses"))
    picked = {**{c: F.col(f"_s.{c}") for c in structure}, "chemont_id": F.col("_c.chemont_id"),
              "chemont_classes": F.col("_c.chemont_classes")}
    return merged.select(*[picked.get(c, F.col(c)).alias(c) for c in cols]).coalesce(1)
