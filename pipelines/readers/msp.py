"""MSP reader: NIST, MoNA, MassBank-export and RIKEN (MS-DIAL) dialects.

Keys are matched case-insensitively ignoring ``_``, ``-`` and spaces
(``Precursor_type`` = ``PRECURSORTYPE``). ``Comments`` holding ``"key=value"``
(MoNA) or ``key="value"`` (NIST) pairs are parsed into ``extra`` as
``"Comments: key"`` and fill SMILES/InChI/InChIKey/ion type/ionization
mode/licence/accession... when no top-level key gives them. Peak lines may be
``mz int``, ``mz<TAB>int``, NIST multi-pair ``51 2; 55 8;`` and may carry a
quoted annotation, kept in ``extra["peak_comments"]``.
"""
from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Iterator

from speclake.pipelines.readers._text import (
    Parsed, RecordProblem, add_extra, id_finder, is_missing, number, read_text_split,
)
from speclake.pipelines.readers.base import ReadResult, Split

#: Normalised key (lower case, no ``_ -`` or spaces) → matchms name.
KEYS: dict[str, str] = {
    "name": "compound_name",
    "dbnumber": "accession",
    "db#": "accession",
    "accession": "accession",
    "inchikey": "inchikey",
    "inchi": "inchi",
    "smiles": "smiles",
    "precursortype": "adduct",
    "adduct": "adduct",
    "iontype": "adduct",
    "spectrumtype": "ms_level",
    "mslevel": "ms_level",
    "mstype": "ms_level",
    "precursormz": "precursor_mz",
    "precursorm/z": "precursor_mz",
    "precursorintensity": "precursor_intensity",
    "instrumenttype": "instrument_type",
    "instrument": "instrument",
    "ionmode": "ionmode",
    "ionizationmode": "ionmode",
    "collisionenergy": "collision_energy",
    "formula": "formula",
    "molecularformula": "formula",
    "exactmass": "exact_mass",
    "splash": "splash",
    "retentiontime": "retention_time",
    "rt": "retention_time",
    "ionization": "ionization",
    "license": "license",
    "author": "authors",
    "authors": "authors",
    "charge": "charge",
    "fragmentationmode": "fragmentation_mode",
    "fragmentation": "fragmentation_mode",
    "resolution": "resolution",
    "compoundclass": "compound_class",
    "date": "date",
    "title": "title",
    "usi": "usi",
    "library": "library",
}
_SYNONYM_KEYS = ("synon", "synonym", "synonyms")
_NUM_PEAKS_KEYS = ("numpeaks", "numpeak")
_PAIR_MONA = re.compile(r'"([^"=]+)=([^"]*)"')
_PAIR_NIST = re.compile(r'([A-Za-z][\w#/ ]*?)="([^"]*)"')
_QUOTED = re.compile(r'"[^"]*"')
_KEY_NOISE = re.compile(r"[\s_\-]")
_KEY_LINE = re.compile(r"^([A-Za-z#$][^:]{0,60}):\s?(.*)$")
_find_id = id_finder(r"^DB#:\s*(\S+)")


def read_split(split: Split) -> Iterator[ReadResult]:
    """Read the MSP records of one split."""
    return read_text_split(split, "msp", parse_record, _find_id, "a blank line")


@lru_cache(maxsize=4096)
def normalise_key(key: str) -> str:
    """``"Precursor_type"`` → ``"precursortype"``."""
    return _KEY_NOISE.sub("", key).lower()


def comment_pairs(comments: str) -> list[tuple[str, str]]:
    """``[(key, value)]`` from MoNA ``"k=v"`` or NIST ``k="v"`` comment text."""
    pattern = _PAIR_MONA if comments.lstrip().startswith('"') else _PAIR_NIST
    return [(k.strip(), v.strip()) for k, v in pattern.findall(comments)]


def _peaks_of_line(line: str, lineno: int) -> tuple[list[tuple[float, float]], list[str]]:
    """Peaks and quoted annotations on one peak line."""
    notes = [q.strip('"') for q in _QUOTED.findall(line)]
    body = _QUOTED.sub(" ", line)
    peaks = []
    for pair in body.split(";"):
        tokens = pair.replace(",", " ").split()
        if not tokens:
            continue
        try:
            if len(tokens) < 2:
                raise ValueError("needs m/z and intensity")
            peaks.append((number(tokens[0]), number(tokens[1])))
        except ValueError:
            raise RecordProblem("peak_parse_error",
                                f"Peak line {lineno} is not 'm/z intensity': {line.strip()[:80]!r}.") from None
    return peaks, notes


