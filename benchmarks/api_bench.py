"""Load test of the HTTP API: a real ``speclake serve`` process on loopback, N concurrent clients.

    .venv/bin/python -m benchmarks api                                   # 20 clients, 1,000 requests, <= 120 s
    .venv/bin/python -m benchmarks api -- --clients 20 --requests 2000 --seconds 60 --lake mylake --study NAME

The server runs in its own process (``speclake serve``, uvicorn, one worker), so the clients (threads of
this process, one keep-alive connection each, standard-library HTTP) do not share its interpreter. Each
client draws its next request from a fixed mix, seeded per client:

    annotate       30 %  POST /annotate, JSON peaks of a lake spectrum (m/z +- N(0, 0.002), intensity x U(0.8, 1.2))
    annotate_file  5 %   POST /annotate, a 3-scan MGF upload of lake spectra
    spectrum       20 %  GET /spectra/{id}
    compound       15 %  GET /compounds/{inchikey14}
    annotations    10 %  GET /studies/{study}/annotations?rank=1&limit=50&offset=...
    sql            20 %  POST /sql: a count by ion mode, a join of annotations_top1 with compounds, a lookup

Bounded by count (``--requests`` in all) and time (``--seconds``: clients stop drawing after it). Prints per
endpoint: requests, errors (any status but 200, or a broken connection), p50 / p99 latency and requests/s
(over the run's wall time); the run fails (exit 1) on any error. Results go to
``benchmarks/results/api_bench.json``.

Lake: ``--lake`` (default ``benchmarks/results/lake_api``: made once from the bundled sample, ingest
with Spark local[2], then ``gnps_pesticides.mgf`` annotated as study ``pest``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "speclake" / "sample"
RESULTS = REPO / "benchmarks" / "results"
log = logging.getLogger("api_bench")

MIX = (("annotate", 30), ("annotate_file", 5), ("spectrum", 20), ("compound", 15), ("annotations", 10), ("sql", 20))
SQL_QUERIES = (
    "SELECT ionmode, count(*) AS n FROM spectra GROUP BY 1",
    "SELECT a.query_id, a.compound_name, c.formula FROM annotations_top1 a JOIN compounds c USING (inchikey) "
    "ORDER BY a.score DESC NULLS LAST LIMIT 20",
    "SELECT spectrum_id, precursor_mz, num_peaks FROM spectra WHERE precursor_mz BETWEEN 180 AND 200 LIMIT 50",
)


def ensure_lake(lake: Path, study: str) -> None:
    """The sample ingested into ``lake`` and the pesticide MGF annotated as ``study`` (skipped when done)."""
    from speclake.lake.catalog import Lake, LakeError

    try:
        has = Lake(lake).current("spectra") is not None
    except LakeError:
        has = False
    if not has:
        from speclake.infra.spark import SparkSettings
        from speclake.pipelines.ingest import IngestSettings, run_ingest

        t0 = time.perf_counter()
        rep = run_ingest([str(p) for p in sorted(SAMPLE.iterdir()) if p.is_file() and p.suffix != ".md"], lake,
                         IngestSettings(spark=SparkSettings(master="local[2]")))
        print(f"ingest: {rep.spectra_new} spectra in {time.perf_counter() - t0:.0f} s")
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study

    rep = annotate_study([SAMPLE / "gnps_pesticides.mgf"], lake, study, AnnotateSettings(top_k=5, num_cpus=1))
    if rep.files_annotated:
        print(f"annotate: {rep.n_scans} scans of study {study} in {rep.seconds:.0f} s")


def workload(lake: Path, n: int = 200, seed: int = 0) -> dict[str, list[Any]]:
    """What the clients ask for: lake spectra (id, precursor, ion mode, peaks) and InChIKey blocks."""
    from speclake.lake.sql import query

    rows = query(lake, "SELECT spectrum_id, inchikey14, precursor_mz, ionmode, mz, intensities FROM spectra "
                       "WHERE ms_level = 2 AND precursor_mz IS NOT NULL AND ionmode IN ('positive', 'negative') "
                       f"AND num_peaks >= 3 ORDER BY hash(spectrum_id || '{seed}') LIMIT {n}").to_pylist()
    if not rows:
        raise SystemExit(f"{lake} has no MS2 spectra with a precursor to query")
    return {"spectra": rows, "keys": sorted({r["inchikey14"] for r in rows if r["inchikey14"]})}


def noisy_peaks(row: dict[str, Any], rng: np.random.Generator) -> list[list[float]]:
    mz = np.asarray(row["mz"]) + rng.normal(0, 0.002, len(row["mz"]))
    inten = np.asarray(row["intensities"]) * rng.uniform(0.8, 1.2, len(row["mz"]))
    return [[float(m), float(i)] for m, i in zip(mz, inten)]


def mgf_of(rows: list[dict[str, Any]]) -> bytes:
    lines = []
    for r in rows:
        sign = "+" if r["ionmode"] == "positive" else "-"
        lines += ["BEGIN IONS", f"TITLE={r['spectrum_id']}", f"PEPMASS={r['precursor_mz']}", f"CHARGE=1{sign}",
                  f"IONMODE={r['ionmode']}", *(f"{m} {i}" for m, i in zip(r["mz"], r["intensities"])), "END IONS"]
    return ("\n".join(lines) + "\n").encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(lake: Path, port: int, log_path: Path, timeout: float = 180.0) -> subprocess.Popen:
    """``speclake serve`` in its own process, its log (one line per request) to ``log_path``; returns once
    /health answers."""
    from speclake.serving.api.client import ApiClient

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen([sys.executable, "-m", "speclake.cli", "serve", "--lake", str(lake), "--port",
                                 str(port), "--sql-timeout", "10"], stdout=log_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            if ApiClient(f"http://127.0.0.1:{port}", timeout=2).get("/health").status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"the server did not answer /health within {timeout:g} s")


def make_request(kind: str, work: dict[str, list[Any]], study: str, rng: np.random.Generator,
                 ) -> Callable[[Any], Any]:
    """One request of ``kind`` as a function of a client."""
    spectra, keys = work["spectra"], work["keys"]
    row = spectra[int(rng.integers(len(spectra)))]
    if kind == "annotate":
        body = {"precursor_mz": row["precursor_mz"] + float(rng.normal(0, 0.001)), "ionmode": row["ionmode"],
                "peaks": noisy_peaks(row, rng), "top_k": 10}
        return lambda c: c.post("/annotate", json_body=body)
    if kind == "annotate_file":
        picks = [spectra[int(i)] for i in rng.integers(len(spectra), size=3)]
        content = mgf_of(picks)
        return lambda c: c.upload("/annotate", "three.mgf", content, top_k="5")
    if kind == "spectrum":
        return lambda c: c.get(f"/spectra/{row['spectrum_id']}")
    if kind == "compound":
        key = keys[int(rng.integers(len(keys)))]
        return lambda c: c.get(f"/compounds/{key}")
    if kind == "annotations":
        offset = int(rng.integers(0, 3)) * 20
        return lambda c: c.get(f"/studies/{study}/annotations?rank=1&limit=50&offset={offset}")
    sql = SQL_QUERIES[int(rng.integers(len(SQL_QUERIES)))]
    return lambda c: c.post("/sql", json_body={"query": sql})


def run_clients(url: str, work: dict[str, list[Any]], study: str, *, clients: int, requests: int, seconds: float,
                seed: int = 0) -> tuple[list[tuple[str, float, int]], float]:
    """``clients`` threads sending the mix until ``requests`` were sent or ``seconds`` passed:
    (endpoint, seconds, status) per request and the wall time."""
    from speclake.serving.api.client import ApiClient

    kinds, weights = zip(*MIX)
    probs = np.asarray(weights, float) / sum(weights)
    results: list[tuple[str, float, int]] = []
    lock = threading.Lock()
    budget = {"left": requests}
    t_end = time.monotonic() + seconds
    start = threading.Barrier(clients)

    def client(i: int) -> None:
        rng = np.random.default_rng(seed * 1000 + i)
        c = ApiClient(url, timeout=120)
        start.wait()
        while time.monotonic() < t_end:
            with lock:
                if budget["left"] <= 0:
                    break
                budget["left"] -= 1
            kind = str(rng.choice(kinds, p=probs))
            send = make_request(kind, work, study, rng)
            t0 = time.perf_counter()
            try:
                status = send(c).status
            except OSError as exc:
                log.warning("client %d: %s failed: %s", i, kind, exc)
                status = 0
                c.close()
            dt_s = time.perf_counter() - t0
            with lock:
                results.append((kind, dt_s, status))
        c.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - t0


def summarize(results: list[tuple[str, float, int]], wall: float) -> list[dict[str, Any]]:
    """Per endpoint and in total: requests, errors, p50/p99 ms, requests/s."""
    out = []
    for kind in [k for k, _ in MIX] + ["all"]:
        sel = [r for r in results if kind == "all" or r[0] == kind]
        if not sel:
            continue
        lat = np.asarray([r[1] for r in sel]) * 1000
        out.append({"endpoint": kind, "requests": len(sel), "errors": sum(r[2] != 200 for r in sel),
                    "p50_ms": round(float(np.percentile(lat, 50)), 1), "p99_ms": round(float(np.percentile(lat, 99)), 1),
                    "req_per_s": round(len(sel) / wall, 1)})
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'endpoint':<14}{'requests':>9}{'errors':>8}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>8}")
    for r in rows:
        print(f"{r['endpoint']:<14}{r['requests']:>9}{r['errors']:>8}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
              f"{r['req_per_s']:>8.1f}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks api", description=__doc__.split("\n")[0])
    ap.add_argument("--lake", type=Path, default=RESULTS / "lake_api")
    ap.add_argument("--study", default="pest", help="study paged through (made on the default lake)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--requests", type=int, default=1000, help="requests in all")
    ap.add_argument("--seconds", type=float, default=120.0, help="clients stop drawing requests after this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "api_bench.json")
    args = ap.parse_args(argv)

    if args.lake == RESULTS / "lake_api":
        ensure_lake(args.lake, args.study)
    work = workload(args.lake, seed=args.seed)
    port = free_port()
    t0 = time.perf_counter()
    server_log = args.out.with_name("api_bench_server.log")
    proc = start_server(args.lake, port, server_log)
    startup = time.perf_counter() - t0
    try:
        results, wall = run_clients(f"http://127.0.0.1:{port}", work, args.study, clients=args.clients,
                                    requests=args.requests, seconds=args.seconds, seed=args.seed)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    rows = summarize(results, wall)
    print(f"API load test: {args.clients} clients, {len(results)} requests in {wall:.1f} s "
          f"(server start {startup:.1f} s), lake {args.lake}, {os.cpu_count()} CPUs; server log {server_log}")
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
        "cpus": os.cpu_count(), "lake": str(args.lake), "clients": args.clients, "requests": len(results),
        "wall_s": round(wall, 2), "server_start_s": round(startup, 2), "endpoints": rows}, indent=2))
    errors = sum(r["errors"] for r in rows if r["endpoint"] == "all")
    if errors:
        print(f"{errors} request(s) failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
