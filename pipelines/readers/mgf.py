"""MGF reader (GNPS library dialect and plain MGF).

``KEY=value`` lines map to matchms names; values ``n/a``, ``N/A`` or blank are
missing (kept only in ``extra``). ``PEPMASS`` gives ``precursor_mz`` (first
token) and ``precursor_intensity`` (second). ``RTINSECONDS``/``RTINMINUTES``
give ``retention_time`` with the unit appended (``"302.1 s"``) so the unit
named by the key is not lost. GNPS appends the adduct to ``NAME``
(``"... M-H"``): the name is kept as written and the trailing adduct fills
``adduct`` only when no ``ADDUCT``/``PRECURSORTYPE`` key exists.
"""
from __future__ import annotations

import re
from typing import Iterator

from speclake.pipelines.readers._text import (
    Parsed, RecordProblem, add_extra, id_finder, is_missing, looks_like_inchikey, number,
    read_text_split,
)
from speclake.pipelines.readers.base import ReadResult, Split

#: One-to-one MGF key (upper case) → matchms name.
KEYS: dict[str, str] = {
    "CHARGE": "charge",
    "MSLEVEL": "ms_level",
    "MS_LEVEL": "ms_level",
    "IONMODE": "ionmode",
    "ION_MODE": "ionmode",
    "NAME": "compound_name",
    "COMPOUND_NAME": "compound_name",
    "SMILES": "smiles",
    "INCHI": "inchi",
    "INCHIKEY": "inchikey",
    "SPECTRUMID": "accession",
    "SPECTRUM_ID": "accession",
    "SCANS": "scan_number",
    "SCAN_NUMBER": "scan_number",
    "SOURCE_INSTRUMENT": "instrument",
    "INSTRUMENT": "instrument",
    "INSTRUMENT_TYPE": "instrument_type",
    "TITLE": "title",
    "FORMULA": "formula",
    "EXACTMASS": "exact_mass",
    "EXACT_MASS": "exact_mass",
    "COLLISION_ENERGY": "collision_energy",
    "FRAGMENTATION_METHOD": "fragmentation_mode",
    "FRAGMENTATION_MODE": "fragmentation_mode",
    "IONIZATION": "ionization",
    "RETENTION_TIME": "retention_time",
    "RETENTIONTIME": "retention_time",
    "RT": "retention_time",
    "SPLASH": "splash",
    "LICENSE": "license",
    "AUTHORS": "authors",
    "USI": "usi",
    "LIBRARY": "library",
    "LIBRARYNAME": "library",
}
_ADDUCT_KEYS = ("ADDUCT", "PRECURSORTYPE", "PRECURSOR_TYPE")
_RT_UNITS = {"RTINSECONDS": "s", "RTINMINUTES": "min"}
_TRAILING_ADDUCT = re.compile(r"\s(\[?\d*M(?:[+-][0-9A-Za-z()]+)+\]?\d*[+-]*)$")
_find_id = id_finder(r"^SPECTRUMID=\s*(\S+)")


def read_split(split: Split) -> Iterator[ReadResult]:
    """Read the MGF spectra of one split."""
    return read_text_split(split, "mgf", parse_record, _find_id, "END IONS")


def _peak(line: str, lineno: int) -> tuple[float, float]:
    tokens = line.replace(",", " ").split()
    try:
        if len(tokens) < 2:
            raise ValueError("needs m/z and intensity")
        return number(tokens[0]), number(tokens[1])
    except ValueError:
        raise RecordProblem("peak_parse_error",
                            f"Peak line {lineno} is not 'm/z intensity': {line.strip()[:80]!r}.") from None


def _store(metadata: dict[str, object], extra: dict[str, str], key: str, value: str) -> None:
    """Map one ``KEY=value`` pair into metadata or extra."""
    upper = key.upper()
    if is_missing(value):
        add_extra(extra, key, value)
    elif upper == "PEPMASS":
        tokens = value.split()
        metadata["precursor_mz"] = tokens[0]
        if len(tokens) > 1:
            metadata["precursor_intensity"] = tokens[1]
    elif upper in _RT_UNITS and "retention_time" not in metadata:
        metadata["retention_time"] = f"{value.strip()} {_RT_UNITS[upper]}"
    elif upper in _ADDUCT_KEYS and "adduct" not in metadata:
        metadata["adduct"] = value.strip()
    elif upper in KEYS and KEYS[upper] not in metadata:
        metadata[KEYS[upper]] = value.strip()
    elif upper == "INCHIAUX" and looks_like_inchikey(value) and "inchikey" not in metadata:
        metadata["inchikey"] = value.strip()
    else:
        add_extra(extra, key, value)


def parse_record(text: str, first_line: int) -> Parsed:
    """Parse one ``BEGIN IONS``..``END IONS`` block."""
    metadata: dict[str, object] = {}
    extra: dict[str, str] = {}
    mz: list[float] = []
    intensities: list[float] = []
    has_adduct_key = False
    for offset, raw_line in enumerate(text.splitlines()):
        line = raw_line.strip()
        upper = line.upper()
        if not line or upper in ("BEGIN IONS", "END IONS") or line.startswith(("#", ";", "!")):
            continue
        key, eq, value = line.partition("=")
        if eq and key and key[0].isalpha():
            has_adduct_key |= key.upper() in _ADDUCT_KEYS and not is_missing(value)
            _store(metadata, extra, key.strip(), value)
            continue
        peak = _peak(line, first_line + offset)
        mz.append(peak[0])
        intensities.append(peak[1])
    _adduct_from_name(metadata, extra, has_adduct_key)
    if not mz:
        raise RecordProblem("no_peaks", f"Spectrum starting at line {first_line} has no peaks.")
    return Parsed(metadata, extra, tuple(mz), tuple(intensities))


def _adduct_from_name(metadata: dict[str, object], extra: dict[str, str], has_adduct_key: bool) -> None:
    """Take GNPS's trailing adduct from NAME when no adduct key exists."""
    name = metadata.get("compound_name")
    if has_adduct_key or not isinstance(name, str):
        return
    match = _TRAILING_ADDUCT.search(name)
    if match:
        metadata["adduct"] = match.group(1)
        extra["adduct_source"] = "NAME"
