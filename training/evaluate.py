"""The fair evaluation: every model, the classical baselines, library search and two spectrum-free
references, on the same structure-disjoint test spectra and the same candidate lists.

:func:`evaluate`:

1. examples from the lake (:func:`speclake.training.data.load_examples`), split by InChIKey-14;
   the test (and validation) spectra are a fixed, hash-ordered subset when capped;
2. candidate lists from the structure index catalog (:mod:`.candidates`), per candidate mode;
3. scores per method (:mod:`.scoring`): registered models, ``logreg`` / ``random_forest`` fitted
   here on the train split (:mod:`.baselines`), ``library_cosine`` (modified cosine to the
   training-library spectra, analogue scheme), ``random`` and the library ``prior``; every
   model-like method also as ``<method>+prior`` with lambda chosen on the validation split;
4. metrics (:mod:`.metrics`) overall, per ion mode and per novelty stratum, written atomically as a
   new version of the lake table ``model_metrics`` (:mod:`.tables`), a comparison table in the log
   and a PNG plot under ``<lake>/reports/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.catalog import Lake, PendingVersion, publish_part
from speclake.pipelines.features.descriptors import DescriptorSettings as FingerprintSettings
from speclake.pipelines.features.descriptors import compute_descriptors

from . import metrics as M
from .baselines import BASELINES, BaselineSettings, fit_baseline
from .candidates import CandidateSets, candidate_sets, ensure_index, open_catalog
from .encoding import BinSettings, DescriptorSettings, DescriptorSpace
from .scoring import (analogue_scores, choose_lambda, combine_with_prior, descriptor_log_likelihood,
                      descriptor_matrix, embedding_scores, random_scores, reliability_weights, top_hits)
from .split import SplitSettings
from .tables import MODEL_METRICS, register_training_tables

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"
DESCRIPTOR_ARCHS = ("arch1", "arch2", "arch2-flat", "arch3")
#: Columns of the examples the evaluation reads (models get the full rows).
QUERY_COLUMNS = ("spectrum_id", "inchikey", "inchikey14", "smiles", "formula", "monoisotopic_mass", "ionmode",
                 "precursor_mz", "adduct", "morgan_on", "maccs_on", "substructure_on", "chemont_classes")


class EvaluationSettings(BaseModel):
    """Settings of one evaluation run; saved with the ``model_metrics`` version and the run record."""

    model_config = ConfigDict(extra="forbid")

    split: SplitSettings = Field(default_factory=SplitSettings)
    ms_level: int = Field(2, ge=2)
    bins: BinSettings = Field(default_factory=BinSettings, description="Inputs of the classical baselines.")
    descriptors: DescriptorSettings = Field(
        default_factory=lambda: DescriptorSettings(families=("morgan", "maccs", "substructure")),
        description="Descriptors the classical baselines predict (chosen on training structures).")
    baselines: tuple[Literal["logreg", "random_forest"], ...] = BASELINES
    baseline: BaselineSettings = Field(default_factory=BaselineSettings)
    library: tuple[Literal["modified_cosine", "cosine", "entropy"], ...] = Field(
        ("modified_cosine",), description="Library searches to evaluate (analogue scheme): modified_cosine "
                                          "(method library_cosine), cosine (library_plain_cosine), entropy "
                                          "(library_entropy).")
    candidate_modes: tuple[Literal["formula", "mass"], ...] = ("formula",)
    ppm: float = Field(10.0, gt=0, description="Mass window of the 'mass' candidate mode.")
    index_name: str = "fingerprint"
    max_test: int | None = Field(None, ge=1, description="Cap on test spectra (a fixed hash-ordered subset).")
    max_validation: int | None = Field(500, ge=1, description="Cap on validation spectra (lambda, reliability).")
    max_baseline_train: int | None = Field(
        None, ge=1, description="Cap on training spectra the classical baselines are fitted on (a fixed hash-ordered "
                                "subset; None: all). Per-descriptor models over ~1,000 descriptors are slow at library scale.")
    clip: float = Field(1e-3, gt=0, lt=0.5, description="Predicted probabilities clipped to [clip, 1-clip].")
    reliability_weighting: bool = Field(True, description="Weight descriptors by 2*AUC-1 on validation.")
    library_top_k: int = Field(5, ge=1, description="Library hits whose structures score candidates (analogues).")
    library_tolerance: float = Field(0.1, gt=0, description="Peak matching tolerance (Da) of (modified) cosine.")
    entropy_tolerance: float = Field(0.02, gt=0, description="Peak matching tolerance (Da) of entropy similarity.")
    bootstrap: int = Field(1000, ge=0, description="Resamples (of test structures) for hit@1 intervals; 0: none.")
    lambda_grid: tuple[float, ...] = Field((0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), min_length=1,
                                           description="Prior weights tried on validation (1.0 without one).")
    seed: int = 0
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray of an index update.")
    prefilter_structures: bool = Field(
        True, description="Index only the lines of SMILES files that can be a candidate of the test/validation "
                          "spectra (same formula, or in a mass window): the same candidate lists as indexing the "
                          "whole file, at a fraction of the cost (training.prefilter).")


@dataclass
class QuerySet:
    """Spectra of one split with everything precomputed that does not depend on the candidates."""

    name: str
    examples: pa.Table                     # full example rows (models' input)
    rows: list[dict[str, Any]]             # QUERY_COLUMNS as dicts
    probs: dict[str, np.ndarray] = field(default_factory=dict)          # method key -> (n, n_desc)
    hits: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)  # key -> (sims, hit fps)
    spectrum_emb: dict[str, np.ndarray] = field(default_factory=dict)   # arch5 key -> (n, d)

    def __len__(self) -> int:
        return self.examples.num_rows


@dataclass
class Method:
    """One scored method: identity, how it scores, its training statistics."""

    key: str
    model_id: str
    arch: str
    method: str
    kind: str                               # descriptor | analogue | joint | random | prior
    predictor: Any = None
    descriptor_names: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None
    train_seconds: float | None = None
    train_spectra_per_s: float | None = None


def _hash_order(ids: Sequence[str], seed: int) -> np.ndarray:
    return np.argsort([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids], kind="stable")


def _take(table: pa.Table, cap: int | None, seed: int) -> pa.Table:
    """A fixed subset of at most ``cap`` rows (hash order of spectrum_id), then sorted by spectrum_id."""
    order = _hash_order(table.column("spectrum_id").to_pylist(), seed)
    if cap is not None:
        order = order[:cap]
    table = table.take(pa.array(np.sort(order), pa.int64()))
    return table


def load_split_examples(lake: Lake, settings: EvaluationSettings) -> dict[str, pa.Table]:
    """train / validation / test examples (with adduct) that have a precursor m/z, a structure and descriptors."""
    from speclake.lake import sql

    from .data import load_examples

    ex = load_examples(lake.root, settings.split, settings.ms_level)
    table = ex.table()
    con = sql.connect(lake.root, threads=2)
    try:
        con.register("_ids", table.select(["spectrum_id"]))
        adducts = con.sql("SELECT i.spectrum_id, s.adduct FROM _ids i JOIN spectra s USING (spectrum_id)"
                          ).to_arrow_table()
    finally:
        con.close()
    amap = dict(zip(adducts.column("spectrum_id").to_pylist(), adducts.column("adduct").to_pylist()))
    if "adduct" not in table.column_names:
        table = table.append_column("adduct", pa.array([amap.get(s) for s in table.column("spectrum_id").to_pylist()],
                                                       pa.string()))
    ok = pc.and_(pc.and_(pc.is_valid(table.column("precursor_mz")), pc.is_valid(table.column("morgan_on"))),
                 pc.is_valid(table.column("smiles")))
    dropped = table.num_rows - int(pc.sum(ok).as_py() or 0)
    if dropped:
        log.info("%d spectra without precursor m/z, structure or descriptors left out", dropped)
    table = table.filter(ok)
    out = {s: table.filter(pc.equal(table.column("split"), s)) for s in ("train", "validation", "test")}
    out["test"] = _take(out["test"], settings.max_test, settings.seed)
    out["validation"] = _take(out["validation"], settings.max_validation, settings.seed)
    if out["test"].num_rows == 0:
        raise ValueError(f"no test spectra in {lake.root} under split {settings.split.model_dump()}")
    if out["train"].num_rows == 0:
        raise ValueError(f"no training spectra in {lake.root}")
    return out


def fingerprint_settings(lake: Lake) -> FingerprintSettings:
    """Morgan settings of the lake's ``descriptors`` table (candidates are fingerprinted the same way)."""
    tv = lake.current("descriptors")
    conf = ((tv.settings or {}).get("features") or {}).get("descriptors") if tv else None
    return FingerprintSettings.model_validate(conf) if conf else FingerprintSettings()


