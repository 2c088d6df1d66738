"""One immutable segment of the library index: spectra of one ion mode, peaks inverted by m/z and loss.

Arrays (one ``.npy`` file each, memory-mapped when opened)::

    ids          (n,)   spectrum_id of each spectrum, spectra sorted by precursor m/z
    precursor    (n,)   float64 precursor m/z, ascending (identity windows are one searchsorted)
    offsets      (n+1,) int64: spectrum i's cleaned peaks are peak_mz/peak_int[offsets[i]:offsets[i+1]]
    peak_mz      (p,)   float64 cleaned peaks, m/z ascending within each spectrum
    peak_int     (p,)   float64 cleaned intensities, summing to 1 per spectrum
    ion_mz       (p,)   float64 every peak of the segment, sorted by m/z (the inverted fragment index)
    ion_int      (p,)   float64 entropy-weighted intensity / 2 (Flash's 0.5-normalisation)
    ion_xlog     (p,)   float64 ion_int * log2(ion_int), precomputed for the score
    ion_spec     (p,)   int32 spectrum of each indexed peak
    nl_mass      (p,)   float64 neutral loss (precursor - m/z) of every peak, sorted
    nl_ion       (p,)   int64 position of each loss's peak in the ion_* arrays
    id_key       (p,)   int64 ``floor(m/z / bin_width) * n + spectrum``, sorted: the identity layout, where
                        the peaks of one m/z bin are ordered by spectrum, i.e. by precursor m/z, so an
                        identity search reads only the peaks of its precursor window (two bins per peak)
    id_ion       (p,)   int64 position of each id_key's peak in the ion_* arrays

A matched pair of weighted intensities a, b (each halved) adds ``(a+b) log2(a+b) - a log2 a - b log2 b``
to the entropy similarity, which equals Li et al.'s ``((A+B) ln(A+B) - A ln A - B ln B) / ln 4``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speclake.serving.library.clean import FlatSpectra, entropy_weighted, offsets_of

ARRAYS = ("ids", "precursor", "offsets", "peak_mz", "peak_int", "ion_mz", "ion_int", "ion_xlog", "ion_spec",
          "nl_mass", "nl_ion", "id_key", "id_ion")


def xlog2(x: np.ndarray) -> np.ndarray:
    """x * log2(x), 0 where x <= 0."""
    out = np.zeros_like(x, dtype=np.float64)
    pos = x > 0
    out[pos] = x[pos] * np.log2(x[pos])
    return out


@dataclass(frozen=True)
class Segment:
    """Arrays of one segment (see the module docstring)."""

    ids: np.ndarray
    precursor: np.ndarray
    offsets: np.ndarray
    peak_mz: np.ndarray
    peak_int: np.ndarray
    ion_mz: np.ndarray
    ion_int: np.ndarray
    ion_xlog: np.ndarray
    ion_spec: np.ndarray
    nl_mass: np.ndarray
    nl_ion: np.ndarray
    id_key: np.ndarray
    id_ion: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_peaks(self) -> int:
        return len(self.peak_mz)

    @property
    def spectra(self) -> FlatSpectra:
        return FlatSpectra(np.asarray(self.offsets), np.asarray(self.peak_mz), np.asarray(self.peak_int))

    @staticmethod
    def build(ids: np.ndarray, precursor: np.ndarray, spectra: FlatSpectra, bin_width: float) -> "Segment":
        """A segment of cleaned spectra (any order: they are sorted by precursor m/z here); ``bin_width``:
        m/z bin of the identity layout (the settings' ``min_peak_distance_da``)."""
        if not (len(ids) == len(precursor) == len(spectra)):
            raise ValueError(f"{len(ids)} ids, {len(precursor)} precursors and {len(spectra)} spectra differ in number")
        order = np.argsort(np.asarray(precursor, dtype=np.float64), kind="stable")
        spectra = spectra.take(order)
        ids = np.asarray(ids).astype(str)[order]
        precursor = np.asarray(precursor, dtype=np.float64)[order]
        owner = spectra.owner()
        half = entropy_weighted(spectra) / 2.0
        iorder = np.argsort(spectra.mz, kind="stable")
        inv = np.empty_like(iorder)
        inv[iorder] = np.arange(len(iorder), dtype=iorder.dtype)
        loss = precursor[owner] - spectra.mz
        lorder = np.argsort(loss, kind="stable")
        ion_int = half[iorder]
        ion_mz, ion_spec = spectra.mz[iorder], owner[iorder]
        key = np.floor(ion_mz / bin_width).astype(np.int64) * max(len(ids), 1) + ion_spec
        korder = np.argsort(key, kind="stable")
        return Segment(
            ids=ids, precursor=precursor, offsets=spectra.offsets.astype(np.int64), peak_mz=spectra.mz.astype(np.float64),
            peak_int=spectra.intensities.astype(np.float64), ion_mz=spectra.mz[iorder], ion_int=ion_int,
            ion_xlog=xlog2(ion_int), ion_spec=owner[iorder].astype(np.int32), nl_mass=loss[lorder],
            nl_ion=inv[lorder].astype(np.int64), id_key=key[korder], id_ion=korder.astype(np.int64),
        )

    @staticmethod
    def merge(segments: list["Segment"], bin_width: float) -> "Segment":
        """One segment holding every spectrum of ``segments`` (the arrays are rebuilt from their peaks)."""
        counts = np.concatenate([np.diff(s.offsets) for s in segments])
        spectra = FlatSpectra(offsets_of(counts), np.concatenate([np.asarray(s.peak_mz) for s in segments]),
                              np.concatenate([np.asarray(s.peak_int) for s in segments]))
        return Segment.build(np.concatenate([np.asarray(s.ids) for s in segments]),
                             np.concatenate([np.asarray(s.precursor) for s in segments]), spectra, bin_width)

    def save(self, folder: Path) -> None:
        """Write every array to ``folder`` (which must not exist yet: segments are immutable)."""
        folder.mkdir(parents=True)
        for name in ARRAYS:
            with open(folder / f"{name}.npy", "wb") as fh:
                np.save(fh, getattr(self, name), allow_pickle=False)
                fh.flush()
                os.fsync(fh.fileno())

    @staticmethod
    def load(folder: Path, *, mmap: bool = True) -> "Segment":
        return Segment(**{name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
                          for name in ARRAYS})
