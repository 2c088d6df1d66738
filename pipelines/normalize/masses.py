"""The one home of the chemistry numbers: electron and element masses, formula masses, ppm windows.

Every stage (ingest, features, index, training) takes its masses from here, so an
m/z computed at ingest and one computed by a feature job agree to the last bit.
Masses are monoisotopic (most abundant isotope).
"""
from __future__ import annotations

import re
from types import MappingProxyType
from typing import Callable, Mapping, TypeVar

import numpy as np

from speclake.pipelines.normalize.errors import InvalidValueError

#: Mass of the electron (Da), CODATA 2018.
ELECTRON_MASS = 0.000548579909065

#: Monoisotopic masses (Da) of the most abundant isotope of each element (AME 2016 / NIST).
ELEMENT_MASSES: Mapping[str, float] = MappingProxyType({
    "H": 1.00782503223,
    "D": 2.01410177812,
    "B": 11.00930536,
    "C": 12.0,
    "N": 14.00307400443,
    "O": 15.99491461957,
    "F": 18.99840316273,
    "Na": 22.9897692820,
    "Mg": 23.985041697,
    "Si": 27.97692653465,
    "P": 30.97376199842,
    "S": 31.9720711744,
    "Cl": 34.968852682,
    "K": 38.9637064864,
    "Ca": 39.962590863,
    "Li": 7.0160034366,
    "Fe": 55.93493633,
    "Co": 58.93319429,
    "Cu": 62.92959772,
    "Zn": 63.92914201,
    "As": 74.92159457,
    "Se": 79.9165218,
    "Br": 78.9183376,
    "Ag": 106.9050916,
    "Sn": 119.90220163,
    "I": 126.9044719,
    "Cs": 132.905451961,
    "Pt": 194.9647917,
    "Hg": 201.9706434,
})

#: Element symbols in the column order of :func:`group_counts` vectors.
ELEMENT_SYMBOLS: tuple[str, ...] = tuple(ELEMENT_MASSES)
_SYMBOL_INDEX: Mapping[str, int] = MappingProxyType({e: i for i, e in enumerate(ELEMENT_SYMBOLS)})

_CHARGE = re.compile(r"^(\d*)([+-]+)(\d*)$")
_ELEMENT = re.compile(r"([A-Z][a-z]?)(\d*)")

_T = TypeVar("_T", float, np.ndarray)


def formula_mass(formula: str) -> float:
    """Monoisotopic mass of a formula such as ``C8H10N4O2``, ``(CH3)2CO``, ``C9H9O+`` or ``[C2H5O]-``.

    A trailing charge (``+``, ``2-``, ``+2``) subtracts that many electron masses
    (so ``formula_mass("C9H9O1+")`` is the ion's m/z for charge 1, not divided by z);
    ``.`` or ``·`` separate parts that are summed, each with an optional leading
    multiplier (``C2H4O2.2H2O``). Raises :class:`InvalidValueError` for unknown
    elements or unbalanced parentheses.
    """
    text = (formula or "").strip().replace(" ", "")
    if not text:
        raise InvalidValueError("empty formula")
    charge = 0
    m = re.match(r"^\[(.+)\](\d*[+-]+\d*)?$", text)
    if m:
        text, charge_text = m.group(1), m.group(2) or ""
        charge = (parse_charge_suffix(charge_text) or 0) if charge_text else 0
    else:
        m = re.search(r"([+-]+\d*)$", text)  # "C9H9O2+" is C9H9O2 with charge 1
        if m and m.start() > 0:
            charge = parse_charge_suffix(m.group(1)) or 0
            text = text[: m.start()]
    total = 0.0
    for part in re.split(r"[.\u00b7]", text):
        if not part:
            continue
        pm = re.match(r"^(\d+)(.*)$", part)
        mult, body = (int(pm.group(1)), pm.group(2)) if pm else (1, part)
        total += mult * group_mass(body, formula)
    return total - charge * ELECTRON_MASS


def group_mass(text: str, original: str | None = None) -> float:
    """Neutral monoisotopic mass of one formula group with optional parentheses (``(CH3)2CO``)."""
    return _fold_group(text, original or text, 0.0, lambda element, n: ELEMENT_MASSES[element] * n)


def group_counts(text: str, original: str | None = None) -> np.ndarray:
    """Atom counts of one formula group (``(CH3)2CO``) as an int64 vector over :data:`ELEMENT_SYMBOLS`."""
    def unit(element: str, n: int) -> np.ndarray:
        v = np.zeros(len(ELEMENT_SYMBOLS), dtype=np.int64)
        v[_SYMBOL_INDEX[element]] = n
        return v
    return _fold_group(text, original or text, np.zeros(len(ELEMENT_SYMBOLS), dtype=np.int64), unit)


def _fold_group(text: str, original: str, zero: _T, atom: Callable[[str, int], _T]) -> _T:
    """Sum ``atom(element, count)`` over a formula group, multiplying parenthesised parts by their count;
    serves :func:`group_mass` and :func:`group_counts`."""
    stack: list = [zero]
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            stack.append(zero)
            i += 1
        elif ch == ")":
            if len(stack) == 1:
                raise InvalidValueError(f"unbalanced parentheses in formula {original!r}")
            j = i + 1
            while j < len(text) and text[j].isdigit():
                j += 1
            inner = stack.pop() * (int(text[i + 1:j]) if j > i + 1 else 1)
            stack[-1] = stack[-1] + inner
            i = j
        else:
            m = _ELEMENT.match(text, i)
            if not m or m.group(1) not in ELEMENT_MASSES:
                raise InvalidValueError(f"unknown element at {text[i:i + 2]!r} in formula {original!r}")
            stack[-1] = stack[-1] + atom(m.group(1), int(m.group(2)) if m.group(2) else 1)
            i = m.end()
    if len(stack) != 1:
        raise InvalidValueError(f"unbalanced parentheses in formula {original!r}")
    return stack[0]


def parse_charge_suffix(text: str) -> int | None:
    """``+`` -> 1, ``2-`` -> -2, ``++`` -> 2, ``+2`` -> 2, ``1+`` -> 1; None for empty; ValueError otherwise."""
    if not text:
        return None
    m = _CHARGE.match(text)
    if not m or len(set(m.group(2))) != 1 or (m.group(1) and m.group(3)):
        raise ValueError(f"not a charge: {text!r}")
    signs = m.group(2)
    digits = m.group(1) or m.group(3)
    if digits and len(signs) > 1:
        raise ValueError(f"not a charge: {text!r}")
    magnitude = int(digits) if digits else len(signs)
    if not 1 <= magnitude <= 20:
        raise ValueError(f"charge out of range 1-20 in {text!r}")
    return magnitude if signs[0] == "+" else -magnitude


def ppm_window(mass: float, ppm: float) -> tuple[float, float]:
    """Inclusive mass window ``(lo, hi)`` of ``ppm`` parts per million around ``mass``."""
    if ppm < 0:
        raise ValueError(f"ppm must be >= 0, got {ppm}")
    tol = abs(mass) * ppm * 1e-6
    return mass - tol, mass + tol