#: Candidate lists at least this long are described in worker processes (RDKit holds the GIL).
PARALLEL_STRUCTURES = 20_000


def structure_rows(smiles: Sequence[str], fp: FingerprintSettings, *, processes: int | None = None
                   ) -> list[dict[str, Any]]:
    """Descriptor on-bits (morgan_on, maccs_on, substructure_on) of candidate SMILES (empty when unparsable);
    long lists in a pool of ``processes`` (default: all cores), in order."""
    procs = processes or (os.cpu_count() or 1)
    if len(smiles) >= PARALLEL_STRUCTURES and procs > 1:
        import multiprocessing as mp
        from functools import partial

        chunks = [list(smiles[i:i + 5000]) for i in range(0, len(smiles), 5000)]
        with mp.get_context("fork").Pool(procs) as pool:
            return [r for part in pool.imap(partial(structure_rows, fp=fp, processes=1), chunks) for r in part]
    out = []
    for s in smiles:
        d = compute_descriptors(s, fp)
        if hasattr(d, "morgan_on"):
            out.append({"morgan_on": d.morgan_on, "maccs_on": d.maccs_on, "substructure_on": d.substructure_on})
        else:
            out.append({"morgan_on": [], "maccs_on": [], "substructure_on": []})
    return out


# -- methods -------------------------------------------------------------------------------------
#: Where a registered model's training statistics may sit in its ``metrics`` dict.
_STAT_KEYS = {"train_spectra_per_s": ("train_spectra_per_s", "spectra_per_s"),
              "train_seconds": ("train_seconds", "seconds")}


