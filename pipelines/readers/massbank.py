"""MassBank record format reader (``TAG: value`` lines, ``PK$PEAK`` block, ``//``).

Keys map to matchms names (values stay raw text); every other line lands in
``extra`` under its tag (``"COMMENT"``, ``"CH$LINK: CAS"``...), repeated tags
joined by newlines. For MS3+ records with ``PRECURSOR_M/Z 245/171/100``,
``precursor_mz_chain`` lists every stage and ``precursor_mz`` is the last one
(the ion whose fragments are listed); the value as written is kept in
``extra["MS$FOCUSED_ION: PRECURSOR_M/Z"]``.
"""
from __future__ import annotations

import logging
import re
from typing import Iterator

from speclake.pipelines.readers._text import (
    Parsed, RecordProblem, add_extra, id_finder, number, read_text_split,
)
from speclake.pipelines.readers.base import ReadResult, Split

log = logging.getLogger(__name__)

#: Tags whose value starts with a subtag (``AC$MASS_SPECTROMETRY: MS_TYPE MS2``).
SUBTAG_TAGS = frozenset({
    "AC$MASS_SPECTROMETRY", "AC$CHROMATOGRAPHY", "AC$GENERAL", "MS$FOCUSED_ION",
    "MS$DATA_PROCESSING", "CH$LINK", "SP$LINK",
})

#: One-to-one tag → matchms name.
TAG_KEYS: dict[str, str] = {
    "ACCESSION": "accession",
    "RECORD_TITLE": "title",
    "DATE": "date",
    "LICENSE": "license",
    "AUTHORS": "authors",
    "COPYRIGHT": "copyright",
    "CH$SMILES": "smiles",
    "CH$IUPAC": "inchi",
    "CH$FORMULA": "formula",
    "CH$EXACT_MASS": "exact_mass",
    "CH$COMPOUND_CLASS": "compound_class",
    "CH$LINK: INCHIKEY": "inchikey",
    "MS$FOCUSED_ION: PRECURSOR_TYPE": "adduct",
    "MS$FOCUSED_ION: PRECURSOR_INTENSITY": "precursor_intensity",
    "AC$MASS_SPECTROMETRY: MS_TYPE": "ms_level",
    "AC$MASS_SPECTROMETRY: ION_MODE": "ionmode",
    "AC$MASS_SPECTROMETRY: COLLISION_ENERGY": "collision_energy",
    "AC$MASS_SPECTROMETRY: FRAGMENTATION_MODE": "fragmentation_mode",
    "AC$MASS_SPECTROMETRY: IONIZATION": "ionization",
    "AC$MASS_SPECTROMETRY: RESOLUTION": "resolution",
    "AC$INSTRUMENT": "instrument",
    "AC$INSTRUMENT_TYPE": "instrument_type",
    "AC$CHROMATOGRAPHY: RETENTION_TIME": "retention_time",
    "PK$SPLASH": "splash",
}

_FORMULA_COLUMNS = ("tentative_formula", "formula")
_PPM_IN_PARENS = re.compile(r"\(([-+]?[\d.]+(?:[eE][-+]?\d+)?)(?:ppm)?\)")
_find_id = id_finder(r"^ACCESSION:\s*(\S+)")


def read_split(split: Split) -> Iterator[ReadResult]:
    """Read the MassBank records of one split."""
    return read_text_split(split, "massbank", parse_record, _find_id, "//")


def _key_value(line: str) -> tuple[str, str]:
    """``("AC$MASS_SPECTROMETRY: MS_TYPE", "MS2")`` from one tag line."""
    tag, _, value = line.partition(":")
    tag, value = tag.strip(), value.strip()
    if tag in SUBTAG_TAGS:
        sub, _, rest = value.partition(" ")
        return f"{tag}: {sub}", rest.strip()
    return tag, value


def _column(header: list[str], *names: str) -> int | None:
    """Index of the first header column whose name contains one of ``names``."""
    lowered = [h.lower() for h in header]
    for name in names:
        for i, h in enumerate(lowered):
            if name in h:
                return i
    return None


def _annotation_row(row: list[str], cols: tuple[int, int, int | None]) -> tuple[float, str, float | None]:
    """``(mz, formula, ppm)`` of one PK$ANNOTATION row; ValueError/IndexError if malformed."""
    mz_i, formula_i, ppm_i = cols
    ppm = _ppm(row[ppm_i]) if ppm_i is not None and ppm_i < len(row) else None
    return number(row[mz_i]), row[formula_i], ppm


def _ppm(token: str) -> float | None:
    """ppm error from ``-0.73`` or ``0.001(3.66)`` / ``0.001(3.13ppm)``; None if neither."""
    match = _PPM_IN_PARENS.search(token)
    try:
        return number(match.group(1) if match else token)
    except ValueError:
        return None


def _annotation_columns(header: list[str]) -> tuple[int, int, int | None] | None:
    """Columns of m/z, formula and ppm error named by an annotation header."""
    mz_i = _column(header, "m/z")
    formula_i = _column(header, *_FORMULA_COLUMNS)
    if mz_i is None or formula_i is None:
        return None
    ppm_i = _column(header, "error(ppm)", "mass_error", "diff(ppm)")
    return mz_i, formula_i, ppm_i


