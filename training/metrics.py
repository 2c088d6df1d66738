"""Evaluation metrics: retrieval (hit@k, Tanimoto of the top hit), descriptor AUC/F1, strata.

Ties are handled **pessimistically**: the true structure is placed *after* every other
candidate with the same score, so a constant scorer gets hit@1 = 0 (not 1/n) and no method
profits from ties. Candidates are deduplicated by InChIKey-14 before scoring, so a list holds
the truth once. :func:`expected_random_hit` gives the exact expectation k/n of a uniformly random
ranking for comparison.

Fingerprints are packed bit matrices (``uint64`` words, see :func:`pack_fingerprints`);
Tanimoto is computed with a vectorised popcount.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

#: Hit@k cut-offs reported everywhere.
HIT_KS: tuple[int, ...] = (1, 5, 20)
#: Upper edges of the novelty strata (the true structure's highest Tanimoto to the training structures).
NOVELTY_EDGES: tuple[float, ...] = (0.5, 0.7, 0.9)


# -- fingerprints and Tanimoto -------------------------------------------------------------------
def pack_fingerprints(on_bits: Iterable[Sequence[int] | None], n_bits: int) -> np.ndarray:
    """(n, ceil(n_bits/64)) uint64 matrix from lists of on-bit indices (None: an empty fingerprint)."""
    rows = list(on_bits)
    dense = np.zeros((len(rows), ((n_bits + 63) // 64) * 64), dtype=bool)
    for i, bits in enumerate(rows):
        if bits is not None and len(bits):
            idx = np.asarray(bits, dtype=np.int64)
            if idx.min() < 0 or idx.max() >= n_bits:
                raise ValueError(f"on-bit out of range [0, {n_bits}): {idx.min()}..{idx.max()}")
            dense[i, idx] = True
    packed = np.packbits(dense, axis=1, bitorder="little")
    return packed.view(np.uint64) if len(rows) else np.zeros((0, dense.shape[1] // 64), np.uint64)


#: Up to this many columns, :func:`tanimoto_matrix` counts intersections with popcounts instead of a matrix product.
SMALL_SIDE = 32


def tanimoto_matrix(a: np.ndarray, b: np.ndarray, *, rows: int = 4096, cols: int = 16384) -> np.ndarray:
    """(len(a), len(b)) float32 Tanimoto of packed fingerprints (two empty fingerprints: 0).

    Intersections are one float32 matrix product of the unpacked bits per block (exact: counts stay
    far below 2**24), several times faster than popcounts over broadcast bytes.
    """
    out = np.zeros((len(a), len(b)), np.float32)
    if len(a) == 0 or len(b) == 0:
        return out
    ca = np.bitwise_count(a).sum(axis=1).astype(np.float32)
    cb = np.bitwise_count(b).sum(axis=1).astype(np.float32)
    if len(b) <= SMALL_SIDE:   # a few references (e.g. a scan's library hits): popcounts beat unpacking ``a``
        inter = np.stack([np.bitwise_count(a & row[None, :]).sum(axis=1) for row in b], axis=1).astype(np.float32)
        union = ca[:, None] + cb[None, :] - inter
        return np.divide(inter, union, out=out, where=union > 0)
    for c0 in range(0, len(b), cols):
        bb = np.unpackbits(np.ascontiguousarray(b[c0:c0 + cols]).view(np.uint8), axis=1).astype(np.float32).T
        for r0 in range(0, len(a), rows):
            inter = np.unpackbits(np.ascontiguousarray(a[r0:r0 + rows]).view(np.uint8), axis=1).astype(np.float32) @ bb
            union = ca[r0:r0 + rows, None] + cb[None, c0:c0 + cols] - inter
            out[r0:r0 + rows, c0:c0 + cols] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return out


def max_tanimoto(a: np.ndarray, reference: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
    """Highest Tanimoto of each row of ``a`` to any row of ``reference`` (0 when the reference is empty)."""
    out = np.zeros(len(a), np.float32)
    if len(reference) == 0:
        return out
    for lo in range(0, len(a), chunk):
        out[lo:lo + chunk] = tanimoto_matrix(a[lo:lo + chunk], reference).max(axis=1)
    return out


# -- retrieval ---------------------------------------------------------------------------------
def pessimistic_order(scores: np.ndarray, truth: int) -> np.ndarray:
    """Candidate indices best first; ties broken by index, with the truth after every tied candidate."""
    s = np.asarray(scores, dtype=np.float64)
    if not 0 <= truth < len(s):
        raise ValueError(f"truth index {truth} outside a list of {len(s)} candidates")
    is_true = np.zeros(len(s), dtype=np.int8)
    is_true[truth] = 1
    s = np.where(np.isnan(s), -np.inf, s)
    return np.lexsort((np.arange(len(s)), is_true, -s))


def rank_of_truth(scores: np.ndarray, truth: int) -> int:
    """1-based rank of the true candidate: 1 + candidates scored higher or equal (pessimistic ties; NaN is worst)."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    if not 0 <= truth < len(s):
        raise ValueError(f"truth index {truth} outside a list of {len(s)} candidates")
    t = s[truth]
    return int(np.sum(s > t) + np.sum(s == t))  # s == t counts the truth itself: rank >= 1


