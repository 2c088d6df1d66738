"""Scoring on candidates: per candidate mode, every method's scores of every candidate list, and the
``model_metrics`` rows (overall, per ion mode, per novelty stratum; every model-like method also as
``<method>+prior`` with lambda chosen on the validation split)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speclake.pipelines.features.descriptors import DescriptorSettings as FingerprintSettings

from speclake.lake.run import Progress
from . import metrics as M
from .candidates import CandidateSets, candidate_sets, open_catalog
from .eval_data import QUERY_COLUMNS, QuerySet, progress_bar, structure_rows
from .eval_methods import Method
from .eval_queries import descriptor_targets
from .eval_settings import EvaluationSettings
from .scoring import (analogue_scores, choose_lambda, combine_with_prior, descriptor_log_likelihood,
                      descriptor_matrix, embedding_scores, random_scores)

log = logging.getLogger(__name__)


@dataclass
class ScoredMode:
    """Candidates of one query set in one mode, with per-structure descriptors and fingerprints."""

    cands: CandidateSets
    struct_index: np.ndarray       # candidate row -> unique structure
    struct_smiles: list[str]       # unique structures
    struct_rows: list[dict[str, Any]]
    fps: np.ndarray                # unique structures' packed Morgan fingerprints
    prior: np.ndarray              # per unique structure: highest Tanimoto to training structures
    truth: np.ndarray              # per query: position of the truth in its list
    tan_to_truth: list[np.ndarray] # per query: Tanimoto of each candidate to the truth


def score_mode_setup(cands: CandidateSets, train_fps: np.ndarray, fp: FingerprintSettings,
                     cache: dict[str, dict[str, Any]]) -> ScoredMode:
    """Fingerprint every candidate structure once (``cache`` by SMILES), the prior and Tanimoto to the truth."""
    smiles = cands.table.column("smiles").to_pylist()
    uniq, inv = np.unique(np.asarray(smiles, dtype=object).astype(str), return_inverse=True)
    todo = [s for s in uniq if s not in cache]
    for s, r in zip(todo, structure_rows(todo, fp)):
        cache[s] = r
    rows = [cache[s] for s in uniq]
    fps = M.pack_fingerprints([r["morgan_on"] for r in rows], fp.morgan_bits)
    prior = M.max_tanimoto(fps, train_fps)
    truth = cands.truth_index()
    tan = []
    for q, (lo, hi) in enumerate(zip(cands.offsets[:-1], cands.offsets[1:])):
        idx = inv[lo:hi]
        tan.append(M.tanimoto_matrix(fps[idx], fps[idx[truth[q]]][None, :])[:, 0])
    return ScoredMode(cands, inv, [str(s) for s in uniq], rows, fps, prior, truth, tan)


def method_scores(m: Method, qs: QuerySet, sm: ScoredMode, settings: EvaluationSettings,
                  rng: np.random.Generator) -> list[np.ndarray]:
    """Scores of every candidate list of a query set under one method."""
    out: list[np.ndarray] = []
    off = sm.cands.offsets
    if m.kind == "descriptor":
        mat, mask = descriptor_matrix(sm.struct_rows, m.descriptor_names, sparse=True)
        probs = qs.probs[m.key]
        for q in range(len(qs)):
            idx = sm.struct_index[off[q]:off[q + 1]]
            out.append(descriptor_log_likelihood(probs[q], mat[idx], mask=mask, weights=m.weights, clip=settings.clip))
    elif m.kind == "analogue":
        for q, (sims, hit_fps) in enumerate(qs.hits[m.key]):
            out.append(analogue_scores(sims, hit_fps, sm.fps[sm.struct_index[off[q]:off[q + 1]]]))
    elif m.kind == "joint":
        emb = np.asarray(m.predictor.embed_structures(sm.struct_smiles), np.float64)
        for q in range(len(qs)):
            out.append(embedding_scores(qs.spectrum_emb[m.key][q], emb[sm.struct_index[off[q]:off[q + 1]]]))
    elif m.kind == "prior":
        out = [sm.prior[sm.struct_index[off[q]:off[q + 1]]].astype(np.float64) for q in range(len(qs))]
    elif m.kind == "random":
        out = [random_scores(int(off[q + 1] - off[q]), rng) for q in range(len(qs))]
    else:
        raise ValueError(f"unknown method kind {m.kind!r}")
    return out


def _priors(sm: ScoredMode) -> list[np.ndarray]:
    off = sm.cands.offsets
    return [sm.prior[sm.struct_index[off[q]:off[q + 1]]].astype(np.float64) for q in range(len(off) - 1)]


# -- metrics rows ---------------------------------------------------------------------------------
def strata(rows: Sequence[dict[str, Any]], novelty: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(kind, label, query indices): all, each ion mode, each novelty bin present."""
    n = len(rows)
    out = [("all", "all", np.arange(n))]
    modes = np.asarray([r["ionmode"] for r in rows])
    for mode in sorted(set(modes.tolist())):
        out.append(("ionmode", mode, np.flatnonzero(modes == mode)))
    labels = np.asarray([M.novelty_stratum(t) for t in novelty])
    for lab in M.novelty_labels():
        idx = np.flatnonzero(labels == lab)
        if len(idx):
            out.append(("novelty", lab, idx))
    return out


