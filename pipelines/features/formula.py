"""Molecular formulas, ion forms (adducts) and instrument mass tolerances.

Formulas are dense integer vectors over :data:`ELEMENTS` (one column per
element, fixed order), so that sub-formula tests, losses and masses are numpy
array operations.

**Ion formula convention.** Every fragment and precursor *ion* is written as
the Hill formula of all its atoms followed by its charge sign, exactly as
MassBank's ``PK$ANNOTATION`` does: protonated caffeine is ``C8H11N4O2+``,
the phenyl cation ``C6H5+``, deprotonated glucose ``C6H11O6-``, sodiated
glucose ``C6H12NaO6+``. Neutral formulas (the compound, the losses) carry no
sign. An ion's m/z is the mass of its atoms minus ``charge`` electron masses;
only singly charged ions are handled.

Masses and adducts come from their one home, :mod:`speclake.pipelines.normalize.masses`
and :mod:`speclake.pipelines.normalize.adduct`; this module only lays them out as vectors
over :data:`ELEMENTS` (:data:`MONO_MASS`, :func:`adduct_delta`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from speclake.pipelines.normalize.adduct import Adduct, parse_adduct
from speclake.pipelines.normalize.errors import UnknownAdductError
from speclake.pipelines.normalize.masses import ELECTRON_MASS, ELEMENT_MASSES

#: Column order of every formula vector.
ELEMENTS: tuple[str, ...] = ("C", "H", "N", "O", "P", "S", "F", "Cl", "Br", "I", "Na", "K", "Si", "B", "Se")
ELEMENT_INDEX: dict[str, int] = {e: i for i, e in enumerate(ELEMENTS)}
N_ELEMENTS = len(ELEMENTS)

#: Monoisotopic masses (most abundant isotope), u, in :data:`ELEMENTS` order (from :data:`.masses.ELEMENT_MASSES`).
MONO_MASS = np.array([ELEMENT_MASSES[e] for e in ELEMENTS], dtype=np.float64)
#: Valence used by the RDBE formula ``1 + sum(n_i * (v_i - 2)) / 2``.
VALENCE = np.array([4, 1, 3, 2, 3, 2, 1, 1, 1, 1, 1, 1, 4, 3, 2], dtype=np.int64)

HALOGENS: tuple[str, ...] = ("F", "Cl", "Br", "I")
#: Elements of the decomposition alphabet for unknown precursors.
ORGANIC_ALPHABET: tuple[str, ...] = ("C", "H", "N", "O", "P", "S", "F", "Cl", "Br", "I")

_TOKEN = re.compile(r"([A-Z][a-z]?)(\d*)")
_CHARGE = re.compile(r"(?P<n>)(?:(?P<sign>[+-]+)(?P<n2>\d*))?\*?$")
_BRACKET_CHARGE = re.compile(r"\](?P<n>\d*)(?P<sign>[+-]*)(?P<n2>\d*)\*?$")


def parse_formula(text: str) -> tuple[np.ndarray, int]:
    """Parse ``"C8H11N4O2+"``, ``"[C9H14N]+"``, ``"C9H9O1+"`` into (counts, charge).

    Raises ValueError for an empty/garbled formula or an element outside :data:`ELEMENTS`.
    """
    s = (text or "").strip().replace(" ", "")
    charge = 0
    # "[C9H14N]+", "[C2H4]2+": digits after the bracket belong to the charge; "C5H8N3+": they do not
    m = _BRACKET_CHARGE.search(s) if "]" in s else _CHARGE.search(s)
    if m:
        s = s[: m.start()] + ("]" if "]" in m.group(0) else "")
        digits, signs = m.group("n") or m.group("n2") or "", m.group("sign")
        if signs:
            n = int(digits) if digits else len(signs)
            charge = n * (1 if signs[0] == "+" else -1)
    s = s.strip("[]")
    counts = np.zeros(N_ELEMENTS, dtype=np.int64)
    pos = 0
    for tok in _TOKEN.finditer(s):
        if tok.start() != pos:
            break
        element, n = tok.group(1), tok.group(2)
        idx = ELEMENT_INDEX.get(element)
        if idx is None:
            raise ValueError(f"unsupported element {element!r} in formula {text!r}; supported: {', '.join(ELEMENTS)}")
        counts[idx] += int(n) if n else 1
        pos = tok.end()
    if pos != len(s) or pos == 0:
        raise ValueError(f"cannot parse formula {text!r}")
    return counts, charge


def format_formula(counts: np.ndarray, charge: int = 0) -> str:
    """Hill formula (C, H first, then alphabetical; alphabetical without C) plus charge sign."""
    c = [int(x) for x in counts]
    present = [e for e, n in zip(ELEMENTS, c) if n > 0]
    if "C" in present:
        order = ["C"] + (["H"] if "H" in present else []) + sorted(e for e in present if e not in ("C", "H"))
    else:
        order = sorted(present)
    body = "".join(e + (str(c[ELEMENT_INDEX[e]]) if c[ELEMENT_INDEX[e]] != 1 else "") for e in order)
    if charge == 0:
        return body
    sign = "+" if charge > 0 else "-"
    return body + (sign if abs(charge) == 1 else f"{abs(charge)}{sign}")


def normalize_formula(text: str) -> str:
    """Canonical Hill spelling of ``text`` (e.g. ``"C9H9O1+"`` -> ``"C9H9O+"``); ValueError if unparsable."""
    counts, charge = parse_formula(text)
    return format_formula(counts, charge)


def counts_mass(counts: np.ndarray) -> np.ndarray | float:
    """Monoisotopic mass of one formula vector (1-D) or of each row of a 2-D count array."""
    return np.asarray(counts, dtype=np.float64) @ MONO_MASS[: np.shape(counts)[-1]]


def ion_mz(counts: np.ndarray, charge: int) -> np.ndarray | float:
    """m/z of singly or multiply charged ions: (atom mass - charge * electron) / |charge|."""
    if charge == 0:
        raise ValueError("an ion needs a non-zero charge")
    return (counts_mass(counts) - charge * ELECTRON_MASS) / abs(charge)


def rdbe(counts: np.ndarray) -> np.ndarray | float:
    """Ring + double bond equivalents; half-integer for even-electron ions, integer for neutrals and radical ions."""
    c = np.asarray(counts, dtype=np.float64)
    return 1.0 + (c @ (VALENCE[: c.shape[-1]] - 2)) / 2.0


def singly_charged_adduct(adduct: str | Adduct) -> Adduct:
    """The :class:`Adduct` of ``adduct`` (text is parsed by :func:`.adduct.parse_adduct`) if it is a singly
    charged monomer with atoms in :data:`ELEMENTS` (the ion forms trees handle); ValueError naming why not."""
    if not isinstance(adduct, Adduct):
        try:
            adduct = parse_adduct(adduct)
        except UnknownAdductError as err:
            raise ValueError(f"{err}; expected a form like [M+H]+ or [M-H]-") from None
    if adduct.n_molecules != 1:
        raise ValueError(f"adduct {adduct.name}: only monomers ([M...]) are supported")
    if abs(adduct.charge) != 1:
        raise ValueError(f"adduct {adduct.name}: only singly charged ions are supported")
    adduct_delta(adduct)
    return adduct


def adduct_delta(adduct: Adduct) -> np.ndarray:
    """Atoms ``adduct`` adds to one molecule as a vector over :data:`ELEMENTS` (negative: removed)."""
    delta = np.zeros(N_ELEMENTS, dtype=np.int64)
    for element, n in adduct.composition:
        idx = ELEMENT_INDEX.get(element)
        if idx is None:
            raise ValueError(f"unsupported element {element!r} in adduct {adduct.name}; "
                             f"supported: {', '.join(ELEMENTS)}")
        delta[idx] = n
    return delta


def ion_counts(adduct: Adduct, neutral: np.ndarray) -> np.ndarray:
    """Ion formula of ``neutral`` in ion form ``adduct``; ValueError if the adduct removes atoms the molecule lacks."""
    ion = np.asarray(neutral, dtype=np.int64) + adduct_delta(adduct)
    if (ion < 0).any():
        raise ValueError(f"adduct {adduct.name} removes atoms absent from {format_formula(neutral)}")
    return ion


@dataclass(frozen=True)
class MassTolerance:
    """Allowed mass deviation: ``max(ppm * mz * 1e-6, min_da)``; ``sigma`` in ppm units of the Gaussian score."""

    ppm: float
    min_da: float = 0.0

    def da(self, mz: np.ndarray | float) -> np.ndarray | float:
        """Absolute tolerance at ``mz`` in Da."""
        return np.maximum(np.asarray(mz, dtype=np.float64) * self.ppm * 1e-6, self.min_da)


#: Tolerances by instrument class; ``None`` marks unit-resolution analysers (not decomposable).
INSTRUMENT_TOLERANCE: dict[str, MassTolerance | None] = {
    "ft": MassTolerance(ppm=10.0, min_da=0.002),     # Orbitrap, FT-ICR (ITFT, QFT)
    "tof": MassTolerance(ppm=20.0, min_da=0.004),    # QTOF, TOF, IT-TOF
    "unit": None,                                    # ion trap, quadrupoles, sector EI-B
}


def instrument_class(instrument_type: str | None) -> str | None:
    """``ft``, ``tof`` or ``unit`` for a MassBank-style instrument type (``LC-ESI-QTOF``); None if unknown."""
    if not instrument_type:
        return None
    t = instrument_type.upper()
    analyser = t.rsplit("-", 1)[-1]
    if "FT" in analyser or "ORBITRAP" in t:
        return "ft"
    if "TOF" in analyser:
        return "tof"
    if analyser in {"IT", "QIT", "Q", "QQ", "QQQ", "B", "EB", "BE", "EBEB", "BEB", "QQQ/MS", "TQ"} or "TRAP" in t:
        return "unit"
    return None


def tolerance_for_instrument(instrument_type: str | None, default: MassTolerance | None = None) -> MassTolerance | None:
    """Mass tolerance for an instrument type; ``default`` when it is unknown, None for unit resolution."""
    cls = instrument_class(instrument_type)
    if cls is None:
        return default if default is not None else INSTRUMENT_TOLERANCE["tof"]
    return INSTRUMENT_TOLERANCE[cls]


def gaussian_ppm_score(ppm_error: np.ndarray | float, sigma_ppm: float) -> np.ndarray | float:
    """Log-likelihood of a mass error under N(0, sigma) relative to a zero error (0 at best, negative otherwise)."""
    return -0.5 * np.square(np.asarray(ppm_error) / sigma_ppm)


def is_finite_number(x: object) -> bool:
    """True for a finite real number (not None, not NaN)."""
    return isinstance(x, (int, float, np.floating, np.integer)) and math.isfinite(float(x))
