"""The feature job's stages: each computes one feature over the prepared spectra (or the compounds)
and adds its new part, skips and spectrum_features block to the run (see :mod:`.job`)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from speclake.lake.run import count_rows

from .descriptors import DESCRIPTOR_OUT, descriptor_batches
from .patterns import (OVERLAP_OUT, RuleMiningTimeout, mine_motifs, mine_rules, overlap_batches, pattern_rows,
                       structure_transactions)
from .refpanel import REFSIM_OUT, choose_panel, panel_ids, refsim_batches, save_panel
from .spec2vec import SPEC2VEC_OUT, fit_word_vectors, spec2vec_batches
from .tables import DESCRIPTORS, FEATURE_SKIPS, FRAGTREES, PATTERNS, SPECTRUM_FEATURES
from .trees import TREE_OUT, tree_batches

if TYPE_CHECKING:
    from .job import _FeatureRun

log = logging.getLogger(__name__)

#: spectrum_features columns filled by each spectrum-level feature.
BLOCK_COLUMNS: dict[str, tuple[str, ...]] = {
    "refsim": ("refsim_cosine", "refsim_modified_cosine", "refsim_entropy"),
    "patterns": ("pattern_overlap",),
    "spec2vec": ("spec2vec",),
    "fragtrees": ("tree_features",),
}


def spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


# -- features --------------------------------------------------------------------------------------

def descriptors_stage(run: "_FeatureRun", skips: list[Any]) -> Any:
    """Descriptors of new structures; returns all descriptors of this settings hash (old + new)."""
    from pyspark.sql import functions as F

    t0 = time.perf_counter()
    run.note("structure descriptors")
    compounds = run.read("compounds")
    old = run.read("descriptors")
    old = old.where(F.col("settings_hash") == run.hash) if old is not None else None
    if compounds is None:
        run.lap("descriptors", t0)
        return old
    done = run.done_ids("descriptors")
    todo = compounds.join(done, "inchikey", "left_anti") if done is not None else compounds
    if todo.limit(1).count() == 0:
        run.report.computed["descriptors"] = 0
        run.lap("descriptors", t0)
        return old
    sj = run.settings.descriptors.model_dump_json()
    out = run.stage_df(todo.select("inchikey", "inchikey14", "smiles", "chemont_id", "chemont_classes").mapInArrow(
        lambda it: descriptor_batches(it, settings_json=sj), spark_schema(DESCRIPTOR_OUT)), "descriptors")
    rows = out.where(F.col("kind") == "row").select(
        *[c for c in (f.name for f in DESCRIPTORS) if c not in ("settings_hash", "features_run_id")]) \
        .withColumn("settings_hash", F.lit(run.hash)).withColumn("features_run_id", F.lit(run.run_id))
    run.report.computed["descriptors"] = run.write_part("descriptors", rows)
    skips.append(out.where(F.col("kind") == "skip").select(
        F.lit(None).cast("string").alias("spectrum_id"), "inchikey", F.lit("descriptors").alias("feature"),
        F.col("skip_code").alias("reason_code"), F.col("skip_reason").alias("reason")))
    new = rows if run.report.computed["descriptors"] else None
    run.lap("descriptors", t0)
    if old is None:
        return new
    return old.unionByName(new) if new is not None else old


def fragtrees_stage(run: "_FeatureRun", todo: Any, skips: list[Any], blocks: dict[str, Any]) -> None:
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
    out = run.stage_df(grouped.mapInArrow(lambda it: tree_batches(it, settings_json=sj), spark_schema(TREE_OUT)),
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
    run.lap("fragtrees", t0)


def _panel_candidates(run: "_FeatureRun", usable: Any) -> list[dict[str, Any]]:
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


def refsim_stage(run: "_FeatureRun", usable: Any, todo: Any, fit: bool, skips: list[Any], blocks: dict[str, Any]) -> None:

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
    out = run.stage_df(usable.join(todo, "spectrum_id", "left_semi")
                    .select("spectrum_id", "ionmode", "precursor_mz", "mz", "intensities")
                    .mapInArrow(lambda it: refsim_batches(it, panel_path=pp, settings_json=sj),
                                spark_schema(REFSIM_OUT)), "refsim")
    _block(run, "refsim", out, skips, blocks)
    run.lap("refsim", t0)


def spec2vec_stage(run: "_FeatureRun", usable: Any, todo: Any, fit: bool, skips: list[Any], blocks: dict[str, Any]) -> None:
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
    out = run.stage_df(usable.join(todo, "spectrum_id", "left_semi").select("spectrum_id", "words", "word_weights")
                    .mapInArrow(lambda it: spec2vec_batches(it, vectors_path=vp, intensity_power=power),
                                spark_schema(SPEC2VEC_OUT)), "spec2vec")
    _block(run, "spec2vec", out, skips, blocks)
    run.lap("spec2vec", t0)


def patterns_stage(run: "_FeatureRun", usable: Any, todo: Any, fit: bool, descriptors: Any, blocks: dict[str, Any]) -> None:

    t0 = time.perf_counter()
    s = run.settings.patterns
    if fit:
        run.note("mining rules (FPGrowth)")
        if descriptors is not None:
            transactions = run.stage_df(structure_transactions(usable, descriptors, s), "transactions")
            try:
                rules = mine_rules(run.spark, transactions, s)
            except RuleMiningTimeout as exc:
                log.error("patterns: %s", exc)
                run.report.warnings.append(str(exc))
                rules = []
        else:
            rules = []
        run.lap("patterns_rules", t0)
        t1 = time.perf_counter()
        run.note("mining motifs (LDA)")
        motifs = mine_motifs(run.spark, usable, s) if s.n_motifs > 0 else []
        run.lap("patterns_motifs", t1)
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
    out = run.stage_df(usable.join(todo, "spectrum_id", "left_semi").select("spectrum_id", "items")
                    .mapInArrow(lambda it: overlap_batches(it, patterns_path=patterns_path),
                                spark_schema(OVERLAP_OUT)), "overlap")
    blocks["patterns"] = out
    run.report.computed["patterns"] = count_rows(run.staging / "overlap")
    run.lap("patterns_overlap", t1)


def _block(run: "_FeatureRun", feature: str, out: Any, skips: list[Any], blocks: dict[str, Any]) -> None:
    from pyspark.sql import functions as F

    ok = out.where(F.col("skip_code").isNull())
    blocks[feature] = ok.select("spectrum_id", *BLOCK_COLUMNS[feature])
    skips.append(out.where(F.col("skip_code").isNotNull()).select(
        "spectrum_id", F.lit(None).cast("string").alias("inchikey"), F.lit(feature).alias("feature"),
        F.col("skip_code").alias("reason_code"), F.col("skip_reason").alias("reason")))
    run.report.computed[feature] = ok.count()


# -- writing -------------------------------------------------------------------------------------

def write_spectrum_features(run: "_FeatureRun", prepared: Any, blocks: dict[str, Any]) -> None:
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


def write_skips(run: "_FeatureRun", skips: list[Any]) -> None:
    from pyspark.sql import functions as F

    if not skips:
        return
    df = skips[0]
    for s in skips[1:]:
        df = df.unionByName(s)
    df = df.withColumn("settings_hash", F.lit(run.hash)).withColumn("features_run_id", F.lit(run.run_id))
    df = run.stage_df(df.select(*[f.name for f in FEATURE_SKIPS]), "skips")
    counts: dict[str, dict[str, int]] = {}
    for r in df.groupBy("feature", "reason_code").count().collect():
        counts.setdefault(r["feature"], {})[r["reason_code"]] = int(r["count"])
    run.report.skipped = {f: dict(sorted(c.items(), key=lambda kv: -kv[1])) for f, c in sorted(counts.items())}
    run.write_part("feature_skips", df)
