"""Benchmark of study annotation: N blind MassBank test-split spectra as one MGF study, end to end.

    .venv/bin/python -m benchmarks annotate                                   # the issue's scale (hours)
    .venv/bin/python -m benchmarks annotate -- --queries 1000 --structures-limit 50000
    .venv/bin/python -m benchmarks.annotate_bench --lake benchmarks/results/lake_features --no-structures

Parts, one printed table each:

1. lake: the work lake ``--work`` (default benchmarks/results/lake_annotate) is made once from ``--lake``
   (an existing MassBank lake; else ../shared/data/massbank is ingested): every compound, and every
   spectrum except those of the study's structures (**hold-out**: a study spectrum must not find itself
   in the library; its structure stays in the compounds, so it is still a candidate, as a structure
   known to a database but without reference spectra). ``--no-holdout`` keeps them.
2. structure index: lake compounds + ``--structures`` (MOSES 1.9M + MassBank isomers by default),
   prefiltered (:func:`speclake.training.prefilter.prefilter_structure_files`) to the possible candidates
   of the study and of the ranker's validation/test spectra under every adduct hypothesis of their ion
   mode; ``--structures-limit N`` keeps the first N lines of each file; ``--no-structures``: lake only.
3. library index and a fitted ranker (fit on validation-split spectra; the newest one is reused).
4. the study: N test-split spectra (``training.split.assign_split``) written as MGF with only TITLE,
   PEPMASS, CHARGE, IONMODE and peaks (blind).
5. ``annotate_study`` on it: wall time and spectra/s end to end (target >= 50 spectra/s on 2 cores).
6. accuracy of the ranked rows against the hidden InChIKey-14: hit@1/5/20 overall and per novelty
   stratum (max Tanimoto of the true structure to training-split structures), beside random on the
   same lists and the ranker's own test metrics (prior, library+prior, random on its candidates); the
   COSMIC-style table: of the rank-1 hits with confidence >= 0.5 / 0.8 / 0.9, the fraction correct;
   ``--baselines``: the same study annotated again with ``--method prior`` and ``library+prior`` (the
   same candidate lists), hit@k per stratum beside the fused ranker.
7. library search queries/s vs Flash entropy search and matchms: :mod:`benchmarks.library_bench`
   on the work lake.

JSON goes to benchmarks/results/annotate_bench.json (git-ignored).

Measured 2026-12-05 on the 2-core box at full scale (``--work benchmarks/results/lake_annotate_full
--reuse-index --no-library --refit --ranker-queries 1500``; the whole test split, 8,049 spectra, against
927,177 indexed structures, 905 candidates per scan): 52.0 spectra/s end to end on the quiet machine (45.0
with other tests beside it; 17.9 before the library priors were precomputed); hit@1/5/20 0.397/0.647/0.781;
with ``--baselines`` the same lists give prior 0.098 and library+prior 0.266 at hit@1, the fused ranker above
both in every novelty stratum; rank-1 confidence >= 0.5/0.8/0.9 right 68.3/81.0/83.9 %. The per-scan cost is
now spread over candidates (DuckDB range join, Candidate objects), fragmentation trees, library search and
evidence; the priors are read from ``priors-<digest>.npy`` beside each index shard.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
log = logging.getLogger("annotate_bench")


# -- 1. the work lake --------------------------------------------------------------------------------
def _make_work_lake(source: Path, work: Path, holdout: set[str]) -> tuple[int, int]:
    """A new lake at ``work``: ``source``'s compounds and its spectra without those of ``holdout``
    (InChIKey-14), committed through the lake's own API. Returns (spectra kept, spectra dropped)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from speclake.lake.catalog import Lake, PendingVersion, publish_part

    src = Lake(source)
    lake = Lake(work, create=True)
    run_id = "annotate-bench-" + dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    stage = lake.staging(run_id)
    kept = dropped = 0
    for table in ("spectra", "compounds"):
        out = stage / table
        rows = 0
        for part in src.current(table).parts:
            for f in sorted((source / part).rglob("*.parquet")):
                t = pq.read_table(f, partitioning=None)
                if table == "spectra" and holdout:
                    key14 = pc.utf8_slice_codeunits(t.column("inchikey"), 0, 14)
                    drop = pc.fill_null(pc.is_in(key14, value_set=pa.array(sorted(holdout))), False)
                    dropped += int(pc.sum(drop).as_py() or 0)
                    t = t.filter(pc.invert(drop))
                    kept += t.num_rows
                target = out / f.relative_to(source / part)
                target.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(t, target)
                rows += t.num_rows
        published = publish_part(lake, table, run_id, out)
        with lake.lock():
            lake.commit({table: PendingVersion((published,), rows, {"annotate_bench": {"holdout": len(holdout)}})},
                        run_id=run_id)
    lake.clean_staging(run_id)
    return kept, dropped


