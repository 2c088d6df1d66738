"""Peak-list cleaning as small named steps, and the cleaners that compose them.

Each step takes ``(mz, intensities)`` float arrays and returns new arrays (never
changing its inputs): :func:`remove_invalid_mz`, :func:`remove_invalid_intensities`,
:func:`sort_by_mz`, :func:`merge_close_peaks`, :func:`remove_peaks_above`,
:func:`scale_to_max`, :func:`select_by_intensity`, :func:`select_top_peaks`; plus the
check :func:`is_unit_resolution`. The cleaners built from them:

- :func:`clean_peaks` (ingest): m/z stays float64, intensities become float32
  (scaled to a base peak of 1.0, and as recorded for the kept peaks); every change
  is described in ``CleanedPeaks.notes`` so the lake says what normalization did.
- ``features.prepare.clean_peaks`` (feature jobs) and ``features.fragtree.clean_tree_peaks``
  (trees) compose the same steps with their own thresholds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from speclake.pipelines.normalize.errors import InvalidValueError, NoPeaksError

log = logging.getLogger(__name__)

Peaks = tuple[np.ndarray, np.ndarray]


class PeakSettings(Protocol):
    """The tolerances :func:`clean_peaks` reads (a :class:`NormalizeSettings` has them)."""

    merge_tolerance_da: float
    precursor_tolerance_da: float
    precursor_tolerance_ppm: float
    remove_peaks_above_precursor: bool


@dataclass(frozen=True, eq=False)
class CleanedPeaks:
    """A cleaned peak list: m/z ascending (float64), intensities max 1 (float32), raw intensities (float32)."""

    mz: np.ndarray
    intensities: np.ndarray
    intensities_raw: np.ndarray
    notes: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.mz.size)


# --------------------------------------------------------------------------- steps

def remove_invalid_mz(mz: np.ndarray, intensities: np.ndarray, *, positive: bool = True) -> Peaks:
    """Drop peaks whose m/z is NaN/inf (and, when ``positive``, zero or negative)."""
    keep = np.isfinite(mz) & (mz > 0) if positive else np.isfinite(mz)
    return mz[keep], intensities[keep]


def remove_invalid_intensities(mz: np.ndarray, intensities: np.ndarray) -> Peaks:
    """Drop peaks whose intensity is NaN/inf, zero or negative."""
    keep = np.isfinite(intensities) & (intensities > 0)
    return mz[keep], intensities[keep]


def is_sorted_by_mz(mz: np.ndarray) -> bool:
    """True when ``mz`` never decreases."""
    return not (mz.size > 1 and bool(np.any(np.diff(mz) < 0)))


def sort_by_mz(mz: np.ndarray, intensities: np.ndarray) -> Peaks:
    """Peaks in ascending m/z (stable: equal m/z keep their order)."""
    order = np.argsort(mz, kind="stable")
    return mz[order], intensities[order]


def merge_close_peaks(mz: np.ndarray, intensities: np.ndarray, tolerance: float) -> Peaks:
    """Merge runs of m/z-sorted peaks whose neighbours are within ``tolerance`` Da into one peak of
    summed intensity at the intensity-weighted m/z."""
    if mz.size <= 1:
        return mz, intensities
    starts = np.flatnonzero(np.concatenate(([True], np.diff(mz) > tolerance)))
    if starts.size == mz.size:
        return mz, intensities
    total = np.add.reduceat(intensities, starts)
    weighted = np.add.reduceat(mz * intensities, starts) / total
    return weighted, total


def remove_peaks_above(mz: np.ndarray, intensities: np.ndarray, limit: float) -> Peaks:
    """Drop peaks with m/z above ``limit`` (a precursor m/z plus its window); ``limit`` itself stays."""
    keep = mz <= limit
    return mz[keep], intensities[keep]


def scale_to_max(intensities: np.ndarray) -> np.ndarray:
    """Intensities divided by the largest (base peak 1.0); an empty array as it is."""
    return intensities / intensities.max() if intensities.size else intensities


def select_by_intensity(mz: np.ndarray, intensities: np.ndarray, minimum: float) -> Peaks:
    """Keep peaks of intensity >= ``minimum`` (a relative threshold on :func:`scale_to_max` output)."""
    keep = intensities >= minimum
    return mz[keep], intensities[keep]


def select_top_peaks(mz: np.ndarray, intensities: np.ndarray, n: int) -> Peaks:
    """The ``n`` most intense peaks, most intense first (ties: earlier first); unchanged when ``n`` or fewer."""
    if mz.size <= n:
        return mz, intensities
    top = np.argsort(-intensities, kind="stable")[:n]
    return mz[top], intensities[top]


def is_unit_resolution(mz: np.ndarray, decimals: int = 1) -> bool:
    """True when every m/z has at most ``decimals`` decimals (a nominal-mass spectrum); False when empty."""
    if not len(mz):
        return False
    scaled = np.asarray(mz, dtype=np.float64) * 10**decimals
    return bool(np.all(np.abs(scaled - np.round(scaled)) < 1e-6 * np.maximum(1.0, np.abs(scaled)) + 1e-9))


# --------------------------------------------------------------------------- ingest cleaner

def clean_peaks(mz: Sequence[float] | np.ndarray, intensities: Sequence[float] | np.ndarray, *,
                precursor_mz: float | None, ms_level: int, settings: PeakSettings,
                precursor_precision_da: float = 0.0) -> CleanedPeaks:
    """Sort by m/z, drop NaN/inf/non-positive peaks, merge peaks within ``merge_tolerance_da``
    (summed intensity, intensity-weighted m/z), and for MS2+ remove peaks above
    ``precursor_mz + max(precursor_tolerance_da, precursor_tolerance_ppm, precursor_precision_da)``.

    ``precursor_precision_da`` is the last written digit of the precursor m/z (1.0 for a nominal
    ``423``, 0.1 for ``423.0``), so a nominal precursor does not remove its own ion at 423.03.

    Raises :class:`NoPeaksError` when nothing is left and :class:`InvalidValueError` when
    ``mz`` and ``intensities`` differ in length.
    """
    mz_arr = np.asarray(mz, dtype=np.float64).ravel()
    int_arr = np.asarray(intensities, dtype=np.float64).ravel()
    if mz_arr.size != int_arr.size:
        raise InvalidValueError(f"peak list has {mz_arr.size} m/z values but {int_arr.size} intensities")
    notes: list[str] = []
    n_recorded = n = mz_arr.size

    mz_arr, int_arr = remove_invalid_mz(mz_arr, int_arr)
    if mz_arr.size < n:
        notes.append(f"dropped {n - mz_arr.size} peaks with NaN/inf/non-positive m/z")
    n = mz_arr.size
    mz_arr, int_arr = remove_invalid_intensities(mz_arr, int_arr)
    if mz_arr.size < n:
        notes.append(f"dropped {n - mz_arr.size} zero/negative/NaN intensities")
    if not is_sorted_by_mz(mz_arr):
        mz_arr, int_arr = sort_by_mz(mz_arr, int_arr)
        notes.append("sorted peaks by m/z")
    n = mz_arr.size
    mz_arr, int_arr = merge_close_peaks(mz_arr, int_arr, settings.merge_tolerance_da)
    if mz_arr.size < n:
        notes.append(f"merged {n - mz_arr.size} duplicate m/z (within {settings.merge_tolerance_da:g} Da)")
    if ms_level >= 2 and precursor_mz is not None and settings.remove_peaks_above_precursor and mz_arr.size:
        window = max(settings.precursor_tolerance_da, precursor_mz * settings.precursor_tolerance_ppm * 1e-6,
                     precursor_precision_da)
        n = mz_arr.size
        mz_arr, int_arr = remove_peaks_above(mz_arr, int_arr, precursor_mz + window)
        if mz_arr.size < n:
            notes.append(f"removed {n - mz_arr.size} peaks above precursor m/z {precursor_mz:.4f} (+{window:.4f} Da)")

    if mz_arr.size == 0:
        raise NoPeaksError(f"no peaks left after cleaning ({n_recorded} recorded; {'; '.join(notes) or 'empty'})")
    return CleanedPeaks(mz_arr, scale_to_max(int_arr).astype(np.float32), int_arr.astype(np.float32), tuple(notes))
