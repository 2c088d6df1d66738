"""Rankers: registered, versioned scorers of candidate lists, with a calibrated rank-1 confidence.

A fitted ranker lives in ``<lake>/models/rankers/<ranker_id>/``: ``settings.json`` (how it was made,
with the split and the features), ``weights.json`` (:class:`.fusion.LinearFusion`),
``calibration.json`` (:class:`.calibration.IsotonicCalibrator`), ``metrics.json`` (test hit@1/5/20
overall and per novelty stratum beside the library prior, library+prior and random on the same
candidates; calibration on validation and test; the same on *known* test structures) and
``training_structures.json`` (the InChIKey-14 it was fitted on: validation, and training-split ones of
the known queries; never a test structure).

:func:`fit_ranker` fits the fusion on validation-split lake spectra (blind queries: precursor m/z, ion
mode and peaks; candidates from the structure index; library = training-split spectra: structures *novel*
to the library) plus a share (``known_fraction``) of *known* queries: training-split spectra whose
structure has other library spectra, searched leave-one-spectrum-out (:func:`known_queries`), so identity
evidence is learned as a study needs it. It is cross-fitted over 2 structure-disjoint folds so the
calibration sees out-of-fold scores. It is one
:class:`~speclake.lake.run.Run` of kind ``ranker`` (no lake lock: it writes only its own folder), with a
:class:`RankerReport` in the run record; ``settings.json`` also records the lake ``inputs`` it was fitted
on (:func:`lake_inputs`), so ``speclake annotate-prepare`` can tell an up-to-date ranker from a stale one.

:func:`load_ranker` gives the newest fitted ranker; on a lake without one, the **fallback**
``library+prior``: z-scored library analogue evidence + 1.0 x library prior
(:func:`speclake.training.scoring.combine_with_prior`). It is *uncalibrated*: its confidence is None.
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
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunReport
from speclake.training.split import SplitSettings

from .calibration import IsotonicCalibrator, calibration_report
from .evidence import FEATURES, EvidenceBuilder, LibraryReference
from .fusion import (LinearFusion, fit_listwise, hit_summary, lake_queries, library_hits, ranks_of_truth, softmax,
                     truth_rows)
from .model import Candidate, Query, Ranked

log = logging.getLogger(__name__)

RANKERS_DIR = Path("models") / "rankers"
FALLBACK = "library+prior"
#: Evidence columns where a smaller value is better evidence (when a column ranks alone).
LOWER_IS_BETTER = ("tree_gap", "abs_ppm")
Hits = Mapping[str, Sequence[Sequence[Any]]]


class RankerSettings(BaseModel):
    """How a ranker is fitted (saved as its settings.json)."""

    model_config = ConfigDict(extra="forbid")

    index_name: str = "fingerprint"
    ppm: float = Field(10.0, gt=0, description="precursor m/z tolerance of candidates and identity search")
    max_formulas: int | None = Field(4, ge=0, description="(formula, adduct) pairs per query given a tree")
    library_top_k: int = Field(10, ge=1)
    split: SplitSettings = SplitSettings()
    max_validation: int | None = Field(5000, ge=1)
    max_test: int | None = Field(5000, ge=1)
    l2: float = Field(1e-2, ge=0)
    folds: int = Field(2, ge=2, description="structure-disjoint folds of validation for out-of-fold calibration")
    fragmenter_top: int = Field(
        0, ge=0, description="re-rank the top N of the fused ranking with MetFrag-style in-silico fragmentation "
        "evidence (serving.annotate.fragmenter; ~1-3 ms per candidate); 0: off")
    known_fraction: float = Field(
        0.25, ge=0, lt=1, description="share of the fusion's training queries that are *known* structures: "
        "training-split spectra whose structure has other library spectra, searched with their own spectrum left "
        "out, so identity evidence is learned as in a study where part of the compounds are in the library")
    n_bins: int = Field(10, ge=1)
    models: list[str] | None = Field(None, description="registered models used as evidence; None: every model "
                                     "of a supported architecture trained on `split`; []: none")
    seed: int = 0


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


class Ranker:
    """Scores candidate lists: ``rank(queries, candidates, hits) -> list[Ranked]``.

    ``hits``: library search results, mode (``identity`` / ``analogue``) -> per query list of
    :class:`speclake.serving.library.Hit`; None when there was no library search.
    """

    def __init__(self, name: str, evidence: EvidenceBuilder, fusion: LinearFusion | None = None,
                 calibrator: IsotonicCalibrator | None = None, metrics: dict[str, Any] | None = None,
                 rerank: "Rerank | None" = None) -> None:
        self.name = name
        self.evidence = evidence
        self.fusion = fusion
        self.calibrator = calibrator
        self.metrics = metrics or {}
        self.rerank = rerank

    @property
    def names(self) -> tuple[str, ...]:
        """The evidence columns the fusion reads (the re-ranking stage's appended)."""
        return self.evidence.names + (self.rerank.names if self.rerank is not None else ())

    def matrices(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]],
                 hits: Hits | None = None) -> list[np.ndarray]:
        """Evidence of every list, with the re-ranking stage's columns when there is one."""
        X = self.evidence.matrices(queries, candidates, hits)
        if self.rerank is not None:
            X = self.rerank.extend(queries, candidates, X)
        return X

    @property
    def calibrated(self) -> bool:
        return self.calibrator is not None

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Scores of one list's evidence matrix (the fusion, or the fallback's combination)."""
        if len(X) == 0:
            return np.zeros(0)
        if self.fusion is not None:
            return self.fusion.score(X)
        return fallback_scores(X)

    def rank(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]],
             hits: Hits | None = None) -> list[Ranked]:
        """Each query's candidates best first (ties by InChIKey-14), their evidence in ``Candidate.features``."""
        out = []
        names = self.names
        for q, cands, X in zip(queries, candidates, self.matrices(queries, candidates, hits)):
            s = self.scores(X)
            order = sorted(range(len(cands)), key=lambda i: (-s[i], cands[i].inchikey14))
            for i, c in enumerate(cands):
                c.features.update(zip(names, X[i].tolist()))
            conf = None
            if self.calibrator is not None and len(cands):
                conf = float(self.calibrator([softmax(s)[order[0]]])[0])
            out.append(Ranked(q, [cands[i] for i in order], [float(s[i]) for i in order], self.name, conf))
        return out


