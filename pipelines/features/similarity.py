"""Spectral similarity of one spectrum to a whole panel of reference spectra, vectorised.

* **cosine**: greedy peak matching within ``tolerance`` (Da), highest intensity
  product first, as matchms ``CosineGreedy`` (same pair order, same ties);
* **modified cosine**: peaks also match after shifting by the precursor m/z
  difference, as matchms ``ModifiedCosineGreedy`` (a shifted match is a match of
  neutral losses, so it is found by searching the panel's losses);
* **spectral entropy similarity** (Li et al., Nat. Methods 2021): intensities
  normalised to sum 1 (``weighted``: raised to ``0.25 + 0.25 S`` first when the
  spectrum's entropy ``S < 3``), then
  ``sum over matched pairs of (a+b) ln(a+b) - a ln a - b ln b`` divided by ``ln 4``;
  peaks are matched greedily like the cosine (largest product first).

All peak pairs of a query against the panel come from two ``searchsorted``
calls; references whose pairs share no peak (the usual case) are scored by one
``bincount``, only references with competing pairs run the greedy loop.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_LN4 = math.log(4.0)
#: Search window widening so that the exact matchms comparison decides boundary cases.
_EPS = 1e-9


@dataclass(frozen=True)
class Peaks:
    """One spectrum: m/z ascending (float64), intensities (float64), precursor m/z (nan if unknown)."""

    mz: np.ndarray
    intensities: np.ndarray
    precursor_mz: float = float("nan")

    @staticmethod
    def of(mz: "np.ndarray | list[float]", intensities: "np.ndarray | list[float]",
           precursor_mz: float | None = None) -> "Peaks":
        """Peaks sorted by m/z, as float64 arrays."""
        mz_a = np.asarray(mz, dtype=np.float64)
        it_a = np.asarray(intensities, dtype=np.float64)
        if mz_a.shape != it_a.shape:
            raise ValueError(f"m/z and intensities differ in length: {mz_a.shape} vs {it_a.shape}")
        order = np.argsort(mz_a, kind="stable")
        return Peaks(mz_a[order], it_a[order], float("nan") if precursor_mz is None else float(precursor_mz))


def entropy(p: np.ndarray) -> float:
    """Shannon entropy (nats) of intensities normalised to sum 1."""
    p = p[p > 0]
    if not len(p):
        return 0.0
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def entropy_weights(intensities: np.ndarray, weighted: bool) -> np.ndarray:
    """Intensities normalised to sum 1, entropy-weighted (Li et al. 2021) when ``weighted``."""
    total = intensities.sum()
    if total <= 0:
        return np.zeros_like(intensities)
    p = intensities / total
    if weighted:
        s = entropy(p)
        if s < 3.0:
            p = np.power(p, 0.25 + 0.25 * s)
            p = p / p.sum()
    return p


def _xlogx(x: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    pos = x > 0
    out[pos] = x[pos] * np.log(x[pos])
    return out


def entropy_pair_gain(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Contribution of matched intensities a, b (each spectrum summing to 1) to the entropy similarity."""
    return (_xlogx(a + b) - _xlogx(a) - _xlogx(b)) / _LN4


@dataclass(frozen=True)
class Panel:
    """Reference spectra concatenated and sorted for vectorised matching (build with :func:`build_panel`)."""

    ids: tuple[str, ...]
    precursor_mz: np.ndarray      # (K,)
    cos_norm: np.ndarray          # (K,) sqrt(sum w^2) with w = mz^mz_power * int^intensity_power
    # all panel peaks sorted by m/z
    mz: np.ndarray
    ref: np.ndarray               # reference index of each peak
    peak: np.ndarray              # index of the peak within its reference (m/z order)
    weight: np.ndarray            # cosine weight
    ent: np.ndarray               # entropy intensity (sum 1 per reference)
    # all panel peaks sorted by neutral loss (precursor - m/z)
    loss: np.ndarray
    loss_pos: np.ndarray          # index into the m/z-sorted arrays above
    mz_power: float = 0.0
    intensity_power: float = 1.0
    entropy_weighted: bool = True

    def __len__(self) -> int:
        return len(self.ids)


