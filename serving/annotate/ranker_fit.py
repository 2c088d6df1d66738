"""Fitting a ranker (:func:`fit_ranker`): the driver of ``speclake annotate-prepare``'s ranker step and of the
benchmarks, with its steps: the queries (validation split, *known* structures left one spectrum out), their
candidate lists and evidence (:func:`prepare_lists`), the listwise fusion with out-of-fold calibration, the
optional re-ranking stage, the test metrics beside the prior, library+prior and random, the artifact.

The ranker it registers is loaded and applied by :mod:`.rankers`.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np

from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunReport

from .calibration import SplitCalibrator, calibration_report
from .evidence import EvidenceBuilder, LibraryReference
from .fusion import (fit_listwise, hit_summary, lake_queries, library_hits, ranks_of_truth, softmax,
                     truth_rows)
from .fusion_net import Fusion, better_kind, fit_fusion, oof_loss
from .rankers import (FALLBACK, LOWER_IS_BETTER, RankerSettings, Rerank, fallback_scores, in_library, lake_inputs,
                      prior_scores, rankers_root)

log = logging.getLogger(__name__)


@dataclass
class RankerReport(RunReport):
    """What a ranker fit did (the run record of kind ``ranker``)."""

    ranker_id: str = ""
    queries: dict[str, int] = field(default_factory=dict)    # validation / test queries
    structures: dict[str, int] = field(default_factory=dict)  # validation / test InChIKey-14
    #: test hit@1/5/20 (all queries) of fused, prior, library+prior and random; calibration: ECE and
    #: precision of rank-1 hits with confidence >= 0.5 / 0.8 / 0.9
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)


# -- fitting ------------------------------------------------------------------------------------------
def known_queries(lake: Any, settings: RankerSettings, n_fit: int, n_test: int,
                  ) -> tuple[tuple[list, list[dict]], tuple[list, list[dict]]]:
    """Queries of *known* structures, (fit, test): training-split MS2 spectra whose structure has at least
    two of them, so with the query's own spectrum left out of its library hits (the evidence skips a hit on
    the query's spectrum id) the library still holds a spectrum of the truth, as for a compound of a
    study that a library covers. The two halves are structure-disjoint (a hash of the InChIKey-14)."""
    import hashlib
    from collections import Counter

    if n_fit + n_test == 0:
        return ([], []), ([], [])
    queries, truths = lake_queries(lake, "train", settings.split, None, settings.seed)
    counts = Counter(t["inchikey14"] for t in truths)

    def h(text: str) -> str:
        return hashlib.sha256(f"known{settings.seed}:{text}".encode()).hexdigest()

    halves: tuple[list[int], list[int]] = ([], [])
    for i in sorted(range(len(truths)), key=lambda i: h(truths[i]["spectrum_id"])):
        k14 = truths[i]["inchikey14"]
        if counts[k14] >= 2:
            halves[int(h(k14), 16) % 2].append(i)
    fit, test = sorted(halves[0][:n_fit]), sorted(halves[1][:n_test])
    return ([queries[i] for i in fit], [truths[i] for i in fit]), ([queries[i] for i in test], [truths[i] for i in test])


def prepare_lists(lake: Any, name: str, settings: RankerSettings, source: Any, builder: EvidenceBuilder,
                  data: tuple[list, list[dict]] | None = None, *, formulas: Sequence[str | None] | None = None,
                  ) -> dict[str, Any]:
    """Queries (those of the split ``name``, or ``data``) with candidates, hits, evidence and the truth's row;
    ``formulas``: formula candidates (:meth:`.candidates.CandidateSource.by_formula`) instead of m/z ones."""
    t0 = time.perf_counter()
    if data is None:
        cap = settings.max_validation if name == "validation" else settings.max_test
        data = lake_queries(lake, name, settings.split, cap, settings.seed)
    queries, truths = data
    log.info("ranker fit, %s: %d queries", name, len(queries))
    # 3x the hits: those of validation/test spectra are skipped by the training-split library, so each
    # query keeps about library_top_k usable hits, as in annotation where every lake spectrum counts
    hits = library_hits(lake, queries, top_k=3 * settings.library_top_k, precursor_ppm=settings.ppm)
    t1, c1 = time.perf_counter(), time.process_time()
    cands = source.candidates(queries) if formulas is None else source.by_formula(queries, formulas)
    X = builder.matrices(queries, cands, hits)
    t2, c2 = time.perf_counter(), time.process_time()
    return {"queries": queries, "truths": truths, "cands": cands, "hits": hits, "X": X,
            "truth": truth_rows(cands, truths), "seconds_library": t1 - t0, "seconds_candidates_evidence": t2 - t1,
            "cpu_seconds_candidates_evidence": c2 - c1}


def structure_folds(keys: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold (0..k-1) of each list by its structure's InChIKey-14 hash: a structure's spectra share a fold."""
    import hashlib

    return np.array([int(hashlib.sha256(f"fold{seed}:{s}".encode()).hexdigest()[:8], 16) % k for s in keys])


