"""CSI:FingerID-style fingerprint likelihood of candidates with per-bit reliability (evidence ``fpll:<model_id>``).

CSI:FingerID (Dührkop et al. 2015, PNAS 112:12580) scores a candidate by the likelihood of its fingerprint
under the per-bit probabilities predicted from the spectrum, Platt-calibrated per bit, and uses each bit's
measured performance on held-out data (bits with too few examples of either class are left out). Here the
same for a registered descriptor model (arch1, arch2, arch2-flat); per descriptor ``j``, from the model's
predictions on the lake's *validation-split* spectra (blind inputs, as a study scan gives them) against the
descriptors of their true structures (computed from SMILES as a candidate's are):

* Platt recalibration ``p'_j = sigmoid(a_j logit(p_j) + b_j)`` with ``a_j >= 0`` (monotone), fitted on Platt's
  smoothed targets with a ridge towards the identity (``a = 1, b = 0``), so a bit seen rarely keeps the
  model's probability and an over-confident one is pulled towards its observed rate (:func:`fit_platt`);
* a reliability weight ``w_j = max(0, 2 AUC_j - 1)`` (as the evaluation's
  :func:`speclake.training.scoring.reliability_weights`): a bit the model gets wrong as often as right, or
  always wrong, weighs 0; 0 as well where the smaller class has fewer than ``min_class`` validation spectra
  (its reliability is unknown) and for descriptors a candidate structure does not yield (ChemOnt).

A candidate's score is ``sum_j w_j [y_j log p'_j + (1 - y_j) log(1 - p'_j)]``
(:func:`speclake.training.scoring.descriptor_log_likelihood`, ``y`` its descriptors). The test split is never
read: the statistics come from validation-split structures only (checked, and their InChIKey-14 kept in the
statistics). A ranker is fitted on validation spectra too, so the statistics are cross-fitted over
structure-disjoint folds: a validation spectrum scored as a query gets the statistics fitted without its
fold (:meth:`BitReliability.cross_fit`), as a study scan gets statistics that never saw it; otherwise the fusion
learns from in-sample calibrated scores (measured: fused hit@1 0.370 instead of 0.435). They are computed once
per model and validation set and cached beside the model as ``<lake>/models/<model_id>/bit_reliability-<key>.npz``;
the key hashes the split settings, the statistics' settings and the lake's ``spectra`` / ``compounds`` versions,
and its JSON is stored inside, so a stale file is never read. Without validation spectra the column is the
unweighted, uncalibrated likelihood (logged).

Measured (``python -m benchmarks ranker``, 2026-12-05, an arch2-flat model): alone it ranks worse than the plain
likelihood ``model:<id>`` and the fusion gains nothing from it, so rankers leave it off by default
(``RankerSettings.fingerprint_likelihood``); the figures are in :mod:`benchmarks.ranker_bench`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from speclake.training.metrics import column_auc

from .evidence import ModelScorer, model_scorers
from .model import Candidate, Query

log = logging.getLogger(__name__)

FEATURE_PREFIX = "fpll:"
#: Evidence columns of registered models: ``model:<id>`` (:class:`.evidence.ModelScorer`) and ``fpll:<id>``.
MODEL_PREFIXES = ("model:", FEATURE_PREFIX)
#: How a ranker fit uses descriptor models: both columns, the fingerprint likelihood instead of the plain
#: likelihood, or the plain likelihood only.
FingerprintMode = Literal["add", "replace", "off"]
#: Probabilities are clipped to [EPS, 1 - EPS] before the logit.
EPS = 1e-6
_VERSION = 1


class ReliabilitySettings(BaseModel):
    """How the per-bit statistics are computed (part of their cache key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_spectra: int | None = Field(20_000, ge=1, description="validation spectra read (a fixed hash subset)")
    min_class: int = Field(5, ge=1, description="bits whose smaller class has fewer validation spectra weigh 0")
    folds: int = Field(2, ge=2, description="structure-disjoint folds of the validation spectra: a validation "
                       "spectrum scored as a query (a ranker fit) gets the statistics of the other folds")
    l2: float = Field(1.0, gt=0, description="ridge of the Platt fit towards the identity (a = 1, b = 0)")
    iterations: int = Field(50, ge=1, description="Newton steps of the Platt fit")


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(z)


def fit_platt(logits: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iterations: int = 50,
              chunk: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per column ``j``: (a_j, b_j) of ``P(y = 1) = sigmoid(a_j x + b_j)`` on ``logits`` x (n, d), ``a_j >= 0``.

    Platt's targets ((n+ + 1) / (n+ + 2) for a positive, 1 / (n- + 2) for a negative) and a ridge ``l2`` on
    (a - 1, b); damped Newton steps, all columns at once (``chunk`` columns per block).
    """
    x_all = np.asarray(logits, np.float64)
    y_all = np.asarray(y).astype(bool)
    if x_all.shape != y_all.shape or x_all.ndim != 2:
        raise ValueError(f"logits {x_all.shape} and targets {y_all.shape} must be the same (n, d) shape")
    d = x_all.shape[1]
    a_out, b_out = np.ones(d), np.zeros(d)
    for lo in range(0, d, chunk):
        x, yy = x_all[:, lo:lo + chunk], y_all[:, lo:lo + chunk]
        n_pos = yy.sum(axis=0)
        n_neg = len(yy) - n_pos
        t = np.where(yy, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
        a, b = np.ones(x.shape[1]), np.zeros(x.shape[1])
        for _ in range(iterations):
            s = _sigmoid(a * x + b)
            r, v = s - t, s * (1.0 - s)
            ga, gb = (r * x).sum(axis=0) + l2 * (a - 1.0), r.sum(axis=0) + l2 * b
            haa, hab, hbb = (v * x * x).sum(axis=0) + l2, (v * x).sum(axis=0), v.sum(axis=0) + l2
            det = haa * hbb - hab * hab      # > 0: the ridge makes the Hessian positive definite
            da = np.clip((hbb * ga - hab * gb) / det, -2.0, 2.0)
            db = np.clip((haa * gb - hab * ga) / det, -2.0, 2.0)
            a, b = np.maximum(a - da, 0.0), b - db
            if max(np.abs(da).max(initial=0.0), np.abs(db).max(initial=0.0)) < 1e-8:
                break
        a_out[lo:lo + chunk], b_out[lo:lo + chunk] = a, b
    return a_out, b_out


@dataclass
class BitReliability:
    """Per-descriptor statistics of one model on validation spectra: Platt (a, b), weight, AUC, class counts."""

    names: list[str]            # the model's descriptor names, in its order
    a: np.ndarray
    b: np.ndarray
    weight: np.ndarray          # max(0, 2 AUC - 1); 0 without enough of both classes or for masked descriptors
    auc: np.ndarray             # NaN without both classes
    n_pos: np.ndarray
    n_neg: np.ndarray
    structures: list[str]       # InChIKey-14 of the validation structures the statistics come from
    key: dict[str, Any]         # what they were computed from (:func:`reliability_key`)
    # cross-fitting (:meth:`cross_fit`): each validation spectrum's fold, and per fold the (a, b, weight) fitted
    # without that fold's structures
    spectra: list[str] = field(default_factory=list)
    fold: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fold_a: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    fold_b: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    fold_weight: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def __post_init__(self) -> None:
        self._spectrum_fold = dict(zip(self.spectra, np.asarray(self.fold).tolist()))

    @classmethod
    def fit(cls, names: Sequence[str], y: np.ndarray, probs: np.ndarray, mask: np.ndarray | None = None, *,
            structures: Sequence[str] = (), settings: ReliabilitySettings = ReliabilitySettings(),
            key: dict[str, Any] | None = None) -> "BitReliability":
        """Statistics of predicted ``probs`` (n, d) against true 0/1 descriptors ``y`` (n, d); ``mask``: the
        descriptors a candidate structure yields (others weigh 0)."""
        y = np.asarray(y).astype(bool)
        probs = np.asarray(probs, np.float64)
        if y.shape != probs.shape or y.shape[1:] != (len(names),):
            raise ValueError(f"targets {y.shape} and probabilities {probs.shape} do not match {len(names)} "
                             f"descriptors")
        a, b = fit_platt(_logit(probs), y, l2=settings.l2, iterations=settings.iterations)
        auc = column_auc(y, probs)
        n_pos = y.sum(axis=0).astype(np.int64)
        n_neg = (len(y) - n_pos).astype(np.int64)
        weight = np.clip(2.0 * np.nan_to_num(auc, nan=0.5) - 1.0, 0.0, 1.0)
        weight[np.minimum(n_pos, n_neg) < settings.min_class] = 0.0
        if mask is not None:
            weight[~np.asarray(mask, bool)] = 0.0
        return cls(list(names), a, b, weight, auc, n_pos, n_neg, sorted(set(structures)), dict(key or {}))

    @classmethod
    def cross_fit(cls, names: Sequence[str], y: np.ndarray, probs: np.ndarray, mask: np.ndarray | None, *,
                  structures: Sequence[str], spectra: Sequence[str],
                  settings: ReliabilitySettings = ReliabilitySettings(),
                  key: dict[str, Any] | None = None) -> "BitReliability":
        """:meth:`fit` on every row, plus per structure-disjoint fold (a hash of the InChIKey-14) the fit on the
        other folds' rows: the statistics a validation spectrum gets when it is scored as a query, so a ranker
        fitted on validation spectra sees the column as a study scan will (out of sample)."""
        full = cls.fit(names, y, probs, mask, structures=structures, settings=settings, key=key)
        fold = np.array([int(hashlib.sha256(f"fpll:{k}".encode()).hexdigest()[:8], 16) % settings.folds
                         for k in structures], np.int64)
        y, probs = np.asarray(y), np.asarray(probs)
        parts = [cls.fit(names, y[fold != k], probs[fold != k], mask, settings=settings)
                 for k in range(settings.folds)]
        full.spectra, full.fold = list(spectra), fold
        full.fold_a, full.fold_b = np.stack([p.a for p in parts]), np.stack([p.b for p in parts])
        full.fold_weight = np.stack([p.weight for p in parts])
        full.__post_init__()
        return full

    def calibrate(self, probs: np.ndarray) -> np.ndarray:
        """Platt-recalibrated probabilities (rows of the model's descriptors)."""
        return _sigmoid(self.a * _logit(probs) + self.b)

    def for_queries(self, queries: Sequence[Query], probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities, weights), one row per query: the out-of-fold statistics for a lake
        validation spectrum they were computed from (``source_file`` ``lake``), the full ones otherwise."""
        probs = np.asarray(probs, np.float64)
        a = np.tile(self.a, (len(queries), 1))
        b = np.tile(self.b, (len(queries), 1))
        w = np.tile(self.weight, (len(queries), 1))
        for i, q in enumerate(queries):
            k = self._spectrum_fold.get(q.query_id) if q.source_file == "lake" else None
            if k is not None:
                a[i], b[i], w[i] = self.fold_a[k], self.fold_b[k], self.fold_weight[k]
        return _sigmoid(a * _logit(probs) + b), w

    def summary(self) -> dict[str, Any]:
        """Counts for logs and reports: descriptors, those weighted, the mean weight of those, spectra."""
        used = self.weight > 0
        return {"descriptors": len(self.names), "weighted": int(used.sum()),
                "mean_weight": float(self.weight[used].mean()) if used.any() else 0.0,
                "spectra": int(self.n_pos[0] + self.n_neg[0]) if len(self.names) else 0,
                "structures": len(self.structures)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the statistics as one .npz (a temporary file renamed into place)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, names=np.array(self.names, dtype=str), a=self.a, b=self.b, weight=self.weight, auc=self.auc,
                 n_pos=self.n_pos, n_neg=self.n_neg, structures=np.array(self.structures, dtype=str),
                 key=np.array(json.dumps(self.key, sort_keys=True)), spectra=np.array(self.spectra, dtype=str),
                 fold=self.fold, fold_a=self.fold_a, fold_b=self.fold_b, fold_weight=self.fold_weight)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "BitReliability":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["names"].tolist(), z["a"], z["b"], z["weight"], z["auc"], z["n_pos"], z["n_neg"],
                       z["structures"].tolist(), json.loads(str(z["key"])), z["spectra"].tolist(), z["fold"],
                       z["fold_a"], z["fold_b"], z["fold_weight"])


def reliability_key(lake: str | os.PathLike[str], model_id: str, split: Any,
                    settings: ReliabilitySettings = ReliabilitySettings()) -> dict[str, Any]:
    """What a model's statistics depend on: the model, the split, the settings, the lake's table versions."""
    from speclake.lake.catalog import Lake
    from speclake.training.split import SplitSettings

    lk = Lake(lake)
    versions = {t: (tv.version if (tv := lk.current(t)) is not None else None) for t in ("spectra", "compounds")}
    split = split if split is not None else SplitSettings()
    return {"version": _VERSION, "model_id": model_id, "split": split.model_dump(),
            "settings": settings.model_dump(), "tables": versions}


def cache_path(lake: str | os.PathLike[str], key: dict[str, Any]) -> Path:
    """``<lake>/models/<model_id>/bit_reliability-<hash of key>.npz``."""
    from speclake.training.registry import model_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return model_dir(lake, key["model_id"]) / f"bit_reliability-{digest}.npz"


def validation_reliability(lake: str | os.PathLike[str], scorer: ModelScorer, split: Any = None,
                           settings: ReliabilitySettings = ReliabilitySettings()) -> BitReliability | None:
    """The statistics of ``scorer``'s model on the lake's validation spectra (blind inputs, as
    :class:`.evidence.ModelScorer` feeds a study scan); None when the split has no validation spectra.

    Only structures that are *validation* under ``split`` and under the model's own split are read.
    """
    from speclake.training.scoring import descriptor_matrix
    from speclake.training.split import SplitSettings, assign_split

    from .fusion import lake_queries

    if scorer.kind != "descriptor":
        raise ValueError(f"model {scorer.model.model_id} ({scorer.model.arch}) predicts no descriptors")
    split = split if split is not None else SplitSettings()
    own = getattr(scorer.model, "split", None)
    splits = [split] + ([own] if own is not None else [])
    queries, truths = lake_queries(lake, "validation", split, settings.max_spectra, 0)
    keep = [i for i, t in enumerate(truths)
            if t["smiles"] and all(assign_split(t["inchikey14"], s) == "validation" for s in splits)]
    if not keep:
        log.warning("no validation spectra in %s for model %s: its fingerprint likelihood is unweighted and "
                    "uncalibrated", lake, scorer.model.model_id)
        return None
    queries, truths = [queries[i] for i in keep], [truths[i] for i in keep]
    probs = scorer.predict(queries)
    names = list(scorer.model.descriptor_names)
    y, mask = descriptor_matrix(scorer._structures([t["smiles"] for t in truths]), names)
    rel = BitReliability.cross_fit(names, y, probs, mask, structures=[t["inchikey14"] for t in truths],
                                   spectra=[q.query_id for q in queries], settings=settings,
                                   key=reliability_key(lake, scorer.model.model_id, split, settings))
    s = rel.summary()
    log.info("bit reliability of %s: %d validation spectra of %d structures; %d of %d descriptors weighted "
             "(mean weight %.2f)", scorer.model.model_id, s["spectra"], s["structures"], s["weighted"],
             s["descriptors"], s["mean_weight"])
    return rel


def load_reliability(lake: str | os.PathLike[str], scorer: ModelScorer, split: Any = None,
                     settings: ReliabilitySettings = ReliabilitySettings()) -> BitReliability | None:
    """The cached statistics of ``scorer``'s model for this lake state and split, computed (and cached
    beside the model) when missing or stale; None without validation spectra."""
    key = reliability_key(lake, scorer.model.model_id, split, settings)
    path = cache_path(lake, key)
    if path.is_file():
        try:
            rel = BitReliability.load(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("unreadable %s (%s): computing the bit reliability again", path, exc)
        else:
            if rel.key == key and rel.names == list(scorer.model.descriptor_names):
                return rel
            log.info("%s is stale: computing the bit reliability again", path)
    rel = validation_reliability(lake, scorer, split, settings)
    if rel is not None:
        try:
            rel.save(path)
        except OSError as exc:
            log.warning("could not cache the bit reliability in %s: %s", path, exc)
    return rel


class FingerprintScorer:
    """Evidence column ``fpll:<model_id>``: a candidate's descriptor log-likelihood under the model's
    Platt-recalibrated probabilities, weighted per descriptor by its reliability (see the module doc).

    Shares the predictions and the candidates' descriptors of ``base`` (the model's :class:`.evidence.ModelScorer`);
    ``reliability`` None: unweighted and uncalibrated (the plain ``model:<id>`` likelihood)."""

    def __init__(self, base: ModelScorer, reliability: BitReliability | None) -> None:
        if base.kind != "descriptor":
            raise ValueError(f"model {base.model.model_id} ({base.model.arch}) predicts no descriptors: no "
                             f"fingerprint likelihood")
        if reliability is not None and reliability.names != list(base.model.descriptor_names):
            raise ValueError(f"bit reliability of {reliability.key.get('model_id')} does not match the "
                             f"descriptors of model {base.model.model_id}")
        self.base = base
        self.reliability = reliability
        self.feature = f"{FEATURE_PREFIX}{base.model.model_id}"

    def scores(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]]) -> list[np.ndarray]:
        """One score per candidate of every query."""
        from speclake.training.scoring import descriptor_log_likelihood, descriptor_matrix

        if not queries:
            return []
        probs = self.base.predict(queries)
        weights = None
        if self.reliability is not None:
            probs, weights = self.reliability.for_queries(queries, probs)
        names = self.base.model.descriptor_names
        out = []
        for i, cands in enumerate(candidates):
            if not cands:
                out.append(np.zeros(0))
                continue
            mat, mask = descriptor_matrix(self.base._structures([c.smiles for c in cands]), names, sparse=True)
            out.append(descriptor_log_likelihood(probs[i], mat, mask=mask,
                                                 weights=None if weights is None else weights[i], clip=self.base.clip))
        return out


def with_fingerprint_likelihood(lake: str | os.PathLike[str], scorers: Sequence[Any], split: Any = None,
                                mode: FingerprintMode = "add",
                                settings: ReliabilitySettings = ReliabilitySettings()) -> list[Any]:
    """``scorers`` with each descriptor model's ``fpll:<id>`` column after its ``model:<id>`` (``add``) or in its
    place (``replace``); ``off``: unchanged."""
    if mode not in ("add", "replace", "off"):
        raise ValueError(f"fingerprint likelihood mode {mode!r}; choose from add, replace, off")
    out: list[Any] = []
    for s in scorers:
        if mode == "off" or getattr(s, "kind", None) != "descriptor":
            out.append(s)
            continue
        fp = FingerprintScorer(s, load_reliability(lake, s, split, settings))
        out.extend([s, fp] if mode == "add" else [fp])
    return out


def scorers_for_features(lake: str | os.PathLike[str], features: Sequence[str], split: Any = None,
                         settings: ReliabilitySettings = ReliabilitySettings()) -> list[Any]:
    """The scorers of a fitted ranker's model columns (``model:<id>`` / ``fpll:<id>``), in their order; each
    model is loaded once."""
    bases: dict[str, ModelScorer] = {}
    out: list[Any] = []
    for f in features:
        if not f.startswith(MODEL_PREFIXES):
            raise ValueError(f"not a model evidence column: {f!r} (expected {' or '.join(MODEL_PREFIXES)}<id>)")
        prefix, _, mid = f.partition(":")
        if mid not in bases:
            bases[mid] = model_scorers(lake, [mid])[0]
        base = bases[mid]
        out.append(base if prefix == "model" else
                   FingerprintScorer(base, load_reliability(lake, base, split, settings)))
    return out
