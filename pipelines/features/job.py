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
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, Field

from speclake.infra.spark import SparkSettings, start_spark, stop_spark
from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunReport, count_rows
from speclake.lake.schema import SCHEMA_VERSION
from speclake.lake.spark_io import read_table

from . import prepare as prep
from . import stages
from .descriptors import DescriptorSettings
from .patterns import PatternSettings
from .refpanel import RefSimSettings, id_hash, panel_ids
from .spec2vec import Spec2VecSettings
from .stages import BLOCK_COLUMNS, spark_schema
from .trees import TreeSettings

log = logging.getLogger(__name__)

#: Features a run can compute (``only`` picks a subset).
FEATURES: tuple[str, ...] = ("fragtrees", "patterns", "refsim", "spec2vec", "descriptors")
MODELS_DIR = "_features"


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
    #: Full JIT (C1 + C2) for the feature job: its Word2Vec and LDA train inside the JVM, where the
    #: C1-only "quick JVM" that speeds up ingest made Spec2Vec ~5x slower (48 s vs > 4 min, MassBank).
    spark: SparkSettings = Field(default_factory=lambda: SparkSettings(quick_jvm=False))

    def settings_hash(self) -> str:
        """Hash of everything that changes results (not ``spark``)."""
        body = json.dumps({"schema_version": SCHEMA_VERSION, **self.model_dump(mode="json", exclude={"spark"})},
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


@dataclass
class FeaturesReport(RunReport):
    """What one feature run did."""

    settings_hash: str = ""
    features: list[str] = field(default_factory=list)
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


class _FeatureRun(Run):
    """A feature run: the run contract plus the Spark session, the settings hash and the models folder."""

    def __init__(self, spark: Any, lake: Lake, settings: FeaturesSettings, features: list[str], refit: bool,
                 report: FeaturesReport, progress: Progress | None) -> None:
        super().__init__(lake, "features", settings, report, progress=progress)
        self.spark, self.features, self.refit = spark, features, refit
        self.hash = report.settings_hash
        self.models = lake.root / MODELS_DIR / self.hash

    # -- io helpers ------------------------------------------------------------------------------
    def read(self, table: str) -> Any:
        """Current version of a lake table as a DataFrame, or None when it has no rows."""
        if self.lake.current(table) is None or not self.lake.files(table):
            return None
        return read_table(self.spark, self.lake, table)  # hive partition columns (spectra: ionmode, ms_level) kept

    def stage_df(self, df: Any, name: str) -> Any:
        """Write a DataFrame under staging and read it back (cuts the lineage)."""
        path = str(self.staging / name)
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def write_part(self, table: str, data: Any, *, settings: dict[str, Any] | None = None, **kw: Any) -> int:
        """A new part of ``table``; its version's settings carry the settings hash."""
        return super().write_part(table, data, settings={"settings_hash": self.hash, **(settings or {})}, **kw)

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
    """Compute the feature tables of the lake at ``lake_dir`` (new spectra only, unless ``refit``).

    Returns once the run is committed and a Spark session started here has stopped.
    """
    settings = settings or FeaturesSettings()
    features = parse_only(only)
    lake = Lake(lake_dir)
    report = FeaturesReport(settings_hash=settings.settings_hash(), features=features)
    with _FeatureRun(spark, lake, settings, features, refit, report, progress) as run:
        with run.stage("spark_start"):
            run.spark, started = start_spark(settings.spark, spark)
        try:
            _run_stages(run)
        finally:
            if started:
                with run.stage("spark_stop"):
                    stop_spark(run.spark)
    return report


def _run_stages(run: _FeatureRun) -> None:
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
        prepared = run.stage_df(source.select(*cols).mapInArrow(
            lambda it: prep.prepare_batches(it, peaks_json=peaks_json, words_json=words_json),
            spark_schema(prep.PREPARED)), "prepared")
        run.report.spectra_prepared = count_rows(run.staging / "prepared")
    run.lap("prepare", t0)

    skips: list[Any] = []   # DataFrames with FEATURE_SKIPS columns (without settings_hash/run id)
    blocks: dict[str, Any] = {}  # feature -> DataFrame(spectrum_id, block columns)
    usable = prepared.where(F.col("skip_code").isNull()) if prepared is not None else None
    for f in feats:  # spectra unusable for every feature, recorded once per feature
        bad = prepared.join(todo[f], "spectrum_id", "left_semi").where(F.col("skip_code").isNotNull())
        skips.append(bad.select("spectrum_id", "inchikey", F.lit(f).alias("feature"),
                                F.col("skip_code").alias("reason_code"), F.col("skip_reason").alias("reason")))

    descriptors = None
    if "descriptors" in run.features:
        descriptors = stages.descriptors_stage(run, skips)
    if "fragtrees" in feats:
        stages.fragtrees_stage(run, usable.join(todo["fragtrees"], "spectrum_id", "left_semi"), skips, blocks)
    if "refsim" in feats:
        stages.refsim_stage(run, usable, todo["refsim"], fit["refsim"], skips, blocks)
    if "spec2vec" in feats:
        stages.spec2vec_stage(run, usable, todo["spec2vec"], fit["spec2vec"], skips, blocks)
    if "patterns" in feats:
        stages.patterns_stage(run, usable, todo["patterns"], fit["patterns"], descriptors, blocks)

    t0 = time.perf_counter()
    run.note("writing feature tables")
    if feats:
        stages.write_spectrum_features(run, prepared, blocks)
    stages.write_skips(run, skips)
    run.lap("write", t0)
    run.note("commit")
    run.commit()


def _needs_fit(run: _FeatureRun, feature: str) -> bool:
    if run.refit:
        return True
    if feature == "refsim":
        return not (run.models / "refpanel.parquet").exists()
    if feature == "spec2vec":
        return not (run.models / "word_vectors.parquet").exists()
    current = run.lake.current("patterns")
    return current is None or current.settings.get("settings_hash") != run.hash


def panel_of(lake_dir: str | os.PathLike[str], settings: FeaturesSettings | None = None) -> dict[str, list[str]]:
    """Reference panel (spectrum ids per ion mode, vector order) used for ``settings`` in a lake; {} if none yet."""
    settings = settings or FeaturesSettings()
    path = Lake(lake_dir).root / MODELS_DIR / settings.settings_hash() / "refpanel.parquet"
    return panel_ids(path) if path.exists() else {}


__all__ = ["FEATURES", "FeaturesReport", "FeaturesSettings", "id_hash", "panel_of", "parse_only", "run_features"]
