"""Learned-embedding structure index (arch5): build throughput, bytes per structure, spectrum-query latency.

    python -m benchmarks embed -- --lake benchmarks/results/lake_features --limit 200000

Builds ``<workdir>/lake/index/arch5`` over the lake's compounds plus the first ``--limit`` MOSES
structures with the newest arch5 model of ``--lake`` (graph encoder on every structure, on GPU
where present), then queries it with the lake's test-split MS2 spectra (spectrum encoder, 10 ppm
window around the true mass): latency p50/p99, QPS, recall@20 of the ANN path against exact search,
and the rank of the true structure. Prints a table; ``--json`` writes it too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MOSES = REPO.parent / "shared" / "data" / "structures" / "zinc_moses_1.9M.smi.gz"

log = logging.getLogger("benchmarks.embed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", type=Path, default=REPO / "benchmarks" / "results" / "lake_features",
                    help="lake with spectra and a trained arch5 model")
    ap.add_argument("--limit", type=int, default=200_000, help="MOSES structures indexed beside the lake compounds")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/speclake-embed-bench"))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--ppm", type=float, default=10.0)
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="query the index already built in --workdir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    import ray

    from speclake.index.build import BuildReport, build_index
    from speclake.infra.ray import ensure_ray
    from speclake.index.search import StructureIndex, index_dir, read_manifest
    from speclake.index.settings import IndexSettings
    from speclake.lake import sql
    from benchmarks.index_bench import _head
    from speclake.training.embedders import Arch5Embedder
    from speclake.training.registry import load_model
    from speclake.training.split import assign_split

    model = Arch5Embedder.resolve_model(str(args.lake), None)
    path = index_dir(args.workdir / "lake", "arch5")
    if args.reuse:
        saved = dict(read_manifest(path)["report"])
        if isinstance(saved.get("seconds"), dict):  # an index built before reports had stage_seconds
            saved["stage_seconds"] = saved.pop("seconds")
        report = BuildReport(**{k: v for k, v in saved.items() if k in BuildReport.__dataclass_fields__})
        build_s = report.seconds or float(sum(report.stage_seconds.values()))
    else:
        shutil.rmtree(args.workdir, ignore_errors=True)
        args.workdir.mkdir(parents=True)
        sources = [args.lake, _head(MOSES, args.workdir / f"moses.{args.limit}.smi", args.limit)]
        settings = IndexSettings(embedding="arch5", embedding_model=model, num_cpus=args.num_cpus,
                                 shard_target_size=max(50_000, args.limit // 4), flat_max=20_000)
        t0 = time.perf_counter()
        ensure_ray(num_cpus=args.num_cpus)
        report = build_index(sources, args.workdir / "lake", settings=settings)
        build_s = time.perf_counter() - t0
        ray.shutdown()

    con = sql.connect(args.lake)
    try:
        rows = con.execute(
            "SELECT s.mz, s.intensities, c.monoisotopic_mass, c.inchikey14 FROM spectra s JOIN compounds c USING (inchikey) "
            "WHERE s.ms_level = 2 AND s.num_peaks >= 3 ORDER BY hash(s.spectrum_id)").df().to_dict("records")
    finally:
        con.close()
    split = load_model(args.lake, Path(model).name).split
    rows = [r for r in rows if assign_split(r["inchikey14"], split) == "test"][: args.queries]
    masses = [r["monoisotopic_mass"] for r in rows]
    out: dict[str, object] = {"model": Path(model).name, "build": {"seconds": round(build_s, 1), "stages": report.stage_seconds,
                                                                 "structures": report.structures}}
    with StructureIndex.open(path) as ix:
        n = len(ix)
        version = path / ix.manifest["version_dir"]
        bytes_total = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
        t = time.perf_counter()
        vecs = ix.embed_spectra(rows)
        embed_q_s = time.perf_counter() - t
        for i in range(min(20, len(rows))):
            ix.query(mass=masses[i], ppm=args.ppm, vector=vecs[i], k=args.k)
        lat = []
        for i in range(len(rows)):
            t = time.perf_counter()
            ix.query(mass=masses[i], ppm=args.ppm, vector=vecs[i], k=args.k)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = ix.search(vecs, masses, ppm=args.ppm, k=args.k)
        batch_s = time.perf_counter() - t
        exact = ix.search(vecs, masses, ppm=args.ppm, k=args.k, exact=True)
        recall = [len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, len(b[b >= 0])) for a, b in zip(res.ids, exact.ids)]
        hits = ix.rows(exact, masses).to_pylist()
    rank = {}
    for h in hits:
        if (h["inchikey"] or "")[:14] == rows[h["query"]]["inchikey14"]:
            rank.setdefault(h["query"], h["rank"])
    found = np.array([rank.get(i, 10**9) for i in range(len(rows))])
    embed_s = report.stage_seconds.get("embed", float("nan"))
    out.update({
        "structures": n, "bytes_per_structure": round(bytes_total / n, 1),
        "structures_embedded_per_s_per_core": round(report.embedded_new / embed_s / args.num_cpus, 1) if embed_s else None,
        "query_spectra_embedded_per_s": round(len(rows) / embed_q_s, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)) * 1e3, 3),
        "latency_ms_p99": round(float(np.percentile(lat, 99)) * 1e3, 3),
        "batch_qps": round(len(rows) / batch_s, 1), "ann_used": float(np.mean(res.used_ann)),
        "candidates_median": float(np.median(res.n_candidates)),
        "recall_at_k_vs_exact": round(float(np.mean(recall)), 4),
        "true_in_top1": float(np.mean(found <= 1)), "true_in_top20": float(np.mean(found <= 20)),
    })
    print(f"\n{'figure':<40}{'value':>20}")
    for key in ("structures", "bytes_per_structure", "structures_embedded_per_s_per_core", "query_spectra_embedded_per_s",
                "latency_ms_p50", "latency_ms_p99", "batch_qps", "ann_used", "candidates_median",
                "recall_at_k_vs_exact", "true_in_top1", "true_in_top20"):
        print(f"{key:<40}{out[key]!s:>20}")
    print(f"{'build seconds':<40}{build_s:>20.1f}  {json.dumps(report.stage_seconds)}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