class Rerank:
    """A re-ranking stage: the MetFrag-style fragmenter's evidence (:data:`.fragmenter.FRAGMENTER_FEATURES`)
    computed for the ``top`` candidates of each list by the ``stage1`` fusion (in-silico fragmentation costs
    ~1-3 ms per candidate, too much for every candidate of a mass window); the other candidates get the
    lowest value computed in their list, so they are never helped by it."""

    def __init__(self, stage1: LinearFusion, top: int) -> None:
        from .fragmenter import FRAGMENTER_FEATURES, Fragmenter

        self.stage1 = stage1
        self.top = top
        self.names: tuple[str, ...] = FRAGMENTER_FEATURES
        self.fragmenter = Fragmenter()

    def extend(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]],
               X_list: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Each evidence matrix with the fragmenter's columns appended."""
        out = []
        for q, cands, X in zip(queries, candidates, X_list):
            F = np.zeros((len(cands), len(self.names)))
            if len(cands):
                order = np.argsort(-self.stage1.score(X), kind="stable")[:self.top]
                F_top = self.fragmenter.features(q, [cands[i] for i in order])
                F[:] = F_top.min(axis=0)
                F[order] = F_top
            out.append(np.hstack([X, F]))
        return out


def fallback_scores(X: np.ndarray) -> np.ndarray:
    """library+prior: z-scored analogue evidence (identity + analogue hits) + 1.0 x prior."""
    from speclake.training.scoring import combine_with_prior

    f = {n: j for j, n in enumerate(FEATURES)}
    return combine_with_prior(X[:, f["identity"]] + X[:, f["analogue"]], X[:, f["prior"]], 1.0)