def build_panel(ids: list[str], spectra: list[Peaks], *, mz_power: float = 0.0, intensity_power: float = 1.0,
                entropy_weighted: bool = True) -> Panel:
    """Concatenate reference spectra into a :class:`Panel`."""
    if len(ids) != len(spectra):
        raise ValueError(f"{len(ids)} ids for {len(spectra)} spectra")
    mzs, refs, peaks, ws, ents, norms, precs = [], [], [], [], [], [], []
    for k, s in enumerate(spectra):
        w = np.power(s.mz, mz_power) * np.power(s.intensities, intensity_power)
        mzs.append(s.mz)
        refs.append(np.full(len(s.mz), k, dtype=np.int64))
        peaks.append(np.arange(len(s.mz), dtype=np.int64))
        ws.append(w)
        ents.append(entropy_weights(s.intensities, entropy_weighted))
        norms.append(math.sqrt(float(np.sum(w * w))))
        precs.append(s.precursor_mz)
    if spectra:
        mz = np.concatenate(mzs)
        order = np.argsort(mz, kind="stable")
        ref, peak = np.concatenate(refs)[order], np.concatenate(peaks)[order]
        prec = np.asarray(precs, dtype=np.float64)
        loss = prec[ref] - mz[order]
        lorder = np.argsort(loss, kind="stable")
        return Panel(tuple(ids), prec, np.asarray(norms), mz[order], ref, peak, np.concatenate(ws)[order],
                     np.concatenate(ents)[order], loss[lorder], lorder, mz_power, intensity_power, entropy_weighted)
    empty_f, empty_i = np.zeros(0), np.zeros(0, dtype=np.int64)
    return Panel((), empty_f, empty_f, empty_f, empty_i, empty_i, empty_f, empty_f, empty_f, empty_i,
                 mz_power, intensity_power, entropy_weighted)


