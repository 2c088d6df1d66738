"""SPLASH, the SPectraL hASH (Wohlgemuth et al., Nat. Biotechnol. 2016), version 1 (``splash10-...``).

A faithful port of the Java reference implementation (``SplashVersion1`` in
github.com/berlinguyinca/spectra-hash), in plain Python floats (faster than numpy
on spectra of tens of peaks), with the same floating-point operations in the
same order so the result is bit-identical:

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
import math
from typing import Iterable, Sequence

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
    mzs, ints = _floats(mz), _floats(intensities)
    if len(mzs) != len(ints):
        raise ValueError(f"{len(mzs)} m/z values but {len(ints)} intensities")
    if not mzs:
        raise ValueError("cannot SPLASH an empty peak list")
    if not all(map(math.isfinite, mzs)) or not all(map(math.isfinite, ints)):
        raise ValueError("cannot SPLASH a peak list with NaN or infinite values")
    if type_id == "1" and (min(ints) < 0 or min(mzs) < 0):
        raise ValueError("SPLASH of an MS spectrum needs non-negative m/z and intensities")
    base_peak = max(ints)
    if base_peak <= 0:
        raise ValueError("cannot SPLASH a spectrum whose intensities are all zero")
    rel = [i / base_peak * 100.0 for i in ints]  # Java: ion.getIntensity() / max * scale

    # block 2: prefilter histogram of the top 10 peaks above 10 % of the base peak
    threshold = 0.1 * max(rel)
    pre = [(m, r) for m, r in zip(mzs, rel) if r + _EPS >= threshold]
    if len(pre) > 10:
        pre = sorted(pre, key=lambda p: (-p[1], p[0]))[:10]  # intensity desc, m/z asc (stable like Collections.sort)
    prefilter = _histogram(pre, base=3, length=10, bin_size=5)
    block2 = _to_base36(int(prefilter, 3), fill=4)

    # block 3: similarity histogram of all peaks
    block3 = _histogram(zip(mzs, rel), base=10, length=10, bin_size=100)

    # block 4: sha256 of the formatted ion list, m/z asc then intensity desc
    ions = " ".join(f"{int((m + _EPS) * 1_000_000)}:{int(r + _EPS)}"
                    for m, r in sorted(zip(mzs, rel), key=lambda p: (p[0], -p[1])))
    block4 = hashlib.sha256(ions.encode("ascii")).hexdigest()[:20]

    return f"splash{type_id}{_VERSION}-{block2}-{block3}-{block4}"


def _floats(values: Sequence[float] | np.ndarray) -> list[float]:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False).ravel().tolist()
    return [float(v) for v in values]


def _histogram(peaks: Iterable[tuple[float, float]], *, base: int, length: int, bin_size: int) -> str:
    """Wrapped histogram string of one SPLASH block; sums in peak order like the reference."""
    bins = [0.0] * length
    for m, r in peaks:
        bins[int(m / bin_size) % length] += r
    top = max(bins)
    return "".join(_BASE36[int(_EPS + (base - 1) * b / top)] for b in bins)


def _to_base36(number: int, *, fill: int) -> str:
    digits = ""
    while number > 0:
        digits = _BASE36[number % 36] + digits
        number //= 36
    return digits.rjust(fill, "0")
