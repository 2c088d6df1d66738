"""Parse and harmonize raw metadata text (as the readers give it) into typed values.

Each function reads one value. ``None``, empty text and the usual placeholders
(``NA``, ``n/a``, ``n.d.``, ``unknown`` ...) mean *missing* and give ``None``;
text that is present but cannot be read raises :class:`InvalidValueError`
naming it, so the caller decides whether that loses the record or only the
value (:func:`speclake.pipelines.normalize.spectrum.normalize_record` keeps the
record and notes it).
"""
from __future__ import annotations

from functools import lru_cache

import logging
import re
from typing import Iterable, Literal

from speclake.pipelines.normalize.adduct import Adduct
from speclake.pipelines.normalize.errors import InvalidValueError

log = logging.getLogger(__name__)

Ionmode = Literal["positive", "negative", "unknown"]

#: Text that means "no value" in any library.
MISSING_TEXT = frozenset({"", "na", "n/a", "n.a.", "nan", "none", "null", "nd", "n.d.", "unknown", "-", "?", "not available"})

_POSITIVE = frozenset({"positive", "pos", "p", "+", "positive mode", "+ve", "pos.", "positive ion", "positive ion mode"})
_NEGATIVE = frozenset({"negative", "neg", "n", "-", "negative mode", "-ve", "neg.", "negative ion", "negative ion mode"})
_NUMBER = r"\d+(?:\.\d+)?|\.\d+"