class _State:
    """Accumulates one record while its lines are parsed."""

    def __init__(self) -> None:
        self.metadata: dict[str, object] = {}
        self.extra: dict[str, str] = {}
        self.mz: list[float] = []
        self.intensities: list[float] = []
        self.block = ""                       # "peak" | "annotation" | ""
        self.peak_cols = (0, 1)
        self.ann_cols: tuple[int, int, int | None] | None = None
        self.annotations: list[tuple[float, str, float | None]] = []
        self.bad_annotations: list[str] = []
        self.has_peak_block = False
        self.num_peak: str | None = None
        self.adduct_from_ion_type = False


def _tag_line(state: _State, line: str, lineno: int) -> None:
    key, value = _key_value(line)
    state.block = ""
    meta = state.metadata
    if key == "PK$PEAK":
        header = value.split()
        state.has_peak_block = True
        state.block = "peak"
        mz_i = _column(header, "m/z")
        int_i = header.index("int.") if "int." in header else None
        state.peak_cols = (mz_i if mz_i is not None else 0, int_i if int_i is not None else 1)
        add_extra(state.extra, key, value)
    elif key == "PK$ANNOTATION":
        state.block = "annotation"
        state.ann_cols = _annotation_columns(value.split())
        add_extra(state.extra, key, value)
    elif key == "PK$NUM_PEAK":
        state.num_peak = value
        add_extra(state.extra, key, value)
    elif key == "CH$NAME":
        if "compound_name" not in meta:
            meta["compound_name"] = value
        else:
            meta.setdefault("synonyms", []).append(value)  # type: ignore[union-attr]
    elif key == "CH$LINK: ChemOnt":
        meta.setdefault("chemont", []).append(value)  # type: ignore[union-attr]
    elif key == "MS$FOCUSED_ION: PRECURSOR_M/Z":
        stages = [v.strip() for v in value.split("/") if v.strip()]
        meta["precursor_mz"] = stages[-1] if stages else value
        if len(stages) > 1:
            meta["precursor_mz_chain"] = stages
            add_extra(state.extra, key, value)
    elif key == "MS$FOCUSED_ION: ION_TYPE" and "adduct" not in meta:
        meta["adduct"] = value
        state.adduct_from_ion_type = True
    elif key == "MS$FOCUSED_ION: PRECURSOR_TYPE" and state.adduct_from_ion_type:
        add_extra(state.extra, "MS$FOCUSED_ION: ION_TYPE", str(meta["adduct"]))
        meta["adduct"] = value
        state.adduct_from_ion_type = False
    elif key in TAG_KEYS and TAG_KEYS[key] not in meta:
        meta[TAG_KEYS[key]] = value
    else:
        add_extra(state.extra, key, value)


def _peak_row(state: _State, line: str, lineno: int) -> None:
    tokens = line.split()
    mz_i, int_i = state.peak_cols
    try:
        mz, intensity = number(tokens[mz_i]), number(tokens[int_i])
    except (ValueError, IndexError):
        raise RecordProblem("peak_parse_error",
                            f"Peak list line {lineno} is not 'm/z int. rel.int.': {line.strip()[:80]!r}.") from None
    state.mz.append(mz)
    state.intensities.append(intensity)


def _annotation_line(state: _State, line: str, lineno: int) -> None:
    row = line.split()
    try:
        if state.ann_cols is None:
            raise ValueError("header names no m/z and formula columns")
        state.annotations.append(_annotation_row(row, state.ann_cols))
    except (ValueError, IndexError):
        state.bad_annotations.append(f"line {lineno}: {line.strip()[:120]}")


def _indented_line(state: _State, line: str, lineno: int) -> None:
    if state.block == "peak":
        _peak_row(state, line, lineno)
    elif state.block == "annotation":
        _annotation_line(state, line, lineno)
    else:
        add_extra(state.extra, "unparsed_lines", f"line {lineno}: {line.strip()}")


def parse_record(text: str, first_line: int) -> Parsed:
    """Parse one MassBank record's text; RecordProblem if it has no usable peaks."""
    state = _State()
    for offset, raw_line in enumerate(text.splitlines()):
        lineno = first_line + offset
        line = raw_line.rstrip()
        stripped = line.strip()
        if not stripped or stripped == "//":
            continue
        if line[0] in " \t":
            _indented_line(state, line, lineno)
        elif ":" in line.split(None, 1)[0]:
            _tag_line(state, line, lineno)
        elif state.block == "peak":
            _peak_row(state, line, lineno)
        else:
            add_extra(state.extra, "unparsed_lines", f"line {lineno}: {stripped}")
    return _finish(state, first_line)


def _finish(state: _State, first_line: int) -> Parsed:
    if state.annotations:
        state.metadata["peak_annotations"] = state.annotations
    if state.bad_annotations:
        state.extra["annotation_rows_skipped"] = "\n".join(state.bad_annotations)
    if not state.mz:
        where = "an empty PK$PEAK block" if state.has_peak_block else "no PK$PEAK block"
        raise RecordProblem("no_peaks", f"Record starting at line {first_line} has {where}.")
    if state.num_peak is not None and state.num_peak.strip().isdigit() \
            and int(state.num_peak) != len(state.mz):
        raise RecordProblem("num_peaks_mismatch", f"PK$NUM_PEAK says {state.num_peak.strip()} but the "
                            f"PK$PEAK block of the record at line {first_line} has {len(state.mz)} peaks.")
    return Parsed(state.metadata, state.extra, tuple(state.mz), tuple(state.intensities))
