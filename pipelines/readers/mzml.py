"""mzML and mzXML reader (via pyteomics' indexed readers).

Yields one RawRecord per MS2+ scan (MS1 scans are skipped, not errors), with
precursor m/z, charge, collision energy, activation, retention time (unit
appended: ``"0.75 min"``), scan number, MS level and polarity as raw text.
``precursor_mz_chain`` lists the precursors of MSn scans (from the scan's own
precursor list, extended by the chain of the parent scan when the parent was
read in the same split). A split may name an index range in
``extra["index_start"]``/``extra["index_end"]``. Locators: ``scan={scan}
(index {i})``.
"""
from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any, Iterator

from speclake.pipelines.readers._text import trailing_error
from speclake.pipelines.readers.base import RawRecord, ReadResult, RecordError, Split

log = logging.getLogger(__name__)

_SCAN = re.compile(r"scan=(\d+)")
_UNITS = {"minute": "min", "second": "s", "millisecond": "ms"}


def read_split(split: Split) -> Iterator[ReadResult]:
    """Read the MS2+ scans of one mzML/mzXML split."""
    if os.path.getsize(split.path) == 0:
        yield RecordError(split.source_file, "file", split.fmt, "empty_file", "The file is empty.")
        return
    from pyteomics import mzml as pyteomics_mzml  # imported on use: it costs 0.6 s (psims, sqlalchemy)
    from pyteomics import mzxml as pyteomics_mzxml

    opener = pyteomics_mzxml.MzXML if split.fmt == "mzxml" else pyteomics_mzml.PreIndexedMzML
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reader = opener(split.path, use_index=True, decode_binary=True)
        for warning in caught:
            log.debug("%s: %s", split.source_file, warning.message)
    except Exception as exc:  # pyteomics/lxml raise many types for unreadable XML
        yield _file_error(split, exc)
        return
    with reader:
        yield from _read_range(split, reader)
    tail = trailing_error(split)
    if tail is not None:
        yield tail


def _file_error(split: Split, exc: Exception) -> RecordError:
    log.info("cannot read %s as %s: %s", split.source_file, split.fmt, exc)
    return RecordError(split.source_file, "file", split.fmt, "xml_error",
                       f"The file cannot be read as {split.fmt}: {type(exc).__name__}: {str(exc)[:200]}.")


def _read_range(split: Split, reader: Any) -> Iterator[ReadResult]:
    try:
        total = len(reader)
    except Exception as exc:  # broken index or XML
        yield _file_error(split, exc)
        return
    start = int(split.extra.get("index_start", 0))
    end = min(int(split.extra.get("index_end", total)), total)
    chains: dict[str, list[str]] = {}
    for i in range(start, end):
        convert = _from_mzxml if split.fmt == "mzxml" else _from_mzml
        try:
            result = convert(split, reader[i], i, chains)
        except Exception as exc:  # one unreadable spectrum must not hide the others
            yield RecordError(split.source_file, f"scan=? (index {i})", split.fmt, "xml_error",
                              f"Spectrum {i} cannot be decoded: {type(exc).__name__}: {str(exc)[:200]}.")
            continue
        if result is not None:
            yield result


def _unit_text(value: Any) -> str:
    unit = getattr(value, "unit_info", None)
    text = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{text} {_UNITS.get(str(unit), unit)}" if unit else text


def _record(split: Split, scan_no: str, index: int, meta: dict[str, object], extra: dict[str, str],
            scan: dict[str, Any]) -> ReadResult:
    mz = scan.get("m/z array")
    intensity = scan.get("intensity array")
    where = f"scan={scan_no} (index {index})"
    if mz is None or intensity is None or len(mz) == 0:
        return RecordError(split.source_file, where, split.fmt, "no_peaks",
                           f"MS{meta.get('ms_level')} scan {scan_no} has no peaks.")
    return RawRecord(split.source_file, where, split.fmt, meta, extra,
                     tuple(float(v) for v in mz), tuple(float(v) for v in intensity))


def _flat_extra(scan: dict[str, Any], skip: set[str]) -> dict[str, str]:
    return {k: str(v)[:500] for k, v in scan.items() if k not in skip and not k.endswith(" array")}