def _store(metadata: dict[str, object], extra: dict[str, str], key: str, value: str) -> None:
    norm = normalise_key(key)
    if is_missing(value):
        add_extra(extra, key, value)
    elif norm in _SYNONYM_KEYS:
        metadata.setdefault("synonyms", []).append(value)  # type: ignore[union-attr]
    elif norm in KEYS and KEYS[norm] not in metadata:
        metadata[KEYS[norm]] = value
    else:
        add_extra(extra, key, value)


def _apply_comments(metadata: dict[str, object], extra: dict[str, str]) -> None:
    """Parse ``Comments`` pairs into extra; fill metadata keys still missing."""
    comments = extra.get("Comments") or extra.get("COMMENTS") or extra.get("Comment")
    if not comments:
        return
    for key, value in comment_pairs(comments):
        add_extra(extra, f"Comments: {key}", value)
        norm = normalise_key(key)
        if norm in KEYS and KEYS[norm] not in metadata and not is_missing(value):
            metadata[KEYS[norm]] = value


def parse_record(text: str, first_line: int) -> Parsed:
    """Parse one MSP record (metadata lines, then peak lines)."""
    metadata: dict[str, object] = {}
    extra: dict[str, str] = {}
    peaks: list[tuple[float, float]] = []
    notes: list[str] = []
    num_peaks: str | None = None
    in_peaks = False
    for offset, raw_line in enumerate(text.splitlines()):
        line = raw_line.strip()
        lineno = first_line + offset
        if not line:
            continue
        match = None if line[0].isdigit() else _KEY_LINE.match(line)
        if match and not in_peaks:
            key, value = match.group(1).strip(), match.group(2).strip()
            if normalise_key(key) in _NUM_PEAKS_KEYS:
                num_peaks, in_peaks = value, True
            else:
                _store(metadata, extra, key, value)
            continue
        if not (line[0].isdigit() or line[0] == "."):
            if in_peaks or peaks:
                raise RecordProblem("peak_parse_error",
                                    f"Peak line {lineno} is not 'm/z intensity': {line[:80]!r}.")
            add_extra(extra, "unparsed_lines", f"line {lineno}: {line}")
            continue
        in_peaks = True
        if '"' not in line and ";" not in line and "," not in line:  # plain "mz intensity": the common case
            tokens = line.split()
            if len(tokens) == 2:
                try:
                    mz, intensity = float(tokens[0]), float(tokens[1])
                except ValueError:
                    mz = intensity = math.nan
                if math.isfinite(mz) and math.isfinite(intensity):
                    peaks.append((mz, intensity))
                    continue  # anything else: the general path below reads it or words the error
        line_peaks, line_notes = _peaks_of_line(line, lineno)
        peaks.extend(line_peaks)
        if line_peaks and line_notes:
            notes.append(f"{line_peaks[-1][0]:g}\t{line_notes[0]}")
    _apply_comments(metadata, extra)
    if num_peaks is not None:
        add_extra(extra, "Num Peaks", num_peaks)
    if notes:
        extra["peak_comments"] = "\n".join(notes)
    return _checked(metadata, extra, peaks, num_peaks, first_line)


def _checked(metadata: dict[str, object], extra: dict[str, str], peaks: list[tuple[float, float]],
             num_peaks: str | None, first_line: int) -> Parsed:
    if not peaks:
        raise RecordProblem("no_peaks", f"Record starting at line {first_line} has no peaks.")
    if num_peaks is not None and num_peaks.strip().isdigit() and int(num_peaks) != len(peaks):
        raise RecordProblem("num_peaks_mismatch", f"Num Peaks says {num_peaks.strip()} but the record "
                            f"starting at line {first_line} lists {len(peaks)} peaks.")
    return Parsed(metadata, extra, tuple(p[0] for p in peaks), tuple(p[1] for p in peaks))
