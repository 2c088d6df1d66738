"""Run speclake's benchmarks: ``python -m benchmarks [NAME ...] [-- ARGS]``.

Each benchmark prints its own table. NAME is one of:

    ingest     speclake ingest vs matchms (load_from_msp + default_filters), MassBank, local[1] and local[2]
    fragtrees  fragmentation trees vs PK$ANNOTATION (a), hidden-formula top-1/top-5 (b), trees/s per core
    features   the Spark feature job over the MassBank lake: wall time per stage, rules, motifs
    index      sharded FAISS index vs flat FAISS and RDKit BulkTanimotoSimilarity at 2.5M structures
    training   every architecture trained under Ray Train, then the evaluate comparison table
    embed      arch5 structure index: embedding throughput, bytes per structure, spectrum-query latency
    library    library search queries/s: speclake's fragment index vs Flash entropy search and matchms
    annotate   a blind MGF study of MassBank test spectra: annotate_study spectra/s, hit@k, confidence, library
    ranker     the candidate ranker: every evidence alone, ablations, fused vs prior and random, formula and mass
               candidates, bootstrap intervals, per ion mode and novelty stratum (on annotate's work lake)
    api        the HTTP API under load: `speclake serve` on loopback, 20 clients mixing annotate, lookups and SQL;
               p50/p99 latency and requests/s per endpoint, 0 errors required
    denovo     the SELFIES VAE: formula-given top-1/10 exact, Tanimoto, MCES vs random; --near radius; impurity pairs

Without NAME all of them run in this order (hours on 2 cores; see README "Benchmarks").
Arguments after ``--`` go to every named benchmark, e.g. ``python -m benchmarks index -- --limit 20000``.
"""
from __future__ import annotations

import importlib
import logging
import sys

BENCHMARKS: dict[str, str] = {
    "ingest": "benchmarks.ingest_bench",
    "fragtrees": "benchmarks.fragtree_check",
    "features": "benchmarks.features_bench",
    "index": "benchmarks.index_bench",
    "training": "benchmarks.training_bench",
    "embed": "benchmarks.embed_bench",
    "library": "benchmarks.library_bench",
    "annotate": "benchmarks.annotate_bench",
    "ranker": "benchmarks.ranker_bench",
    "api": "benchmarks.api_bench",
    "denovo": "benchmarks.denovo_bench",
}


def main(argv: list[str]) -> int:
    """Run the named benchmarks (all when none is named); return the worst exit status."""
    if "-h" in argv or "--help" in argv[: argv.index("--") if "--" in argv else len(argv)]:
        print(__doc__)
        return 0
    names, extra = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    status = 0
    for name in names or list(BENCHMARKS):
        logging.getLogger("benchmarks").info("benchmark %s", name)
        rc = importlib.import_module(BENCHMARKS[name]).main(list(extra))
        status = max(status, int(rc or 0))
    return status


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
