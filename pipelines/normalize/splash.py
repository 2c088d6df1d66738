"""SPLASH, the SPectraL hASH (Wohlgemuth et al., Nat. Biotechnol. 2016), version 1 (``splash10-...``).

A faithful port of the Java reference implementation (``SplashVersion1`` in
github.com/berlinguyinca/spectra-hash), vectorised with numpy, with the same
floating-point operations in the same order so the result is bit-identical:

1. intensities relative to the base peak, ``i / max * 100``;
2. block 1 ``splash`` + spectrum type (``1`` = MS) + version ``0``;
3. block 2: the peaks with ``rel + 1e-7 >= 0.1 * 100``, the top 10 by (intensity desc, m/z asc),
   binned into 10 bins of 5 Da wrapping modulo 10, scaled to base 3 (``int(1e-7 + 2 * bin / max)``),
   the 10 base-3 digits read as one number and written in base 36, zero-filled to 4 characters;
4. block 3: all peaks, 10 bins of 100 Da wrapping, scaled to base 10 (``0``-``9``);
5. block 4: peaks sorted by (m/z asc, intensity desc), written ``int((mz + 1e-7) * 1e6):int(rel + 1e-7)``
   joined by spaces, sha256, first 20 hex characters.

Compute it on the peak list as recorded (before cleaning): that is what
libraries store (MassBank ``PK$SPLASH``).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

_EPS = 1.0e-7
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_SPECTRUM_TYPES = {"ms": "1", "nmr": "2", "uv": "3", "ir": "4", "raman": "5"}
_VERSION = "0"


def splash(mz: Sequence[float] | np.ndarray, intensities: Sequence[float] | np.ndarray, spectrum_type: str = "ms") -> str:
    """The SPLASH (``splash10-xxxx-xxxxxxxxxx-xxxxxxxxxxxxxxxxxxxx``) of a peak list, in recorded order.

    Raises ValueError for an empty peak list, mismatched lengths, an all-zero spectrum, negative
    values (MS) or an unknown ``spectrum_type`` (one of ms, nmr, uv, ir, raman).
    """
    type_id = _SPECTRUM_TYPES.get(spectrum_type.lower())
    if type_id is None:
        raise ValueError(f"unknown spectrum_type {spectrum_type!r}; allowed: {', '.join(_SPECTRUM_TYPES)}")
    mz_arr = np.asarray(mz, dtype=np.float64).ravel()
    int_arr = np.asarray(intensities, dtype=np.float64).ravel()
    if mz_arr.size != int_arr.size:
        raise ValueError(f"{mz_arr.size} m/z values but {int_arr.size} intensities")
    if mz_arr.size == 0:
        raise ValueError("cannot SPLASH an empty peak list")
    if not (np.isfinite(mz_arr).all() and np.isfinite(int_arr).all()):
        raise ValueError("cannot SPLASH a peak list with NaN or infinite values")
    if type_id == "1" and ((int_arr < 0).any() or (mz_arr < 0).any()):
        raise ValueError("SPLASH of an MS spectrum needs non-negative m/z and intensities")
    base_peak = int_arr.max()
    if base_peak <= 0:
        raise ValueError("cannot SPLASH a spectrum whose intensities are all zero")
    rel = int_arr / base_peak * 100.0  # Java: ion.getIntensity() / max * scale

    # block 2: prefilter histogram of the top 10 peaks above 10 % of the base peak
    keep = rel + _EPS >= 0.1 * rel.max()
    pre_mz, pre_int = mz_arr[keep], rel[keep]
    if pre_mz.size > 10:
        order = np.lexsort((pre_mz, -pre_int))[:10]  # intensity desc, then m/z asc (stable like Collections.sort)
        pre_mz, pre_int = pre_mz[order], pre_int[order]
    prefilter = _histogram(pre_mz, pre_int, base=3, length=10, bin_size=5)
    block2 = _to_base36(int(prefilter, 3), fill=4)

    # block 3: similarity histogram of all peaks
    block3 = _histogram(mz_arr, rel, base=10, length=10, bin_size=100)

    # block 4: sha256 of the formatted ion list
    order = np.lexsort((-rel, mz_arr))  # m/z asc, then intensity desc
    mz_fmt = np.trunc((mz_arr[order] + _EPS) * 1_000_000).astype(np.int64)
    int_fmt = np.trunc(rel[order] + _EPS).astype(np.int64)
    ions = " ".join(f"{m}:{i}" for m, i in zip(mz_fmt.tolist(), int_fmt.tolist()))
    block4 = hashlib.sha256(ions.encode("ascii")).hexdigest()[:20]

    return f"splash{type_id}{_VERSION}-{block2}-{block3}-{block4}"


def _histogram(mz: np.ndarray, rel: np.ndarray, *, base: int, length: int, bin_size: int) -> str:
    """Wrapped histogram string of one SPLASH block; sums in peak order like the reference."""
    bins = np.zeros(length, dtype=np.float64)
    np.add.at(bins, np.trunc(mz / bin_size).astype(np.int64) % length, rel)  # unbuffered, in order
    top = bins.max()
    scaled = np.trunc(_EPS + (base - 1) * bins / top).astype(np.int64)
    return "".join(_BASE36[v] for v in scaled.tolist())


def _to_base36(number: int, *, fill: int) -> str:
    digits = ""
    while number > 0:
        digits = _BASE36[number % 36] + digits
        number //= 36
    return digits.rjust(fill, "0")
