"""Adduct (precursor type) notation: parse every real spelling into one canonical form.

``parse_adduct("M+H")``, ``parse_adduct("[M+H]1+")`` and ``parse_adduct("[M+H]")``
all give ``Adduct(name="[M+H]+", n_molecules=1, mass_shift=1.007276..., charge=1)``.
Masses are monoisotopic; the mass shift already accounts for the electrons
(an ion weighs the sum of its neutral atoms minus ``charge`` electrons), so
``adduct_mz(M, adduct) = (n * M + mass_shift) / |charge|``.

Canonical names put neutral gains/losses before charge carriers and keep the
written order otherwise (``[M+H-H2O]+`` -> ``[M-H2O+H]+``), spell common
abbreviations as formulas (``FA`` -> ``HCOOH``, ``ACN`` -> ``CH3CN``) and merge
the few spellings of the same ion (``[M+HCOOH-H]-`` / ``[M+HCO2]-`` ->
``[M+HCOO]-``).
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

import numpy as np

from speclake.pipelines.normalize.errors import InvalidValueError, UnknownAdductError
from speclake.pipelines.normalize.masses import (
    ELECTRON_MASS,
    ELEMENT_SYMBOLS,
    group_counts,
    group_mass,
    parse_charge_suffix,
)

log = logging.getLogger(__name__)

#: Abbreviations seen in adduct notation, spelled as the formula group used in canonical names.
_ALIASES: Mapping[str, str] = MappingProxyType({
    "FA": "HCOOH", "HFA": "HCOOH", "H2CO2": "HCOOH", "CH2O2": "HCOOH",
    "HCO2": "HCOO", "CHO2": "HCOO", "FORMATE": "HCOO",
    "HAC": "CH3COOH", "ACOH": "CH3COOH", "C2H4O2": "CH3COOH",
    "AC": "CH3COO", "OAC": "CH3COO", "CH3CO2": "CH3COO", "C2H3O2": "CH3COO", "ACETATE": "CH3COO",
    "ACN": "CH3CN", "C2H3N": "CH3CN",
    "MEOH": "CH3OH", "CH4O": "CH3OH",
    "ETOH": "C2H5OH",
    "TFA": "CF3COOH",
    "DMSO": "C2H6OS",
    "ISOPROP": "C3H8O", "IPA": "C3H8O",
    "HOO": "HO2",
})

#: Ionic charge a group carries in adduct notation, used when the text states no charge.
_GROUP_CHARGE: Mapping[str, int] = MappingProxyType({
    "H": 1, "D": 1, "Li": 1, "Na": 1, "K": 1, "Rb": 1, "Cs": 1, "Ag": 1, "NH4": 1, "Cu": 1,
    "Cl": -1, "Br": -1, "I": -1, "F": -1, "HCOO": -1, "CH3COO": -1, "CF3COO": -1, "e": -1,
})

#: Whole-name synonyms after canonical ordering (same ion, different spelling).
_NAME_SYNONYMS: Mapping[str, str] = MappingProxyType({
    "[M+HCOOH-H]-": "[M+HCOO]-",
    "[M+CH3COOH-H]-": "[M+CH3COO]-",
})

#: Whole-text spellings that the grammar cannot express.
_SPECIAL: Mapping[str, str] = MappingProxyType({
    "cat": "[M]+",       # GNPS: precharged cation
    "m+.": "[M]+*",
    "m-.": "[M]-*",
})

_TERM = re.compile(r"([+-])(\d*)([A-Za-z][A-Za-z0-9()]*)")
_CORE = re.compile(r"^(\d*)M(.*)$")
_ALTERNATIVES = re.compile(r"\s*(?:/|,|;|\bor\b|\s{2,})\s*")
_RADICAL_MARKS = ("*", "\u2022", "\u00b7", ".", "^")


@dataclass(frozen=True)
class Adduct:
    """One parsed adduct: canonical name, molecule count, mass shift (Da, electrons included), signed charge.

    ``composition`` is the signed atom count the adduct adds to ``n_molecules`` molecules
    (``[M-H2O+H]+``: ``(("H", -1), ("O", -1))``), in :data:`.masses.ELEMENT_SYMBOLS` order;
    it follows from the name, so it takes no part in equality.
    """

    name: str
    n_molecules: int
    mass_shift: float
    charge: int
    radical: bool = False
    composition: tuple[tuple[str, int], ...] = field(default=(), compare=False)

    @property
    def intrinsic(self) -> bool:
        """True when the molecule carries the charge itself (``[M]+``, ``[M]-``, ``[M]+*``): nothing added or lost."""
        return self.name.startswith("[M]")

    def neutral_mass(self, precursor_mz: float) -> float:
        """Neutral monoisotopic mass M whose ion has m/z ``precursor_mz`` (the inverse of :func:`adduct_mz`)."""
        return (float(precursor_mz) * abs(self.charge) - self.mass_shift) / self.n_molecules


def _canonical_group(group: str) -> str:
    alias = _ALIASES.get(group.upper())
    return alias if alias is not None else group


def _split_alternatives(text: str) -> list[str]:
    parts = [p for p in _ALTERNATIVES.split(text) if p]
    return parts or [text]


@lru_cache(maxsize=8192)
def parse_adduct(text: str, ionmode: str | None = None) -> Adduct:
    """Parse precursor-type / adduct text (``[M+H]+``, ``M-H``, ``[M+2H]++``, ``Cat`` ...) into an :class:`Adduct`.

    Alternatives (``[M+CH3COO]-/[M-CH3]-``, ``A,B``) give the first that parses.
    ``ionmode`` (positive/negative) decides the sign only when the text states
    none and its groups imply none (``[M]``). Raises :class:`UnknownAdductError`
    naming the text when nothing parses.
    """
    raw = text if isinstance(text, str) else ""
    cleaned = raw.strip().replace("\u2212", "-").replace("\uff0b", "+").replace("\u2013", "-")
    if not cleaned:
        raise UnknownAdductError("empty adduct text")
    alternatives = _split_alternatives(cleaned)
    problems: list[str] = []
    for i, alt in enumerate(alternatives):
        try:
            adduct = _parse_one(alt, ionmode)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if i > 0:
            log.debug("adduct %r: first alternative did not parse, took %r", raw, alt)
        return adduct
    raise UnknownAdductError(f"adduct {raw!r} could not be parsed ({problems[0]})")


def _parse_one(text: str, ionmode: str | None) -> Adduct:
    special = _SPECIAL.get(text.lower())
    if special:
        text = special
    radical = False
    charge_text = ""
    if text.startswith("["):
        close = text.find("]")
        if close == -1:
            core, charge_text = text[1:], ""
        else:
            core, charge_text = text[1:close], text[close + 1:].strip()
    elif text.endswith("]"):  # "M+H]" seen in GNPS
        core = text[:-1]
    else:
        core = text
        m = re.search(r"(\d?[+-]+)([*\u2022.]?)$", core)  # "M+", "M-H-", "M+2H2+": trailing charge
        if m and m.start() > 0:
            charge_text, core = m.group(1) + m.group(2), core[: m.start()]
    core = core.strip().replace(" ", "")
    for mark in _RADICAL_MARKS:
        if mark in charge_text:
            radical = True
            charge_text = charge_text.replace(mark, "")
    if core.endswith(tuple(_RADICAL_MARKS)):
        radical = True
        core = core.rstrip("".join(_RADICAL_MARKS))
    m = _CORE.match(core)
    if not m:
        raise ValueError(f"no 'M' in {text!r}")
    n_molecules = int(m.group(1)) if m.group(1) else 1
    if n_molecules < 1:
        raise ValueError(f"zero molecules in {text!r}")
    rest = m.group(2)
    terms: list[tuple[int, int, str]] = []  # (sign, count, canonical group)
    pos = 0
    while pos < len(rest):
        tm = _TERM.match(rest, pos)
        if not tm:
            raise ValueError(f"cannot read {rest[pos:]!r} in {text!r}")
        sign = 1 if tm.group(1) == "+" else -1
        count = int(tm.group(2)) if tm.group(2) else 1
        group = _canonical_group(tm.group(3))
        if count == 0:
            raise ValueError(f"zero count in {text!r}")
        terms.append((sign, count, group))
        pos = tm.end()
    mass = 0.0
    atoms = np.zeros(len(ELEMENT_SYMBOLS), dtype=np.int64)
    implied = 0
    for sign, count, group in terms:
        implied += sign * count * _GROUP_CHARGE.get(group, 0)
        if group == "e":
            continue  # electrons only change the charge; the electron mass comes from the charge below
        try:
            mass += sign * count * group_mass(group, text)
            atoms += sign * count * group_counts(group, text)
        except InvalidValueError as exc:
            raise ValueError(str(exc)) from None
    stated = parse_charge_suffix(charge_text) if charge_text else None
    charge = stated if stated is not None else implied
    if charge == 0:
        mode = (ionmode or "").strip().lower()
        if mode.startswith("pos"):
            charge = 1
        elif mode.startswith("neg"):
            charge = -1
        else:
            raise ValueError(f"no charge stated or implied in {text!r}")
    mass_shift = mass - charge * ELECTRON_MASS
    if any(group == "e" for _, _, group in terms):  # "M-e" / "M+e": an odd-electron ion, written [M]+* / [M]-*
        radical = True
        terms = [t for t in terms if t[2] != "e"]
    composition = tuple((e, int(n)) for e, n in zip(ELEMENT_SYMBOLS, atoms) if n)
    return Adduct(_canonical_name(n_molecules, terms, charge, radical), n_molecules, mass_shift, charge, radical,
                  composition)


def _canonical_name(n_molecules: int, terms: list[tuple[int, int, str]], charge: int, radical: bool) -> str:
    neutral = [t for t in terms if _GROUP_CHARGE.get(t[2], 0) == 0]
    charged = [t for t in terms if _GROUP_CHARGE.get(t[2], 0) != 0]
    body = "".join(("+" if s > 0 else "-") + (str(c) if c > 1 else "") + g for s, c, g in neutral + charged)
    sign = "+" if charge > 0 else "-"
    charge_text = (str(abs(charge)) if abs(charge) > 1 else "") + sign
    name = f"[{n_molecules if n_molecules > 1 else ''}M{body}]{charge_text}{'*' if radical else ''}"
    return _NAME_SYNONYMS.get(name, name)


def adduct_mz(neutral_mass: float, adduct: Adduct) -> float:
    """m/z of ``adduct`` of a molecule of monoisotopic ``neutral_mass``: (n * M + mass_shift) / |charge|."""
    return (adduct.n_molecules * neutral_mass + adduct.mass_shift) / abs(adduct.charge)


def neutral_mass(precursor_mz: float | None, adduct: str | None, ionmode: str | None = None) -> float | None:
    """Neutral monoisotopic mass from precursor m/z and adduct text (the inverse of :func:`adduct_mz`),
    or None when either is missing or unusable."""
    if precursor_mz is None or not math.isfinite(precursor_mz) or not adduct:
        return None
    try:
        a = parse_adduct(adduct, ionmode)
    except (UnknownAdductError, ValueError):
        return None
    if a.charge == 0 or a.n_molecules < 1:
        return None
    return a.neutral_mass(precursor_mz)
