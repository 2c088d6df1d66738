"""One record in, one ``spectra`` row out: the composition of every normalization step.

:func:`normalize_record` returns the ``spectra`` columns that need no structure
(the ingest job adds inchikey, inchikey14, inchikey_mismatch,
precursor_ppm_error and ingest_run_id) plus ``chemont_id``, ``chemont_classes``
and ``exact_mass_reported`` for the ``compounds`` table, or raises
:class:`NormalizationError` when the record cannot become a spectrum
(missing_precursor, missing_ms_level, unknown_adduct, no_peaks). A value that
cannot be read but does not decide the spectrum (collision energy, retention
time, charge ...) is set to None and the reason goes to
``normalization_notes``; its text stays in the row or in ``metadata_extra``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Iterable, Iterator

import numpy as np

from speclake.pipelines.normalize.adduct import Adduct, parse_adduct
from speclake.pipelines.normalize.errors import (
    MissingMsLevelError,
    MissingPrecursorError,
    NormalizationError,
)
from speclake.pipelines.normalize.metadata import (
    charge_has_sign,
    clean_text,
    derive_ms_level,
    harmonize_ionmode,
    parse_charge,
    parse_chemont,
    parse_collision_energy,
    parse_float,
    parse_int,
    parse_ms_level,
    parse_precursor_mz,
    parse_precursor_mz_chain,
    parse_retention_time,
    precursor_precision,
)
from speclake.pipelines.normalize.peaks import clean_peaks
from speclake.pipelines.normalize.settings import NormalizeSettings
from speclake.pipelines.normalize.splash import splash
from speclake.pipelines.readers.base import RawRecord

__all__ = ["NormalizeSettings", "normalize_record", "normalize_records", "derive_spectrum_id"]

log = logging.getLogger(__name__)

#: Reader keys that become a column of their own (everything else goes to metadata_extra).
_TEXT_COLUMNS = {
    "accession": "accession", "usi": "usi", "compound_name": "compound_name", "inchikey": "inchikey_reported",
    "smiles": "smiles_reported", "inchi": "inchi_reported", "formula": "formula_reported",
    "fragmentation_mode": "fragmentation_mode", "instrument": "instrument", "instrument_type": "instrument_type",
    "ionization": "ionization", "resolution": "resolution", "license": "license", "authors": "authors",
    "copyright": "copyright", "title": "title", "splash": "splash_reported",
}
_PARSED_KEYS = frozenset(_TEXT_COLUMNS) | {
    "precursor_mz", "precursor_mz_chain", "adduct", "charge", "ionmode", "ms_level", "collision_energy",
    "retention_time", "scan_number", "chemont", "exact_mass", "peak_annotations",
}


def derive_spectrum_id(*, source: str, mz: np.ndarray, intensities: np.ndarray, precursor_mz: float | None,
                       ms_level: int, ionmode: str, adduct: str | None, collision_energy_text: str | None,
                       accession: str | None) -> str:
    """Stable content id (sha256 hex, 24 chars) of a spectrum from ``source``.

    Peaks as recorded, in m/z order, m/z rounded to 1e-5 and intensities to 4 significant digits, so
    re-ingesting the same record gives the same id whatever float noise the reader adds.
    """
    mz_arr = np.asarray(mz, dtype=np.float64)
    int_arr = np.asarray(intensities, dtype=np.float64)
    if not (mz_arr[1:] > mz_arr[:-1]).all():  # strictly increasing m/z (the usual case) is already in order
        order = np.lexsort((int_arr, mz_arr))
        mz_arr, int_arr = mz_arr[order], int_arr[order]
    if np.isfinite(mz_arr).all() and np.isfinite(int_arr).all() and int_arr.all():  # the usual case, same keys
        mz_key = np.rint(mz_arr * 1e5).astype("<i8")
        exponent = np.floor(np.log10(np.abs(int_arr)))
        mantissa = np.rint(int_arr / 10.0 ** (exponent - 3))
    else:
        finite = np.isfinite(mz_arr)
        mz_key = np.where(finite, np.rint(np.where(finite, mz_arr, 0.0) * 1e5), -1).astype("<i8")
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = np.isfinite(int_arr) & (int_arr != 0)
            exponent = np.where(ok, np.floor(np.log10(np.abs(np.where(ok, int_arr, 1.0)))), 0.0)
            mantissa = np.where(ok, np.rint(int_arr / 10.0 ** (exponent - 3)), 0.0)
        exponent = np.where(np.isfinite(int_arr), exponent, -999)
    h = hashlib.sha256()
    meta = [source, "" if precursor_mz is None else f"{precursor_mz:.5f}", str(ms_level), ionmode, adduct or "",
            collision_energy_text or "", accession or ""]
    h.update("\x1f".join(meta).encode("utf-8"))
    h.update(b"\x1e")
    h.update(mz_key.tobytes())
    h.update(mantissa.astype("<i8").tobytes())
    h.update(exponent.astype("<i8").tobytes())
    return h.hexdigest()[:24]


def normalize_record(record: RawRecord, *, source: str, settings: NormalizeSettings) -> dict[str, Any]:
    """Normalize one reader record into a ``spectra`` row (plus compound facts); raises NormalizationError."""
    md = record.metadata
    notes: list[str] = []
    row: dict[str, Any] = {col: clean_text(md.get(key)) for key, col in _TEXT_COLUMNS.items()}
    for key in ("compound_name", "title", "authors", "copyright", "license"):  # keep full text, not first list item
        value = md.get(key)
        if isinstance(value, (list, tuple)) and key != "compound_name":
            row[key] = "; ".join(str(v) for v in value if v) or None

    # ionmode as written, then the adduct (which may need the mode to get its sign)
    ionmode_text = md.get("ionmode")
    ionmode_stated = harmonize_ionmode(ionmode_text)
    adduct_text = clean_text(md.get("adduct"))
    adduct: Adduct | None = None
    if adduct_text is not None:
        adduct = parse_adduct(adduct_text, ionmode_stated if ionmode_stated != "unknown" else None)
        if adduct.name != adduct_text:
            notes.append(f"adduct {adduct_text!r} written as {adduct.name}")

    # charge: as written (sign from the ionmode when unsigned), else from the adduct
    charge = _optional(parse_charge, md.get("charge"), "charge", notes)
    if charge is not None and not charge_has_sign(md.get("charge")) and ionmode_stated == "negative" and charge > 0:
        charge = -charge
    if charge is None and adduct is not None:
        charge = adduct.charge
    elif charge is not None and adduct is not None and charge != adduct.charge:
        notes.append(f"charge {charge} disagrees with adduct {adduct.name}")

    ionmode = harmonize_ionmode(ionmode_text, adduct=adduct, charge=charge)
    if ionmode_stated == "unknown" and ionmode != "unknown":
        notes.append(f"ionmode {ionmode} derived from {'adduct' if adduct is not None else 'charge'}")
    elif adduct is not None and ionmode != "unknown" and (adduct.charge > 0) != (ionmode == "positive"):
        notes.append(f"ionmode {ionmode} disagrees with adduct {adduct.name}")

    # precursor and MS level
    chain = _optional(parse_precursor_mz_chain, md.get("precursor_mz_chain"), "precursor m/z chain", notes) or []
    precursor_text = clean_text(md.get("precursor_mz"))
    if not chain and precursor_text and "/" in precursor_text:
        chain = _optional(parse_precursor_mz_chain, precursor_text, "precursor m/z chain", notes) or []
    precursor_mz = _optional(parse_precursor_mz, md.get("precursor_mz"), "precursor m/z", notes)
    if precursor_mz is None and chain:
        precursor_mz = chain[-1]
    ms_level = derive_ms_level(_optional(parse_ms_level, md.get("ms_level"), "MS level", notes),
                               chain or None)
    if ms_level is None:
        if precursor_mz is not None and settings.assume_ms2_with_precursor:
            ms_level = 2
            notes.append("MS level not stated; 2 assumed from the precursor m/z")
        elif precursor_mz is None and _is_electron_ionization(md):
            ms_level = 1
            notes.append("MS level not stated; 1 assumed for an EI/GC spectrum without precursor")
        else:
            raise MissingMsLevelError(
                f"MS level {clean_text(md.get('ms_level'))!r} not stated and not derivable (no precursor m/z)")
    if ms_level >= 2 and precursor_mz is None:
        raise MissingPrecursorError(f"MS{ms_level} spectrum without a usable precursor m/z "
                                    f"(precursor_mz {precursor_text!r})")

    # values that do not decide the spectrum: None plus a note when unreadable
    ce_text = clean_text(md.get("collision_energy"))
    ce_value, ce_unit = _optional(parse_collision_energy, ce_text, "collision energy", notes) or (None, None)
    rt_text = md.get("retention_time")
    try:
        retention_time = parse_retention_time(rt_text, default_unit=settings.rt_default_unit(record.fmt),
                                               seconds_above=settings.retention_time_seconds_above)
    except NormalizationError as exc:
        retention_time = None
        notes.append(f"retention_time not read: {exc.reason}")
    scan_number = _optional(parse_int, md.get("scan_number"), "scan number", notes)
    exact_mass = _optional(parse_float, md.get("exact_mass"), "exact mass", notes)
    chemont_id, chemont_classes = parse_chemont(md.get("chemont"))

    # peaks: SPLASH on the recorded list, then cleaning
    mz_rec = np.asarray(record.mz, dtype=np.float64)
    int_rec = np.asarray(record.intensities, dtype=np.float64)
    try:
        computed_splash: str | None = splash(mz_rec, int_rec)
    except ValueError as exc:
        computed_splash = None
        notes.append(f"SPLASH not computed: {exc}")
    precision = precursor_precision(precursor_text if precursor_text and precursor_mz is not None else None)
    peaks = clean_peaks(mz_rec, int_rec, precursor_mz=precursor_mz, ms_level=ms_level, settings=settings,
                        precursor_precision_da=precision)
    notes.extend(peaks.notes)
    reported_splash = row["splash_reported"]
    if computed_splash and reported_splash and computed_splash != reported_splash:
        notes.append(f"SPLASH differs from the reported {reported_splash}")

    adduct_name = adduct.name if adduct is not None else None
    row.update(
        spectrum_id=derive_spectrum_id(source=source, mz=mz_rec, intensities=int_rec, precursor_mz=precursor_mz,
                                       ms_level=ms_level, ionmode=ionmode, adduct=adduct_name,
                                       collision_energy_text=ce_text, accession=row["accession"]),
        source=source,
        source_file=record.source_file,
        record_locator=record.locator,
        source_format=record.fmt,
        splash=computed_splash,
        splash_match=(computed_splash == reported_splash) if computed_splash and reported_splash else None,
        ms_level=ms_level,
        ionmode=ionmode,
        precursor_mz=precursor_mz,
        precursor_mz_chain=chain or None,
        adduct=adduct_name,
        charge=charge,
        collision_energy=ce_value,
        collision_energy_unit=ce_unit,
        collision_energy_text=ce_text,
        retention_time=retention_time,
        scan_number=scan_number,
        num_peaks=len(peaks),
        mz=peaks.mz,
        intensities=peaks.intensities,
        intensities_raw=peaks.intensities_raw,
        peak_annotations=_peak_annotations(md.get("peak_annotations"), notes),
        normalization_notes=notes,
        metadata_extra=_metadata_extra(record),
        chemont_id=chemont_id,
        chemont_classes=chemont_classes or None,
        exact_mass_reported=exact_mass,
    )
    return row


def normalize_records(records: Iterable[RawRecord], *, source: str, settings: NormalizeSettings
                      ) -> Iterator[tuple[RawRecord, dict[str, Any] | NormalizationError]]:
    """Normalize many records: (record, row) or (record, the NormalizationError) for each, in order."""
    for record in records:
        try:
            yield record, normalize_record(record, source=source, settings=settings)
        except NormalizationError as exc:
            log.debug("%s %s: %s (%s)", record.source_file, record.locator, exc.reason_code, exc.reason)
            yield record, exc


def _optional(parse: Any, value: Any, what: str, notes: list[str]) -> Any:
    """``parse(value)``; an unreadable value gives None and a note instead of losing the record."""
    try:
        return parse(value)
    except NormalizationError as exc:
        notes.append(f"{what} not read: {exc.reason}")
        return None


def _peak_annotations(value: Any, notes: list[str]) -> list[dict[str, Any]] | None:
    """Reader tuples (mz, formula, ppm) as PEAK_ANNOTATION structs."""
    if not value:
        return None
    out: list[dict[str, Any]] = []
    for item in value:
        try:
            mz, formula, ppm = (list(item) + [None, None])[:3]
            out.append({"mz": float(mz), "formula": None if formula is None else str(formula),
                        "ppm_error": None if ppm in (None, "") else float(ppm)})
        except (TypeError, ValueError):
            notes.append(f"peak annotation {item!r} not read")
    return out or None


def _metadata_extra(record: RawRecord) -> dict[str, str]:
    """Every key with no column of its own, as text: the reader's extra keys and unmapped RAW_KEYS."""
    extra = {str(k): str(v) for k, v in record.extra.items() if v is not None}
    for key, value in record.metadata.items():
        if key in _PARSED_KEYS or value is None:
            continue
        text = json.dumps(list(value), ensure_ascii=False) if isinstance(value, (list, tuple)) else str(value)
        extra.setdefault(key, text)
    return extra


def _is_electron_ionization(md: dict) -> bool:
    """Whether the record says it is an electron-ionization (GC-EI) spectrum, which has no precursor."""
    ionization = (clean_text(md.get("ionization")) or "").upper()
    instrument_type = (clean_text(md.get("instrument_type")) or "").upper()
    return ionization in ("EI", "ELECTRON IONIZATION") or "EI" in instrument_type.replace("ESI", "").split("-") \
        or instrument_type.startswith("GC")