def prior_scores(X: np.ndarray) -> np.ndarray:
    return X[:, FEATURES.index("prior")]


# -- registry -----------------------------------------------------------------------------------------
def rankers_root(lake: str | os.PathLike[str]) -> Path:
    return Path(lake) / RANKERS_DIR


def list_rankers(lake: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Fitted rankers of the lake, newest first: ranker_id, created, path, the test summary of the ranker
    (``test``) and of the library prior (``prior``) on the same candidates, and the test ECE (``ece``)."""
    root = rankers_root(lake)
    out = []
    for d in sorted(root.glob("*/settings.json")) if root.is_dir() else []:
        info = json.loads(d.read_text())
        m = d.parent / "metrics.json"
        test = (json.loads(m.read_text()) if m.is_file() else {}).get("test") or {}
        methods = test.get("methods", {})
        out.append({"ranker_id": d.parent.name, "created": info.get("created"), "path": str(d.parent),
                    "test": methods.get("fused", {}).get("all"), "prior": methods.get("prior", {}).get("all"),
                    "ece": (test.get("calibration") or {}).get("ece")})
    return sorted(out, key=lambda r: (r["created"] or "", r["ranker_id"]), reverse=True)


def _builder(lake: str | os.PathLike[str], model_ids: Sequence[str] = ()) -> EvidenceBuilder:
    from .evidence import model_scorers
    from .precursor import adduct_priors

    models = model_scorers(lake, list(model_ids)) if model_ids else []
    return EvidenceBuilder(LibraryReference.from_lake(lake), adduct_priors(lake), models=models)


def load_ranker(lake: str | os.PathLike[str], method: str | None = None) -> Ranker:
    """The ranker ``method`` (a ranker_id, or ``library+prior``); None: the newest fitted ranker, else the
    uncalibrated ``library+prior`` fallback (logged). Evidence uses every lake structure as library."""
    fitted = list_rankers(lake)
    if method is None:
        if not fitted:
            log.warning("%s has no fitted ranker: using the uncalibrated %s fallback (no confidence); fit one "
                        "with `speclake annotate-prepare --lake %s`", lake, FALLBACK, lake)
            return Ranker(FALLBACK, _builder(lake))
        method = fitted[0]["ranker_id"]
    if method == FALLBACK:
        return Ranker(FALLBACK, _builder(lake))
    d = rankers_root(lake) / method
    if not (d / "settings.json").is_file():
        names = [FALLBACK] + [r["ranker_id"] for r in fitted]
        raise ValueError(f"unknown ranker {method!r}; choose from {', '.join(names)}")
    fusion = LinearFusion.from_dict(json.loads((d / "weights.json").read_text()))
    rerank = None
    if (d / "stage1.json").is_file():
        stage1 = json.loads((d / "stage1.json").read_text())
        rerank = Rerank(LinearFusion.from_dict(stage1["fusion"]), int(stage1["top"]))
    features = fusion.features[:len(fusion.features) - len(rerank.names)] if rerank else fusion.features
    base, extra = tuple(features[:len(FEATURES)]), features[len(FEATURES):]
    if (base != FEATURES or not all(f.startswith("model:") for f in extra)
            or (rerank and tuple(fusion.features[len(features):]) != rerank.names)):
        raise ValueError(f"ranker {method} was fitted on features {fusion.features}, this code makes {FEATURES} "
                         f"(+ model:<id>, + the fragmenter's); fit it again")
    cal = IsotonicCalibrator.from_dict(json.loads((d / "calibration.json").read_text()))
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    return Ranker(method, _builder(lake, [f.partition(":")[2] for f in extra]), fusion, cal, metrics, rerank)


def lake_inputs(lake: str | os.PathLike[str], index_name: str = "fingerprint") -> dict[str, Any]:
    """What a ranker fit reads from the lake: table versions (spectra, compounds, descriptors) and the
    structure index version; a ranker fitted on other inputs is stale."""
    from speclake.index.search import IndexNotFound, index_dir, read_manifest

    lk = Lake(lake)
    out: dict[str, Any] = {}
    for table in ("spectra", "compounds", "descriptors"):
        tv = lk.current(table)
        out[table] = tv.version if tv is not None else None
    try:
        out["index"] = read_manifest(index_dir(lake, index_name)).get("run_id")
    except IndexNotFound:
        out["index"] = None
    return out


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


def _folds(keys: Sequence[str], k: int, seed: int) -> np.ndarray:
    import hashlib

    return np.array([int(hashlib.sha256(f"fold{seed}:{s}".encode()).hexdigest()[:8], 16) % k for s in keys])


def _top_prob(model: LinearFusion, X: np.ndarray) -> float:
    return float(softmax(model.score(X)).max()) if len(X) else float("nan")


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


def _known_metrics(data: dict[str, Any], fusion: LinearFusion, calibrator: IsotonicCalibrator, n_bins: int,
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
    conf = np.array([float(calibrator([_top_prob(fusion, X)])[0]) if len(X) else 0.0 for X in data["X"]])
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
    models of ``settings.models``."""
    from .evidence import model_scorers
    from .precursor import adduct_priors

    return EvidenceBuilder(LibraryReference.from_lake(lake, splits=("train",), split_settings=settings.split),
                           adduct_priors(lake), models=model_scorers(lake, settings.models, settings.split),
                           max_hits=settings.library_top_k)


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
    # out-of-fold rank-1 probabilities for the calibration, then the final fit on all validation
    t_fit = time.perf_counter()
    fold = _folds(keys, settings.folds, settings.seed)
    oof = np.full(len(keys), np.nan)
    for k in range(settings.folds):
        tr = np.flatnonzero(fold != k)
        try:
            m = fit_listwise([train_X[i] for i in tr], [train_truth[i] for i in tr], names, l2=settings.l2)
        except ValueError:
            continue
        for i in np.flatnonzero(fold == k):
            oof[i] = _top_prob(m, train_X[i])
    fusion = fit_listwise(train_X, train_truth, names, l2=settings.l2)
    val_scores = [fusion.score(X) if len(X) else np.zeros(0) for X in train_X]
    val_correct = ranks_of_truth(val_scores, train_truth) == 1
    has = np.array([len(c) > 0 for c in train_cands]) & np.isfinite(oof)
    if not has.any():
        raise ValueError("no validation query got an out-of-fold score: too few validation structures to calibrate")
    calibrator = IsotonicCalibrator.fit(oof[has], val_correct[has])
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
    conf = np.array([float(calibrator([_top_prob(fusion, X)])[0]) if len(X) else 0.0 for X in test["X"]])
    n_test = len(test["queries"])
    metrics = {
        "ranker_id": None, "features": list(names),
        "weights": dict(zip(names, fusion.weights.tolist())),
        "validation": {"n_queries": len(val_keys), "n_structures": len(set(val_keys)),
                       "known_queries": len(known_keys), "known_structures": len(set(known_keys)),
                       "truth_in_candidates": float(np.mean([t is not None for t in val["truth"]]))
                       if val_keys else None,
                       # the isotonic map on the out-of-fold scores it was fitted on: in-sample, ECE ~ 0 by
                       # construction; the honest calibration numbers are the test split's
                       "calibration_in_sample": calibration_report(calibrator(oof[has]), val_correct[has],
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


def _save(lake: str | os.PathLike[str], settings: RankerSettings, fusion: LinearFusion,
          calibrator: IsotonicCalibrator, metrics: dict[str, Any], structures: list[str],
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
        files = {"settings.json": {"ranker_id": ranker_id, "created": now.isoformat(), "kind": "linear_listwise",
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