def clean_text(value: object) -> str | None:
    """The value as stripped text, or None when it is missing (first item of a list)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    text = str(value).strip()
    return None if text.lower() in MISSING_TEXT else text


def harmonize_ionmode(value: object, *, adduct: Adduct | None = None, charge: int | None = None) -> Ionmode:
    """``POSITIVE``/``Positive``/``P``/``+`` -> ``positive`` (likewise negative); when missing or unreadable,
    the sign of ``adduct.charge``, else of ``charge``; else ``unknown``."""
    text = value.strip() if isinstance(value, str) and value.strip() in ("+", "-") else clean_text(value)
    if text is not None:
        low = text.lower()
        if low in _POSITIVE:
            return "positive"
        if low in _NEGATIVE:
            return "negative"
        log.debug("ionmode %r not understood; deriving it", text)
    if adduct is not None and adduct.charge:
        return "positive" if adduct.charge > 0 else "negative"
    if charge:
        return "positive" if charge > 0 else "negative"
    return "unknown"


def parse_ms_level(value: object) -> int | None:
    """``MS2``/``2``/``ms2`` -> 2, ``MS``/``MS1`` -> 1; ``MSn`` or missing -> None (level not stated)."""
    text = clean_text(value)
    if text is None:
        return None
    m = re.fullmatch(r"(?:ms)?\s*(\d+)|ms", text.strip().lower())
    if m is None:
        if text.strip().lower() in ("msn", "ms^n", "ms n"):
            return None
        raise InvalidValueError(f"MS level {text!r} is not MS, MSn or a number")
    level = int(m.group(1)) if m.group(1) else 1
    if not 1 <= level <= 20:
        raise InvalidValueError(f"MS level {text!r} is out of range 1-20")
    return level


def derive_ms_level(ms_level: int | None, precursor_mz_chain: list[float] | None) -> int | None:
    """The stated level, else one more than the number of precursors in the MSn chain, else None."""
    if ms_level is not None:
        return ms_level
    if precursor_mz_chain:
        return len(precursor_mz_chain) + 1
    return None


def parse_charge(value: object) -> int | None:
    """``1`` -> 1, ``2-`` -> -2, ``-1`` -> -1, ``+2``/``2+`` -> 2; ``0`` or missing -> None (unknown charge).

    A list of charges (MGF ``2+ and 3+``) gives the first.
    """
    text = clean_text(value)
    if text is None:
        return None
    first = re.split(r"\s*(?:,|and|or|/)\s*", text)[0].replace(" ", "")
    m = re.fullmatch(r"([+-]?)(\d+)([+-]?)", first)
    if m is None or (m.group(1) and m.group(3)):
        raise InvalidValueError(f"charge {text!r} is not a signed integer such as 1, 2-, -1")
    magnitude = int(m.group(2))
    if magnitude == 0:
        return None
    return -magnitude if "-" in (m.group(1) + m.group(3)) else magnitude


def charge_has_sign(value: object) -> bool:
    """Whether charge text states a sign (``2-``, ``+1``), as opposed to a bare ``1``."""
    text = clean_text(value)
    return bool(text) and ("+" in text or "-" in text)


def parse_precursor_mz_chain(value: object) -> list[float]:
    """Precursor m/z of each MSn stage, first (MS1) to last: from a list, or text ``764.52/690.15``."""
    if value is None:
        return []
    items: Iterable[object] = value if isinstance(value, (list, tuple)) else re.split(r"\s*/\s*", str(value))
    chain: list[float] = []
    for item in items:
        mz = _positive_float(item, "precursor m/z")
        if mz is not None:
            chain.append(mz)
    return chain


def parse_precursor_mz(value: object) -> float | None:
    """Precursor m/z > 0 from ``"183.057"``, ``"183.057 1234"`` (MGF PEPMASS: first token) or an MSn chain
    ``"764.52/690.15"`` (the last, i.e. the ion this spectrum fragments); ``NA``/``0``/missing -> None."""
    text = clean_text(value)
    if text is None:
        return None
    if "/" in text:
        chain = parse_precursor_mz_chain(text)
        return chain[-1] if chain else None
    return _positive_float(text.split()[0], "precursor m/z")


def precursor_precision(value: object) -> float:
    """Place value of the last written digit of a precursor m/z: ``423`` -> 1.0, ``423.0`` -> 0.1,
    ``764.52/690.15`` -> 0.01 (of the last); 0.0 when not plain decimal text."""
    text = clean_text(value)
    if text is None:
        return 0.0
    token = text.split("/")[-1].split()[0] if text.split("/")[-1].split() else ""
    m = re.fullmatch(r"\d+(?:\.(\d*))?", token)
    if m is None:
        return 0.0
    return 10.0 ** -len(m.group(1) or "")


def _positive_float(value: object, what: str) -> float | None:
    text = clean_text(value)
    if text is None:
        return None
    try:
        number = float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        raise InvalidValueError(f"{what} {text!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidValueError(f"{what} {text!r} is not finite")
    if number < 0:
        raise InvalidValueError(f"{what} {text!r} is negative")
    return number if number > 0 else None


def parse_float(value: object, what: str = "value") -> float | None:
    """A finite float from text (``exact_mass`` ...); missing -> None; unreadable -> InvalidValueError."""
    text = clean_text(value)
    if text is None:
        return None
    try:
        number = float(text.split()[0])
    except ValueError:
        raise InvalidValueError(f"{what} {text!r} is not a number") from None
    if number != number or abs(number) == float("inf"):
        raise InvalidValueError(f"{what} {text!r} is not finite")
    return number


def parse_int(value: object, what: str = "value") -> int | None:
    """An integer from text such as ``"1234"``, ``"scan=1234"``, ``"1234.0"``; missing -> None."""
    text = clean_text(value)
    if text is None:
        return None
    m = re.fullmatch(r"(?:[A-Za-z_ ]*[=:]\s*)?(\d+)(?:\.0+)?", text)
    if m is None:
        raise InvalidValueError(f"{what} {text!r} is not an integer")
    return int(m.group(1))


def parse_collision_energy(value: object) -> tuple[float | None, Literal["eV", "%"] | None]:
    """Numeric collision energy and its unit (eV, % for NCE, or None) from text as written."""
    if isinstance(value, str):
        return _parse_collision_energy_text(value)
    return _parse_collision_energy(value)


@lru_cache(maxsize=8192)
def _parse_collision_energy_text(value: str) -> tuple[float | None, Literal["eV", "%"] | None]:
    return _parse_collision_energy(value)


def _parse_collision_energy(value: object) -> tuple[float | None, Literal["eV", "%"] | None]:
    """(value, unit) of a collision energy as MassBank, MGF and MSP write it.

    ``35 % (nominal)``, ``30%``, ``30(NCE)``, ``40.0 NCE`` -> (35.0, "%") ...;
    ``20 eV``, ``20 V``, ``20V``, ``-20`` (negative-mode voltage) -> eV;
    ``HCD 30``, ``CE60``, ``30 (nominal)``, ``35.0`` -> (value, None);
    ramps and steps (``10-40 eV ramp``, ``Ramp 5-60 V``, ``25,60,100% (stepped)``) -> their mean;
    ``42% (nominal) with stepped ...`` -> the stated 42; per-stage MSn lists (``0.65/0.60``) -> the last stage;
    ``1 keV`` -> 1000 eV. Missing or ``n.d.`` -> (None, None). Ambiguous text (``15, 30 or 45``,
    ``scaled 80 (m/z=200) to 110``), ``kV`` (an ionisation voltage) and text without a number raise
    :class:`InvalidValueError`.
    """
    text = clean_text(value)
    if text is None:
        return None, None
    low = text.lower()
    if " or " in low or "scaled" in low or "mz" in low or "m/z" in low:
        raise InvalidValueError(f"collision energy {text!r} is not one value")
    if re.search(r"\d\s*kv\b", low):
        raise InvalidValueError(f"collision energy {text!r} is in kV, an ionisation voltage, not a collision energy")
    unit: Literal["eV", "%"] | None
    factor = 1.0
    if "%" in low or "nce" in low:
        unit = "%"
    elif re.search(r"\d\s*kev\b", low):
        unit, factor = "eV", 1000.0
    elif re.search(r"(?:\d|\s|^)e?v\b", low):
        unit = "eV"  # a collision voltage in V is the energy in eV of a singly charged ion
    else:
        unit = None
    core = re.split(r"\bwith\b", low)[0]
    core = re.sub(r"\([^)]*\)", " ", core)
    ramp = re.search(rf"({_NUMBER}|\d+,\d+)\s*%?\s*(?:-|->|to)\s*({_NUMBER}|\d+,\d+)", core)
    if ramp:
        lo, hi = (float(x.replace(",", ".")) for x in ramp.groups())
        return factor * (lo + hi) / 2.0, unit
    if "/" in core:  # MSn: one energy per stage, the last is this spectrum's
        core = core.rsplit("/", 1)[1]
    numbers = [float(x) for x in re.findall(_NUMBER, core)]
    if not numbers:
        raise InvalidValueError(f"collision energy {text!r} has no number")
    return factor * sum(numbers) / len(numbers), unit


_RT_UNITS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0,
             "m": 60.0, "min": 60.0, "mins": 60.0, "minute": 60.0, "minutes": 60.0,
             "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "ms": 0.001}


def parse_retention_time(value: object, *, default_unit: Literal["s", "min"] = "s",
                         seconds_above: float | None = None) -> float | None:
    """Retention time in seconds from ``5.1 min``, ``302.1 sec``, ``302.1 s``, ``0.85 min.`` ...

    Text without a unit is in ``default_unit`` (MGF RTINSECONDS: seconds; MassBank and MSP write
    minutes), except that with ``default_unit="min"`` a unitless value above ``seconds_above`` is read
    as seconds (MassBank's GL_Sciences records write GC times such as ``294.78`` in s). Lists (``5.1, 5.3 min``, ``5.1 min (in paper: 5.0 min)``) give the first value.
    ``N/A min`` or missing -> None.
    """
    text = clean_text(value)
    if text is None:
        return None
    low = text.lower()
    if low.split()[0] in MISSING_TEXT:
        return None
    m = re.match(rf"\s*({_NUMBER})\s*([a-z]*)", low)
    if m is None:
        raise InvalidValueError(f"retention time {text!r} has no number")
    number = float(m.group(1))
    unit = m.group(2)
    if not unit:  # "5.1, 5.3 min": the unit follows the last value
        later = re.search(r"\d\s*(sec|secs|seconds?|s|min|mins|minutes?|h|hr|hours?)\b", low)
        if later:
            unit = later.group(1)
        elif default_unit == "min" and seconds_above is not None and number > seconds_above:
            unit = "s"
        else:
            unit = default_unit
    if unit not in _RT_UNITS:
        raise InvalidValueError(f"retention time {text!r} has unknown unit {unit!r}")
    return number * _RT_UNITS[unit]


def parse_chemont(entries: object) -> tuple[str | None, list[str]]:
    """(``CHEMONTID:0004107``, [kingdom, superclass, class, subclass ...]) from
    ``"CHEMONTID:0004107; Organic compounds; Organoheterocyclic compounds; Triazines; 1,2,4-triazines"``
    (a string or a list of such; the first entry with content wins); (None, []) when missing."""
    if entries is None:
        return None, []
    items = [entries] if isinstance(entries, str) else list(entries)  # type: ignore[call-overload]
    for entry in items:
        text = clean_text(entry)
        if text is None:
            continue
        parts = [p.strip() for p in text.split(";") if p.strip()]
        chemont_id = None
        if parts:
            m = re.fullmatch(r"(?:CHEMONTID:?\s*|C)?(\d{7})", parts[0], flags=re.IGNORECASE)
            if m:
                chemont_id = f"CHEMONTID:{m.group(1)}"
                parts = parts[1:]
        if chemont_id or parts:
            return chemont_id, parts
    return None, []
