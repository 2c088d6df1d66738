"""speclake ingest vs matchms (load_from_msp + default_filters) on the same spectra.

    python -m benchmarks.ingest_bench [--massbank DIR] [--limit N] [--cores 1,2] [--repeat N]

Converts the MassBank records to one MSP file (once, cached), then times, each in
a fresh process and with engine start-up included:

* matchms: ``load_from_msp`` + ``default_filters`` over every spectrum;
* speclake ingest of the same MSP file, with Spark ``local[N]`` for each N in --cores;
* speclake ingest of the original MassBank record files (what users run).

Before the timed speclake runs, one ingest of the bundled sample runs (and is
reported): on a machine where speclake never ran it writes the JVM's class
data-sharing archive (``~/.cache/speclake/jvm``) that every later run maps in.

With ``--repeat N`` every configuration runs N times in interleaved rounds.
Prints one table: fastest and median wall time, spectra/s, peak memory (RSS of
the whole process tree), and the ratios to matchms (fastest to fastest, median
to median).
"""
from __future__ import annotations

import argparse
import gzip
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

log = logging.getLogger("benchmarks.ingest")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MASSBANK = REPO.parent / "shared" / "data" / "massbank"

MSP_KEYS = (
    ("NAME", "compound_name"), ("PRECURSORMZ", "precursor_mz"), ("PRECURSORTYPE", "adduct"),
    ("IONMODE", "ionmode"), ("SPECTRUMTYPE", "ms_level"), ("INSTRUMENTTYPE", "instrument_type"),
    ("INSTRUMENT", "instrument"), ("COLLISIONENERGY", "collision_energy"), ("SMILES", "smiles"),
    ("INCHI", "inchi"), ("INCHIKEY", "inchikey"), ("FORMULA", "formula"), ("DB#", "accession"),
    ("LICENSE", "license"), ("SPLASH", "splash"), ("RETENTIONTIME", "retention_time"),
)


def massbank_to_msp(files: list[Path], out: Path, limit: int | None) -> int:
    """Write the MassBank records as one MSP file (RIKEN-style keys); return the number of spectra."""
    from speclake.pipelines.readers import read_split
    from speclake.pipelines.readers.base import RawRecord
    from speclake.pipelines.readers.splits import plan_splits

    n = 0
    with tempfile.TemporaryDirectory() as staging, open(out, "w", encoding="utf-8") as fh:
        for split in plan_splits([str(f) for f in files], staging, target_bytes=64 * 2**20):
            for rec in read_split(split):
                if not isinstance(rec, RawRecord):
                    continue
                for key, name in MSP_KEYS:
                    value = rec.metadata.get(name)
                    if value not in (None, "", [], ()):
                        fh.write(f"{key}: {str(value).replace(chr(10), ' ')}\n")
                fh.write(f"Num Peaks: {len(rec.mz)}\n")
                fh.writelines(f"{mz}\t{inten}\n" for mz, inten in zip(rec.mz, rec.intensities))
                fh.write("\n")
                n += 1
                if limit and n >= limit:
                    return n
    return n


