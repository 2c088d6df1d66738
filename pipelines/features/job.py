"""The Spark feature job: lake spectra and compounds in, feature tables out.

Stages (each a Spark job over Arrow batches, staged as Parquet):

1. prepare: check and clean every spectrum that still needs a feature (:mod:`.prepare`);
2. descriptors: per new structure (:mod:`.descriptors`);
3. fragtrees: per MS2 spectrum of a known compound, MSn linked (:mod:`.trees`);
4. refsim: reference panel (chosen once per settings) and similarities (:mod:`.refpanel`);
5. spec2vec: Word2Vec (trained once per settings) and spectrum vectors (:mod:`.spec2vec`);
6. patterns: rules and motifs (mined once per settings) and overlap scores (:mod:`.patterns`);
7. write: new parts of fragtrees, descriptors, feature_skips, patterns (when mined) and
   spectrum_features (replaced: old rows merged with new blocks), then one atomic commit.

Incremental: a spectrum (structure) is done for a feature when a row or a skip of
that feature with the same settings hash exists; only the others are computed.
Models (panel, word vectors, patterns) are kept per settings hash in
``<lake>/_features/<hash>/`` and the patterns table, and reused for new spectra;
``refit=True`` or a settings change computes everything again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from speclake.infra.spark import SparkSettings, get_spark
from speclake.lake.catalog import Lake, PendingVersion, publish_part
from speclake.lake.schema import SCHEMA_VERSION
from speclake.lake.spark_io import read_table
from speclake.pipelines.ingest import new_run_id

from . import prepare as prep
from .descriptors import DESCRIPTOR_OUT, DescriptorSettings, descriptor_batches
from .patterns import (OVERLAP_OUT, PatternSettings, mine_motifs, mine_rules, overlap_batches, pattern_rows,
                       RuleMiningTimeout, structure_transactions)
from .refpanel import REFSIM_OUT, RefSimSettings, choose_panel, id_hash, panel_ids, refsim_batches, save_panel
from .spec2vec import SPEC2VEC_OUT, Spec2VecSettings, fit_word_vectors, spec2vec_batches
from .tables import DESCRIPTORS, FEATURE_SKIPS, FRAGTREES, PATTERNS, SPECTRUM_FEATURES, register_feature_tables
from .trees import TREE_OUT, TreeSettings, tree_batches

log = logging.getLogger(__name__)

#: Features a run can compute (``only`` picks a subset).
FEATURES: tuple[str, ...] = ("fragtrees", "patterns", "refsim", "spec2vec", "descriptors")
#: spectrum_features columns filled by each spectrum-level feature.
BLOCK_COLUMNS: dict[str, tuple[str, ...]] = {
    "refsim": ("refsim_cosine", "refsim_modified_cosine", "refsim_entropy"),
    "patterns": ("pattern_overlap",),
    "spec2vec": ("spec2vec",),
    "fragtrees": ("tree_features",),
}
MODELS_DIR = "_features"

Progress = Callable[[str], None]


class FeaturesSettings(BaseModel):
    """Settings of one feature run; hashed (all but ``spark``) into every row, saved with every version."""

    model_config = ConfigDict(extra="forbid")

    peaks: prep.PeakSettings = Field(default_factory=prep.PeakSettings)
    words: prep.WordSettings = Field(default_factory=prep.WordSettings)
    trees: TreeSettings = Field(default_factory=TreeSettings)
    refsim: RefSimSettings = Field(default_factory=RefSimSettings)
    patterns: PatternSettings = Field(default_factory=PatternSettings)
    spec2vec: Spec2VecSettings = Field(default_factory=Spec2VecSettings)
    descriptors: DescriptorSettings = Field(default_factory=DescriptorSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)

    def settings_hash(self) -> str:
        """Hash of everything that changes results (not ``spark``)."""
        body = json.dumps({"schema_version": SCHEMA_VERSION, **self.model_dump(mode="json", exclude={"spark"})},
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class FeaturesReport:
    """What one feature run did."""

    run_id: str
    lake: str
    settings_hash: str
    features: list[str]
    spectra_in_lake: int = 0
    spectra_prepared: int = 0
    computed: dict[str, int] = field(default_factory=dict)   # rows written per feature
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # feature -> reason_code -> n
    refit: list[str] = field(default_factory=list)           # models fitted in this run
    n_trees: int = 0
    n_rules: int = 0
    n_motifs: int = 0
    panel_sizes: dict[str, int] = field(default_factory=dict)
    spec2vec_vocabulary: int = 0
    top_rules: list[dict[str, Any]] = field(default_factory=list)
    table_versions: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def parse_only(only: Iterable[str] | str | None) -> list[str]:
    """Features to compute, in job order; ValueError naming the allowed values for an unknown one."""
    if only is None:
        return list(FEATURES)
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    unknown = [n for n in names if n not in FEATURES]
    if unknown or not names:
        raise ValueError(f"unknown feature(s) {unknown or names}; choose from {', '.join(FEATURES)}")
    wanted = set(names)
    if "patterns" in wanted:
        wanted.add("descriptors")  # rules need the structures' substructures
    return [f for f in FEATURES if f in wanted]


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _count(path: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in path.rglob("*.parquet")) if path.exists() else 0


class _Run:
    """State of one run: lake, staging, pending versions, report."""

    def __init__(self, spark: Any, lake: Lake, settings: FeaturesSettings, features: list[str], refit: bool,
                 report: FeaturesReport, note: Progress) -> None:
        self.spark, self.lake, self.settings, self.features, self.refit = spark, lake, settings, features, refit
        self.report, self.note = report, note
        self.hash = report.settings_hash
        self.run_id = report.run_id
        self.staging = lake.staging(self.run_id)
        self.models = lake.root / MODELS_DIR / self.hash
        self.pending: dict[str, PendingVersion] = {}
        self.version_settings = {"features": settings.model_dump(mode="json"), "settings_hash": self.hash}

    # -- io helpers ------------------------------------------------------------------------------
    def read(self, table: str) -> Any:
        """Current version of a lake table as a DataFrame, or None when it has no rows."""
        if self.lake.current(table) is None or not self.lake.files(table):
            return None
        return read_table(self.spark, self.lake, table)  # hive partition columns (spectra: ionmode, ms_level) kept

    def stage(self, df: Any, name: str) -> Any:
        """Write a DataFrame under staging and read it back (cuts the lineage)."""
        path = str(self.staging / name)
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def write_part(self, table: str, df: Any, *, settings: dict[str, Any] | None = None) -> int:
        """Write ``df`` (Spark DataFrame or Arrow table) as a new part of ``table``; return its rows."""
        out = self.staging / f"out-{table}"
        if isinstance(df, pa.Table):
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(df, out / "part-00000.parquet", compression="zstd")
        else:
            df.write.mode("overwrite").parquet(str(out))
        n = _count(out)
        if n == 0:
            shutil.rmtree(out, ignore_errors=True)
            return 0
        for junk in list(out.rglob("_SUCCESS")) + list(out.rglob(".*.crc")):
            junk.unlink()
        part = publish_part(self.lake, table, self.run_id, out)
        self.pending[table] = PendingVersion(new_parts=(part,), row_count=n,
                                             settings={**self.version_settings, **(settings or {})})
        return n

    def time(self, stage: str, t0: float) -> None:
        self.report.stage_seconds[stage] = round(self.report.stage_seconds.get(stage, 0.0) + time.perf_counter() - t0, 3)

    # -- done sets -------------------------------------------------------------------------------
    def done_ids(self, feature: str) -> Any:
        """spectrum_id (or inchikey for descriptors) already done for ``feature`` with this settings hash."""
        from pyspark.sql import functions as F

        key = "inchikey" if feature == "descriptors" else "spectrum_id"
        parts = []
        skips = self.read("feature_skips")
        if skips is not None:
            parts.append(skips.where((F.col("feature") == feature) & (F.col("settings_hash") == self.hash)
                                     & F.col(key).isNotNull()).select(key))
        if feature == "descriptors":
            t = self.read("descriptors")
            if t is not None:
                parts.append(t.where(F.col("settings_hash") == self.hash).select(key))
        else:
            t = self.read("spectrum_features")
            if t is not None:
                parts.append(t.where((F.col("settings_hash") == self.hash)
                                     & F.col(BLOCK_COLUMNS[feature][0]).isNotNull()).select(key))
            if feature == "fragtrees":
                trees = self.read("fragtrees")
                if trees is not None:
                    parts.append(trees.where(F.col("settings_hash") == self.hash).select(key))
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out.unionByName(p)
        return out.distinct()


def run_features(
    lake_dir: str | os.PathLike[str],
    settings: FeaturesSettings | None = None,
    *,
    only: Iterable[str] | str | None = None,
    spark: Any = None,
    progress: Progress | None = None,
    refit: bool = False,
) -> FeaturesReport:
    """Compute the feature tables of the lake at ``lake_dir`` (new spectra only, unless ``refit``)."""
    register_feature_tables()
    settings = settings or FeaturesSettings()
    features = parse_only(only)
    note = progress or (lambda stage: log.info("features: %s", stage))
    t0 = time.perf_counter()
    lake = Lake(lake_dir)
    report = FeaturesReport(run_id=new_run_id(), lake=str(lake.root), settings_hash=settings.settings_hash(),
                            features=features)
    with lake.lock():
        try:
            note(f"starting Spark ({settings.spark.master})")
            spark = spark or get_spark(settings.spark)
            run = _Run(spark, lake, settings, features, refit, report, note)
            _run_stages(run)
        finally:
            lake.clean_staging(report.run_id)
    report.seconds = round(time.perf_counter() - t0, 3)
    lake.record_run(report.run_id, {"kind": "features", "settings": settings.model_dump(mode="json"),
                                    "report": report.__dict__})
    return report


def _run_stages(run: _Run) -> None:
    from pyspark.sql import functions as F

    spectra = run.read("spectra")
    if spectra is None:
        run.note("the lake has no spectra: nothing to do")
        return
    run.report.spectra_in_lake = run.lake.current("spectra").row_count
    feats = [f for f in run.features if f != "descriptors"]

    # -- which spectra need work, which models need fitting ----------------------------------------
    fit = {f: _needs_fit(run, f) for f in feats if f in ("refsim", "spec2vec", "patterns")}
    run.report.refit = [f for f, v in fit.items() if v]
    todo: dict[str, Any] = {}
    for f in feats:
        done = None if fit.get(f) else run.done_ids(f)
        ids = spectra.select("spectrum_id")
        todo[f] = ids.join(done, "spectrum_id", "left_anti") if done is not None else ids
    feats = [f for f in feats if fit.get(f) or todo[f].limit(1).count() > 0]
    if not feats:
        run.note("every spectrum is done for these settings")

    t0 = time.perf_counter()
    prepared = None
    if feats:
        run.note("preparing spectra")
        if any(fit.values()):
            source = spectra
        else:
            need = None
            for f in feats:
                need = todo[f] if need is None else need.unionByName(todo[f])
            source = spectra.join(need.distinct(), "spectrum_id", "left_semi")
        cols = [F.col(c) for c in prep.SPECTRA_COLUMNS]
        peaks_json, words_json = run.settings.peaks.model_dump_json(), run.settings.words.model_dump_json()
        prepared = run.stage(source.select(*cols).mapInArrow(
            lambda it: prep.prepare_batches(it, peaks_json=peaks_json, words_json=words_json),
            _spark_schema(prep.PREPARED)), "prepared")
        run.report.spectra_prepared = _count(run.staging / "prepared")
    run.time("prepare", t0)

    skips: list[Any] = []   # DataFrames with FEATURE_SKIPS columns (without settings_hash/run id)
    blocks: dict[str, Any] = {}  # feature -> DataFrame(spectrum_id, block columns)
    usable = prepared.where(F.col("skip_code").isNull()) if prepared is not None else None
    for f in feats:  # spectra unusable for every feature, recorded once per feature
        bad = prepared.join(todo[f], "spectrum_id", "left_semi").where(F.col("skip_code").isNotNull())
        skips.append(bad.select("spectrum_id", "inchikey", F.lit(f).alias("feature"),
                                F.col("skip_code").alias("reason_code"), F.col("skip_reason").alias("reason")))

    descriptors = None
    if "descriptors" in run.features:
        descriptors = _descriptors_stage(run, skips)
    if "fragtrees" in feats:
        _fragtrees_stage(run, usable.join(todo["fragtrees"], "spectrum_id", "left_semi"), skips, blocks)
    if "refsim" in feats:
        _refsim_stage(run, usable, todo["refsim"], fit["refsim"], skips, blocks)
    if "spec2vec" in feats:
        _spec2vec_stage(run, usable, todo["spec2vec"], fit["spec2vec"], skips, blocks)
    if "patterns" in feats:
        _patterns_stage(run, usable, todo["patterns"], fit["patterns"], descriptors, blocks)

    t0 = time.perf_counter()
    run.note("writing feature tables")
    if feats:
        _write_spectrum_features(run, prepared, blocks)
    _write_skips(run, skips)
    run.time("write", t0)
    run.note("committing")
    published = run.lake.commit(run.pending, run_id=run.run_id) if run.pending else {}
    run.report.table_versions = {name: tv.version for name, tv in published.items()}


def _needs_fit(run: _Run, feature: str) -> bool:
    if run.refit:
        return True
    if feature == "refsim":
        return not (run.models / "refpanel.parquet").exists()
    if feature == "spec2vec":
        return not (run.models / "word_vectors.parquet").exists()
    current = run.lake.current("patterns")
    return current is None or current.settings.get("settings_hash") != run.hash


# -- stages --------------------------------------------------------------------------------------

def _descriptors_stage(run: _Run, skips: list[Any]) -> Any:
    """Descriptors of new structures; returns all descriptors of this settings hash (old + new)."""
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    run.note("structure descriptors")
    compounds = run.read("compounds")
    old = run.read("descriptors")
    old = old.where(F.col("settings_hash") == run.hash) if old is not None else None
    if compounds is None:
        run.time("descriptors", t0)
        return old
    done = run.done_ids("descriptors")
    todo = compounds.join(done, "inchikey", "left_anti") if done is not None else compounds
    if todo.limit(1).count() == 0:
        run.report.computed["descriptors"] = 0
        run.time("descriptors", t0)
        return old
    sj = run.settings.descriptors.model_dump_json()
    out = run.stage(todo.select("inchikey", "inchikey14", "smiles", "chemont_id", "chemont_classes").mapInArrow(
        lambda it: descriptor_batches(it, settings_json=sj), _spark_schema(DESCRIPTOR_OUT)), "descriptors")
    rows = out.where(F.col("kind") == "row").select(
        *[c for c in (f.name for f in DESCRIPTORS) if c not in ("settings_hash", "features_run_id")]) \
        .withColumn("settings_hash", F.lit(run.hash)).withColumn("features_run_id", F.lit(run.run_id))
    run.report.computed["descriptors"] = run.write_part("descriptors", rows)
    skips.append(out.where(F.col("kind") == "skip").select(
        F.lit(None).cast("string").alias("spectrum_id"), "inchikey", F.lit("descriptors").alias("feature"),
        F.col("skip_code").alias("reason_code"), F.col("skip_reason").alias("reason")))
    new = rows if run.report.computed["descriptors"] else None
    run.time("descriptors", t0)
    if old is None:
        return new
    return old.unionByName(new) if new is not None else old


def _fragtrees_stage(run: _Run, todo: Any, skips: list[Any], blocks: dict[str, Any]) -> None:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    run.note("fragmentation trees")
    compounds = run.read("compounds")
    if compounds is not None:
        todo = todo.join(compounds.select("inchikey", "formula"), "inchikey", "left")
    else:
        todo = todo.withColumn("formula", F.lit(None).cast("string"))
    dec = run.settings.trees.msn_precursor_decimals
    first_prec = F.coalesce(F.try_element_at("precursor_mz_chain", F.lit(1)), F.col("precursor_mz"))
    msn_key = F.concat_ws("|", F.col("inchikey"), F.coalesce(F.col("adduct"), F.lit("?")),
                          F.format_number(F.round(first_prec, dec), dec))
    todo = todo.withColumn("_msn_key", msn_key)
    top_level = F.max("ms_level").over(Window.partitionBy("_msn_key"))
    todo = todo.withColumn("tree_group", F.when(F.col("inchikey").isNotNull() & (top_level >= 3), F.col("_msn_key"))
                           .otherwise(F.col("spectrum_id")))
    sj = run.settings.trees.model_dump_json()
    n_parts = max(1, run.spark.sparkContext.defaultParallelism * 2)
    grouped = (todo.select(*[F.col(c) for c in ("spectrum_id", "inchikey", "formula", "adduct", "ms_level",
                                                 "precursor_mz", "precursor_mz_chain", "instrument_type", "mz",
                                                 "intensities", "tree_group")])
               .repartition(n_parts, "tree_group").sortWithinPartitions("tree_group", "ms_level", "spectrum_id"))
    out = run.stage(grouped.mapInArrow(lambda it: tree_batches(it, settings_json=sj), _spark_schema(TREE_OUT)),
                    "fragtrees")
    trees = out.where(F.col("kind") == "tree")
    cols = [f.name for f in FRAGTREES if f.name not in ("settings_hash", "features_run_id")]
    rows = trees.select(*cols).withColumn("settings_hash", F.lit(run.hash)) \
        .withColumn("features_run_id", F.lit(run.run_id))
    run.report.n_trees = run.report.computed["fragtrees"] = run.write_part("fragtrees", rows)
    blocks["fragtrees"] = trees.select("spectrum_id", "tree_features")
    skips.append(out.where(F.col("kind") == "skip").select(
        "spectrum_id", "inchikey", F.lit("fragtrees").alias("feature"), F.col("skip_code").alias("reason_code"),
        F.col("skip_reason").alias("reason")))
    run.time("fragtrees", t0)


def _panel_candidates(run: _Run, usable: Any) -> list[dict[str, Any]]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    s = run.settings.refsim
    cols = ["spectrum_id", "ionmode", "precursor_mz", "mz", "intensities"]
    if s.panel_ids is not None:
        return [r.asDict() for r in usable.where(F.col("spectrum_id").isin(s.panel_ids)).select(*cols).collect()]
    cand = usable.where(F.col("ionmode").isin("positive", "negative") & (F.size("mz") >= s.min_panel_peaks))
    cand = cand.withColumn("_structure", F.coalesce(F.substring("inchikey", 1, 14), F.col("spectrum_id")))
    per_structure = Window.partitionBy("ionmode", "_structure").orderBy(F.size("mz").desc(), F.col("spectrum_id"))
    cand = cand.withColumn("_r", F.row_number().over(per_structure)).where(F.col("_r") == 1)
    cand = cand.withColumn("_h", F.sha1("spectrum_id"))
    per_mode = Window.partitionBy("ionmode").orderBy("_h")
    cand = cand.withColumn("_n", F.row_number().over(per_mode)).where(F.col("_n") <= s.n_candidates)
    return [r.asDict() for r in cand.select(*cols).collect()]


def _refsim_stage(run: _Run, usable: Any, todo: Any, fit: bool, skips: list[Any], blocks: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    panel_path = run.models / "refpanel.parquet"
    if fit:
        run.note("choosing the reference panel")
        rows = choose_panel(_panel_candidates(run, usable), run.settings.refsim)
        if run.settings.refsim.panel_ids is not None:
            order = {sid: i for i, sid in enumerate(run.settings.refsim.panel_ids)}
            rows = sorted(rows, key=lambda r: (r["ionmode"], order.get(r["spectrum_id"], 0)))
        save_panel(rows, panel_path)
        todo = usable.select("spectrum_id")
    run.report.panel_sizes = {m: len(v) for m, v in panel_ids(panel_path).items()}
    run.note("reference similarities")
    sj, pp = run.settings.refsim.model_dump_json(), str(panel_path)
    out = run.stage(usable.join(todo, "spectrum_id", "left_semi")
                    .select("spectrum_id", "ionmode", "precursor_mz", "mz", "intensities")
                    .mapInArrow(lambda it: refsim_batches(it, panel_path=pp, settings_json=sj),
                                _spark_schema(REFSIM_OUT)), "refsim")
    _block(run, "refsim", out, skips, blocks)
    run.time("refsim", t0)


def _spec2vec_stage(run: _Run, usable: Any, todo: Any, fit: bool, skips: list[Any], blocks: dict[str, Any]) -> None:
    t0 = time.perf_counter()
    path = run.models / "word_vectors.parquet"
    if fit:
        run.note("training Word2Vec")
        fit_word_vectors(run.spark, usable, run.settings.spec2vec, path)
        todo = usable.select("spectrum_id")
    from .spec2vec import load_word_vectors

    run.report.spec2vec_vocabulary = len(load_word_vectors(str(path))[0])
    run.note("spectrum vectors")
    vp, power = str(path), run.settings.spec2vec.intensity_power
    out = run.stage(usable.join(todo, "spectrum_id", "left_semi").select("spectrum_id", "words", "word_weights")
                    .mapInArrow(lambda it: spec2vec_batches(it, vectors_path=vp, intensity_power=power),
                                _spark_schema(SPEC2VEC_OUT)), "spec2vec")
    _block(run, "spec2vec", out, skips, blocks)
    run.time("spec2vec", t0)


def _patterns_stage(run: _Run, usable: Any, todo: Any, fit: bool, descriptors: Any, blocks: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    s = run.settings.patterns
    if fit:
        run.note("mining rules (FPGrowth)")
        if descriptors is not None:
            transactions = run.stage(structure_transactions(usable, descriptors, s), "transactions")
            try:
                rules = mine_rules(run.spark, transactions, s)
            except RuleMiningTimeout as exc:
                log.error("patterns: %s", exc)
                run.report.warnings.append(str(exc))
                rules = []
        else:
            rules = []
        run.time("patterns_rules", t0)
        t1 = time.perf_counter()
        run.note("mining motifs (LDA)")
        motifs = mine_motifs(run.spark, usable, s) if s.n_motifs > 0 else []
        run.time("patterns_motifs", t1)
        rows = pattern_rows(rules, motifs, settings_hash=run.hash, run_id=run.run_id)
        table = pa.Table.from_pylist(rows, schema=PATTERNS)
        patterns_dir = run.staging / "patterns-table"
        patterns_dir.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, patterns_dir / "part-00000.parquet")
        patterns_path = str(patterns_dir)
        todo = usable.select("spectrum_id")
        run.write_part("patterns", table, settings={"pattern_ids": [r["pattern_id"] for r in rows]})
    else:
        patterns_path = str(run.lake.root / run.lake.current("patterns").parts[0])
        table = pq.read_table(patterns_path)
    run.report.n_rules = sum(1 for k in table.column("kind").to_pylist() if k == "rule")
    run.report.n_motifs = sum(1 for k in table.column("kind").to_pylist() if k == "motif")
    run.report.top_rules = [
        {k: r[k] for k in ("name", "support", "confidence", "lift", "n_structures")}
        for r in table.to_pylist() if r["kind"] == "rule"][:10]
    t1 = time.perf_counter()
    run.note("pattern overlap scores")
    out = run.stage(usable.join(todo, "spectrum_id", "left_semi").select("spectrum_id", "items")
                    .mapInArrow(lambda it: overlap_batches(it, patterns_path=patterns_path),
                                _spark_schema(OVERLAP_OUT)), "overlap")
    blocks["patterns"] = out
    run.report.computed["patterns"] = _count(run.staging / "overlap")
    run.time("patterns_overlap", t1)


def _block(run: _Run, feature: str, out: Any, skips: list[Any], blocks: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    ok = out.where(F.col("skip_code").isNull())
    blocks[feature] = ok.select("spectrum_id", *BLOCK_COLUMNS[feature])
    skips.append(out.where(F.col("skip_code").isNotNull()).select(
        "spectrum_id", F.lit(None).cast("string").alias("inchikey"), F.lit(feature).alias("feature"),
        F.col("skip_code").alias("reason_code"), F.col("skip_reason").alias("reason")))
    run.report.computed[feature] = ok.count()


# -- writing -------------------------------------------------------------------------------------

def _write_spectrum_features(run: _Run, prepared: Any, blocks: dict[str, Any]) -> None:
    """New blocks merged with the old rows of this settings hash; written as the table's new whole version."""
    from pyspark.sql import functions as F

    if not blocks:
        return
    all_cols = [c for cols in BLOCK_COLUMNS.values() for c in cols]
    new = None
    for feature, df in blocks.items():
        new = df if new is None else new.join(df, "spectrum_id", "full_outer")
    for c in all_cols:
        if c not in new.columns:
            new = new.withColumn(c, F.lit(None).cast("array<float>"))
    new = new.join(prepared.select("spectrum_id", "inchikey", "ionmode"), "spectrum_id", "left")
    old = run.read("spectrum_features")
    old_current = old.where(F.col("settings_hash") == run.hash) if old is not None else None
    if old_current is not None:
        o, n = old_current.alias("o"), new.alias("n")
        merged = o.join(n, F.col("o.spectrum_id") == F.col("n.spectrum_id"), "full_outer").select(
            F.coalesce("n.spectrum_id", "o.spectrum_id").alias("spectrum_id"),
            F.coalesce("n.inchikey", "o.inchikey").alias("inchikey"),
            F.coalesce("n.ionmode", "o.ionmode").alias("ionmode"),
            *[F.coalesce(f"n.{c}", f"o.{c}").alias(c) for c in all_cols])
    else:
        merged = new
    merged = merged.withColumn("settings_hash", F.lit(run.hash)).withColumn("features_run_id", F.lit(run.run_id))
    merged = merged.select(*[f.name for f in SPECTRUM_FEATURES])
    n_new = sum(run.report.computed.get(f, 0) for f in blocks)
    if n_new == 0 and old is not None and old_current is not None and old.count() == old_current.count():
        return
    run.write_part("spectrum_features", merged)


