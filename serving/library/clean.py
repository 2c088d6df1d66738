"""Peak cleaning and entropy weighting of many spectra at once, for the library index and its queries.

Spectra travel as one flat peak list plus offsets (``offsets[i]:offsets[i+1]`` are spectrum i's peaks),
the layout of an Arrow list column; every step is a numpy pass over all peaks. The steps are Flash
entropy search's ``clean_spectrum`` (see :class:`~speclake.serving.library.settings.LibrarySettings`);
only centroiding runs a small loop, over the few spectra that have peaks closer than the merge distance.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from speclake.serving.library.settings import LibrarySettings

#: Reason codes of spectra the index cannot use.
NO_PRECURSOR = "no_precursor"
TOO_FEW_PEAKS = "too_few_peaks"


@dataclass(frozen=True)
class FlatSpectra:
    """Spectra as one flat peak list: ``offsets`` (n+1, int64), ``mz`` (float64), ``intensities`` (float64)."""

    offsets: np.ndarray
    mz: np.ndarray
    intensities: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def owner(self) -> np.ndarray:
        """Spectrum index of every peak."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.counts)

    def take(self, rows: np.ndarray) -> "FlatSpectra":
        """The spectra ``rows`` (in that order), vectorised."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.counts[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        pos = np.repeat(self.offsets[rows] - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
        return FlatSpectra(offsets, self.mz[pos], self.intensities[pos])


def offsets_of(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def group_max(values: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Maximum of ``values`` per group; ``owner`` must be sorted (groups contiguous). Empty groups: 0."""
    counts = np.bincount(owner, minlength=n)
    starts = np.cumsum(counts) - counts
    out = np.zeros(n, dtype=np.float64)
    nonempty = counts > 0
    if nonempty.any():
        out[nonempty] = np.maximum.reduceat(values, starts[nonempty])
    return out


