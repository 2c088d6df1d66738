"""Peak-list cleaning: sort, drop invalid peaks, merge duplicates, remove peaks above the precursor.

Vectorised with numpy; m/z stays float64, intensities become float32 (scaled
to a base peak of 1.0, and as recorded for the kept peaks). Every change is
described in ``CleanedPeaks.notes`` so the lake says what normalization did.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from speclake.pipelines.normalize.errors import InvalidValueError, NoPeaksError

log = logging.getLogger(__name__)


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
    n_recorded = mz_arr.size

    valid = np.isfinite(mz_arr) & (mz_arr > 0)
    if not valid.all():
        notes.append(f"dropped {int((~valid).sum())} peaks with NaN/inf/non-positive m/z")
    valid_int = np.isfinite(int_arr) & (int_arr > 0)
    bad_int = valid & ~valid_int
    if bad_int.any():
        notes.append(f"dropped {int(bad_int.sum())} zero/negative/NaN intensities")
    keep = valid & valid_int
    mz_arr, int_arr = mz_arr[keep], int_arr[keep]

    if mz_arr.size > 1 and np.any(np.diff(mz_arr) < 0):
        order = np.argsort(mz_arr, kind="stable")
        mz_arr, int_arr = mz_arr[order], int_arr[order]
        notes.append("sorted peaks by m/z")

    if mz_arr.size > 1:
        mz_arr, int_arr, n_merged = _merge_close(mz_arr, int_arr, settings.merge_tolerance_da)
        if n_merged:
            notes.append(f"merged {n_merged} duplicate m/z (within {settings.merge_tolerance_da:g} Da)")

    if ms_level >= 2 and precursor_mz is not None and settings.remove_peaks_above_precursor and mz_arr.size:
        window = max(settings.precursor_tolerance_da, precursor_mz * settings.precursor_tolerance_ppm * 1e-6,
                     precursor_precision_da)
        below = mz_arr <= precursor_mz + window
        n_above = int(mz_arr.size - np.count_nonzero(below))
        if n_above:
            mz_arr, int_arr = mz_arr[below], int_arr[below]
            notes.append(f"removed {n_above} peaks above precursor m/z {precursor_mz:.4f} (+{window:.4f} Da)")

    if mz_arr.size == 0:
        raise NoPeaksError(f"no peaks left after cleaning ({n_recorded} recorded; {'; '.join(notes) or 'empty'})")
    raw = int_arr.astype(np.float32)
    scaled = (int_arr / int_arr.max()).astype(np.float32)
    return CleanedPeaks(mz_arr, scaled, raw, tuple(notes))


def _merge_close(mz: np.ndarray, intensities: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge runs of sorted peaks whose neighbours are within ``tolerance``; serves :func:`clean_peaks`."""
    starts = np.flatnonzero(np.concatenate(([True], np.diff(mz) > tolerance)))
    n_merged = mz.size - starts.size
    if n_merged == 0:
        return mz, intensities, 0
    total = np.add.reduceat(intensities, starts)
    weighted = np.add.reduceat(mz * intensities, starts) / total
    return weighted, total, n_merged