def _stat(model: Any, name: str) -> float | None:
    """A training statistic of a loaded model: attribute, entry of its ``metrics`` dict, or (train_seconds)
    training spectra over spectra/s summed over the epoch history."""
    v = getattr(model, name, None)
    metrics = getattr(model, "metrics", None)
    if v is None and isinstance(metrics, dict):
        v = next((metrics[k] for k in _STAT_KEYS.get(name, (name,)) if metrics.get(k) is not None), None)
        hist = metrics.get("history") or []
        if v is None and name == "train_seconds" and hist:
            try:
                v = sum(h["n_train"] / h["spectra_per_s"] for h in hist if h.get("spectra_per_s"))
            except (KeyError, TypeError):
                v = None
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def neural_methods(lake: Lake, model_ids: Sequence[str] | None, split: SplitSettings) -> list[Method]:
    """Registered models to evaluate (all when ``model_ids`` is None); a model on another split is refused."""
    try:
        from . import registry
    except ImportError as exc:
        if model_ids:
            raise ValueError(f"cannot load models {list(model_ids)}: {exc}") from exc
        log.info("no model registry available (%s): evaluating baselines only", exc)
        return []
    explicit = model_ids is not None
    if model_ids is None:
        model_ids = [_model_id(m) for m in registry.list_models(lake.root)]
    out = []
    for mid in model_ids:
        model = registry.load_model(lake.root, mid)
        msplit = getattr(model, "split", None)
        if msplit is not None and SplitSettings.model_validate(
                msplit.model_dump() if hasattr(msplit, "model_dump") else msplit) != split:
            msg = f"model {mid} was trained on split {msplit}, evaluation uses {split.model_dump()}"
            if explicit:
                raise ValueError(msg + ": its test structures would differ")
            log.warning("%s: skipped", msg)
            continue
        try:
            out.append(model_method(model))
        except ValueError as exc:
            if explicit:
                raise
            log.warning("%s: skipped", exc)
    return out