def _centroid_one(mz: np.ndarray, intensities: np.ndarray, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge peaks within ``distance`` of a more intense one (Flash ``centroid_spectrum``), until none are left.

    Plain Python lists: spectra are short, and numpy's per-call cost dominates on slices of a few peaks.
    """
    m, it = mz.tolist(), intensities.tolist()
    while len(m) > 1 and min(b - a for a, b in zip(m, m[1:])) < distance:
        merged: list[tuple[float, float]] = []
        n = len(m)
        for idx in sorted(range(n), key=it.__getitem__, reverse=True):
            if it[idx] <= 0:
                continue
            centre = m[idx]
            left = idx
            while left > 0 and centre - m[left - 1] <= distance:
                left -= 1
            right = idx + 1
            while right < n and m[right] - centre <= distance:
                right += 1
            total = sum(it[left:right])
            merged.append((sum(a * b for a, b in zip(m[left:right], it[left:right])) / total, total))
            for k in range(left, right):
                it[k] = 0.0
        merged.sort()
        m, it = [x for x, _ in merged], [y for _, y in merged]
    return np.asarray(m, dtype=np.float64), np.asarray(it, dtype=np.float64)


def clean_spectra(spectra: FlatSpectra, precursor_mz: np.ndarray, settings: LibrarySettings,
                  ) -> tuple[FlatSpectra, np.ndarray]:
    """Clean every spectrum as Flash entropy search does; return the cleaned spectra (intensities summing
    to 1, m/z ascending) and each spectrum's reason code for being unusable ('' when usable).

    Invalid peaks (non-finite, m/z or intensity <= 0) are dropped here; queries are validated before.
    """
    n = len(spectra)
    precursor_mz = np.asarray(precursor_mz, dtype=np.float64)
    owner = spectra.owner()
    mz, it = spectra.mz.astype(np.float64, copy=False), spectra.intensities.astype(np.float64, copy=False)
    keep = np.isfinite(mz) & np.isfinite(it) & (mz > 0) & (it > 0)
    if settings.precursor_removal_da is not None:
        limit = precursor_mz - settings.precursor_removal_da
        lim = limit[owner]
        keep &= ~(np.isfinite(lim) & (lim > 0)) | (mz <= lim)
    owner, mz, it = owner[keep], mz[keep], it[keep]
    order = np.lexsort((mz, owner))
    owner, mz, it = owner[order], mz[order], it[order]

    # centroid: only spectra with two peaks closer than the merge distance
    close = (np.diff(mz) < settings.min_peak_distance_da) & (owner[1:] == owner[:-1])
    crowded = np.unique(owner[1:][close])
    if len(crowded):
        is_crowded = np.isin(owner, crowded)
        parts_o, parts_m, parts_i = [owner[~is_crowded]], [mz[~is_crowded]], [it[~is_crowded]]
        starts = np.searchsorted(owner, crowded, side="left")
        ends = np.searchsorted(owner, crowded, side="right")
        for s, a, b in zip(crowded.tolist(), starts.tolist(), ends.tolist()):
            cm, ci = _centroid_one(mz[a:b], it[a:b], settings.min_peak_distance_da)
            parts_o.append(np.full(len(cm), s, dtype=np.int64))
            parts_m.append(cm)
            parts_i.append(ci)
        owner, mz, it = np.concatenate(parts_o), np.concatenate(parts_m), np.concatenate(parts_i)
        order = np.lexsort((mz, owner))
        owner, mz, it = owner[order], mz[order], it[order]

    # noise
    if settings.noise_threshold > 0 and len(it):
        base = group_max(it, owner, n)
        keep = it >= settings.noise_threshold * base[owner]
        owner, mz, it = owner[keep], mz[keep], it[keep]

    # most intense peaks only
    if settings.max_peaks is not None and len(it):
        counts = np.bincount(owner, minlength=n)
        if counts.max() > settings.max_peaks:
            order = np.lexsort((-it, owner))
            rank = np.arange(len(order)) - (np.cumsum(counts) - counts)[owner[order]]
            keep = np.zeros(len(it), dtype=bool)
            keep[order[rank < settings.max_peaks]] = True
            owner, mz, it = owner[keep], mz[keep], it[keep]

    # sum 1
    sums = np.bincount(owner, weights=it, minlength=n)
    if len(it):
        it = it / sums[owner]
    counts = np.bincount(owner, minlength=n)
    reasons = np.full(n, "", dtype=object)
    reasons[counts < settings.min_peaks] = TOO_FEW_PEAKS
    reasons[~(np.isfinite(precursor_mz) & (precursor_mz > 0))] = NO_PRECURSOR
    return FlatSpectra(offsets_of(counts), mz, it), reasons


def entropy_weighted(spectra: FlatSpectra) -> np.ndarray:
    """Entropy-weighted intensities of cleaned spectra (Li et al. 2021, as Flash entropy search):
    a spectrum of entropy S < 3 has its intensities raised to 0.25 + 0.25 S and renormalised to sum 1."""
    n = len(spectra)
    owner = spectra.owner()
    p = spectra.intensities
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(p), 0.0)
    s = -np.bincount(owner, weights=plogp, minlength=n)
    weight = np.where(s < 3.0, 0.25 + 0.25 * s, 1.0)
    w = np.power(p, weight[owner])
    sums = np.bincount(owner, weights=w, minlength=n)
    return w / sums[owner] if len(w) else w


def validate_query(mz: object, intensities: object, precursor_mz: float | None, *, what: str = "query",
                   need_precursor: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """The query's peaks as float64 arrays; ValueError naming the problem for NaN, negative, empty or
    mismatched peaks and a missing precursor m/z."""
    try:
        mz_a = np.asarray(mz, dtype=np.float64)
        it_a = np.asarray(intensities, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: peaks are not numbers ({exc})") from None
    if mz_a.ndim != 1 or it_a.ndim != 1:
        raise ValueError(f"{what}: m/z and intensities must be 1-D arrays, got shapes {mz_a.shape} and {it_a.shape}")
    if len(mz_a) != len(it_a):
        raise ValueError(f"{what}: m/z and intensities differ in length ({len(mz_a)} vs {len(it_a)})")
    if len(mz_a) == 0:
        raise ValueError(f"{what}: no peaks (empty spectrum)")
    for name, arr in (("m/z", mz_a), ("intensities", it_a)):
        if not np.isfinite(arr).all():
            raise ValueError(f"{what}: {name} contain NaN or infinite values")
        if (arr < 0).any():
            raise ValueError(f"{what}: {name} contain negative values")
    if not (it_a > 0).any():
        raise ValueError(f"{what}: every intensity is zero")
    prec = float("nan") if precursor_mz is None else float(precursor_mz)
    if need_precursor and not (math.isfinite(prec) and prec > 0):
        raise ValueError(f"{what}: precursor m/z must be a positive finite number, got {precursor_mz!r}")
    return mz_a, it_a, prec
