"""First step of every feature job: check and clean one spectrum, and turn it into words and items.

:func:`check_spectrum` says why a spectrum cannot be featurized (MS1, no precursor,
unit resolution, too few peaks) or returns its cleaned peaks;
:func:`spectrum_words` makes Spec2Vec documents (``peak@91.05``, ``loss@18.01``);
:func:`spectrum_items` makes pattern items (``frag@91.05``, ``loss@18.01``) of the
most intense peaks. :func:`prepare_batches` is the Arrow-batch form for Spark.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from speclake.pipelines.normalize import peaks as pk

BATCH_ROWS = 1024


class PeakSettings(BaseModel):
    """Which spectra and peaks the feature jobs use."""

    model_config = ConfigDict(extra="forbid")

    min_ms_level: int = 2                 # MS1 (e.g. GC-EI) spectra are skipped
    min_peaks: int = 2                    # fewer peaks after cleaning: skipped
    max_peaks: int = 150                  # most intense peaks kept
    min_relative_intensity: float = 0.001
    max_mz_above_precursor: float | None = 1.0  # drop peaks above precursor + this (None: keep)
    unit_resolution_decimals: int = 1     # every m/z with at most this many decimals: low resolution


class WordSettings(BaseModel):
    """Spectrum words (Spec2Vec documents) and pattern items."""

    model_config = ConfigDict(extra="forbid")

    word_decimals: int = 2                # Spec2Vec: peak@91.05
    loss_min: float = 5.0                 # losses in [loss_min, loss_max] Da become words/items
    loss_max: float = 200.0
    item_bin_width: float = 0.01          # pattern items: frag@91.05, loss@18.01
    item_top_peaks: int = 20              # pattern items from the N most intense peaks


@dataclass(frozen=True)
class Skip:
    """Why a spectrum was left out of a feature."""

    code: str
    reason: str


def clean_peaks(mz: np.ndarray, intensities: np.ndarray, precursor_mz: float | None,
                settings: PeakSettings) -> tuple[np.ndarray, np.ndarray]:
    """Finite positive peaks, relative intensity >= threshold, not above the precursor, top-N; m/z ascending."""
    mz, intensities = pk.remove_invalid_intensities(*pk.remove_invalid_mz(mz, intensities, positive=False))
    if precursor_mz is not None and settings.max_mz_above_precursor is not None:
        mz, intensities = pk.remove_peaks_above(mz, intensities, precursor_mz + settings.max_mz_above_precursor)
    mz, intensities = pk.select_by_intensity(mz, pk.scale_to_max(intensities), settings.min_relative_intensity)
    return pk.sort_by_mz(*pk.select_top_peaks(mz, intensities, settings.max_peaks))


def check_spectrum(ms_level: int | None, precursor_mz: float | None, mz: Iterable[float], intensities: Iterable[float],
                   settings: PeakSettings) -> Skip | tuple[np.ndarray, np.ndarray]:
    """Cleaned peaks of a usable spectrum, or the :class:`Skip` saying why it is not usable."""
    if ms_level is None or ms_level < settings.min_ms_level:
        return Skip("ms1_spectrum", f"MS level {ms_level} < {settings.min_ms_level}: not a tandem spectrum")
    if precursor_mz is None or not math.isfinite(precursor_mz) or precursor_mz <= 0:
        return Skip("no_precursor_mz", "no usable precursor m/z")
    mz_a = np.asarray(mz if mz is not None else [], dtype=np.float64)
    it_a = np.asarray(intensities if intensities is not None else [], dtype=np.float64)
    if mz_a.shape != it_a.shape:
        return Skip("invalid_peaks", f"{len(mz_a)} m/z values but {len(it_a)} intensities")
    if len(mz_a) >= 2 and pk.is_unit_resolution(mz_a, settings.unit_resolution_decimals):
        return Skip("low_resolution",
                    f"all {len(mz_a)} m/z values have at most {settings.unit_resolution_decimals} decimal(s)")
    peaks = clean_peaks(mz_a, it_a, precursor_mz, settings)
    if len(peaks[0]) < settings.min_peaks:
        return Skip("too_few_peaks", f"{len(peaks[0])} peak(s) after cleaning, fewer than {settings.min_peaks}")
    return peaks


def _labels(prefix: str, values: np.ndarray, decimals: int) -> list[str]:
    return [f"{prefix}@{v:.{decimals}f}" for v in values]


def spectrum_words(mz: np.ndarray, intensities: np.ndarray, precursor_mz: float,
                   settings: WordSettings) -> tuple[list[str], list[float]]:
    """Spec2Vec document: peak words (m/z order) then loss words, with the intensity of their peak as weight."""
    d = settings.word_decimals
    loss = precursor_mz - mz
    keep = (loss >= settings.loss_min) & (loss <= settings.loss_max)
    words = _labels("peak", mz, d) + _labels("loss", loss[keep], d)
    weights = list(map(float, intensities)) + list(map(float, intensities[keep]))
    return words, weights


def _bin_decimals(width: float) -> int:
    return max(0, int(math.ceil(-math.log10(width) - 1e-9)))


def bin_label(prefix: str, value: float, width: float) -> str:
    """Item of a value binned to ``width``: ``bin_label('frag', 91.0542, 0.01) == 'frag@91.05'``."""
    return f"{prefix}@{round(value / width) * width:.{_bin_decimals(width)}f}"


def spectrum_items(mz: np.ndarray, intensities: np.ndarray, precursor_mz: float,
                   settings: WordSettings) -> list[str]:
    """Distinct pattern items of the ``item_top_peaks`` most intense peaks: fragments and neutral losses."""
    top = np.argsort(-intensities, kind="stable")[: settings.item_top_peaks]
    w = settings.item_bin_width
    dec = _bin_decimals(w)
    frag = np.round(mz[top] / w) * w
    loss = precursor_mz - mz[top]
    keep = (loss >= settings.loss_min) & (loss <= settings.loss_max)
    lossb = np.round(loss[keep] / w) * w
    items = dict.fromkeys(_labels("frag", frag, dec) + _labels("loss", lossb, dec))
    return list(items)


#: Output of :func:`prepare_batches`: one row per spectrum, cleaned or with a skip reason.
PREPARED = pa.schema([
    pa.field("spectrum_id", pa.string()),
    pa.field("inchikey", pa.string()),
    pa.field("ionmode", pa.string()),
    pa.field("ms_level", pa.int8()),
    pa.field("precursor_mz", pa.float64()),
    pa.field("precursor_mz_chain", pa.list_(pa.float64())),
    pa.field("adduct", pa.string()),
    pa.field("instrument_type", pa.string()),
    pa.field("mz", pa.list_(pa.float64())),
    pa.field("intensities", pa.list_(pa.float32())),
    pa.field("words", pa.list_(pa.string())),
    pa.field("word_weights", pa.list_(pa.float32())),
    pa.field("items", pa.list_(pa.string())),
    pa.field("skip_code", pa.string()),
    pa.field("skip_reason", pa.string()),
])

#: Columns of ``spectra`` that :func:`prepare_batches` reads.
SPECTRA_COLUMNS = ("spectrum_id", "inchikey", "ionmode", "ms_level", "precursor_mz", "precursor_mz_chain", "adduct",
                   "instrument_type", "mz", "intensities")


def prepare_row(row: dict[str, Any], peaks: PeakSettings, words: WordSettings) -> dict[str, Any]:
    """One ``spectra`` row in, one :data:`PREPARED` row out (never raises for bad data)."""
    out = {k: row.get(k) for k in SPECTRA_COLUMNS}
    checked = check_spectrum(row.get("ms_level"), row.get("precursor_mz"), row.get("mz"), row.get("intensities"), peaks)
    if isinstance(checked, Skip):
        out.update(mz=None, intensities=None, skip_code=checked.code, skip_reason=checked.reason)
        return out
    mz, it = checked
    prec = float(row["precursor_mz"])
    w, ww = spectrum_words(mz, it, prec, words)
    out.update(mz=mz.tolist(), intensities=it.astype(np.float32).tolist(), words=w, word_weights=ww,
               items=spectrum_items(mz, it, prec, words), skip_code=None, skip_reason=None)
    return out


def rows_to_batches(rows: Iterable[dict[str, Any]], schema: pa.Schema,
                    batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Group python rows into Arrow record batches of ``schema``."""
    buf: list[dict[str, Any]] = []
    for row in rows:
        buf.append(row)
        if len(buf) >= batch_rows:
            yield pa.RecordBatch.from_pylist(buf, schema=schema)
            buf = []
    if buf:
        yield pa.RecordBatch.from_pylist(buf, schema=schema)


def prepare_batches(batches: Iterator[pa.RecordBatch], *, peaks_json: str, words_json: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: ``spectra`` rows in, :data:`PREPARED` rows out."""
    peaks = PeakSettings.model_validate_json(peaks_json)
    words = WordSettings.model_validate_json(words_json)

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            for row in batch.to_pylist():
                yield prepare_row(row, peaks, words)

    yield from rows_to_batches(rows(), PREPARED)