def _window(sorted_values: np.ndarray, centers: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """(query index, sorted-array index) of every sorted value within tolerance (+eps) of a center."""
    lo = np.searchsorted(sorted_values, centers - tolerance - _EPS, side="left")
    hi = np.searchsorted(sorted_values, centers + tolerance + _EPS, side="right")
    return expand_ranges(lo, hi)


def expand_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, position) for every position in ``[lo[row], hi[row])``, vectorised (inverted-index lookups)."""
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(len(lo), dtype=np.int64), counts)
    starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
    return rows, starts + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class _Pairs:
    ref: np.ndarray
    rpeak: np.ndarray   # peak index within the reference
    qpeak: np.ndarray   # peak index within the query
    pos: np.ndarray     # index into the panel's m/z-sorted arrays
    shifted: np.ndarray  # bool: found by the precursor shift


def _direct_pairs(panel: Panel, query: Peaks, tolerance: float) -> _Pairs:
    q, pos = _window(panel.mz, query.mz, tolerance)
    r_mz, q_mz = panel.mz[pos], query.mz[q]
    ok = (q_mz >= r_mz - tolerance) & (q_mz <= r_mz + tolerance)   # matchms: r - tol <= q + 0 <= r + tol
    q, pos = q[ok], pos[ok]
    return _Pairs(panel.ref[pos], panel.peak[pos], q, pos, np.zeros(len(q), dtype=bool))


def _shifted_pairs(panel: Panel, query: Peaks, tolerance: float) -> _Pairs:
    q_loss = query.precursor_mz - query.mz
    q, lpos = _window(panel.loss, q_loss, tolerance)
    pos = panel.loss_pos[lpos]
    ref = panel.ref[pos]
    shift = panel.precursor_mz[ref] - query.precursor_mz
    r_mz, q_mz = panel.mz[pos], query.mz[q] + shift
    # matchms: shifted pairs only where |shift| > tolerance (else plain cosine)
    ok = (q_mz >= r_mz - tolerance) & (q_mz <= r_mz + tolerance) & (np.abs(shift) > tolerance)
    q, pos = q[ok], pos[ok]
    return _Pairs(panel.ref[pos], panel.peak[pos], q, pos, np.ones(len(q), dtype=bool))


def _concat(a: _Pairs, b: _Pairs) -> _Pairs:
    return _Pairs(*(np.concatenate([x, y]) for x, y in zip(
        (a.ref, a.rpeak, a.qpeak, a.pos, a.shifted), (b.ref, b.rpeak, b.qpeak, b.pos, b.shifted))))


def _greedy_sum(pairs: _Pairs, values: np.ndarray, n_refs: int) -> np.ndarray:
    """Sum of greedily selected pair values per reference, as matchms ``score_best_matches``.

    Pairs are ordered as matchms builds them (direct then shifted, each by
    reference peak then query peak) and selected by value descending with
    matchms' tie order (reversed stable sort).
    """
    out = np.zeros(n_refs, dtype=np.float64)
    if not len(values):
        return out
    n_q = int(pairs.qpeak.max()) + 1
    n_r = int(pairs.rpeak.max()) + 1
    key_r = pairs.ref * n_r + pairs.rpeak
    key_q = pairs.ref * n_q + pairs.qpeak
    _, inv_r, cnt_r = np.unique(key_r, return_inverse=True, return_counts=True)
    _, inv_q, cnt_q = np.unique(key_q, return_inverse=True, return_counts=True)
    shared = (cnt_r[inv_r] > 1) | (cnt_q[inv_q] > 1)
    conflicted = np.zeros(n_refs, dtype=bool)
    conflicted[pairs.ref[shared]] = True
    clean = ~conflicted[pairs.ref]
    out += np.bincount(pairs.ref[clean], weights=values[clean], minlength=n_refs)
    # References with shared peaks: one greedy pass over all their pairs, grouped by reference.
    # Within a reference, matchms' order is value descending, ties in reverse (shifted, ref peak,
    # query peak) order (a reversed stable ascending sort); one lexsort gives that for every reference.
    idx = np.flatnonzero(~clean)
    if len(idx):
        order = np.lexsort((-pairs.qpeak[idx], -pairs.rpeak[idx], -pairs.shifted[idx].astype(np.int8),
                            -values[idx], pairs.ref[idx]))
        idx = idx[order]
        used_r: set[int] = set()
        used_q: set[int] = set()
        for i, kr, kq in zip(idx.tolist(), key_r[idx].tolist(), key_q[idx].tolist()):
            if kr in used_r or kq in used_q:
                continue
            used_r.add(kr)
            used_q.add(kq)
            out[pairs.ref[i]] += values[i]
    return out


def _cosine_from_pairs(panel: Panel, query: Peaks, pairs: _Pairs) -> np.ndarray:
    qw = np.power(query.mz, panel.mz_power) * np.power(query.intensities, panel.intensity_power)
    q_norm = math.sqrt(float(np.sum(qw * qw)))
    values = panel.weight[pairs.pos] * qw[pairs.qpeak]
    sums = _greedy_sum(pairs, values, len(panel))
    denom = panel.cos_norm * q_norm
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, sums / denom, 0.0)


def cosine_to_panel(panel: Panel, query: Peaks, tolerance: float = 0.1) -> np.ndarray:
    """Greedy cosine of ``query`` to every panel spectrum (matchms CosineGreedy(reference=panel, query))."""
    return _cosine_from_pairs(panel, query, _direct_pairs(panel, query, tolerance))


def modified_cosine_to_panel(panel: Panel, query: Peaks, tolerance: float = 0.1) -> np.ndarray:
    """Greedy modified cosine of ``query`` to every panel spectrum (matchms ModifiedCosineGreedy).

    Raises ValueError when the query has no precursor m/z; panel spectra without
    one are scored by plain cosine only.
    """
    if not math.isfinite(query.precursor_mz):
        raise ValueError("modified cosine needs the query's precursor m/z")
    pairs = _concat(_direct_pairs(panel, query, tolerance), _shifted_pairs(panel, query, tolerance))
    return _cosine_from_pairs(panel, query, pairs)


def entropy_to_panel(panel: Panel, query: Peaks, tolerance: float = 0.02) -> np.ndarray:
    """Spectral entropy similarity of ``query`` to every panel spectrum (weighted as the panel was built)."""
    pairs = _direct_pairs(panel, query, tolerance)
    qp = entropy_weights(query.intensities, panel.entropy_weighted)
    values = entropy_pair_gain(panel.ent[pairs.pos], qp[pairs.qpeak])
    return np.clip(_greedy_sum(pairs, values, len(panel)), 0.0, 1.0)


def cosine(a: Peaks, b: Peaks, tolerance: float = 0.1) -> float:
    """Greedy cosine of two spectra (a = reference, b = query)."""
    return float(cosine_to_panel(build_panel(["a"], [a]), b, tolerance)[0])


def modified_cosine(a: Peaks, b: Peaks, tolerance: float = 0.1) -> float:
    """Greedy modified cosine of two spectra (a = reference, b = query)."""
    return float(modified_cosine_to_panel(build_panel(["a"], [a]), b, tolerance)[0])


def entropy_similarity(a: Peaks, b: Peaks, tolerance: float = 0.02, *, weighted: bool = True) -> float:
    """Spectral entropy similarity of two spectra (Li et al. 2021), weighted or not."""
    return float(entropy_to_panel(build_panel(["a"], [a], entropy_weighted=weighted), b, tolerance)[0])
