"""Rankers: registered, versioned scorers of candidate lists, with a calibrated rank-1 confidence.

A fitted ranker lives in ``<lake>/models/rankers/<ranker_id>/``: ``settings.json`` (how it was made,
with the split and the features), ``weights.json`` (:class:`.fusion.LinearFusion` or
:class:`.fusion_net.NetFusion`, whichever ``RankerSettings.fusion`` chose),
``calibration.json`` (:class:`.calibration.SplitCalibrator`), ``metrics.json`` (test hit@1/5/20
overall and per novelty stratum beside the library prior, library+prior and random on the same
candidates; calibration on validation and test; the same on *known* test structures) and
``training_structures.json`` (the InChIKey-14 it was fitted on: validation, and training-split ones of
the known queries; never a test structure).

:func:`.ranker_fit.fit_ranker` fits the fusion on validation-split lake spectra (blind queries: precursor m/z, ion
mode and peaks; candidates from the structure index; library = training-split spectra: structures *novel*
to the library) plus a share (``known_fraction``) of *known* queries: training-split spectra whose
structure has other library spectra, searched leave-one-spectrum-out (:func:`.ranker_fit.known_queries`), so identity
evidence is learned as a study needs it. It is cross-fitted over 2 structure-disjoint folds so the
calibration sees out-of-fold scores. It is one
:class:`~speclake.lake.run.Run` of kind ``ranker`` (no lake lock: it writes only its own folder), with a
:class:`RankerReport` in the run record; ``settings.json`` also records the lake ``inputs`` it was fitted
on (:func:`lake_inputs`), so ``speclake annotate-prepare`` can tell an up-to-date ranker from a stale one.
Registered descriptor models are evidence as ``model:<id>`` (plain likelihood of the candidate's descriptors)
and, when ``RankerSettings.fingerprint_likelihood`` asks for it (off by default: measured no better), as
``fpll:<id>`` (CSI:FingerID-style: per-bit Platt calibration and reliability weights from validation spectra,
:mod:`.fingerprint_likelihood`); rankers fitted before ``fpll:`` existed load as they are.

:func:`load_ranker` gives the newest fitted ranker; on a lake without one, the **fallback**
``library+prior``: z-scored library analogue evidence + 1.0 x library prior
(:func:`speclake.training.scoring.combine_with_prior`). It is *uncalibrated*: its confidence is None.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.catalog import Lake
from speclake.training.split import SplitSettings

from .calibration import IsotonicCalibrator, SplitCalibrator, load_calibrator
from .evidence import FEATURES, EvidenceBuilder, LibraryReference
from .fingerprint_likelihood import FingerprintMode
from .fusion import LinearFusion, softmax
from .fusion_net import Fusion, load_fusion
from .model import Candidate, Query, Ranked

log = logging.getLogger(__name__)

RANKERS_DIR = Path("models") / "rankers"
FALLBACK = "library+prior"
#: The spectrum-free baseline: candidates ordered by the library prior alone (benchmarks compare against it).
PRIOR = "prior"
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
        50, ge=0, description="re-rank the top N of a linear first stage with MetFrag-style in-silico fragmentation "
        "evidence (serving.annotate.fragmenter; ~1.5 ms per candidate, ~75 ms per scan at 50). The default 50 is "
        "the most accurate measured ranker (`python -m benchmarks ranker`: it also lifts truths ranked 21-50 by "
        "stage 1 into the top 20); 0: off, faster annotation (an estimated 3x on 2 cores)")
    known_fraction: float = Field(
        0.25, ge=0, lt=1, description="share of the fusion's training queries that are *known* structures: "
        "training-split spectra whose structure has other library spectra, searched with their own spectrum left "
        "out, so identity evidence is learned as in a study where part of the compounds are in the library")
    n_bins: int = Field(10, ge=1)
    models: list[str] | None = Field(None, description="registered models used as evidence; None: every model "
                                     "of a supported architecture trained on `split`; []: none")
    fingerprint_likelihood: FingerprintMode = Field(
        "off", description="descriptor models' CSI:FingerID-style column fpll:<id> (per-bit Platt calibration and "
        "reliability weights from validation spectra, serving.annotate.fingerprint_likelihood) beside their plain "
        "likelihood model:<id> (add), instead of it (replace), or not at all (off: the default, as measured "
        "by `python -m benchmarks ranker` it did not beat model:<id>)")
    fusion: Literal["linear", "net", "auto"] = Field(
        "auto", description="how evidence is fused: a linear listwise score, a small listwise network that also "
        "weighs evidence by the query's context (serving.annotate.fusion_net), or whichever has the lower "
        "out-of-fold listwise loss on the validation lists (auto)")
    net_hidden: int = Field(16, ge=1, description="hidden units of the listwise network")
    seed: int = 0


class Ranker:
    """Scores candidate lists: ``rank(queries, candidates, hits) -> list[Ranked]``.

    ``hits``: library search results, mode (``identity`` / ``analogue``) -> per query list of
    :class:`speclake.serving.library.Hit`; None when there was no library search.
    """

    def __init__(self, name: str, evidence: EvidenceBuilder, fusion: Fusion | None = None,
                 calibrator: IsotonicCalibrator | SplitCalibrator | None = None,
                 metrics: dict[str, Any] | None = None,
                 rerank: "Rerank | None" = None, base: Any = None) -> None:
        self.name = name
        self.evidence = evidence
        self.fusion = fusion
        self.calibrator = calibrator
        self.metrics = metrics or {}
        self.rerank = rerank
        self.base = base or fallback_scores     # the scores without a fusion (library+prior, or prior alone)

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
        return self.base(X)

    def rank(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]],
             hits: Hits | None = None, top: int | None = None) -> list[Ranked]:
        """Each query's candidates best first (ties by InChIKey-14), their evidence in ``Candidate.features``;
        ``top``: keep only the best ``top`` of each list (the confidence still reads the whole list)."""
        out = []
        names = self.names
        for q, cands, X in zip(queries, candidates, self.matrices(queries, candidates, hits)):
            s = self.scores(X)
            order = np.lexsort((np.array([c.inchikey14 for c in cands], dtype=object).astype(str), -s)).tolist() \
                if len(cands) else []
            order = order[:top] if top is not None else order
            for i in order:
                cands[i].features.update(zip(names, X[i].tolist()))
            conf = None
            if self.calibrator is not None and len(cands):
                conf = float(self.calibrator([softmax(s)[order[0]]], [in_library(X[order[0]], names)])[0])
            out.append(Ranked(q, [cands[i] for i in order], [float(s[i]) for i in order], self.name, conf,
                              n_candidates=len(cands)))
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


def in_library(row: np.ndarray, names: Sequence[str]) -> bool:
    """Whether a candidate's evidence row says it is a library structure (prior 1)."""
    return bool(row[list(names).index("prior")] >= 1.0 - 1e-9)


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


