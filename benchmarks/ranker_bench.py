"""Benchmark of the candidate ranker (issue 17): one comparison table per run.

    .venv/bin/python -m benchmarks ranker                        # on the annotate benchmark's work lake
    .venv/bin/python -m benchmarks.ranker_bench --queries 1000 --bootstrap 200

The work lake ``--work`` (default benchmarks/results/lake_annotate_full, made by ``python -m benchmarks
annotate -- --work benchmarks/results/lake_annotate_full``: the full MassBank lake and a structure index of
lake compounds + MOSES 1.9M + MassBank isomers, prefiltered to the possible candidates) is read; only its
structure index grows (the formula candidates below) and the library index is built beside it on first use.

Queries are blind lake spectra (precursor m/z, ion mode, peaks): validation split (structures novel to the
library, which holds the training split) plus *known* training-split spectra searched leave-one-spectrum-out
(:func:`speclake.serving.annotate.ranker_fit.known_queries`) for fitting; the structure-disjoint test split
for the table. Two candidate modes, as the evaluation reports them:

* ``formula``: the structures of the index with the true molecular formula (the formula given, as
  MassSpecGym's bonus challenge and ``speclake evaluate``'s ``formula`` mode;
  :meth:`~speclake.serving.annotate.candidates.CandidateSource.by_formula`); the structures of ``--structures``
  with those formulas are first added to the work lake's index (annotate's prefilter kept m/z windows only);
* ``mass``: what ``speclake annotate`` sees, every structure whose ion under an adduct hypothesis of the
  ion mode is within 10 ppm of the precursor m/z.

Per mode the fused ranker is fitted on that mode's lists (validation + known only; asserted disjoint from
the test structures by InChIKey-14), and the table gives hit@1/5/20 with 95 % bootstrap intervals
(structures resampled) overall, per ion mode and per novelty stratum (max Tanimoto of the truth to the
training structures) for: fused, every evidence column alone, the linear fusion without each column (ablation),
library+prior, the library prior and random ranking of the same lists; then fused minus prior (paired).
``--fragmenter-top N`` (default 50, as rankers) adds a re-ranking stage: the MetFrag-style in-silico fragmenter's
evidence (:mod:`speclake.serving.annotate.fragmenter`) on the top N of a linear first stage, the fusion refitted
with it (``fused+fragmenter``, the default ranker of study annotation), and the fragmenter's score alone on that
top N (``fragmenter@top``); 0: off. The verdict judges ``fused`` and ``fused+fragmenter``.
``--fingerprint-likelihood`` (default ``add``) gives each registered descriptor model its CSI:FingerID-style
column ``fpll:<id>`` (per-bit Platt calibration and reliability weights from validation spectra,
:mod:`speclake.serving.annotate.fingerprint_likelihood`) beside its plain likelihood ``model:<id>``, so the table
has both alone and the fusion without each. JSON to benchmarks/results/ranker_bench.json (git-ignored).

``--test-lake`` (default benchmarks/results/lake_features, the full MassBank features lake) gives the test
queries: the annotate benchmark's work lake holds test spectra out of its library. ``--cache PICKLE`` keeps the
candidate lists with their evidence (the slow part), so fusion variants are re-run in minutes.

Measured 2026-12-05/06 on the shared 2-core VM (load 2-6), default ``--work``, ``--queries 1000
--fingerprint-likelihood off --cache <pickle>``, evidence = the 9 columns + an arch2-flat descriptor model + an
arch4 neighbour model: 1,000 test spectra of 402 structures, fusion fitted on 1,000 validation + 333 known lists.
Formula candidates (159 per spectrum): fused+fragmenter (network, top 50) hit@1 **0.571** [0.518, 0.622],
hit@20 **0.950** [0.930, 0.967], novelty < 0.5 0.378; fused without the fragmenter 0.546 (hit@20 0.918); linear
0.490; prior 0.324; library+prior 0.419; random 0.070. The fragmenter on the top 20 only re-orders what stage 1
put there (hit@20 0.932); on the top 50 it lifts truths ranked 21-50 into the top 20 (76 CPU ms per list); on
the top 100: hit@1 0.571, hit@20 0.951 at twice the cost. Mass candidates (849 per spectrum, truth in 0.875):
fused+fragmenter 0.479, fused 0.467, linear 0.418, prior 0.095, hit@20 0.814. Wall from the cache: 1,049 s with
the fragmenter on the top 50 (formula 404 s, mass 600 s), 387 s without. README's "Benchmarks" has the table.
An earlier reduced run (200 test spectra, one arch2-flat model) found the CSI:FingerID-style ``fpll`` column no
better than the plain likelihood (fused 0.435 with it, 0.440 without), so rankers leave it off.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import pickle
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO.parent / "shared" / "data"
log = logging.getLogger("ranker_bench")
KS = (1, 5, 20)


def truth_formulas(truths: list[dict]) -> list[str | None]:
    """Molecular formula of each true structure (RDKit, as the structure index computes it)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    RDLogger.DisableLog("rdApp.*")
    out: list[str | None] = []
    for t in truths:
        mol = Chem.MolFromSmiles(t["smiles"] or "")
        out.append(CalcMolFormula(mol) if mol is not None else None)
    return out