def _spectra_of(lake: Path, keys14: set[str]) -> int:
    """How many spectra of ``lake`` have one of the InChIKey-14 ``keys14``."""
    from speclake.lake import sql

    con = sql.connect(lake, threads=2)
    try:
        ids = [r[0] for r in con.execute("SELECT inchikey FROM spectra WHERE inchikey IS NOT NULL").fetchall()]
    finally:
        con.close()
    return sum(1 for k in ids if k[:14] in keys14)


def _has_spectra(lake: Path) -> bool:
    from benchmarks.library_bench import _lake_has_spectra

    return _lake_has_spectra(lake)


# -- 2. structures -------------------------------------------------------------------------------------
def _head(path: Path, n: int, out_dir: Path) -> Path:
    """The first ``n`` lines of a (gzipped) structure file, cached in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    target = out_dir / f"head{n}-{name}"
    if not target.exists():
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt") as fh, open(target.with_suffix(".tmp"), "w") as out:
            for i, line in enumerate(fh):
                if i >= n:
                    break
                out.write(line)
        target.with_suffix(".tmp").rename(target)
    return target


def _window_queries(queries: list) -> "object":
    """A query table for the prefilter: one row per (spectrum, adduct hypothesis of its ion mode), the
    hypothesis' neutral mass as ``monoisotopic_mass`` (the window is centred on it)."""
    import pyarrow as pa

    from speclake.serving.annotate.precursor import hypotheses

    pmz, ion, mass = [], [], []
    for q in queries:
        for _add, m in hypotheses(q.precursor_mz, q.ionmode, q.charge):
            if m is not None and m > 0:
                pmz.append(float(q.precursor_mz))
                ion.append(q.ionmode)
                mass.append(float(m))
    n = len(pmz)
    return pa.table({"formula": pa.array([None] * n, pa.string()), "precursor_mz": pa.array(pmz, pa.float64()),
                     "adduct": pa.array([None] * n, pa.string()), "ionmode": pa.array(ion, pa.string()),
                     "monoisotopic_mass": pa.array(mass, pa.float64())})


# -- 4. the blind study ----------------------------------------------------------------------------------
def _write_mgf(path: Path, queries: list) -> list[str]:
    """The study as MGF with only TITLE, PEPMASS, CHARGE, IONMODE and peaks; returns the titles."""
    titles = []
    with open(path, "w") as fh:
        for i, q in enumerate(queries):
            title = f"scan{i:06d}"
            titles.append(title)
            z = abs(int(q.charge)) if q.charge else 1
            sign = "-" if q.ionmode == "negative" else "+"
            fh.write(f"BEGIN IONS\nTITLE={title}\nPEPMASS={q.precursor_mz:.6f}\nCHARGE={z}{sign}\n"
                     f"IONMODE={q.ionmode}\n")
            fh.writelines(f"{m:.5f} {v:.6g}\n" for m, v in zip(q.mz, q.intensities))
            fh.write("END IONS\n")
    return titles