def out_of_fold(train_X: Sequence[np.ndarray], train_truth: Sequence[int | None], names: Sequence[str],
                fold: np.ndarray, kinds: Sequence[str], settings: RankerSettings
                ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per fusion kind, each list scored by the fusion fitted on the other folds: rank-1 probability, whether
    the rank-1 candidate is a library structure, listwise loss (NaN where a fold could not be fitted)."""
    n = len(train_X)
    out = {k: (np.full(n, np.nan), np.zeros(n, bool), np.full(n, np.nan)) for k in kinds}
    for f in np.unique(fold):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        for kind in kinds:
            try:
                m = fit_fusion([train_X[i] for i in tr], [train_truth[i] for i in tr], names, kind=kind,
                               l2=settings.l2, hidden=settings.net_hidden, seed=settings.seed)
            except ValueError:
                continue
            p, lib, loss = out[kind]
            for i in te:
                p[i], lib[i] = _top_prob(m, train_X[i]), _top_in_library(m, train_X[i])
            loss[te] = oof_loss(m, [train_X[i] for i in te], [train_truth[i] for i in te])
    return out


def _top_prob(model: Fusion, X: np.ndarray) -> float:
    return float(softmax(model.score(X)).max()) if len(X) else float("nan")


def _top_in_library(model: Fusion, X: np.ndarray) -> bool:
    """Whether the model's rank-1 candidate is a library structure (the calibration group)."""
    return bool(len(X)) and in_library(X[int(np.argmax(model.score(X)))], model.features)


def _confidences(calibrator: Any, fusion: Fusion, X_list: Sequence[np.ndarray]) -> np.ndarray:
    """Calibrated rank-1 confidence of each list (0 for an empty one)."""
    return np.array([float(calibrator([_top_prob(fusion, X)], [_top_in_library(fusion, X)])[0]) if len(X) else 0.0
                     for X in X_list])


def novelty(data: dict[str, Any], builder: EvidenceBuilder) -> np.ndarray:
    """Per query: its true structure's highest Tanimoto to the library (training) structures."""
    from speclake.training import metrics as M

    fps = builder.fps.get([t["smiles"] or "" for t in data["truths"]])
    return M.max_tanimoto(fps, builder.reference.fps).astype(np.float64)


def _method_metrics(ranks: np.ndarray, novelty: np.ndarray) -> dict[str, Any]:
    from speclake.training.metrics import novelty_labels, novelty_stratum

    labels = np.array([novelty_stratum(t) for t in novelty])
    out = {"all": hit_summary(ranks)}
    for lab in novelty_labels():
        idx = np.flatnonzero(labels == lab)
        if len(idx):
            out[lab] = hit_summary(ranks, idx)
    return out


def _random_metrics(data: dict[str, Any], novelty: np.ndarray) -> dict[str, Any]:
    """Exact expected hit@k of a random order of the same lists (0 where the truth is not a candidate)."""
    from speclake.training.metrics import novelty_labels, novelty_stratum

    n = np.array([max(len(c), 1) for c in data["cands"]], np.float64)
    present = np.array([t is not None for t in data["truth"]])
    labels = np.array([novelty_stratum(t) for t in novelty])

    def summary(idx: np.ndarray) -> dict[str, float]:
        return {"n": int(len(idx)), **{f"hit{k}": float(np.mean(present[idx] * np.minimum(k, n[idx]) / n[idx]))
                                       for k in (1, 5, 20)}}
    out = {"all": summary(np.arange(len(n)))}
    for lab in novelty_labels():
        idx = np.flatnonzero(labels == lab)
        if len(idx):
            out[lab] = summary(idx)
    return out


def _known_metrics(data: dict[str, Any], fusion: Fusion, calibrator: SplitCalibrator, n_bins: int,
                   ) -> dict[str, Any]:
    """hit@k of fused, prior, library+prior and random on the known-structure test queries (their structure
    has other library spectra; never a structure the fusion trained on) and the calibration there."""
    n = len(data["queries"])
    if n == 0:
        return {"n_queries": 0}
    scores = [fusion.score(X) if len(X) else np.zeros(0) for X in data["X"]]
    fused = ranks_of_truth(scores, data["truth"])
    methods = {"fused": hit_summary(fused),
               "prior": hit_summary(ranks_of_truth([prior_scores(X) for X in data["X"]], data["truth"])),
               FALLBACK: hit_summary(ranks_of_truth([fallback_scores(X) if len(X) else np.zeros(0)
                                                      for X in data["X"]], data["truth"])),
               "random": _random_metrics(data, np.ones(n))["all"]}
    has = np.array([len(X) > 0 for X in data["X"]], dtype=bool)
    conf = _confidences(calibrator, fusion, data["X"])
    return {"n_queries": n, "n_structures": len({t["inchikey14"] for t in data["truths"]}),
            "truth_in_candidates": float(np.mean([t is not None for t in data["truth"]])),
            "methods": methods, "calibration": calibration_report(conf[has], fused[has] == 1, n_bins)}


def fit_ranker(lake: str | os.PathLike[str], settings: RankerSettings | None = None,
               progress: Progress | None = None, *, source: Any = None) -> tuple[str, dict[str, Any]]:
    """Fit, calibrate, evaluate and register a fused ranker; returns (ranker_id, metrics).

    One run of kind ``ranker`` (stages ``evidence``, ``validation``, ``test``, ``fit``, ``evaluate``,
    ``register``; ``progress(stage, done, total)``), its :class:`RankerReport` in the run record.
    ``source``: a :class:`.candidates.CandidateSource` to use instead of the lake's structure index
    ``settings.index_name`` (benchmarks; the caller closes it)."""
    settings = settings or RankerSettings()
    report = RankerReport()
    with Run(Lake(lake), "ranker", settings, report, progress=progress, lock=None) as run:
        ranker_id, metrics = _fit(lake, settings, source, run)
        metrics["run_id"] = run.run_id
        report.ranker_id = ranker_id
        report.queries = {s: metrics[s]["n_queries"] for s in ("validation", "test")}
        report.queries.update(known=metrics["validation"]["known_queries"],
                              known_test=metrics["known_test"]["n_queries"])
        report.structures = {s: metrics[s]["n_structures"] for s in ("validation", "test")}
        methods = metrics["test"]["methods"]
        report.test = {m: methods[m]["all"] for m in ("fused", "prior", FALLBACK, "random") if m in methods}
        cal = metrics["test"]["calibration"]
        report.calibration = {"n": cal["n"], "ece": cal["ece"],
                              "above": {str(a["threshold"]): {"n": a["n"], "precision": a["precision"]}
                                        for a in cal["above"]}}
    return ranker_id, metrics


def fit_evidence_builder(lake: str | os.PathLike[str], settings: RankerSettings) -> EvidenceBuilder:
    """The evidence of a ranker fit: library = training-split spectra, the lake's adduct priors, the trained
    models of ``settings.models`` (descriptor models with their fingerprint likelihood as
    ``settings.fingerprint_likelihood`` says, its bit reliability from validation spectra)."""
    from .evidence import model_scorers
    from .fingerprint_likelihood import with_fingerprint_likelihood
    from .precursor import adduct_priors

    models = with_fingerprint_likelihood(lake, model_scorers(lake, settings.models, settings.split), settings.split,
                                         settings.fingerprint_likelihood)
    return EvidenceBuilder(LibraryReference.from_lake(lake, splits=("train",), split_settings=settings.split),
                           adduct_priors(lake), models=models, max_hits=settings.library_top_k)


def _fit(lake: str | os.PathLike[str], settings: RankerSettings, source: Any, run: Run) -> tuple[str, dict[str, Any]]:
    """The body of :func:`fit_ranker`, each step a stage of ``run``."""
    import contextlib

    from speclake.training.split import assign_split

    from .candidates import CandidateSource

    t_start = time.perf_counter()
    inputs = lake_inputs(lake, settings.index_name)
    with run.stage("evidence"):
        builder = fit_evidence_builder(lake, settings)
    names = builder.names
    opened = (contextlib.nullcontext(source) if source is not None else
              CandidateSource.open(lake, settings.index_name, settings.ppm, max_formulas=settings.max_formulas))
    with opened as src:
        with run.stage("validation"):
            val = prepare_lists(lake, "validation", settings, src, builder)
        with run.stage("test"):
            test = prepare_lists(lake, "test", settings, src, builder)
        with run.stage("known"):
            ratio = settings.known_fraction / (1.0 - settings.known_fraction)
            kfit, ktest = known_queries(lake, settings, round(len(val["queries"]) * ratio),
                                        round(max(len(test["queries"]), len(val["queries"])) * ratio))
            known = prepare_lists(lake, "known", settings, src, builder, kfit)
            known_test = prepare_lists(lake, "known test", settings, src, builder, ktest)
    val_keys = [t["inchikey14"] for t in val["truths"]]
    known_keys = [t["inchikey14"] for t in known["truths"]]
    wrong = sorted({k for k in val_keys if assign_split(k, settings.split) != "validation"}
                   | {k for k in known_keys if assign_split(k, settings.split) != "train"})
    if wrong or set(val_keys + known_keys) & {t["inchikey14"] for t in test["truths"]}:
        raise RuntimeError(f"fusion training data holds test or misassigned structures: {wrong[:5]}")
    # the fusion's training lists: validation (novel to the library) + known (leave-one-spectrum-out)
    keys = val_keys + known_keys
    train_X, train_truth = val["X"] + known["X"], val["truth"] + known["truth"]
    train_cands = val["cands"] + known["cands"]
    rerank = None
    if settings.fragmenter_top:   # stage 1 on the evidence, then the fragmenter's columns on its top N
        with run.stage("fragmenter"):
            rerank = Rerank(fit_listwise(train_X, train_truth, names, l2=settings.l2), settings.fragmenter_top)
            train_X = rerank.extend(val["queries"] + known["queries"], train_cands, train_X)
            test["X"] = rerank.extend(test["queries"], test["cands"], test["X"])
            known_test["X"] = rerank.extend(known_test["queries"], known_test["cands"], known_test["X"])
        names = names + rerank.names
    # out-of-fold rank-1 probabilities for the calibration (and, for fusion "auto", the out-of-fold listwise
    # loss that picks linear or net), then the final fit on all validation
    t_fit = time.perf_counter()
    kinds = ("linear", "net") if settings.fusion == "auto" else (settings.fusion,)
    fold = structure_folds(keys, settings.folds, settings.seed)
    oof = out_of_fold(train_X, train_truth, names, fold, kinds, settings)
    kind = better_kind({k: v[2] for k, v in oof.items()}) if settings.fusion == "auto" else settings.fusion
    oof_p, oof_lib, _ = oof[kind]
    fusion = fit_fusion(train_X, train_truth, names, kind=kind, l2=settings.l2, hidden=settings.net_hidden,
                        seed=settings.seed)
    val_scores = [fusion.score(X) if len(X) else np.zeros(0) for X in train_X]
    val_correct = ranks_of_truth(val_scores, train_truth) == 1
    has = np.array([len(c) > 0 for c in train_cands]) & np.isfinite(oof_p)
    if not has.any():
        raise ValueError("no validation query got an out-of-fold score: too few validation structures to calibrate")
    calibrator = SplitCalibrator.fit(oof_p[has], val_correct[has], oof_lib[has])
    # test: the fused ranker beside the prior, library+prior and random on the same candidates
    t0, c0 = run.lap("fit", t_fit), time.process_time()
    tscores = [fusion.score(X) if len(X) else np.zeros(0) for X in test["X"]]
    t_rank, c_rank = time.perf_counter() - t0, time.process_time() - c0
    nov = novelty(test, builder)
    ranks = {"fused": ranks_of_truth(tscores, test["truth"]),
             "prior": ranks_of_truth([prior_scores(X) for X in test["X"]], test["truth"]),
             FALLBACK: ranks_of_truth([fallback_scores(X) if len(X) else np.zeros(0) for X in test["X"]],
                                      test["truth"])}
    for j, name in enumerate(names):  # every evidence column alone (sign: larger is better, but gaps/errors)
        sign = -1.0 if name in LOWER_IS_BETTER else 1.0
        ranks[f"alone:{name}"] = ranks_of_truth([sign * X[:, j] for X in test["X"]], test["truth"])
    methods = {name: _method_metrics(r, nov) for name, r in ranks.items()}
    methods["random"] = _random_metrics(test, nov)
    has_t = np.array([len(X) > 0 for X in test["X"]], dtype=bool)
    conf = _confidences(calibrator, fusion, test["X"])
    n_test = len(test["queries"])
    metrics = {
        "ranker_id": None, "features": list(names),
        "weights": dict(zip(names, fusion.weights.tolist())),
        "fusion": {"kind": kind, "oof_loss": {k: float(np.nanmean(v[2])) if np.isfinite(v[2]).any() else None
                                              for k, v in oof.items()}},
        "validation": {"n_queries": len(val_keys), "n_structures": len(set(val_keys)),
                       "known_queries": len(known_keys), "known_structures": len(set(known_keys)),
                       "truth_in_candidates": float(np.mean([t is not None for t in val["truth"]]))
                       if val_keys else None,
                       # the isotonic map on the out-of-fold scores it was fitted on: in-sample, ECE ~ 0 by
                       # construction; the honest calibration numbers are the test split's
                       "calibration_in_sample": calibration_report(calibrator(oof_p[has], oof_lib[has]),
                                                                   val_correct[has],
                                                                   settings.n_bins)},
        "test": {"n_queries": n_test, "n_structures": len({t["inchikey14"] for t in test["truths"]}),
                 "truth_in_candidates": float(np.mean([t is not None for t in test["truth"]])) if n_test else None,
                 "mean_candidates": float(np.mean([len(c) for c in test["cands"]])) if n_test else None,
                 "methods": methods,
                 "calibration": calibration_report(conf[has_t], ranks["fused"][has_t] == 1, settings.n_bins),
                 "queries_per_s_candidates_evidence_ranking":
                     n_test / max(test["seconds_candidates_evidence"] + t_rank, 1e-9),
                 "queries_per_cpu_s_candidates_evidence_ranking":
                     n_test / max(test["cpu_seconds_candidates_evidence"] + c_rank, 1e-9)},
        "known_test": _known_metrics(known_test, fusion, calibrator, settings.n_bins),
        "seconds": time.perf_counter() - t_start,
    }
    t_reg = run.lap("evaluate", t0)
    ranker_id = _save(lake, settings, fusion, calibrator, metrics, sorted(set(keys)), inputs, rerank)
    run.lap("register", t_reg)
    return ranker_id, metrics


def _save(lake: str | os.PathLike[str], settings: RankerSettings, fusion: Fusion,
          calibrator: SplitCalibrator, metrics: dict[str, Any], structures: list[str],
          inputs: dict[str, Any] | None = None, rerank: Rerank | None = None) -> str:
    """Write the artifact into a temporary folder, then rename it into place (never half-written)."""
    now = datetime.now(timezone.utc)
    ranker_id = f"fusion-{now.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    metrics["ranker_id"] = ranker_id
    root = rankers_root(lake)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{ranker_id}"
    tmp.mkdir()
    try:
        files = {"settings.json": {"ranker_id": ranker_id, "created": now.isoformat(),
                                   "kind": fusion.to_dict()["kind"],
                                   "features": list(fusion.features), "trained_on": "validation",
                                   "settings": settings.model_dump(), "inputs": inputs or {}},
                 "weights.json": fusion.to_dict(), "calibration.json": calibrator.to_dict(),
                 "metrics.json": metrics, "training_structures.json": structures}
        if rerank is not None:
            files["stage1.json"] = {"top": rerank.top, "fusion": rerank.stage1.to_dict()}
        for name, obj in files.items():
            (tmp / name).write_text(json.dumps(obj, indent=1, default=float))
        os.replace(tmp, root / ranker_id)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("ranker %s registered in %s", ranker_id, root / ranker_id)
    return ranker_id