def ensure_formula_structures(work: Path, files: list[Path], formulas: set[str]) -> list[Path]:
    """Add to the work lake's structure index every structure of ``files`` with one of ``formulas`` (the formula
    candidates of the benchmark's queries; annotate's prefilter kept only those in the m/z windows)."""
    import pyarrow as pa

    from speclake.training.candidates import ensure_index
    from speclake.training.prefilter import prefilter_structure_files

    if not files or not formulas:
        return []
    n = len(formulas)
    table = pa.table({"formula": pa.array(sorted(formulas), pa.string()),
                      "precursor_mz": pa.array([None] * n, pa.float64()),
                      "ionmode": pa.array([None] * n, pa.string()), "adduct": pa.array([None] * n, pa.string()),
                      "monoisotopic_mass": pa.array([None] * n, pa.float64())})
    kept = prefilter_structure_files(files, [table], 10.0, work / "models" / "_prefilter_formulas")
    ensure_index(work, [str(f) for f in kept])
    return kept


def build_lists(work: Path, settings: Any, builder: Any, qdata: dict[str, tuple[list, list[dict]]],
                formulas: dict[str, list[str | None]], timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Candidate lists with evidence, per mode (formula, mass) and query set; the library prior of indexed
    candidates is precomputed once per index shard (:func:`~speclake.serving.annotate.priors.ensure_shard_priors`),
    as annotation does."""
    from speclake.serving.annotate.candidates import CandidateSource
    from speclake.serving.annotate.priors import IndexPriors, ensure_shard_priors
    from speclake.serving.annotate.ranker_fit import prepare_lists

    lists: dict[str, dict[str, Any]] = {"formula": {}, "mass": {}}
    with CandidateSource.open(work, settings.index_name, settings.ppm, max_formulas=settings.max_formulas) as src:
        if src.morgan_index:
            t0 = time.perf_counter()
            stats = ensure_shard_priors(src.index, builder.reference.keys, builder.reference.fps,
                                        reference=builder.kernel)
            builder.use_index_priors(IndexPriors.open(src.index, builder.digest))
            timings["index_priors"] = time.perf_counter() - t0
            log.info("index priors: %s", stats)
        t0 = time.perf_counter()
        for s, data in qdata.items():
            lists["mass"][s] = prepare_lists(work, s, settings, src, builder, data)
            lists["formula"][s] = prepare_lists(work, s, settings, src, builder, data, formulas=formulas[s])
        timings["lists"] = time.perf_counter() - t0
    return lists


def hits_of(ranks: np.ndarray) -> dict[int, np.ndarray]:
    """Per query 0/1 hit@k (rank 0 or beyond k: miss)."""
    return {k: ((ranks >= 1) & (ranks <= k)).astype(np.float64) for k in KS}


def random_hits(data: dict[str, Any]) -> dict[int, np.ndarray]:
    """Per query the exact expected hit@k of a random order of the same list (0 without the truth)."""
    n = np.array([max(len(c), 1) for c in data["cands"]], np.float64)
    present = np.array([t is not None for t in data["truth"]], np.float64)
    return {k: present * np.minimum(k, n) / n for k in KS}


def method_scores(data: dict[str, Any], names: tuple[str, ...], train: tuple[list, list, list], settings: Any,
                  ) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, Any]]:
    """Per-query hit@k of every method on ``data`` (test lists), the fusions fitted on ``train`` (X, truth,
    InChIKey-14): ``fused linear``, ``fused net`` and ``fused`` = the kind of ``settings.fusion`` (``auto``: the
    lower out-of-fold listwise loss over structure folds of the training lists, as a ranker fit chooses); the
    ablations (``without:<column>``) refit the linear fusion (a network per column costs minutes each at full
    scale) and are read against ``fused linear``."""
    from speclake.serving.annotate.fusion import ranks_of_truth
    from speclake.serving.annotate.fusion_net import better_kind, fit_fusion
    from speclake.serving.annotate.ranker_fit import out_of_fold, structure_folds
    from speclake.serving.annotate.rankers import FALLBACK, LOWER_IS_BETTER, fallback_scores, prior_scores

    X_tr, t_tr, k_tr = train
    X_te, t_te = data["X"], data["truth"]

    def ranks(fn) -> np.ndarray:
        return ranks_of_truth([fn(X) if len(X) else np.zeros(0) for X in X_te], t_te)

    def fit(X: list, cols: tuple[str, ...], kind: str) -> Any:
        return fit_fusion(X, t_tr, cols, kind=kind, l2=settings.l2, hidden=settings.net_hidden, seed=settings.seed)

    t0 = time.perf_counter()
    oof = out_of_fold(X_tr, t_tr, names, structure_folds(k_tr, settings.folds, settings.seed), ("linear", "net"),
                      settings)
    kind = better_kind({k: v[2] for k, v in oof.items()}) if settings.fusion == "auto" else settings.fusion
    fits = {k: fit(X_tr, names, k) for k in ("linear", "net")}
    seconds = {"oof_and_fits": time.perf_counter() - t0}
    out = {"fused": hits_of(ranks(fits[kind].score)), "fused linear": hits_of(ranks(fits["linear"].score)),
           "fused net": hits_of(ranks(fits["net"].score)), "prior": hits_of(ranks(prior_scores)),
           FALLBACK: hits_of(ranks(fallback_scores)), "random": random_hits(data)}
    for j, name in enumerate(names):
        sign = -1.0 if name in LOWER_IS_BETTER else 1.0
        out[f"alone:{name}"] = hits_of(ranks(lambda X, j=j, s=sign: s * X[:, j]))
        keep = [i for i in range(len(names)) if i != j]
        try:
            m = fit([X[:, keep] for X in X_tr], tuple(names[i] for i in keep), "linear")
        except ValueError:
            continue
        out[f"without:{name}"] = hits_of(ranks(lambda X, m=m, keep=keep: m.score(X[:, keep])))
    seconds["ablations"] = time.perf_counter() - t0 - seconds["oof_and_fits"]
    return out, {"fusion_kind": kind, "seconds": seconds,
                 "oof_loss": {k: float(np.nanmean(v[2])) for k, v in oof.items() if np.isfinite(v[2]).any()},
                 "weights": dict(zip(names, fits["linear"].weights.tolist()))}


def fragmenter_rows(te: dict[str, Any], va: dict[str, Any], kn: dict[str, Any], names: tuple[str, ...],
                    settings: Any, top: int, kind: str) -> tuple[dict[str, dict[int, np.ndarray]], dict[str, Any]]:
    """hit@k of ``fused+fragmenter`` (the fusion of ``kind`` refitted with the fragmenter's columns on the top
    ``top`` of a linear first stage, as a ranker fit with ``fragmenter_top`` does), ``fused linear+fragmenter``,
    and the fragmenter's score alone on the same top candidates (the rest in stage-1 order below)."""
    from speclake.serving.annotate.fusion import fit_listwise, ranks_of_truth
    from speclake.serving.annotate.fusion_net import fit_fusion
    from speclake.serving.annotate.rankers import Rerank

    t0 = time.process_time()
    rerank = Rerank(fit_listwise(va["X"] + kn["X"], va["truth"] + kn["truth"], names, l2=settings.l2), top)
    stage1 = rerank.stage1
    X_tr = (rerank.extend(va["queries"], va["cands"], va["X"]) + rerank.extend(kn["queries"], kn["cands"], kn["X"]))
    X_te = rerank.extend(te["queries"], te["cands"], te["X"])
    cpu = time.process_time() - t0
    all_names = tuple(names) + rerank.names
    fits = {k: fit_fusion(X_tr, va["truth"] + kn["truth"], all_names, kind=k, l2=settings.l2,
                          hidden=settings.net_hidden, seed=settings.seed) for k in dict.fromkeys(("linear", kind))}
    n = len(names)

    def alone(X: np.ndarray) -> np.ndarray:   # fragmenter score on the top, stage-1 order below it
        s1 = stage1.score(X[:, :n])
        rank1 = np.argsort(np.argsort(-s1, kind="stable"), kind="stable")
        return np.where(rank1 < top, 10.0 + X[:, n], -rank1.astype(np.float64))

    def hits(fn) -> dict[int, np.ndarray]:
        return hits_of(ranks_of_truth([fn(X) if len(X) else np.zeros(0) for X in X_te], te["truth"]))

    out = {"fused+fragmenter": hits(fits[kind].score), "fused linear+fragmenter": hits(fits["linear"].score),
           "fragmenter@top": hits(alone)}
    n_lists = len(X_tr) + len(X_te)
    return out, {"fragmenter_weights": dict(zip(all_names, fits["linear"].weights.tolist())),
                 "fragmenter_top": top, "fragmenter_cpu_s_per_list": cpu / max(n_lists, 1)}


def groups_of(data: dict[str, Any], novelty: np.ndarray) -> dict[str, np.ndarray]:
    """Query indexes of: all, each ion mode, each novelty stratum."""
    from speclake.training.metrics import novelty_labels, novelty_stratum

    modes = np.array([t.get("ionmode") or "?" for t in data["truths"]])
    labels = np.array([novelty_stratum(v) for v in novelty])
    out = {"all": np.arange(len(modes))}
    for m in ("positive", "negative"):
        if (modes == m).any():
            out[m] = np.flatnonzero(modes == m)
    for lab in novelty_labels():
        if (labels == lab).any():
            out[f"novelty {lab}"] = np.flatnonzero(labels == lab)
    return out


#: The fused rankings the verdict judges: stage 1, and stage 1 + the fragmenter's re-ranking (the default ranker).
FUSED = ("fused", "fused+fragmenter")


def table(methods: dict[str, dict[int, np.ndarray]], groups: dict[str, np.ndarray], keys: np.ndarray,
          n_boot: int, seed: int) -> list[dict[str, Any]]:
    """Rows (method, group, n, hit@k, 95 % bootstrap interval of hit@k over structures)."""
    from speclake.training.metrics import bootstrap_interval

    rows = []
    for name, hits in methods.items():
        for g, idx in groups.items():
            row: dict[str, Any] = {"method": name, "group": g, "n": int(len(idx))}
            for k in KS:
                v = hits[k][idx]
                row[f"hit{k}"] = float(v.mean()) if len(v) else float("nan")
                row[f"hit{k}_ci"] = bootstrap_interval(v, keys[idx], n=n_boot, seed=seed)
            rows.append(row)
    for name in [m for m in FUSED if m in methods]:   # paired: fused minus prior, per structure resample
        for g, idx in groups.items():
            d = methods[name][1][idx] - methods["prior"][1][idx]
            rows.append({"method": f"{name} - prior", "group": g, "n": int(len(idx)), "hit1": float(d.mean()),
                         "hit1_ci": bootstrap_interval(d, keys[idx], n=n_boot, seed=seed)})
    return rows


def print_table(mode: str, rows: list[dict[str, Any]], info: dict[str, Any]) -> None:
    print(f"\n{mode} candidates: {info['n_test']} test spectra of {info['n_structures']} structures, "
          f"truth a candidate {info['truth_in_candidates']:.3f}, mean {info['mean_candidates']:.0f} candidates; "
          f"fusion fitted on {info['n_fit']} lists; fused = {info['fusion_kind']} (out-of-fold listwise loss "
          + ", ".join(f"{k} {v:.3f}" for k, v in info["oof_loss"].items()) + ")")
    w = max([26] + [len(r["method"]) + 2 for r in rows])
    print(f"{'method':<{w}}{'group':<18}{'n':>6}{'hit@1':>8}{'  95% CI':<16}{'hit@5':>8}{'hit@20':>8}")
    for r in rows:
        ci = r["hit1_ci"]
        print(f"{r['method']:<{w}}{r['group']:<18}{r['n']:>6}{r['hit1']:>8.3f}  [{ci[0]:.3f}, {ci[1]:.3f}] "
              + (f"{r['hit5']:>7.3f}{r['hit20']:>8.3f}" if "hit5" in r else ""))


def verdict(rows: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, met or missed by how much, for ``fused`` and (when run) ``fused+fragmenter``: hit@1
    vs the prior overall (+10 points) and per group (above, outside the interval), hit@20 >= 0.95 overall."""
    out = []
    for name in FUSED:
        for r in (r for r in rows if r["method"] == f"{name} - prior"):
            lo, g = r["hit1_ci"][0], r["group"]
            ok = r["hit1"] >= 0.10 if g == "all" else lo > 0
            need = "+10 points" if g == "all" else "above, outside the interval"
            out.append(f"{name} - prior hit@1, {g}: {r['hit1']:+.3f} [{lo:+.3f}, {r['hit1_ci'][1]:+.3f}] "
                       f"({need}: {'met' if ok else 'MISSED'})")
        for r in (r for r in rows if r["method"] == name and r["group"] == "all"):
            h20, ci = r["hit20"], r["hit20_ci"]
            out.append(f"{name} hit@20 overall {h20:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] "
                       f"(target 0.95: {'met' if h20 >= 0.95 else f'MISSED by {0.95 - h20:.3f}'})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(RESULTS / "lake_annotate_full"),
                    help="a lake with spectra, compounds and a fingerprint structure index (read only)")
    ap.add_argument("--queries", type=int, default=5000, help="validation and test spectra (each)")
    ap.add_argument("--known-fraction", type=float, default=0.25)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fragmenter-top", type=int, default=50,
                    help="re-rank the fused top N with the MetFrag-style fragmenter's evidence (0: off)")
    ap.add_argument("--structures", nargs="*", type=Path,
                    default=[DATA / "structures" / "zinc_moses_1.9M.smi.gz",
                             DATA / "structures" / "massbank_isomers.smi.gz"],
                    help="structure files whose structures of the queries' true formulas join the index")
    ap.add_argument("--fingerprint-likelihood", choices=("add", "replace", "off"), default="add",
                    help="descriptor models' fpll:<id> column (per-bit calibrated, reliability-weighted likelihood) "
                         "beside model:<id>, instead of it, or not at all (rankers default to off)")
    ap.add_argument("--fusion", choices=("linear", "net", "auto"), default="auto",
                    help="the kind behind the `fused` rows (auto: lower out-of-fold loss, as rankers)")
    ap.add_argument("--json", default=str(RESULTS / "ranker_bench.json"))
    ap.add_argument("--test-lake", default=str(RESULTS / "lake_features"),
                    help="the lake whose test-split spectra are the queries (the annotate benchmark's work lake holds "
                         "them out of its library, so it has none; the full MassBank features lake has them)")
    ap.add_argument("--cache", default=None,
                    help="pickle of the candidate lists with their evidence: read when it exists, else written "
                         "(re-run the tables without rebuilding the lists; delete it when the lake changes)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "pyspark", "speclake.lake.run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from speclake.index.search import IndexNotFound, index_dir, read_manifest
    from speclake.serving.annotate.fingerprint_likelihood import FingerprintScorer
    from speclake.serving.annotate.rankers import RankerSettings
    from speclake.serving.annotate.ranker_fit import fit_evidence_builder, known_queries, novelty

    work = Path(args.work)
    try:
        read_manifest(index_dir(work, "fingerprint"))
    except IndexNotFound:
        print(f"{work} has no fingerprint structure index: run `python -m benchmarks annotate -- --work {work}` "
              "first (it makes the work lake and its MOSES + isomers index)", file=sys.stderr)
        return 2
    t_all = time.perf_counter()
    settings = RankerSettings(max_validation=args.queries, max_test=args.queries, known_fraction=args.known_fraction,
                              seed=args.seed, fingerprint_likelihood=args.fingerprint_likelihood, fusion=args.fusion)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    builder = fit_evidence_builder(work, settings)
    timings["evidence_builder"] = time.perf_counter() - t0
    names = builder.names
    from speclake.serving.annotate.fusion import lake_queries

    test_lake = Path(args.test_lake) if args.test_lake else work
    qdata = {"validation": lake_queries(work, "validation", settings.split, args.queries, settings.seed),
             "test": lake_queries(test_lake, "test", settings.split, args.queries, settings.seed)}
    if not qdata["test"][0]:
        log.error("%s has no test-split spectra (a work lake of `benchmarks annotate` holds them out): name a lake "
                  "that has them with --test-lake", test_lake)
        return 2
    ratio = settings.known_fraction / (1 - settings.known_fraction)
    qdata["known"], _ = known_queries(work, settings, round(len(qdata["validation"][0]) * ratio), 0)
    formulas = {s: truth_formulas(t) for s, (_, t) in qdata.items()}
    cache = Path(args.cache) if args.cache else None
    lists: dict[str, dict[str, Any]] = {"formula": {}, "mass": {}}
    if cache is not None and cache.is_file():
        with cache.open("rb") as fh:
            lists = pickle.load(fh)
        log.info("candidate lists and evidence read from %s", cache)
    todo = {s: d for s, d in qdata.items() if s not in lists["mass"] or not lists["mass"][s]["queries"]}
    added: list[Path] = []
    if todo:   # query sets not in the cache (or empty there) are built and added to it
        t0 = time.perf_counter()
        added = ensure_formula_structures(work, [p for p in args.structures if p.exists()],
                                          {f for fs in formulas.values() for f in fs if f})
        timings["formula_structures"] = time.perf_counter() - t0
        for mode, built in build_lists(work, settings, builder, todo, formulas, timings).items():
            lists[mode].update(built)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            with cache.open("wb") as fh:
                pickle.dump(lists, fh, protocol=pickle.HIGHEST_PROTOCOL)
    val, test, known = (lists["mass"][s] for s in ("validation", "test", "known"))
    test_keys = {t["inchikey14"] for t in test["truths"]}
    fit_keys = {t["inchikey14"] for t in val["truths"] + known["truths"]}
    if fit_keys & test_keys:
        raise RuntimeError(f"{len(fit_keys & test_keys)} test structures among the fusion's training lists")
    nov = novelty(test, builder)
    keys = np.array([t["inchikey14"] for t in test["truths"]])
    out: dict[str, Any] = {"date": str(dt.date.today()), "host": platform.node(), "cores": os.cpu_count(),
                           "args": vars(args), "features": list(names), "modes": {}}
    print(f"\nranker comparison ({dt.date.today()}, {platform.node()}, {os.cpu_count()} cores): {work}")
    print(f"fit: {len(val['queries'])} validation + {len(known['queries'])} known (leave-one-spectrum-out) lists; "
          f"test: {len(test['queries'])} spectra of {len(test_keys)} structures (none seen in fitting, InChIKey-14)")
    print(f"evidence columns: {', '.join(names)}")
    out["bit_reliability"] = {m.feature: m.reliability.summary() if m.reliability is not None else None
                              for m in builder.models if isinstance(m, FingerprintScorer)}
    for feature, rel in out["bit_reliability"].items():
        print(f"{feature}: " + (f"bit reliability from {rel['spectra']} validation spectra of {rel['structures']} "
                                f"structures, {rel['weighted']} of {rel['descriptors']} descriptors weighted "
                                f"(mean weight {rel['mean_weight']:.2f})" if rel
                                else "no validation spectra: unweighted"))
    print(f"structures of the queries' formulas added to the index from: "
          f"{', '.join(p.name for p in added) or 'none'}")
    for mode in ("formula", "mass"):
        t0 = time.perf_counter()
        te, va, kn = (lists[mode][s] for s in ("test", "validation", "known"))
        methods, fit_info = method_scores(te, names, (va["X"] + kn["X"], va["truth"] + kn["truth"],
                                                      [t["inchikey14"] for t in va["truths"] + kn["truths"]]),
                                          settings)
        if args.fragmenter_top:
            frag_methods, frag_info = fragmenter_rows(te, va, kn, names, settings, args.fragmenter_top,
                                                      fit_info["fusion_kind"])
            methods.update(frag_methods)
            fit_info.update(frag_info)
        rows = table(methods, groups_of(te, nov), keys, args.bootstrap, args.seed)
        info = {"n_test": len(te["X"]), "n_structures": len(test_keys), "n_fit": len(va["X"]) + len(kn["X"]),
                "truth_in_candidates": float(np.mean([t is not None for t in te["truth"]])),
                "mean_candidates": float(np.mean([len(c) for c in te["cands"]])), **fit_info}
        print_table(mode, rows, info)
        if "fragmenter_cpu_s_per_list" in info:
            print(f"fragmenter on the top {info['fragmenter_top']}: {1000 * info['fragmenter_cpu_s_per_list']:.0f} "
                  f"CPU ms per list (fragmentation + scoring); fused linear+fragmenter weights: "
                  + ", ".join(f"{k} {v:+.2f}" for k, v in info["fragmenter_weights"].items()))
        v = verdict(rows)
        print("\n".join(v))
        timings[f"table_{mode}"] = time.perf_counter() - t0
        out["modes"][mode] = {"info": info, "rows": rows, "verdict": v}
    timings["all"] = time.perf_counter() - t_all
    print("\nseconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    out["timings"] = timings
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=lambda o: str(o) if isinstance(o, Path) else float(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