# -- 6. accuracy -------------------------------------------------------------------------------------------
def _ranks(lake: Path, study: str, titles: list[str], truth14: list[str]) -> dict[str, np.ndarray]:
    """Per study scan: rank of the truth in its rows (0: absent), rank-1 confidence, candidates, status."""
    from speclake.lake import sql

    con = sql.connect(lake, threads=2)
    try:
        rows = con.execute("SELECT query_id, rank, inchikey14, confidence, n_candidates, status FROM annotations "
                           "WHERE study = ?", [study]).fetchall()
        n_err = con.execute("SELECT count(*) FROM annotation_errors WHERE study = ?", [study]).fetchone()[0]
    finally:
        con.close()
    pos = {t: i for i, t in enumerate(titles)}
    n = len(titles)
    rank = np.zeros(n, np.int64)
    conf = np.full(n, np.nan)
    ncand = np.zeros(n, np.int64)
    seen = np.zeros(n, bool)
    for qid, r, k14, c, nc, status in rows:
        i = pos.get(qid)
        if i is None:
            continue
        seen[i] = True
        ncand[i] = max(ncand[i], int(nc or 0))
        if r == 1 and c is not None:
            conf[i] = float(c)
        if r is not None and k14 == truth14[i] and (rank[i] == 0 or r < rank[i]):
            rank[i] = int(r)
    return {"rank": rank, "confidence": conf, "n_candidates": ncand, "seen": seen, "n_errors": int(n_err)}