def model_method(model: Any) -> Method:
    """A :class:`Method` for a predictor with the registry API (``model_id``, ``arch``, predict/embed methods)."""
    arch = str(model.arch)
    kind = "descriptor" if arch in DESCRIPTOR_ARCHS else "joint" if arch == "arch5" else "analogue"
    if arch not in DESCRIPTOR_ARCHS + ("arch4", "arch5"):
        raise ValueError(f"model {model.model_id}: cannot evaluate architecture {arch!r}")
    return Method(str(model.model_id), str(model.model_id), arch, "model", kind, model,
                  list(getattr(model, "descriptor_names", []) or []),
                  train_seconds=_stat(model, "train_seconds"), train_spectra_per_s=_stat(model, "train_spectra_per_s"))


def _model_id(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry["model_id"])
    return str(entry.model_id)


def classical_methods(train: pa.Table, settings: EvaluationSettings, progress: bool = False) -> list[Method]:
    """Fit the classical baselines on the training examples."""
    if not settings.baselines:
        return []
    train = _take(train, settings.max_baseline_train, settings.seed)
    rows = {}
    for r in train.select(["inchikey14", "morgan_on", "maccs_on", "substructure_on", "chemont_classes"]).to_pylist():
        rows.setdefault(r["inchikey14"], r)
    space = DescriptorSpace.fit(rows.values(), settings.descriptors)
    if len(space) == 0:
        log.warning("no descriptor frequent enough among %d training structures: no classical baselines", len(rows))
        return []
    targets = space.targets(train.select(["morgan_on", "maccs_on", "substructure_on", "chemont_classes"]).to_pylist(),
                            settings.descriptors.families)
    out = []
    for name in _progress(settings.baselines, progress, "fitting baselines"):
        model = fit_baseline(name, train, targets, space.names, settings.bins, settings.baseline)
        out.append(Method(model.model_id, model.model_id, "classical", name, "descriptor", model, space.names,
                          train_seconds=model.train_seconds, train_spectra_per_s=model.train_spectra_per_s))
    return out


def _progress(items: Any, show: bool, desc: str) -> Any:
    if not show:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


# -- per-query precomputation -------------------------------------------------------------------
def _peaks(row: dict[str, Any]) -> Any:
    from speclake.pipelines.features.similarity import Peaks

    return Peaks.of(row["mz"], row["intensities"], row["precursor_mz"])


#: Library search method per similarity: (method name, model_id).
LIBRARY_METHODS: dict[str, tuple[str, str]] = {
    "modified_cosine": ("library_cosine", "library:modified_cosine"),
    "cosine": ("library_plain_cosine", "library:cosine"),
    "entropy": ("library_entropy", "library:entropy"),
}


