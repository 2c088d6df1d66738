"""Calibrated confidence that rank 1 is right: isotonic regression of P(correct) on a rank-1 score (fitted
apart for library and non-library rank-1 structures, :class:`SplitCalibrator`), expected calibration error
(ECE), the reliability curve and COSMIC-style precision above thresholds.

The calibrator is stored as the isotonic step function's knots (JSON), applied by linear
interpolation, so a ranker never needs pickles to give a probability.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Thresholds at which the share of correct rank-1 hits is reported.
THRESHOLDS: tuple[float, ...] = (0.5, 0.8, 0.9)


@dataclass
class IsotonicCalibrator:
    """Monotone map score -> probability in [0, 1] (knots x ascending, y non-decreasing)."""

    x: np.ndarray
    y: np.ndarray
    n_fit: int = 0

    @classmethod
    def fit(cls, scores: Sequence[float], correct: Sequence[bool]) -> "IsotonicCalibrator":
        """Fit on (rank-1 score, rank 1 correct) pairs; ValueError with no pairs."""
        from sklearn.isotonic import IsotonicRegression

        s = np.asarray(scores, dtype=np.float64)
        c = np.asarray(correct, dtype=np.float64)
        if len(s) == 0 or len(s) != len(c):
            raise ValueError(f"calibration needs equal, non-empty scores and outcomes ({len(s)} vs {len(c)})")
        ok = np.isfinite(s)
        if not ok.any():
            raise ValueError("calibration needs at least one finite score")
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True).fit(s[ok], c[ok])
        return cls(np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64), int(ok.sum()))

    def __call__(self, scores: Sequence[float] | np.ndarray, in_library: Sequence[bool] | None = None) -> np.ndarray:
        """Probabilities (NaN score -> the lowest probability); ``in_library`` is ignored (one map for all)."""
        s = np.asarray(scores, dtype=np.float64)
        s = np.where(np.isnan(s), -np.inf, s)
        if len(self.x) == 1:
            return np.full(s.shape, float(self.y[0]))
        return np.clip(np.interp(s, self.x, self.y), 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "isotonic", "x": self.x.tolist(), "y": self.y.tolist(), "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "IsotonicCalibrator":
        if d.get("kind") != "isotonic":
            raise ValueError(f"unknown calibrator kind {d.get('kind')!r}; expected 'isotonic'")
        return cls(np.asarray(d["x"], np.float64), np.asarray(d["y"], np.float64), int(d.get("n_fit", 0)))


@dataclass
class SplitCalibrator:
    """Two isotonic maps: for scans whose rank-1 structure is a library structure (prior 1) and for the rest.

    Known compounds (a library structure at rank 1, usually backed by identity hits) and novel ones reach the
    same rank-1 probability with very different odds of being right; one pooled map is then under-confident
    for the first and over-confident for the second in proportion to the fitting mix (25 % known queries),
    whatever a study's own mix is. Fitted apart, each group's confidence holds whatever the mix. A group with
    fewer than ``min_group`` fitting lists uses the pooled map."""

    library: IsotonicCalibrator
    other: IsotonicCalibrator
    pooled: IsotonicCalibrator

    @classmethod
    def fit(cls, scores: Sequence[float], correct: Sequence[bool], in_library: Sequence[bool],
            min_group: int = 50) -> "SplitCalibrator":
        s, c, lib = (np.asarray(a) for a in (scores, correct, in_library))
        pooled = IsotonicCalibrator.fit(s, c)
        parts = [IsotonicCalibrator.fit(s[m], c[m]) if int(np.isfinite(s[m]).sum()) >= min_group else pooled
                 for m in (lib.astype(bool), ~lib.astype(bool))]
        return cls(parts[0], parts[1], pooled)

    def __call__(self, scores: Sequence[float] | np.ndarray, in_library: Sequence[bool] | None = None) -> np.ndarray:
        """Probabilities; without ``in_library`` the pooled map."""
        s = np.asarray(scores, dtype=np.float64)
        if in_library is None:
            return self.pooled(s)
        lib = np.asarray(in_library, dtype=bool)
        return np.where(lib, self.library(s), self.other(s))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "split", "library": self.library.to_dict(), "other": self.other.to_dict(),
                "pooled": self.pooled.to_dict()}


def load_calibrator(d: dict[str, Any]) -> IsotonicCalibrator | SplitCalibrator:
    """A calibrator from its JSON (``isotonic`` or ``split``)."""
    if d.get("kind") == "split":
        return SplitCalibrator(*(IsotonicCalibrator.from_dict(d[k]) for k in ("library", "other", "pooled")))
    return IsotonicCalibrator.from_dict(d)


def reliability_curve(probs: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins over [0, 1]: per non-empty bin, its edges, count, mean predicted probability and
    observed share correct (the last bin includes 1.0)."""
    p = np.asarray(probs, dtype=np.float64)
    c = np.asarray(correct, dtype=np.float64)
    if len(p) != len(c):
        raise ValueError(f"{len(p)} probabilities but {len(c)} outcomes")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    out = []
    for k in range(n_bins):
        m = b == k
        if m.any():
            out.append({"lo": k / n_bins, "hi": (k + 1) / n_bins, "n": int(m.sum()),
                        "mean_predicted": float(p[m].mean()), "observed": float(c[m].mean())})
    return out


def expected_calibration_error(probs: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> float:
    """sum over bins of (n_bin / n) * |mean predicted - observed| (NaN with no predictions)."""
    curve = reliability_curve(probs, correct, n_bins)
    n = sum(b["n"] for b in curve)
    if n == 0:
        return float("nan")
    return float(sum(b["n"] / n * abs(b["mean_predicted"] - b["observed"]) for b in curve))


def precision_above(probs: Sequence[float], correct: Sequence[bool],
                    thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, float]]:
    """Per threshold t: how many rank-1 hits have confidence >= t and what share of them is correct."""
    p = np.asarray(probs, dtype=np.float64)
    c = np.asarray(correct, dtype=bool)
    out = []
    for t in thresholds:
        m = p >= t
        out.append({"threshold": float(t), "n": int(m.sum()), "share_of_queries": float(m.mean()) if len(m) else
                    float("nan"), "precision": float(c[m].mean()) if m.any() else float("nan")})
    return out


def calibration_report(probs: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> dict[str, Any]:
    """ECE, reliability curve, precision above :data:`THRESHOLDS` and the base rate, as JSON-ready dict."""
    c = np.asarray(correct, dtype=np.float64)
    return {"n": int(len(c)), "accuracy": float(c.mean()) if len(c) else float("nan"),
            "ece": expected_calibration_error(probs, correct, n_bins),
            "reliability": reliability_curve(probs, correct, n_bins),
            "above": precision_above(probs, correct)}
