"""Train every architecture on a featurized lake, then evaluate all of them with the baselines and references.

    python -m benchmarks training -- --lake benchmarks/results/lake_features \\
        --index /tmp/speclake-index-bench/lake/index/fingerprint --epochs 5

The lake must hold spectra and features (``python -m benchmarks features`` makes one from
../shared/data/massbank). ``--index`` hard-links an index already built over the candidate
structures (``python -m benchmarks index``: lake compounds + MOSES 1.9M + MassBank isomers) into
the lake, so the evaluation does not standardize 2.5M structures again; without it the index is
built from ``--structures``. Prints per architecture: wall time, training spectra/s, best validation
loss and hit@1 (the learning curves in the log), then the comparison table of ``speclake evaluate``
(hit@1/5/20, top-1 Tanimoto, descriptor AUC/F1).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STRUCTURES = REPO.parent / "shared" / "data" / "structures"

#: CPU-sized settings per architecture (the defaults are GPU-sized: arch1 at DeepEI sizes has ~1e9 weights).
CPU_MODELS: dict[str, dict] = {
    "arch1": {"hidden": [16]},
    "arch2": {"trunk": [512, 256], "group_hidden": 128, "n_groups": 8},
    "arch2-flat": {"trunk": [512, 256]},
    "arch3": {},
    "arch4": {"hidden": [256, 256], "embedding_dim": 128},
    "arch5": {"spectrum_hidden": [256], "graph_hidden": 64, "mp_layers": 3, "embedding_dim": 128},
}

log = logging.getLogger("benchmarks.training")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", type=Path, default=REPO / "benchmarks" / "results" / "lake_features")
    ap.add_argument("--archs", default=",".join(CPU_MODELS), help="architectures to train (comma-separated)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="Ray Train workers")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--patience", type=int, default=3, help="early stopping: epochs without better validation loss")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="per architecture: stop after the epoch that brings its wall time to this many seconds")
    ap.add_argument("--index", type=Path, default=None, help="an index directory to hard-link into <lake>/index/fingerprint")
    ap.add_argument("--structures", nargs="*", type=Path,
                    default=[STRUCTURES / "zinc_moses_1.9M.smi.gz", STRUCTURES / "massbank_isomers.smi.gz"])
    ap.add_argument("--max-test", type=int, default=None, help="cap on test spectra")
    ap.add_argument("--max-baseline-train", type=int, default=3000,
                    help="training spectra the classical baselines are fitted on")
    ap.add_argument("--baselines", default="logreg,random_forest")
    ap.add_argument("--rf-trees", type=int, default=20,
                    help="trees of the random forest (one multi-output forest over ~2,000 descriptors: ~45 s per "
                         "tree on 5,000 spectra on this machine)")
    ap.add_argument("--skip-train", action="store_true", help="evaluate the models already registered")
    ap.add_argument("--resume", action="store_true",
                    help="continue an unfinished run of each architecture from its last checkpoint (settings as saved)")
    ap.add_argument("--skip-eval", action="store_true", help="train only (evaluate later with --skip-train)")
    ap.add_argument("--prepare-index", action="store_true",
                    help="only prefilter --structures to the possible candidates and index them (runs beside training)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from speclake.training.evaluate import EvaluationSettings, evaluate, format_comparison
    from speclake.training.trainer import RunSettings, TrainSettings, train_model, unfinished_run

    lake = args.lake
    if args.prepare_index:
        return prepare_index(lake, args.structures)
    if args.index is not None:
        target = lake / "index" / "fingerprint"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-al", str(args.index), str(target)], check=True)
            shutil.rmtree(target / "_staging", ignore_errors=True)
    rows = []
    model_ids = []
    if not args.skip_train:
        for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
            settings = RunSettings(arch=arch, model=CPU_MODELS.get(arch, {}),
                                   train=TrainSettings(epochs=args.epochs, num_workers=args.workers,
                                                       batch_size=args.batch_size, patience=args.patience,
                                                       time_budget_s=args.time_budget))
            t0 = time.perf_counter()
            resume = bool(args.resume and unfinished_run(lake, arch))
            result = train_model(lake, settings, resume=resume)
            wall = time.perf_counter() - t0
            model_ids.append(result.model_id)
            m = result.metrics
            rows.append((arch, result.model_id, wall, m.get("spectra_per_s") or m.get("train_spectra_per_s"),
                         m.get("best_val_loss") or m.get("val_loss"), m.get("best_val_hit1"), m.get("epochs")))
            log.info("%s trained in %.0f s: %s", arch, wall, json.dumps(m, default=str)[:400])
            for h in m.get("history") or []:
                log.info("%s epoch %s: train loss %.4f, val loss %.4f, val hit@1 %s", arch, h["epoch"],
                         h["train_loss"], h["val_loss"], "-" if h.get("val_hit1") is None else f"{h['val_hit1']:.3f}")
        print(f"\n{'arch':<12}{'model':<34}{'wall s':>9}{'spectra/s':>11}{'val loss':>10}{'val hit@1':>11}"
              f"{'epochs':>8}")
        for arch, mid, wall, sps, vl, hit1, ep in rows:
            sps_s = f"{sps:.0f}" if isinstance(sps, (int, float)) else "-"
            vl_s = f"{vl:.4f}" if isinstance(vl, (int, float)) else "-"
            hit_s = f"{hit1:.3f}" if isinstance(hit1, (int, float)) else "-"
            print(f"{arch:<12}{mid:<34}{wall:>9.0f}{sps_s:>11}{vl_s:>10}{hit_s:>11}{str(ep):>8}")
    if args.skip_eval:
        return 0
    t0 = time.perf_counter()
    structures = [] if args.index is not None else [str(p) for p in args.structures]
    table = evaluate(lake, model_ids or None, structures,
                     EvaluationSettings(
                         max_test=args.max_test, candidate_modes=("formula", "mass"),
                         max_baseline_train=args.max_baseline_train,
                         baseline={"rf_trees": args.rf_trees},
                         baselines=tuple(b for b in args.baselines.split(",") if b)),
                     plot_path=lake / "reports" / "training_bench.png", progress=None)
    print(f"\nevaluation: {time.perf_counter() - t0:.0f} s")
    print(format_comparison(table))
    return 0


def prepare_index(lake: Path, structures: list[Path]) -> int:
    """The evaluation's structure index, built ahead: lake compounds + the prefiltered structure files."""
    from speclake.lake.catalog import Lake
    from speclake.training.evaluate import EvaluationSettings, load_split_examples, prepare_candidate_index

    settings = EvaluationSettings()
    t0 = time.perf_counter()
    data = load_split_examples(Lake(lake), settings)
    files = prepare_candidate_index(Lake(lake), structures, data["test"], data["validation"], settings)
    lines = {str(f): sum(1 for _ in open(f)) for f in files}
    print(f"candidate index ready in {time.perf_counter() - t0:.0f} s; structure lines indexed: {lines}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