def _row(m: Method, method: str, mode: str, kind: str, label: str, idx: np.ndarray, keys: np.ndarray,
         counts: np.ndarray) -> dict[str, Any]:
    """The identity, stratum and candidate columns of one model_metrics row (metrics left empty)."""
    return {
        "model_id": m.model_id, "arch": m.arch, "method": method, "candidate_mode": mode,
        "stratum_kind": kind, "stratum": label, "n_spectra": int(len(idx)),
        "n_structures": int(len(set(keys[idx].tolist()))), "mean_candidates": float(counts[idx].mean()),
        "top1_tanimoto": None, "hit1_ci_low": None, "hit1_ci_high": None,
        "descriptor_auc": None, "descriptor_f1": None, "descriptor_auc_micro": None, "descriptor_f1_micro": None,
        "prior_lambda": None, "train_spectra_per_s": m.train_spectra_per_s, "train_seconds": m.train_seconds,
    }


def metric_rows(m: Method, method: str, mode: str, scores: list[np.ndarray], sm: ScoredMode,
                qs: QuerySet, novelty: np.ndarray, lam: float | None = None,
                desc: tuple[np.ndarray, np.ndarray] | None = None, bootstrap: int = 0,
                seed: int = 0) -> list[dict[str, Any]]:
    """One model_metrics row per stratum."""
    ranks = np.array([M.rank_of_truth(s, int(t)) for s, t in zip(scores, sm.truth)], np.int64)
    top1 = np.array([M.top1_tanimoto(s, int(t), tt) for s, t, tt in zip(scores, sm.truth, sm.tan_to_truth)])
    keys = np.asarray([r["inchikey14"] for r in qs.rows])
    out = []
    for kind, label, idx in strata(qs.rows, novelty):
        row = _row(m, method, mode, kind, label, idx, keys, sm.cands.counts)
        row.update(M.retrieval_summary(ranks[idx], top1[idx]), prior_lambda=lam)
        row["hit1_ci_low"], row["hit1_ci_high"] = M.bootstrap_interval(ranks[idx] <= 1, keys[idx], n=bootstrap,
                                                                       seed=seed)
        if desc is not None:
            y, p = desc[0][idx], desc[1][idx]
            row["descriptor_auc"], row["descriptor_auc_micro"] = M.descriptor_auc(y, p)
            row["descriptor_f1"], row["descriptor_f1_micro"] = M.descriptor_f1(y, p)
        out.append(row)
    return out


