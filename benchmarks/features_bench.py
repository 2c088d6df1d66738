"""Benchmark of the Spark feature job over MassBank: wall time per feature, throughput, rules, motifs.

    python benchmarks/features_bench.py                       # ingest ../shared/data/massbank, then all features
    python benchmarks/features_bench.py --lake /tmp/mb-lake   # another lake (ingests only if it has no spectra)
    python benchmarks/features_bench.py --lake L --only refsim,spec2vec --refit

Target: all features for the ~80k MS2 spectra in under 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MASSBANK = REPO.parent / "shared" / "data" / "massbank"


def _lake_has_spectra(lake: Path) -> bool:
    from speclake.lake.catalog import Lake, LakeError

    try:
        return Lake(lake).current("spectra") is not None
    except LakeError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=str(REPO / "benchmarks" / "results" / "lake_features"),
                    help="lake directory (built if empty); the training and embed benchmarks read the same default")
    ap.add_argument("--inputs", nargs="*", default=[str(MASSBANK)], help="inputs to ingest when the lake is empty")
    ap.add_argument("--only", default=None, help="subset of features (comma-separated)")
    ap.add_argument("--refit", action="store_true", help="refit models and recompute every spectrum")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--driver-memory", default="6g")
    ap.add_argument("--settings", default=None, help="FeaturesSettings JSON file")
    ap.add_argument("--json", default=None, help="also write the report as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    from speclake.infra.spark import SparkSettings, get_spark
    from speclake.lake import sql
    from speclake.pipelines.features.job import FeaturesSettings, run_features
    from speclake.pipelines.features.tables import register_feature_tables

    register_feature_tables()
    spark_settings = SparkSettings(master=args.master, driver_memory=args.driver_memory,
                                   quick_jvm=False)  # as FeaturesSettings: Word2Vec / LDA need the C2 JIT
    spark = get_spark(spark_settings)
    cores = spark_settings.local_cores()
    lake = Path(args.lake)
    if not _lake_has_spectra(lake):
        from speclake.pipelines.ingest import IngestSettings, run_ingest

        t0 = time.perf_counter()
        ing = run_ingest(args.inputs, lake, IngestSettings(spark=spark_settings), spark=spark)
        print(f"ingest: {ing.spectra_new} spectra, {ing.quarantined} quarantined, "
              f"{ing.compounds_total} compounds in {time.perf_counter() - t0:.0f} s")
    data = json.loads(Path(args.settings).read_text()) if args.settings else {}
    settings = FeaturesSettings.model_validate({**data, "spark": spark_settings.model_dump()})
    con = sql.connect(lake)
    n_ms2 = con.execute("SELECT count(*) FROM spectra WHERE ms_level = 2").fetchone()[0]
    n_all = con.execute("SELECT count(*) FROM spectra").fetchone()[0]
    con.close()

    t0 = time.perf_counter()
    report = run_features(lake, settings, only=args.only, spark=spark, refit=args.refit)
    wall = time.perf_counter() - t0

    print()
    print(f"lake {lake}: {n_all} spectra ({n_ms2} MS2), Spark {args.master} ({cores} cores)")
    print(f"{'stage':<18}{'seconds':>10}")
    for stage, sec in report.stage_seconds.items():
        print(f"{stage:<18}{sec:>10.1f}")
    print(f"{'total':<18}{wall:>10.1f}   ({'under' if wall < 600 else 'OVER'} the 10-minute target)")
    print(f"spectra/s (all features, MS2): {n_ms2 / wall:.1f}")
    if report.n_trees and report.stage_seconds.get("fragtrees"):
        rate = report.n_trees / report.stage_seconds["fragtrees"]
        print(f"trees: {report.n_trees}, {rate:.1f} trees/s, {rate / cores:.1f} trees/s per core")
    print("computed: " + ", ".join(f"{k} {v}" for k, v in report.computed.items()))
    for feature, reasons in report.skipped.items():
        print(f"skipped {feature}: " + ", ".join(f"{k} {v}" for k, v in reasons.items()))
    print(f"reference panel: {report.panel_sizes}; spec2vec vocabulary {report.spec2vec_vocabulary}")
    print(f"rules: {report.n_rules}, motifs: {report.n_motifs}")
    con = sql.connect(lake)
    h = report.settings_hash
    print("top rules (one-item antecedents, by lift):")
    for name, sup, conf, lift, n in con.execute(
            "SELECT name, support, confidence, lift, n_structures FROM patterns WHERE kind = 'rule' AND len(items) = 1 "
            "AND settings_hash = ? ORDER BY lift DESC, confidence DESC LIMIT 10", [h]).fetchall():
        print(f"  {name:<50} support {sup:.4f} conf {conf:.2f} lift {lift:6.1f} n {n}")
    print("rules with frag@91.05 (tropylium):")
    for name, sup, conf, lift, n in con.execute(
            "SELECT name, support, confidence, lift, n_structures FROM patterns WHERE kind = 'rule' "
            "AND list_contains(items, 'frag@91.05') AND settings_hash = ? ORDER BY len(items), lift DESC LIMIT 8",
            [h]).fetchall():
        print(f"  {name:<50} support {sup:.4f} conf {conf:.2f} lift {lift:6.1f} n {n}")
    print("motifs (first 5):")
    for (name,) in con.execute("SELECT name FROM patterns WHERE kind = 'motif' AND settings_hash = ? "
                               "ORDER BY pattern_index LIMIT 5", [h]).fetchall():
        print(f"  {name}")
    con.close()
    if args.json:
        Path(args.json).write_text(json.dumps({"wall_s": wall, "n_ms2": n_ms2, **report.__dict__}, indent=1,
                                              default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