MATCHMS_SCRIPT = textwrap.dedent("""
    import sys, logging
    logging.disable(logging.WARNING)
    from matchms.importing import load_from_msp
    from matchms.filtering import default_filters
    n = 0
    for s in load_from_msp(sys.argv[1]):
        s = default_filters(s)
        if s is not None:
            n += 1
    print(n)
""")


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc] + proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run a command; return wall seconds, peak RSS of its process tree (bytes), stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed ({proc.returncode}): {err[-2000:]}")
    return wall, peak, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--massbank", type=Path, default=DEFAULT_MASSBANK, help="folder of MassBank *.txt.gz files")
    parser.add_argument("--limit", type=int, default=None, help="only the first N spectra (for a quick run)")
    parser.add_argument("--cores", default="1,2", help="Spark local[N] core counts to run, e.g. 1,2")
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--skip-records", action="store_true", help="skip ingesting the original record files")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every configuration N times, interleaved; the table shows the fastest and the "
                             "median wall time (shared machines are noisy)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    files = sorted(args.massbank.glob("*.txt.gz"))
    if not files:
        raise SystemExit(f"no MassBank *.txt.gz files in {args.massbank}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    msp = args.workdir / f"massbank{'_' + str(args.limit) if args.limit else ''}.msp"
    if not msp.exists():
        log.info("converting %d MassBank files to %s ...", len(files), msp)
        n = massbank_to_msp(files, msp, args.limit)
        log.info("  %d spectra written", n)

    speclake = [sys.executable, "-m", "speclake.cli"]
    warm = args.workdir / "lake_warmup"
    shutil.rmtree(warm, ignore_errors=True)
    log.info("speclake first run (bundled sample; leaves the JVM class cache if there is none) ...")
    wall, rss, _ = timed(speclake + ["ingest", "--lake", str(warm), "--master", "local[2]"])
    warmup = (wall, rss, _count(warm))
    shutil.rmtree(warm, ignore_errors=True)

    # name -> (command, lake or None); every round runs each once, so machine noise hits all alike
    configs: dict[str, tuple[list[str], Path | None]] = {
        "matchms load_from_msp + default_filters": ([sys.executable, "-c", MATCHMS_SCRIPT, str(msp)], None)}
    for cores in [int(c) for c in args.cores.split(",")]:
        lake = args.workdir / f"lake_msp_{cores}"
        configs[f"speclake ingest MSP, local[{cores}]"] = (
            speclake + ["ingest", str(msp), "--lake", str(lake), "--master", f"local[{cores}]"], lake)
    if not args.skip_records and not args.limit:
        cores = max(int(c) for c in args.cores.split(","))
        lake = args.workdir / "lake_records"
        configs[f"speclake ingest MassBank records, local[{cores}]"] = (
            speclake + ["ingest", *map(str, files), "--lake", str(lake), "--master", f"local[{cores}]"], lake)
    runs: dict[str, list[tuple[float, int, int]]] = {name: [] for name in configs}
    for round_ in range(max(1, args.repeat)):
        for name, (cmd, lake) in configs.items():
            log.info("round %d: %s ...", round_ + 1, name)
            if lake is not None:
                shutil.rmtree(lake, ignore_errors=True)
            wall, rss, out = timed(cmd)
            n = int(out.strip().splitlines()[-1]) if lake is None else _count(lake)
            runs[name].append((wall, rss, n))
    sys.stdout.write(_table(runs, warmup, args.repeat) + "\n")


def _table(runs: dict[str, list[tuple[float, int, int]]], warmup: tuple[float, int, int], repeat: int) -> str:
    """Fastest and median wall per configuration and their ratios to matchms (the first configuration)."""
    import statistics

    best = {name: min(w for w, _, _ in r) for name, r in runs.items()}
    median = {name: statistics.median(w for w, _, _ in r) for name, r in runs.items()}
    base_name = next(iter(runs))
    n_base = runs[base_name][0][2]
    header = (f"{'run':<48}{'spectra':>9}{'best s':>9}{'median s':>10}{'spectra/s':>11}{'peak RSS MB':>13}"
              f"{'x matchms':>11}{'(median)':>10}")
    lines = [f"{repeat} round(s)", header, "-" * len(header)]
    wall, rss, n = warmup
    lines.append(f"{'speclake bundled sample (first run: JVM cache)':<48}{n:>9}{wall:>9.1f}{'':>10}{n / wall:>11.0f}"
                 f"{rss / 2**20:>13.0f}{'-':>11}{'':>10}")
    for name, r in runs.items():
        n, rss = r[0][2], max(x[1] for x in r)
        same = n >= n_base * 0.9  # ratios only for runs over the same spectra
        ratio = f"{best[base_name] / best[name]:>11.2f}{median[base_name] / median[name]:>10.2f}" if same else f"{'-':>11}{'':>10}"
        lines.append(f"{name:<48}{n:>9}{best[name]:>9.1f}{median[name]:>10.1f}{n / best[name]:>11.0f}"
                     f"{rss / 2**20:>13.0f}{ratio}")
    return "\n".join(lines)


def _count(lake: Path) -> int:
    from speclake.lake.sql import connect

    con = connect(lake)
    return int(con.sql("SELECT count(*) FROM spectra").fetchall()[0][0])


if __name__ == "__main__":
    main()
