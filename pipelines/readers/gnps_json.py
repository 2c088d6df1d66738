"""GNPS library JSON reader: a JSON array of records, or a staged JSON Lines chunk.

A split with ``extra["layout"] == "jsonl"`` holds one record object per line
(staged by the planner, or a user's ``.jsonl``); otherwise the file is a JSON
array streamed with ``ijson``. Locators are ``record {n} (line {line})
{spectrum_id}`` for a user's JSON Lines file, and ``record {n} {spectrum_id}``
for items of a JSON array (whether read in place or from staged chunks,
``extra["origin"] == "array"``): ijson reports no positions, so array items
have no line numbers. A planner-recorded JSON syntax error
(``extra["json_error"]``) becomes one ``json_error`` RecordError after the
records read before it.
"""
from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any, Iterator

import ijson

from speclake.pipelines.readers._text import (
    Parsed, RecordProblem, add_extra, empty_file, excerpt, id_finder, is_missing, looks_like_inchikey,
    number, read_segment, trailing_error,
)
from speclake.pipelines.readers._segment import iter_lines, segment_lines
from speclake.pipelines.readers.base import RawRecord, ReadResult, RecordError, Split

log = logging.getLogger(__name__)

#: GNPS key → matchms name (first present key wins).
KEYS: dict[str, str] = {
    "spectrum_id": "accession",
    "SpectrumID": "accession",
    "Compound_Name": "compound_name",
    "Precursor_MZ": "precursor_mz",
    "Charge": "charge",
    "Ion_Mode": "ionmode",
    "Adduct": "adduct",
    "Smiles": "smiles",
    "INCHI": "inchi",
    "InChIKey": "inchikey",
    "ms_level": "ms_level",
    "Instrument": "instrument",
    "Ion_Source": "ionization",
    "library_membership": "library",
    "splash": "splash",
    "scan": "scan_number",
    "ExactMass": "exact_mass",
    "Formula": "formula",
    "usi": "usi",
    "create_time": "date",
}
_find_id = id_finder(r'"(?:spectrum_id|SpectrumID)"\s*:\s*"([^"]*)"')


def read_split(split: Split) -> Iterator[ReadResult]:
    """Read the GNPS records of one split (JSON array or JSON Lines)."""
    if split.extra.get("layout") == "jsonl":
        yield from _read_jsonl(split)
    else:
        yield from _read_array(split)
    tail = trailing_error(split)
    if tail is not None:
        yield tail
    if "json_error" in split.extra:
        index = int(split.extra.get("json_error_record", split.first_record))
        yield RecordError(split.source_file, _item_locator(index), split.fmt,
                          "json_error", split.extra["json_error"])


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _peaks(value: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """m/z and intensities from ``peaks_json`` (a JSON string or a list)."""
    try:
        pairs = json.loads(value) if isinstance(value, str) else value
        if not isinstance(pairs, list):
            raise ValueError("not a list")
        mz = tuple(number(str(p[0])) for p in pairs)
        intensities = tuple(number(str(p[1])) for p in pairs)
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise RecordProblem("peak_parse_error", f"peaks_json is not a list of [m/z, intensity] pairs: {exc}.") \
            from None
    return mz, intensities


def parse_object(obj: Any, where: str) -> Parsed:
    """Map one GNPS record object; RecordProblem if it is not one."""
    if not isinstance(obj, dict):
        raise RecordProblem("json_error", f"{where} is a JSON {type(obj).__name__}, not a record object.")
    metadata: dict[str, object] = {}
    extra: dict[str, str] = {}
    peaks_value = None
    for key, value in obj.items():
        text = _text(value)
        if key == "peaks_json" or key == "peaks":
            peaks_value = value
        elif key in KEYS and KEYS[key] not in metadata and not is_missing(text):
            metadata[KEYS[key]] = text
        elif key == "INCHI_AUX" and looks_like_inchikey(text) and "inchikey" not in metadata:
            metadata["inchikey"] = text
        elif not (key in KEYS and text == metadata.get(KEYS[key])):
            add_extra(extra, key, text)
    if peaks_value is None:
        raise RecordProblem("no_peaks", f"{where} has no peaks_json field.")
    mz, intensities = _peaks(peaks_value)
    if not mz:
        raise RecordProblem("no_peaks", f"{where} has an empty peak list.")
    return Parsed(metadata, extra, mz, intensities)


def _parse_line(text: str, first_line: int) -> Parsed:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordProblem("json_error", f"Line {first_line} is not valid JSON: {exc.msg} "
                            f"(column {exc.colno}).") from None
    return parse_object(obj, f"The object on line {first_line}")


def _item_locator(index: int, ident: str = "") -> str:
    """``record {n} {id}`` for the 0-based item ``index`` of a JSON array."""
    return f"record {index + 1} {ident}" if ident else f"record {index + 1}"


def _read_jsonl(split: Split) -> Iterator[ReadResult]:
    count = 0
    from_array = split.extra.get("origin") == "array"
    locate = (lambda seg, ident: _item_locator(seg.index, ident)) if from_array else None
    with open(split.path, "rb") as fh:
        lines = iter_lines(fh, split.start, split.end)
        for seg in segment_lines(lines, "jsonl", split.first_record, split.first_line, split.start):
            count += 1
            yield read_segment(split, seg, _parse_line, _find_id, "a newline", locate)
    if count == 0 and "json_error" not in split.extra and "error_code" not in split.extra:
        yield empty_file(split)


def _plain(value: Any) -> Any:
    """ijson yields Decimal for numbers; turn them into floats."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _read_array(split: Split) -> Iterator[ReadResult]:
    index = split.first_record
    with open(split.path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        if not head:
            yield empty_file(split)
            return
        fh.seek(0)
        try:
            for obj in ijson.items(fh, "item"):
                yield _array_item(split, _plain(obj), index)
                index += 1
        except (ijson.JSONError, ijson.IncompleteJSONError, UnicodeDecodeError, ValueError) as exc:
            yield RecordError(split.source_file, _item_locator(index), split.fmt, "json_error",
                              f"JSON syntax error after {index} records: {exc}.",
                              excerpt(head.decode("utf-8", "replace")) if index == 0 else "")
            return
    if index == split.first_record:
        yield RecordError(split.source_file, _item_locator(split.first_record), split.fmt, "empty_file",
                          "The file is not a JSON array of records or the array is empty.",
                          excerpt(head.decode("utf-8", "replace")))


def _array_item(split: Split, obj: Any, index: int) -> ReadResult:
    ident = _text(obj.get("spectrum_id") or obj.get("SpectrumID") or "") if isinstance(obj, dict) else ""
    where = _item_locator(index, ident)
    raw = excerpt(json.dumps(obj, default=str, ensure_ascii=False))
    try:
        parsed = parse_object(obj, f"Array item {index + 1}")
    except RecordProblem as problem:
        return RecordError(split.source_file, where, split.fmt, problem.code, problem.reason, raw)
    return RawRecord(split.source_file, where, split.fmt, parsed.metadata, parsed.extra,
                     parsed.mz, parsed.intensities, raw)
