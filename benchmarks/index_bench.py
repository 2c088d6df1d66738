"""Benchmark of the structure index against brute force, in one run.

Builds an index over ../shared/data/structures (MOSES 1.9M + MassBank isomers 564k; --limit
for smaller runs), then measures precursor-window queries (masses of real indexed structures,
10 ppm, k=20): latency p50/p99, QPS, recall@20 against exact Tanimoto search; the same for
whole-database queries (ANN path); and compares with FAISS IndexBinaryFlat over the whole
database and RDKit BulkTanimotoSimilarity.

    .venv/bin/python -m benchmarks.index_bench --limit 20000
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "structures"
DEFAULT_SOURCES = [SHARED / "zinc_moses_1.9M.smi.gz", SHARED / "massbank_isomers.smi.gz"]

log = logging.getLogger("index_bench")


def _head(src: Path, dst: Path, n: int) -> Path:
    with gzip.open(src, "rt") as fin, open(dst, "w") as fout:
        for i, line in enumerate(fin):
            if i >= n:
                break
            fout.write(line)
    return dst


def _exact_topk(codes: np.ndarray, pop: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent exact Tanimoto top-k (ties by id) over the given rows."""
    words = codes.view(np.uint64)
    qw = q.view(np.uint64)
    inter = np.bitwise_count(words & qw).sum(axis=1, dtype=np.int32)
    union = pop + int(np.bitwise_count(qw).sum()) - inter
    s = np.divide(inter, union, out=np.zeros(len(inter)), where=union > 0)
    order = np.lexsort((ids, -s))[:k]
    return s[order], ids[order]


def _recall(found_scores: np.ndarray, exact_scores: np.ndarray, k: int) -> float:
    """Tie-aware recall@k: share of the exact top-k matched by hits scoring at least the exact k-th score."""
    n = min(k, len(exact_scores))
    if n == 0:
        return 1.0
    kth = exact_scores[n - 1]
    good = int(np.sum(found_scores[: n] >= kth - 1e-12))
    return min(good, n) / n


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p))