def _from_mzml(split: Split, scan: dict[str, Any], index: int,
               chains: dict[str, list[str]]) -> ReadResult | None:
    level = scan.get("ms level") or (1 if "MS1 spectrum" in scan else None)
    if level == 1:
        return None
    scan_id = str(scan.get("id", ""))
    match = _SCAN.search(scan_id)
    scan_no = match.group(1) if match else str(index + 1)
    meta: dict[str, object] = {"scan_number": scan_no, "ms_level": str(level) if level else "n/a"}
    if "positive scan" in scan:
        meta["ionmode"] = "positive"
    elif "negative scan" in scan:
        meta["ionmode"] = "negative"
    scans = (scan.get("scanList") or {}).get("scan") or [{}]
    if "scan start time" in scans[0]:
        meta["retention_time"] = _unit_text(scans[0]["scan start time"])
    if "filter string" in scans[0]:
        meta["title"] = str(scans[0]["filter string"])
    elif "spectrum title" in scan:
        meta["title"] = str(scan["spectrum title"])
    precursors = (scan.get("precursorList") or {}).get("precursor") or []
    chain = _mzml_precursors(precursors, meta)
    parent = str(precursors[-1].get("spectrumRef", "")) if precursors else ""
    if len(chain) == 1 and parent in chains:
        chain = chains[parent] + chain
    chains[scan_id] = chain
    if len(chain) > 1:
        meta["precursor_mz_chain"] = chain
    extra = _flat_extra(scan, {"precursorList", "scanList"})
    if parent:
        extra["spectrumRef"] = parent
    return _record(split, scan_no, index, meta, extra, scan)


def _mzml_precursors(precursors: list[dict[str, Any]], meta: dict[str, object]) -> list[str]:
    """Precursor m/z of each listed stage; the last fills precursor/charge/activation."""
    chain: list[str] = []
    for prec in precursors:
        ions = (prec.get("selectedIonList") or {}).get("selectedIon") or [{}]
        ion = ions[0]
        if "selected ion m/z" not in ion:
            continue
        chain.append(repr(float(ion["selected ion m/z"])))
        meta["precursor_mz"] = chain[-1]
        if "charge state" in ion:
            meta["charge"] = str(int(ion["charge state"]))
        if "peak intensity" in ion:
            meta["precursor_intensity"] = repr(float(ion["peak intensity"]))
        activation = prec.get("activation") or {}
        if "collision energy" in activation:
            meta["collision_energy"] = _unit_text(activation["collision energy"])
        methods = [k for k, v in activation.items() if v == "" and k != "collision energy"]
        if methods:
            meta["fragmentation_mode"] = "; ".join(methods)
    return chain


def _from_mzxml(split: Split, scan: dict[str, Any], index: int,
                chains: dict[str, list[str]]) -> ReadResult | None:
    level = scan.get("msLevel")
    if level == 1:
        return None
    scan_no = str(scan.get("num", index + 1))
    meta: dict[str, object] = {"scan_number": scan_no, "ms_level": str(level) if level else "n/a"}
    polarity = scan.get("polarity")
    if polarity in ("+", "-"):
        meta["ionmode"] = "positive" if polarity == "+" else "negative"
    if "retentionTime" in scan:
        meta["retention_time"] = _unit_text(scan["retentionTime"])
    if "collisionEnergy" in scan:
        meta["collision_energy"] = str(scan["collisionEnergy"])
    if "filterLine" in scan:
        meta["title"] = str(scan["filterLine"])
    chain: list[str] = []
    parent = ""
    for prec in scan.get("precursorMz") or []:
        chain.append(repr(float(prec["precursorMz"])))
        meta["precursor_mz"] = chain[-1]
        if "precursorCharge" in prec:
            meta["charge"] = str(prec["precursorCharge"])
        if "precursorIntensity" in prec:
            meta["precursor_intensity"] = repr(float(prec["precursorIntensity"]))
        if "activationMethod" in prec:
            meta["fragmentation_mode"] = str(prec["activationMethod"])
        parent = str(prec.get("precursorScanNum", ""))
    if len(chain) == 1 and parent in chains:
        chain = chains[parent] + chain
    chains[scan_no] = chain
    if len(chain) > 1:
        meta["precursor_mz_chain"] = chain
    extra = _flat_extra(scan, {"precursorMz"})
    if parent:
        extra["precursorScanNum"] = parent
    return _record(split, scan_no, index, meta, extra, scan)