def _builder(lake: str | os.PathLike[str], model_features: Sequence[str] = (),
             split: SplitSettings | None = None) -> EvidenceBuilder:
    """Evidence with every lake structure as library; ``model_features``: the ranker's ``model:<id>`` /
    ``fpll:<id>`` columns (``split``: the ranker's, whose validation spectra give the bit reliability)."""
    from .fingerprint_likelihood import scorers_for_features
    from .precursor import adduct_priors

    models = scorers_for_features(lake, list(model_features), split) if model_features else []
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
    if method == PRIOR:
        return Ranker(PRIOR, _builder(lake), base=prior_scores)
    if method == FALLBACK:
        return Ranker(FALLBACK, _builder(lake))
    d = rankers_root(lake) / method
    if not (d / "settings.json").is_file():
        names = [FALLBACK, PRIOR] + [r["ranker_id"] for r in fitted]
        raise ValueError(f"unknown ranker {method!r}; choose from {', '.join(names)}")
    fusion = load_fusion(json.loads((d / "weights.json").read_text()))
    rerank = None
    if (d / "stage1.json").is_file():
        stage1 = json.loads((d / "stage1.json").read_text())
        rerank = Rerank(LinearFusion.from_dict(stage1["fusion"]), int(stage1["top"]))
    features = fusion.features[:len(fusion.features) - len(rerank.names)] if rerank else fusion.features
    base, extra = tuple(features[:len(FEATURES)]), features[len(FEATURES):]
    if (base != FEATURES or not all(f.startswith(("model:", "fpll:")) for f in extra)
            or (rerank and tuple(fusion.features[len(features):]) != rerank.names)):
        raise ValueError(f"ranker {method} was fitted on features {fusion.features}, this code makes {FEATURES} "
                         f"(+ model:<id> / fpll:<id>, + the fragmenter's); fit it again")
    cal = load_calibrator(json.loads((d / "calibration.json").read_text()))
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    split = (json.loads((d / "settings.json").read_text()).get("settings") or {}).get("split")
    return Ranker(method, _builder(lake, extra, SplitSettings.model_validate(split) if split else None),
                  fusion, cal, metrics, rerank)


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