def hit_at_k(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Share of queries whose truth is within the top ``k`` (NaN for no queries)."""
    r = np.asarray(ranks, dtype=np.int64)
    return float(np.mean(r <= k)) if len(r) else float("nan")


def expected_random_hit(n_candidates: Sequence[int] | np.ndarray, k: int) -> float:
    """Exact expected hit@k of a uniformly random ranking: mean of min(k, n) / n."""
    n = np.asarray(n_candidates, dtype=np.float64)
    if len(n) == 0:
        return float("nan")
    if (n < 1).any():
        raise ValueError("every candidate list must hold at least the true structure")
    return float(np.mean(np.minimum(k, n) / n))


def top1_tanimoto(scores: np.ndarray, truth: int, tanimoto_to_truth: np.ndarray) -> float:
    """Tanimoto to the truth of the first candidate in :func:`pessimistic_order`."""
    return float(np.asarray(tanimoto_to_truth)[pessimistic_order(scores, truth)[0]])


# -- descriptors -------------------------------------------------------------------------------
def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC of one binary vector (ties averaged, Mann-Whitney); NaN without both classes."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p), np.float64)
    sorted_p = np.asarray(p, dtype=np.float64)[order]
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def column_auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC of every column (ties averaged, Mann-Whitney); NaN for a column without both classes."""
    from scipy.stats import rankdata

    yy = np.asarray(y).astype(bool)
    pp = np.asarray(p, np.float64)
    if yy.shape != pp.shape or yy.ndim != 2:
        raise ValueError(f"targets {yy.shape} and probabilities {pp.shape} must be the same (n, d) shape")
    n_pos = yy.sum(axis=0).astype(np.float64)
    n_neg = len(yy) - n_pos
    if len(yy) == 0:
        return np.full(yy.shape[1], np.nan)
    ranks = rankdata(pp, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * yy).sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def descriptor_auc(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[float, float]:
    """(macro, micro) ROC AUC: macro over descriptors with both classes present; micro over all entries."""
    y, p = np.asarray(y_true), np.asarray(y_prob)
    if y.shape != p.shape:
        raise ValueError(f"targets {y.shape} and probabilities {p.shape} differ in shape")
    per = [_auc(y[:, j], p[:, j]) for j in range(y.shape[1])]
    per = [a for a in per if not np.isnan(a)]
    macro = float(np.mean(per)) if per else float("nan")
    return macro, _auc(y.ravel(), p.ravel())


def _f1(tp: float, fp: float, fn: float) -> float:
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan")


def descriptor_f1(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> tuple[float, float]:
    """(macro, micro) F1 at ``threshold``; macro over descriptors with both classes present in ``y_true``."""
    y = np.asarray(y_true).astype(bool)
    pred = np.asarray(y_prob) >= threshold
    if y.shape != pred.shape:
        raise ValueError(f"targets {y.shape} and probabilities {pred.shape} differ in shape")
    tp, fp, fn = (y & pred).sum(0), (~y & pred).sum(0), (y & ~pred).sum(0)
    both = (y.sum(0) > 0) & ((~y).sum(0) > 0)
    per = [_f1(tp[j], fp[j], fn[j]) for j in np.flatnonzero(both)]
    macro = float(np.mean(per)) if per else float("nan")
    return macro, _f1(float(tp.sum()), float(fp.sum()), float(fn.sum()))


# -- strata ------------------------------------------------------------------------------------
def novelty_stratum(max_tanimoto_to_train: float, edges: Sequence[float] = NOVELTY_EDGES) -> str:
    """Label of the novelty bin, e.g. ``<0.5``, ``0.5-0.7``, ``>=0.9``."""
    t = float(max_tanimoto_to_train)
    if t < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges[:-1], edges[1:]):
        if t < hi:
            return f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def novelty_labels(edges: Sequence[float] = NOVELTY_EDGES) -> list[str]:
    """All novelty labels in order (for plots and tables)."""
    return [f"<{edges[0]:g}"] + [f"{lo:g}-{hi:g}" for lo, hi in zip(edges[:-1], edges[1:])] + [f">={edges[-1]:g}"]


def bootstrap_interval(values: Sequence[float] | np.ndarray, groups: Sequence[str] | np.ndarray, *, n: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of ``values`` when whole groups (structures) are resampled.

    Spectra of one structure are not independent, so the structures are the units resampled.
    (NaN, NaN) with no values or ``n == 0``.
    """
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0 or n == 0:
        return float("nan"), float("nan")
    _, g = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    sums = np.bincount(g, weights=v)
    counts = np.bincount(g).astype(np.float64)
    pick = np.random.default_rng(seed).integers(0, len(sums), size=(n, len(sums)))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def retrieval_summary(ranks: Sequence[int], top1_tanimotos: Sequence[float]) -> dict[str, float]:
    """hit1/hit5/hit20 and mean top-1 Tanimoto of a set of queries."""
    t = np.asarray(top1_tanimotos, dtype=np.float64)
    out = {f"hit{k}": hit_at_k(ranks, k) for k in HIT_KS}
    out["top1_tanimoto"] = float(t.mean()) if len(t) else float("nan")
    return out