def _hits(rank: np.ndarray, ncand: np.ndarray, idx: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {"n": int(len(idx))}
    for k in (1, 5, 20):
        out[f"hit{k}"] = float(np.mean((rank[idx] >= 1) & (rank[idx] <= k))) if len(idx) else float("nan")
        n = np.maximum(ncand[idx], 1)
        out[f"random{k}"] = float(np.mean(np.where(ncand[idx] > 0, np.minimum(k, n) / n, 0.0))) if len(idx) \
            else float("nan")
    return out


def _novelty(lake: Path, smiles: list[str]) -> np.ndarray:
    from speclake.serving.annotate.evidence import EvidenceBuilder, LibraryReference
    from speclake.training import metrics as M

    builder = EvidenceBuilder(LibraryReference.from_lake(lake, splits=("train",)), {})
    return M.max_tanimoto(builder.fps.get([s or "" for s in smiles]), builder.reference.fps).astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=str(RESULTS / "lake_features"),
                    help="existing MassBank lake to copy from (read only); ingested from --inputs when it has none")
    ap.add_argument("--inputs", nargs="*", default=[str(DATA / "massbank")])
    ap.add_argument("--work", default=str(RESULTS / "lake_annotate"), help="the benchmark's own lake (made once)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--queries", type=int, default=10_000, help="test-split spectra in the study")
    ap.add_argument("--structures", nargs="*", type=Path,
                    default=[DATA / "structures" / "zinc_moses_1.9M.smi.gz",
                             DATA / "structures" / "massbank_isomers.smi.gz"])
    ap.add_argument("--no-structures", action="store_true", help="candidates from the lake compounds only")
    ap.add_argument("--structures-limit", type=int, default=None, help="first N lines of each structure file")
    ap.add_argument("--reuse-index", action="store_true",
                    help="keep the work lake's structure index as it is (a rerun: no prefilter, no add)")
    ap.add_argument("--no-holdout", action="store_true", help="keep the study's spectra in the library")
    ap.add_argument("--ranker-queries", type=int, default=5000, help="validation (and test) spectra for fit_ranker")
    ap.add_argument("--refit", action="store_true", help="fit a new ranker even when one is registered")
    ap.add_argument("--library-queries", type=int, default=1000)
    ap.add_argument("--no-library", action="store_true", help="skip part 7 (library_bench)")
    ap.add_argument("--baselines", action="store_true",
                    help="annotate the study again with the prior and library+prior methods (same candidate lists)")
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS / "annotate_bench.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark", "speclake.lake.run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from speclake.serving.annotate.fusion import lake_queries
    from speclake.training.split import SplitSettings

    t_all = time.perf_counter()
    out: dict = {"date": str(dt.date.today()), "host": platform.node(), "cores": os.cpu_count(),
                 "args": {**vars(args), "structures": [str(p) for p in args.structures]}}
    src, work = Path(args.lake), Path(args.work)
    timings: dict[str, float] = {}

    # -- 1. lake ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if not _has_spectra(src):
        from benchmarks.library_bench import _ensure_lake

        _ensure_lake(src, args.inputs, args.master)
    queries, truths = lake_queries(src, "test", SplitSettings(), args.queries, args.seed)
    holdout = set() if args.no_holdout else {t["inchikey14"] for t in truths}
    made = None
    if not _has_spectra(work):
        if work.exists():
            shutil.rmtree(work)
        made = _make_work_lake(src, work, holdout)
    timings["lake"] = time.perf_counter() - t0
    from speclake.lake.catalog import Lake

    wl = Lake(work)
    n_spec, n_comp = wl.current("spectra").row_count, wl.current("compounds").row_count
    print(f"\n1. lake  ({dt.date.today()}, {platform.node()}, {os.cpu_count()} cores, shared)")
    print(f"{'source lake':<28}{src}\n{'work lake':<28}{work}\n{'spectra / compounds':<28}{n_spec} / {n_comp}")
    print(f"{'study (test split)':<28}{len(queries)} spectra of {len({t['inchikey14'] for t in truths})} structures")
    leaked = 0 if made or not holdout else _spectra_of(work, holdout)
    print(f"{'held out of the library':<28}"
          + (f"{made[1]} spectra of the study's structures" if made else
             f"(work lake reused) {leaked} spectra of the study's structures are in its library"
             + (": make a new --work for this study" if leaked else "")))
    print(f"{'seconds':<28}{timings['lake']:.0f}")

    # -- 2. structure index -----------------------------------------------------------------------
    from speclake.index.search import StructureIndex, index_dir
    from speclake.training.candidates import ensure_index

    t0 = time.perf_counter()
    files: list[Path] = []
    if args.reuse_index:
        from speclake.index.search import read_manifest

        read_manifest(index_dir(work, "fingerprint"))   # IndexNotFound when there is none to reuse
    elif not args.no_structures:
        files = [p for p in args.structures if p.exists()]
        if args.structures_limit:
            files = [_head(p, args.structures_limit, work / "models" / "_bench_structures") for p in files]
        val_q, _ = lake_queries(work, "validation", SplitSettings(), args.ranker_queries, args.seed)
        test_q, _ = lake_queries(work, "test", SplitSettings(), args.ranker_queries, args.seed)
        from speclake.training.prefilter import prefilter_structure_files

        files = prefilter_structure_files(files, [_window_queries(queries + val_q + test_q)], 10.0,
                                          work / "models" / "_prefilter")
    if not args.reuse_index:
        ensure_index(work, [str(f) for f in files],
                     required_inchikeys=sorted(holdout | {t["inchikey14"] for t in truths}))
    timings["structure_index"] = time.perf_counter() - t0

    idx = StructureIndex.open(index_dir(work, "fingerprint"))
    try:
        n_struct = int(idx.catalog.sql("SELECT count(*) AS n FROM structures").column("n")[0].as_py())
    finally:
        idx.close()
    kept = sum(1 for f in files for _ in open(f)) if files else 0
    print("\n2. structure index")
    print(f"{'sources':<28}lake compounds" + "".join(f" + {Path(f).name}" for f in files))
    print(f"{'structures kept by prefilter':<30}{kept}" + (f" (first {args.structures_limit} lines of each file)"
                                                         if args.structures_limit else ""))
    print(f"{'indexed structures':<28}{n_struct if n_struct is not None else '?'}")
    print(f"{'seconds (prefilter + index)':<28}{timings['structure_index']:.0f}")

    # -- 3. library index + ranker ----------------------------------------------------------------
    from speclake.serving.annotate.ranker_fit import fit_ranker
    from speclake.serving.annotate.rankers import RankerSettings, list_rankers, load_ranker
    from speclake.serving.library import LibraryIndex

    t0 = time.perf_counter()
    LibraryIndex.update(work)
    timings["library_index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitted = list_rankers(work)
    if fitted and not args.refit:
        ranker_id, what = fitted[0]["ranker_id"], "reused"
    else:
        ranker_id, _ = fit_ranker(work, RankerSettings(max_validation=args.ranker_queries,
                                                       max_test=args.ranker_queries, seed=args.seed))
        what = "fitted"
    timings["ranker"] = time.perf_counter() - t0
    ranker = load_ranker(work, ranker_id)
    rm = ranker.metrics.get("test", {}) if ranker.metrics else {}
    print("\n3. library index and ranker")
    print(f"{'library index seconds':<28}{timings['library_index']:.0f}")
    print(f"{'ranker':<28}{ranker_id} ({what}, {timings['ranker']:.0f} s; "
          f"{ranker.metrics.get('validation', {}).get('n_queries', '?')} validation spectra)")

    # -- 4. + 5. the study, annotated -------------------------------------------------------------
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study

    study_dir = RESULTS / "annotate_study"
    study_dir.mkdir(parents=True, exist_ok=True)
    mgf = study_dir / f"massbank_test_{len(queries)}.mgf"
    titles = _write_mgf(mgf, queries)
    study = f"bench-{dt.datetime.now(dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    t0 = time.perf_counter()
    rep = annotate_study([mgf], work, study, AnnotateSettings(top_k=args.top_k, method=ranker_id))
    wall = time.perf_counter() - t0
    print("\n5. annotate_study (end to end: read, library search, candidates, ranking, commit)")
    print(f"{'study file':<28}{mgf} ({mgf.stat().st_size / 2**20:.1f} MB; TITLE PEPMASS CHARGE IONMODE peaks)")
    print(f"{'scans':<28}{rep.n_scans} (annotated {rep.n_annotated}, no candidates {rep.n_no_candidates}, "
          f"errors {rep.n_errors}); {rep.n_rows} rows; method {rep.method}")
    print(f"{'wall seconds':<28}{wall:.1f}")
    print(f"{'spectra/s end to end':<28}{len(queries) / wall:.1f}   (target >= 50 on 2 cores: "
          f"{'met' if len(queries) / wall >= 50 else 'missed'}; per-file work {rep.scans_per_second} scans/s)")
    if rep.stage_seconds:
        print(f"{'stage seconds':<28}" + ", ".join(f"{k} {v:.1f}" for k, v in rep.stage_seconds.items()))

    # -- 6. accuracy ------------------------------------------------------------------------------
    from speclake.training.metrics import novelty_labels, novelty_stratum

    truth14 = [t["inchikey14"] for t in truths]
    r = _ranks(work, study, titles, truth14)
    nov = _novelty(work, [t["smiles"] for t in truths])
    labels = np.array([novelty_stratum(v) for v in nov])
    groups = {"all": np.arange(len(titles))}
    for lab in novelty_labels():
        if (labels == lab).any():
            groups[lab] = np.flatnonzero(labels == lab)
    acc = {g: _hits(r["rank"], r["n_candidates"], i) for g, i in groups.items()}
    methods = rm.get("methods", {})
    print("\n6a. accuracy: hit@k of the truth (InChIKey-14) in the study's ranked rows; random = same lists "
          "(an upper bound: it assumes the truth is a candidate)")
    print(f"{'stratum (max Tanimoto)':<24}{'n':>6}{'hit@1':>8}{'hit@5':>8}{'hit@20':>8}"
          f"{'rand@1':>8}{'rand@5':>8}{'rand@20':>9}")
    for g, a in acc.items():
        print(f"{g:<24}{a['n']:>6}{a['hit1']:>8.3f}{a['hit5']:>8.3f}{a['hit20']:>8.3f}"
              f"{a['random1']:>8.3f}{a['random5']:>8.3f}{a['random20']:>9.3f}")
    print(f"scans with candidates: {np.mean(r['n_candidates'] > 0):.3f}; mean candidates "
          f"{np.mean(r['n_candidates']):.0f}; truth in top {args.top_k}: {np.mean(r['rank'] > 0):.3f}")
    if methods and rm.get("n_queries"):
        print(f"\n6b. the ranker's own test split (fit_ranker: {rm.get('n_queries')} test spectra, library = "
              f"training split; truth a candidate {rm.get('truth_in_candidates', float('nan')):.3f}, "
              f"{rm.get('mean_candidates', float('nan')):.0f} candidates each)")
        print(f"{'method':<16}{'stratum':<22}{'n':>6}{'hit@1':>8}{'hit@5':>8}{'hit@20':>8}")
        for name in ("fused", "prior", "library+prior", "random"):
            for g, h in methods.get(name, {}).items():
                print(f"{name:<16}{g:<22}{h.get('n', 0):>6}{h.get('hit1', float('nan')):>8.3f}"
                      f"{h.get('hit5', float('nan')):>8.3f}{h.get('hit20', float('nan')):>8.3f}")
        fused, prior = methods.get("fused", {}), methods.get("prior", {})
        worse = [g for g in fused if g in prior and fused[g].get("hit1", 0) <= prior[g].get("hit1", 0)]
        print("fused beats the prior at hit@1 overall and in every stratum" if not worse else
              f"fused does NOT beat the prior at hit@1 in: {', '.join(worse)}")
    if args.baselines:   # the same scans and candidate lists, ranked by the spectrum-free baselines
        from speclake.serving.annotate.rankers import FALLBACK, PRIOR

        base = {"fused": acc}
        for method in (PRIOR, FALLBACK):
            name = f"{study}-{method.replace('+', '-')}"
            annotate_study([mgf], work, name, AnnotateSettings(top_k=args.top_k, method=method))
            rb = _ranks(work, name, titles, truth14)
            base[method] = {g: _hits(rb["rank"], rb["n_candidates"], i) for g, i in groups.items()}
        print("\n6d. the study's own lists ranked by the fused ranker and by the baselines (hit@1 / hit@5 / hit@20)")
        print(f"{'stratum':<24}{'n':>6}" + "".join(f"{m:>24}" for m in base) + f"{'random':>24}")
        for g in groups:
            cells = "".join(f"{b[g]['hit1']:>10.3f}{b[g]['hit5']:>7.3f}{b[g]['hit20']:>7.3f}" for b in base.values())
            a = acc[g]
            print(f"{g:<24}{a['n']:>6}{cells}{a['random1']:>10.3f}{a['random5']:>7.3f}{a['random20']:>7.3f}")
        worse = [g for g in groups if acc[g]["hit1"] <= base[PRIOR][g]["hit1"]]
        print("fused beats the prior at hit@1 overall and in every stratum" if not worse else
              f"fused does NOT beat the prior at hit@1 in: {', '.join(worse)}")
        out["baselines"] = base
    cosmic = []
    correct1 = r["rank"] == 1
    has_conf = np.isfinite(r["confidence"])
    print("\n6c. COSMIC-style: rank-1 hits above a confidence, and the fraction correct")
    print(f"{'confidence >=':<16}{'n':>7}{'of scans':>10}{'correct':>9}")
    for th in (0.5, 0.8, 0.9):
        sel = has_conf & (r["confidence"] >= th)
        frac = float(np.mean(correct1[sel])) if sel.any() else float("nan")
        cosmic.append({"threshold": th, "n": int(sel.sum()), "fraction_correct": frac})
        print(f"{th:<16}{int(sel.sum()):>7}{sel.mean():>10.3f}{frac:>9.3f}")
    if not has_conf.any():
        print("(no confidence: the ranker is uncalibrated)")

    out.update(timings=timings, lake={"spectra": n_spec, "compounds": n_comp, "held_out": made[1] if made else None},
               structures={"files": [str(f) for f in files], "kept": kept, "indexed": n_struct},
               ranker={"id": ranker_id, "how": what, "test_methods": methods},
               annotate={"scans": rep.n_scans, "annotated": rep.n_annotated, "no_candidates": rep.n_no_candidates,
                         "errors": rep.n_errors, "rows": rep.n_rows, "wall_s": wall,
                         "spectra_per_s": len(queries) / wall, "method": rep.method},
               accuracy=acc, cosmic=cosmic)

    # -- 7. library search vs Flash and matchms ---------------------------------------------------
    if not args.no_library:
        print("\n7. library search (benchmarks.library_bench on the work lake)")
        from benchmarks import library_bench

        lib_json = RESULTS / "annotate_bench_library.json"
        library_bench.main(["--lake", str(work), "--queries", str(args.library_queries), "--matchms-queries", "30",
                            "--rounds", "1", "--json", str(lib_json)])
        out["library"] = json.loads(lib_json.read_text()) if lib_json.exists() else None
    out["seconds"] = time.perf_counter() - t_all
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=float))
    print(f"\ntotal {out['seconds']:.0f} s; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