def random_expected_rows(mode: str, sm: ScoredMode, qs: QuerySet, novelty: np.ndarray) -> list[dict[str, Any]]:
    """Exact expected hit@k of a random ranking (k/n per list), per stratum."""
    ref = Method("reference:random_expected", "reference:random_expected", "reference", "random_expected", "random")
    keys = np.asarray([r["inchikey14"] for r in qs.rows])
    out = []
    for kind, label, idx in strata(qs.rows, novelty):
        row = _row(ref, ref.method, mode, kind, label, idx, keys, sm.cands.counts)
        row.update({f"hit{k}": M.expected_random_hit(sm.cands.counts[idx], k) for k in M.HIT_KS})
        out.append(row)
    return out


def mode_setup(catalog: Any, qs: QuerySet, mode: str, train_fps: np.ndarray, fp: FingerprintSettings,
               cache: dict[str, dict[str, Any]], settings: EvaluationSettings,
               record: dict[str, Any]) -> ScoredMode:
    """Candidates of one query set in one mode, fingerprinted; their counts go into ``record``."""
    cands = candidate_sets(catalog, qs.examples.select(list(QUERY_COLUMNS)), mode, ppm=settings.ppm)
    record[f"{mode}:{qs.name}"] = {
        "queries": len(qs), "candidates_total": int(cands.counts.sum()),
        "candidates_median": float(np.median(cands.counts)), "candidates_max": int(cands.counts.max()),
        "truth_added": cands.n_truth_added, "no_mass": cands.n_no_mass, "recentered_on_true_mass": cands.n_recentered}
    if cands.n_recentered:
        log.info("%s mode, %s: %d of %d windows centred on the true mass (precursor m/z more than %g ppm off, "
                 "or no adduct)", mode, qs.name, cands.n_recentered, len(qs), settings.ppm)
    return score_mode_setup(cands, train_fps, fp, cache)


def score_mode(mode: str, methods: list[Method], sets: dict[str, QuerySet], setups: dict[str, ScoredMode],
               settings: EvaluationSettings, rng: np.random.Generator, progress: Progress | None) -> list[dict[str, Any]]:
    """model_metrics rows of every method (and its +prior form) on the test candidates of one mode."""
    qs, sm = sets["test"], setups["test"]
    val_set, vsm = sets.get("validation"), setups.get("validation")
    novelty = np.array([sm.prior[sm.struct_index[sm.cands.offsets[q] + sm.truth[q]]] for q in range(len(qs))])
    priors_test = _priors(sm)
    boot = {"bootstrap": settings.bootstrap, "seed": settings.seed}
    rows: list[dict[str, Any]] = []
    for m in progress_bar(methods, progress, f"scoring ({mode})"):
        scores = method_scores(m, qs, sm, settings, rng)
        desc = (descriptor_targets(m.descriptor_names, qs.rows), qs.probs[m.key]) if m.kind == "descriptor" else None
        rows += metric_rows(m, m.method, mode, scores, sm, qs, novelty, desc=desc, **boot)
        if m.kind in ("descriptor", "analogue", "joint"):
            lam = 1.0
            if val_set is not None and vsm is not None:
                vscores = method_scores(m, val_set, vsm, settings, rng)
                lam = choose_lambda(vscores, _priors(vsm), [int(t) for t in vsm.truth], settings.lambda_grid)
            combined = [combine_with_prior(s, p, lam) for s, p in zip(scores, priors_test)]
            rows += metric_rows(m, f"{m.method}+prior", mode, combined, sm, qs, novelty, lam=lam, **boot)
    return rows + random_expected_rows(mode, sm, qs, novelty)


def score_modes(lake_root: Path, sets: dict[str, QuerySet], methods: list[Method], train_fps: np.ndarray,
                fp: FingerprintSettings, settings: EvaluationSettings, record: dict[str, Any],
                progress: Progress | None = None) -> list[dict[str, Any]]:
    """model_metrics rows of every method in every candidate mode (candidate counts go into ``record``)."""
    catalog = open_catalog(lake_root, settings.index_name)
    cache: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(settings.seed)
    try:
        for mode in settings.candidate_modes:
            setups = {name: mode_setup(catalog, qs, mode, train_fps, fp, cache, settings, record)
                      for name, qs in sets.items()}
            rows += score_mode(mode, methods, sets, setups, settings, rng, progress)
    finally:
        catalog.close()
    return rows