def _write_skips(run: _Run, skips: list[Any]) -> None:
    from pyspark.sql import functions as F

    if not skips:
        return
    df = skips[0]
    for s in skips[1:]:
        df = df.unionByName(s)
    df = df.withColumn("settings_hash", F.lit(run.hash)).withColumn("features_run_id", F.lit(run.run_id))
    df = run.stage(df.select(*[f.name for f in FEATURE_SKIPS]), "skips")
    counts: dict[str, dict[str, int]] = {}
    for r in df.groupBy("feature", "reason_code").count().collect():
        counts.setdefault(r["feature"], {})[r["reason_code"]] = int(r["count"])
    run.report.skipped = {f: dict(sorted(c.items(), key=lambda kv: -kv[1])) for f, c in sorted(counts.items())}
    run.write_part("feature_skips", df)


def panel_of(lake_dir: str | os.PathLike[str], settings: FeaturesSettings | None = None) -> dict[str, list[str]]:
    """Reference panel (spectrum ids per ion mode, vector order) used for ``settings`` in a lake; {} if none yet."""
    settings = settings or FeaturesSettings()
    path = Lake(lake_dir).root / MODELS_DIR / settings.settings_hash() / "refpanel.parquet"
    return panel_ids(path) if path.exists() else {}


__all__ = ["FEATURES", "FeaturesReport", "FeaturesSettings", "id_hash", "panel_of", "parse_only", "run_features"]