def library_hits(queries: pa.Table, library: pa.Table, library_fps: np.ndarray, *, k: int, tolerance: float,
                 similarity: str = "modified_cosine", progress: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: similarity of its top-``k`` same-ion-mode library spectra and their structures' fingerprints."""
    from speclake.pipelines.features import similarity as sim

    score = {"modified_cosine": sim.modified_cosine_to_panel, "cosine": sim.cosine_to_panel,
             "entropy": sim.entropy_to_panel}.get(similarity)
    if score is None:
        raise ValueError(f"unknown library similarity {similarity!r}; choose from {', '.join(LIBRARY_METHODS)}")
    build_panel = sim.build_panel

    lib_rows = library.select(["spectrum_id", "ionmode", "mz", "intensities", "precursor_mz"]).to_pylist()
    panels = {}
    for mode in sorted({r["ionmode"] for r in lib_rows}):
        idx = np.array([i for i, r in enumerate(lib_rows) if r["ionmode"] == mode], np.int64)
        panels[mode] = (idx, build_panel([lib_rows[i]["spectrum_id"] for i in idx], [_peaks(lib_rows[i]) for i in idx]))
    out = []
    q_rows = queries.select(["ionmode", "mz", "intensities", "precursor_mz"]).to_pylist()
    for row in _progress(q_rows, progress, "library search"):
        if row["ionmode"] not in panels:
            out.append((np.zeros(0), library_fps[:0]))
            continue
        idx, panel = panels[row["ionmode"]]
        sims = score(panel, _peaks(row), tolerance)
        top = top_hits(sims, k)
        out.append((sims[top], library_fps[idx[top]]))
    return out


def embedding_hits(q_emb: np.ndarray, q_modes: Sequence[str], lib_emb: np.ndarray, lib_modes: Sequence[str],
                   library_fps: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: cosine of its top-``k`` same-ion-mode library embeddings and their structures' fingerprints."""
    lib_modes_a = np.asarray(lib_modes)
    sims_all = np.asarray(q_emb, np.float64) @ np.asarray(lib_emb, np.float64).T
    out = []
    for i, mode in enumerate(q_modes):
        idx = np.flatnonzero(lib_modes_a == mode)
        top = top_hits(sims_all[i, idx], k)
        out.append((sims_all[i, idx[top]], library_fps[idx[top]]))
    return out


def prepare_queries(qs: QuerySet, methods: list[Method], library: pa.Table, library_fps: np.ndarray,
                    settings: EvaluationSettings, progress: bool) -> None:
    """Predictions, library hits and spectrum embeddings of one query set (candidate-independent)."""
    for m in methods:
        if m.kind == "descriptor":
            probs = np.asarray(m.predictor.predict_descriptors(qs.examples), np.float64)
            if probs.shape != (len(qs), len(m.descriptor_names)):
                raise ValueError(f"{m.model_id}: predicted {probs.shape}, expected "
                                 f"({len(qs)}, {len(m.descriptor_names)})")
            qs.probs[m.key] = probs
        elif m.kind == "analogue" and m.arch == "library":
            similarity = m.key.partition(":")[2]
            tol = settings.entropy_tolerance if similarity == "entropy" else settings.library_tolerance
            qs.hits[m.key] = library_hits(qs.examples, library, library_fps, k=settings.library_top_k,
                                          tolerance=tol, similarity=similarity, progress=progress)
        elif m.kind == "analogue":
            lib_emb = m.predictor.embed_spectra(library)
            q_emb = m.predictor.embed_spectra(qs.examples)
            qs.hits[m.key] = embedding_hits(q_emb, qs.examples.column("ionmode").to_pylist(), lib_emb,
                                            library.column("ionmode").to_pylist(), library_fps,
                                            settings.library_top_k)
        elif m.kind == "joint":
            qs.spectrum_emb[m.key] = np.asarray(m.predictor.embed_spectra(qs.examples), np.float64)


def descriptor_targets(names: Sequence[str], rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """0/1 targets of the true structures in a descriptor space."""
    return DescriptorSpace(names).targets(rows)


# -- candidate scoring ----------------------------------------------------------------------------
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


def metric_rows(m: Method, method: str, mode: str, scores: list[np.ndarray], sm: ScoredMode,
                qs: QuerySet, novelty: np.ndarray, lam: float | None = None,
                desc: tuple[np.ndarray, np.ndarray] | None = None, bootstrap: int = 0,
                seed: int = 0) -> list[dict[str, Any]]:
    """One model_metrics row per stratum."""
    ranks = np.array([M.rank_of_truth(s, int(t)) for s, t in zip(scores, sm.truth)], np.int64)
    top1 = np.array([M.top1_tanimoto(s, int(t), tt) for s, t, tt in zip(scores, sm.truth, sm.tan_to_truth)])
    counts = sm.cands.counts
    keys = np.asarray([r["inchikey14"] for r in qs.rows])
    out = []
    for kind, label, idx in strata(qs.rows, novelty):
        row: dict[str, Any] = {
            "model_id": m.model_id, "arch": m.arch, "method": method, "candidate_mode": mode,
            "stratum_kind": kind, "stratum": label, "n_spectra": int(len(idx)),
            "n_structures": int(len(set(keys[idx].tolist()))), "mean_candidates": float(counts[idx].mean()),
            **M.retrieval_summary(ranks[idx], top1[idx]),
            **dict(zip(("hit1_ci_low", "hit1_ci_high"),
                       M.bootstrap_interval(ranks[idx] <= 1, keys[idx], n=bootstrap, seed=seed))),
            "descriptor_auc": None, "descriptor_f1": None, "descriptor_auc_micro": None, "descriptor_f1_micro": None,
            "prior_lambda": lam, "train_spectra_per_s": m.train_spectra_per_s, "train_seconds": m.train_seconds,
        }
        if desc is not None:
            y, p = desc[0][idx], desc[1][idx]
            row["descriptor_auc"], row["descriptor_auc_micro"] = M.descriptor_auc(y, p)
            row["descriptor_f1"], row["descriptor_f1_micro"] = M.descriptor_f1(y, p)
        out.append(row)
    return out


def random_expected_rows(mode: str, sm: ScoredMode, qs: QuerySet, novelty: np.ndarray) -> list[dict[str, Any]]:
    """Exact expected hit@k of a random ranking (k/n per list), per stratum."""
    ref = Method("reference:random_expected", "reference:random_expected", "reference", "random_expected", "random")
    out = []
    for kind, label, idx in strata(qs.rows, novelty):
        counts = sm.cands.counts[idx]
        out.append({
            "model_id": ref.model_id, "arch": "reference", "method": "random_expected", "candidate_mode": mode,
            "stratum_kind": kind, "stratum": label, "n_spectra": int(len(idx)),
            "n_structures": int(len({qs.rows[i]["inchikey14"] for i in idx})),
            "mean_candidates": float(counts.mean()),
            **{f"hit{k}": M.expected_random_hit(counts, k) for k in M.HIT_KS}, "top1_tanimoto": None,
            "hit1_ci_low": None, "hit1_ci_high": None,
            "descriptor_auc": None, "descriptor_f1": None, "descriptor_auc_micro": None, "descriptor_f1_micro": None,
            "prior_lambda": None, "train_spectra_per_s": None, "train_seconds": None,
        })
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
               settings: EvaluationSettings, rng: np.random.Generator, progress: bool) -> list[dict[str, Any]]:
    """model_metrics rows of every method (and its +prior form) on the test candidates of one mode."""
    qs, sm = sets["test"], setups["test"]
    val_set, vsm = sets.get("validation"), setups.get("validation")
    novelty = np.array([sm.prior[sm.struct_index[sm.cands.offsets[q] + sm.truth[q]]] for q in range(len(qs))])
    priors_test = _priors(sm)
    boot = {"bootstrap": settings.bootstrap, "seed": settings.seed}
    rows: list[dict[str, Any]] = []
    for m in _progress(methods, progress, f"scoring ({mode})"):
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


# -- writing, reporting ---------------------------------------------------------------------------
def metrics_table(rows: list[dict[str, Any]], run_id: str, created_at: datetime) -> pa.Table:
    """Rows as a ``model_metrics`` Arrow table (NaN stored as null)."""
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    full = [{**{k: clean(v) for k, v in r.items()}, "evaluation_run_id": run_id, "created_at": created_at}
            for r in rows]
    return pa.Table.from_pylist(full, schema=MODEL_METRICS)


def write_metrics(lake: Lake, table: pa.Table, run_id: str, settings: dict[str, Any]) -> int:
    """Append ``table`` to ``model_metrics`` as a new version (one atomic commit); return the version."""
    with lake.lock():
        try:
            out = lake.staging(run_id) / "out-model_metrics"
            out.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, out / "part-00000.parquet", compression="zstd")
            part = publish_part(lake, "model_metrics", run_id, out)
            tv = lake.commit({"model_metrics": PendingVersion((part,), table.num_rows, settings)}, run_id=run_id)
        finally:
            lake.clean_staging(run_id)
    return tv["model_metrics"].version


def format_comparison(table: pa.Table) -> str:
    """Plain-text comparison of every method (overall stratum), one block per candidate mode."""
    rows = [r for r in table.to_pylist() if r["stratum_kind"] == "all"]
    lines = []

    def f(v: Any) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    for mode in sorted({r["candidate_mode"] for r in rows}):
        sub = [r for r in rows if r["candidate_mode"] == mode]
        if not sub:
            continue
        lines.append(f"candidates: {mode}  ({sub[0]['n_spectra']} test spectra, {sub[0]['n_structures']} structures, "
                     f"{sub[0]['mean_candidates']:.1f} candidates on average)")
        lines.append(f"  {'model_id':<32} {'method':<22} {'hit@1':>6} {'95% CI':>13} {'hit@5':>6} {'hit@20':>6} "
                     f"{'top1T':>6} {'dAUC':>6} {'dF1':>6}")
        for r in sorted(sub, key=lambda r: -(r["hit1"] or 0)):
            ci = (f"[{r['hit1_ci_low']:.2f}, {r['hit1_ci_high']:.2f}]" if r.get("hit1_ci_low") is not None
                  else "-")
            lines.append(f"  {r['model_id'][:32]:<32} {r['method'][:22]:<22} {f(r['hit1'])} {ci:>13} {f(r['hit5'])} "
                         f"{f(r['hit20'])} {f(r['top1_tanimoto'])} {f(r['descriptor_auc'])} {f(r['descriptor_f1'])}")
    return "\n".join(lines)


def plot_metrics(table: pa.Table, path: str | os.PathLike[str]) -> Path:
    """PNG: hit@1/5/20 per method (left) and hit@1 per novelty stratum (right), first candidate mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.to_pylist()
    mode = sorted({r["candidate_mode"] for r in rows})[0]
    overall = [r for r in rows if r["candidate_mode"] == mode and r["stratum_kind"] == "all"]
    overall.sort(key=lambda r: -(r["hit1"] or 0))
    labels = [r["method"] if r["arch"] in ("classical", "library", "reference")
              else f"{r['arch']}:{r['model_id'][-6:]}|{r['method']}" for r in overall]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(12, 0.6 * len(overall) + 9), 0.25 * len(overall) + 4.5),
                                   gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(overall))
    for i, k in enumerate(M.HIT_KS):
        ax1.bar(x + (i - 1) * 0.27, [r[f"hit{k}"] or 0 for r in overall], width=0.27, label=f"hit@{k}")
    ax1.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax1.set_ylim(0, 1)
    ax1.set_ylabel("share of test spectra")
    ax1.set_title(f"retrieval ({mode} candidates, {overall[0]['n_spectra'] if overall else 0} test spectra)")
    ax1.legend(fontsize=8)
    bins = M.novelty_labels()
    nov = [s for s in rows if s["candidate_mode"] == mode and s["stratum_kind"] == "novelty"]
    grid = np.full((len(overall), len(bins)), np.nan)
    n_bin = {s["stratum"]: s["n_spectra"] for s in nov}
    for i, r in enumerate(overall):
        for s in nov:
            if s["model_id"] == r["model_id"] and s["method"] == r["method"] and s["hit1"] is not None:
                grid[i, bins.index(s["stratum"])] = s["hit1"]
    ax2.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax2.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v < 0.6 else "black")
    ax2.set_xticks(range(len(bins)), [f"{b}\n(n={n_bin.get(b, 0)})" for b in bins], fontsize=8)
    ax2.set_yticks(range(len(overall)), labels, fontsize=7)
    ax2.set_xlabel("novelty: true structure's max Tanimoto to training structures")
    ax2.set_title("hit@1 by novelty stratum")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# -- the run --------------------------------------------------------------------------------------
def prepare_candidate_index(lake: Lake, structures: Sequence[str | os.PathLike[str]], test: pa.Table,
                            val: pa.Table, settings: EvaluationSettings) -> list[str | os.PathLike[str]]:
    """Make the structure index hold the lake compounds, the true structures and ``structures`` (prefiltered to
    the possible candidates of ``test`` and ``val`` unless disabled); return the files actually indexed."""
    required = sorted(set(test.column("inchikey14").to_pylist()) | set(val.column("inchikey14").to_pylist()))
    files = list(structures)
    if files and settings.prefilter_structures:
        from .prefilter import prefilter_structure_files

        files = list(prefilter_structure_files(files, [test, val], settings.ppm, lake.root / "models" / "_prefilter"))
    ensure_index(lake.root, files, index_name=settings.index_name, required_inchikeys=required,
                 num_cpus=settings.num_cpus)
    return files


def evaluate(
    lake_dir: str | os.PathLike[str],
    model_ids: Sequence[str] | None = None,
    structures: Sequence[str | os.PathLike[str]] = (),
    settings: EvaluationSettings | None = None,
    *,
    plot_path: str | os.PathLike[str] | None = None,
    progress: bool = False,
    extra_models: Sequence[Any] = (),
) -> pa.Table:
    """Evaluate registered models (``model_ids``, default all), baselines, library search and references.

    Returns this run's ``model_metrics`` rows (also appended to the lake table). ``structures``
    files are added to the structure index first. ``extra_models`` (objects with the
    :class:`~speclake.training.registry.LoadedModel` API) are scored like registered models.
    """
    from speclake.pipelines.ingest import new_run_id

    register_training_tables()
    settings = settings or EvaluationSettings()
    t0 = time.perf_counter()
    lake = Lake(lake_dir)
    run_id = new_run_id()
    data = load_split_examples(lake, settings)
    train, val, test = data["train"], data["validation"], data["test"]
    log.info("evaluation %s: %d train, %d validation, %d test spectra", run_id, train.num_rows, val.num_rows,
             test.num_rows)
    fp = fingerprint_settings(lake)
    train_struct = {}
    for r in train.select(["inchikey14", "morgan_on"]).to_pylist():
        train_struct.setdefault(r["inchikey14"], r["morgan_on"])
    train_fps = M.pack_fingerprints(list(train_struct.values()), fp.morgan_bits)
    library_fps = M.pack_fingerprints(train.column("morgan_on").to_pylist(), fp.morgan_bits)

    given = [str(s) for s in structures]
    structures = prepare_candidate_index(lake, structures, test, val, settings)

    methods = [model_method(m) for m in extra_models] + neural_methods(lake, model_ids, settings.split)
    methods += classical_methods(train, settings, progress)
    for similarity in settings.library:
        name, mid = LIBRARY_METHODS[similarity]
        methods.append(Method(f"library:{similarity}", mid, "library", name, "analogue"))
    references = [Method("reference:random", "reference:random", "reference", "random", "random"),
                  Method("reference:prior", "reference:prior", "reference", "prior", "prior")]

    sets = {name: QuerySet(name, tab, tab.select(list(QUERY_COLUMNS)).to_pylist())
            for name, tab in (("test", test), ("validation", val)) if tab.num_rows}
    for qs in sets.values():
        prepare_queries(qs, methods, train, library_fps, settings, progress)
    val_set = sets.get("validation")
    for m in methods:  # reliability weights from validation predictions
        if m.kind == "descriptor" and settings.reliability_weighting and val_set is not None:
            m.weights = reliability_weights(descriptor_targets(m.descriptor_names, val_set.rows), val_set.probs[m.key])

    catalog = open_catalog(lake.root, settings.index_name)
    cache: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    counts_record: dict[str, Any] = {}
    rng = np.random.default_rng(settings.seed)
    try:
        for mode in settings.candidate_modes:
            setups = {name: mode_setup(catalog, qs, mode, train_fps, fp, cache, settings, counts_record)
                      for name, qs in sets.items()}
            rows += score_mode(mode, methods + references, sets, setups, settings, rng, progress)
    finally:
        catalog.close()

    created = datetime.now(timezone.utc)
    table = metrics_table(rows, run_id, created)
    record = {"evaluation": settings.model_dump(mode="json"), "candidates": counts_record,
              "methods": [m.model_id for m in methods + references], "structures": given,
              "structures_indexed": [str(s) for s in structures]}
    version = write_metrics(lake, table, run_id, record)
    plot = Path(plot_path) if plot_path else lake.root / REPORTS_DIR / f"evaluation-{run_id}.png"
    plot_metrics(table, plot)
    seconds = time.perf_counter() - t0
    lake.record_run(run_id, {"kind": "evaluation", **record, "plot": str(plot), "model_metrics_version": version,
                             "seconds": round(seconds, 3)})
    log.info("evaluation %s done in %.1f s (model_metrics version %d, plot %s)\n%s", run_id, seconds, version, plot,
             format_comparison(table))
    return table


def run_plot_path(lake_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Where :func:`evaluate` saves the plot of a run when no path is given."""
    return Path(lake_dir) / REPORTS_DIR / f"evaluation-{run_id}.png"


def run_record(lake_dir: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    """The saved record (settings, candidate counts, plot path) of an evaluation run."""
    return json.loads((Path(lake_dir) / "_catalog" / "runs" / f"{run_id}.json").read_text())