def _dir_bytes(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in path.rglob("*"):
        if f.is_file():
            key = f.name if f.parent.name.startswith("s0") else f.name
            out[key] = out.get(key, 0) + f.stat().st_size
    return out


def _per_core(sources: list[Path], n: int = 2000) -> dict[str, float]:
    """Records/s of one core for standardization (ingest rules) and fingerprinting, from CPU time."""
    from speclake.index.embed import get_embedder
    from speclake.index.sources import iter_source
    from speclake.index.standardize import standardize_batch

    out: dict[str, float] = {}
    emb = get_embedder("fingerprint")
    for i, src in enumerate(sources):
        batch = next(iter_source(src, i, batch_size=n))
        t = time.process_time()
        std = standardize_batch(batch)
        t_std = time.process_time() - t
        smiles = [s for s in std.column("smiles").to_pylist() if s]
        t = time.process_time()
        emb.embed_smiles(smiles)
        t_emb = time.process_time() - t
        out[Path(src).name] = round(len(batch) / (t_std + t_emb), 1)
        out[Path(src).name + ":standardize_share"] = round(t_std / (t_std + t_emb), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--structures", nargs="*", type=Path, default=DEFAULT_SOURCES,
                    help="structure files (default: MOSES 1.9M + MassBank isomers from ../shared/data/structures)")
    ap.add_argument("--lake", type=Path, default=None,
                    help="a lake directory whose compounds are indexed too (optional)")
    ap.add_argument("--limit", type=int, default=None, help="first N records of each structure file only")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/speclake-index-bench"), help="scratch lake")
    ap.add_argument("--reuse", action="store_true", help="reuse an index already built in --workdir")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs for Ray")
    ap.add_argument("--shard-size", type=int, default=250_000, help="target structures per shard")
    ap.add_argument("--queries", type=int, default=2000, help="precursor-window queries")
    ap.add_argument("--global-queries", type=int, default=200, help="whole-database (ANN) queries")
    ap.add_argument("--flat-queries", type=int, default=200, help="queries for FAISS flat brute force")
    ap.add_argument("--rdkit-queries", type=int, default=20, help="queries for RDKit BulkTanimotoSimilarity")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--ppm", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for name in ("ray", "faiss.loader", "speclake"):
        logging.getLogger(name).setLevel(logging.WARNING)

    import faiss
    import ray
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    from speclake.index.build import build_index
    from speclake.infra.ray import ensure_ray
    from speclake.index.search import StructureIndex, index_dir
    from speclake.index.settings import IndexSettings
    from speclake.pipelines.normalize.masses import ppm_window

    results: dict[str, object] = {"argv": sys.argv[1:], "cpus": args.num_cpus, "loadavg_start": os.getloadavg()}
    lake = args.workdir / "lake"
    sources = [p for p in args.structures]
    for p in sources:
        if not p.exists():
            ap.error(f"{p} does not exist")
    if args.limit:
        args.workdir.mkdir(parents=True, exist_ok=True)
        sources = [_head(p, args.workdir / f"{p.name.split('.')[0]}.{args.limit}.smi", args.limit) for p in sources]
    if args.lake:
        sources = [args.lake, *sources]
    path = index_dir(lake, "fingerprint")
    if not args.reuse:
        shutil.rmtree(lake, ignore_errors=True)
        settings = IndexSettings(num_cpus=args.num_cpus, shard_target_size=args.shard_size)
        log.info("building over %s", [str(s) for s in sources])
        t0 = time.perf_counter()
        ensure_ray(num_cpus=args.num_cpus)
        t_ray = time.perf_counter() - t0
        report = build_index(sources, lake, settings=settings)
        build_s = time.perf_counter() - t0
        ray.shutdown()
        results["build"] = {"seconds": round(build_s, 1), "ray_start_s": round(t_ray, 1),
                            "stages": report.stage_seconds, "records": report.records_read,
                            "structures": report.structures, "quarantined": report.quarantined,
                            "duplicates_merged": report.duplicates_merged, "shards": report.shards_built,
                            "structures_per_s_per_core": round(report.records_read / build_s / args.num_cpus, 1)}
        log.info("built in %.1f s: %s", build_s, report)

    index = StructureIndex.open(path)
    n = len(index)
    version = path / index.manifest["version_dir"]
    by_file = _dir_bytes(version)
    total_bytes = sum(by_file.values())
    emb_bytes = sum(f.stat().st_size for f in (path / "embeddings").rglob("*") if f.is_file())
    results["index"] = {"structures": n, "shards": len(index.shards),
                        "index_types": sorted({s.info.index_type for s in index.shards}),
                        "bytes_per_structure": round(total_bytes / n, 1),
                        "bytes_per_structure_by_file": {k: round(v / n, 1) for k, v in sorted(by_file.items())},
                        "embedding_store_bytes_per_structure": round(emb_bytes / n, 1)}

    # global arrays for the exact reference (independent of shard search)
    codes = np.concatenate([np.asarray(s.codes) for s in index.shards])
    pop = np.concatenate([np.asarray(s.popcount, dtype=np.int32) for s in index.shards])
    masses = np.concatenate([np.asarray(s.mass) for s in index.shards])
    gids = np.concatenate([(np.int64(s.info.serial) << 32) | np.arange(s.info.count, dtype=np.int64)
                           for s in index.shards])
    order = np.argsort(masses, kind="stable")
    s_mass, s_codes, s_pop, s_ids = masses[order], codes[order], pop[order], gids[order]

    rng = np.random.default_rng(args.seed)
    q_rows = rng.choice(n, size=min(args.queries, n), replace=False)
    q_mass = masses[q_rows]
    q_vec = codes[q_rows]
    k = args.k

    # precursor-window queries: latency (one query, rows with metadata) and batch QPS
    for i in range(min(50, len(q_rows))):  # warm page cache / lazy loads
        index.query(mass=float(q_mass[i]), ppm=args.ppm, vector=q_vec[i], k=k)
    lat = []
    for i in range(len(q_rows)):
        t = time.perf_counter()
        index.query(mass=float(q_mass[i]), ppm=args.ppm, vector=q_vec[i], k=k)
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    batch = index.query_batch(masses=q_mass.tolist(), ppm=args.ppm, vectors=q_vec, k=k)
    batch_s = time.perf_counter() - t
    t = time.perf_counter()
    res = index.search(q_vec, q_mass.tolist(), ppm=args.ppm, k=k)
    search_s = time.perf_counter() - t
    recalls, n_cands, exact_lat = [], [], []
    for i in range(len(q_rows)):
        te = time.perf_counter()
        lo, hi = ppm_window(float(q_mass[i]), args.ppm)
        a, b = np.searchsorted(s_mass, lo, "left"), np.searchsorted(s_mass, hi, "right")
        es, eids = _exact_topk(s_codes[a:b], s_pop[a:b], s_ids[a:b], q_vec[i], k)
        exact_lat.append(time.perf_counter() - te)
        n_cands.append(b - a)
        got = res.ids[i][res.ids[i] >= 0]
        # mass filter exact: same candidate count, every hit inside the window
        if res.n_candidates[i] != b - a:
            raise RuntimeError(f"query {i}: index saw {res.n_candidates[i]} candidates, exact window has {b - a}")
        recalls.append(_recall(res.scores[i][: len(got)], es, k))
    results["precursor_window"] = {
        "queries": len(q_rows), "ppm": args.ppm, "k": k,
        "candidates_per_query_median": float(np.median(n_cands)), "candidates_per_query_p99": _pct(n_cands, 99),
        "latency_p50_ms": round(_pct(lat, 50) * 1e3, 3), "latency_p99_ms": round(_pct(lat, 99) * 1e3, 3),
        "qps_single": round(len(lat) / sum(lat), 1),
        "qps_batch_with_rows": round(len(q_rows) / batch_s, 1),
        "qps_batch_search_only": round(len(q_rows) / search_s, 1),
        "ann_used_share": float(res.used_ann.mean()), "recall_at_k": float(np.mean(recalls)),
        "rows_returned": batch.num_rows,
    }

    # whole-database queries (no mass): ANN path on large shards, exact re-ranking
    g = q_rows[: args.global_queries]
    glat, grec = [], []
    flat_ref = []
    for i, row in enumerate(g):
        t = time.perf_counter()
        r = index.search(codes[row][None, :], None, k=k)
        glat.append(time.perf_counter() - t)
        es, _ = _exact_topk(codes, pop, gids, codes[row], k)
        flat_ref.append(es)
        grec.append(_recall(r.scores[0], es, k))
    results["whole_database"] = {
        "queries": len(g), "latency_p50_ms": round(_pct(glat, 50) * 1e3, 3),
        "latency_p99_ms": round(_pct(glat, 99) * 1e3, 3), "qps": round(len(g) / sum(glat), 1),
        "recall_at_k": float(np.mean(grec)),
    }

    ex_lat = []
    for row in g[:20]:
        t = time.perf_counter()
        index.search(codes[row][None, :], None, k=k, exact=True)
        ex_lat.append(time.perf_counter() - t)
    results["whole_database"]["exact_latency_p50_ms"] = round(_pct(ex_lat, 50) * 1e3, 2)

    # single-core cost of the build's per-record work (CPU time, immune to other load on the machine)
    results["per_core_cpu"] = _per_core(sources)

    # brute force 1: FAISS IndexBinaryFlat over the whole database (Hamming), all threads, batched
    flat = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    flat.add(codes)
    fq = codes[q_rows[: args.flat_queries]]
    flat.search(fq[:5], k)
    t = time.perf_counter()
    flat.search(fq, k)
    flat_s = time.perf_counter() - t
    flat_single = []
    for i in range(min(20, len(fq))):
        t = time.perf_counter()
        flat.search(fq[i:i + 1], k)
        flat_single.append(time.perf_counter() - t)
    del flat
    results["faiss_flat_whole_db"] = {
        "queries": len(fq), "qps_batch": round(len(fq) / flat_s, 2),
        "latency_p50_ms": round(_pct(flat_single, 50) * 1e3, 2),
        "threads": faiss.omp_get_max_threads(),
    }

    # brute force 2: RDKit BulkTanimotoSimilarity over the whole database, then mass window + top-k
    t = time.perf_counter()
    fps = [DataStructs.CreateFromFPSText(c.tobytes().hex()) for c in codes]
    fps_s = time.perf_counter() - t
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    rq = q_rows[: args.rdkit_queries]
    rd_lat, max_diff, smiles_diff = [], 0.0, 0.0
    meta_rows = {}
    for i, row in enumerate(rq):
        t = time.perf_counter()
        sims = np.asarray(DataStructs.BulkTanimotoSimilarity(fps[row], fps))
        lo, hi = ppm_window(float(masses[row]), args.ppm)
        inwin = np.nonzero((masses >= lo) & (masses <= hi))[0]
        top = inwin[np.lexsort((gids[inwin], -sims[inwin]))[:k]]
        rd_lat.append(time.perf_counter() - t)
        qi = int(np.nonzero(q_rows == row)[0][0])
        got = res.scores[qi][res.ids[qi] >= 0]
        max_diff = max(max_diff, float(np.max(np.abs(np.sort(sims[top])[::-1] - got[: len(top)]))) if len(top) else 0.0)
        # end-to-end check: fingerprints recomputed by RDKit from the catalog's SMILES of the window
        cat = index.catalog.lookup(faiss_ids=gids[inwin].tolist())
        qsmi = index.catalog.lookup(faiss_ids=[int(gids[row])]).column("smiles")[0].as_py()
        qfp = gen.GetFingerprint(Chem.MolFromSmiles(qsmi))
        wfps = [gen.GetFingerprint(Chem.MolFromSmiles(s)) for s in cat.column("smiles").to_pylist()]
        ws = np.sort(np.asarray(DataStructs.BulkTanimotoSimilarity(qfp, wfps)))[::-1][:k]
        smiles_diff = max(smiles_diff, float(np.max(np.abs(ws - got[: len(ws)]))) if len(ws) else 0.0)
    del fps
    results["rdkit_bulk_tanimoto_whole_db"] = {
        "queries": len(rq), "bitvect_build_s": round(fps_s, 1),
        "latency_p50_ms": round(_pct(rd_lat, 50) * 1e3, 1), "qps": round(len(rq) / sum(rd_lat), 2),
        "max_abs_score_diff_vs_index": max_diff, "max_abs_score_diff_from_smiles": smiles_diff,
    }
    pw = results["precursor_window"]
    results["speedup"] = {
        "qps_batch_vs_faiss_flat": round(pw["qps_batch_with_rows"] / results["faiss_flat_whole_db"]["qps_batch"], 1),
        "qps_single_vs_faiss_flat": round(pw["qps_single"] / results["faiss_flat_whole_db"]["qps_batch"], 1),
        "qps_batch_vs_rdkit": round(pw["qps_batch_with_rows"] / results["rdkit_bulk_tanimoto_whole_db"]["qps"], 1),
    }
    index.close()
    results["loadavg_end"] = os.getloadavg()
    out = args.workdir / "results.json"
    args.workdir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    _print_table(results)
    print(f"\nfull results: {out}")
    return 0


def _print_table(r: dict) -> None:
    rows: list[tuple[str, str]] = []
    b = r.get("build")
    if b:
        rows += [("build time (s)", f"{b['seconds']}  stages {b['stages']}"),
                 ("records / structures", f"{b['records']:,} / {b['structures']:,} (quarantined {b['quarantined']})"),
                 ("structures/s per core", f"{b['structures_per_s_per_core']} ({r['cpus']} cores)")]
    ix = r["index"]
    rows += [("index structures / shards", f"{ix['structures']:,} / {ix['shards']} {ix['index_types']}"),
             ("index bytes / structure", f"{ix['bytes_per_structure']} {ix['bytes_per_structure_by_file']}"),
             ("embedding store bytes / structure", str(ix["embedding_store_bytes_per_structure"]))]
    pw = r["precursor_window"]
    rows += [(f"window {pw['ppm']} ppm: candidates median/p99", f"{pw['candidates_per_query_median']} / {pw['candidates_per_query_p99']}"),
             ("window: latency p50 / p99 (ms)", f"{pw['latency_p50_ms']} / {pw['latency_p99_ms']}"),
             ("window: QPS single / batch / search-only", f"{pw['qps_single']} / {pw['qps_batch_with_rows']} / {pw['qps_batch_search_only']}"),
             (f"window: recall@{pw['k']} vs exact", f"{pw['recall_at_k']:.4f} (ANN used in {pw['ann_used_share']:.1%})")]
    wd = r["whole_database"]
    rows += [("per-core CPU records/s (standardize+fp)", str(r["per_core_cpu"]))]
    rows += [("whole DB (ANN): latency p50 / p99 (ms)", f"{wd['latency_p50_ms']} / {wd['latency_p99_ms']}"
              f"  (exact: p50 {wd['exact_latency_p50_ms']})"),
             ("whole DB (ANN): QPS / recall@k", f"{wd['qps']} / {wd['recall_at_k']:.4f}")]
    ff = r["faiss_flat_whole_db"]
    rows += [("FAISS flat whole DB: QPS (batch) / p50 ms", f"{ff['qps_batch']} / {ff['latency_p50_ms']} ({ff['threads']} threads)")]
    rk = r["rdkit_bulk_tanimoto_whole_db"]
    rows += [("RDKit BulkTanimoto whole DB: QPS / p50 ms", f"{rk['qps']} / {rk['latency_p50_ms']}"),
             ("score check vs RDKit (max |diff|)", f"{rk['max_abs_score_diff_vs_index']:.2e} bits, {rk['max_abs_score_diff_from_smiles']:.2e} from SMILES")]
    sp = r["speedup"]
    rows += [("speedup vs FAISS flat (batch / single)", f"{sp['qps_batch_vs_faiss_flat']}x / {sp['qps_single_vs_faiss_flat']}x"),
             ("speedup vs RDKit bulk", f"{sp['qps_batch_vs_rdkit']}x")]
    width = max(len(a) for a, _ in rows)
    for a, v in rows:
        print(f"{a:<{width}}  {v}")


if __name__ == "__main__":
    sys.exit(main())
