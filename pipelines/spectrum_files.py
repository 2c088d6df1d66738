"""Read query spectra from a file without Spark: the ingest readers and normalization, in process.

For a handful of spectra (a query, one study file's MS2 scans) starting Spark costs more than the
work. The same readers and the same normalization steps as ``speclake ingest`` run here, so a
query spectrum is cleaned exactly as the library spectra it is compared with; bad records come
back as quarantine rows (file, record, reason), never as an exception.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speclake.pipelines.normalize.spectrum import NormalizeSettings


@dataclass
class SpectrumFile:
    """The spectra of one file: normalized ``spectra`` rows and quarantine rows."""

    path: str
    spectra: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)


def read_spectra(path: str | Path, settings: NormalizeSettings | None = None, *, source: str | None = None,
                 ms_level: int | None = 2) -> SpectrumFile:
    """Every record of ``path`` (any format ``speclake ingest`` reads), normalized.

    ``ms_level`` keeps only spectra of that MS level (None: all); the others are dropped, not
    quarantined, since they are not errors (an mzML run's MS1 scans).
    """
    from speclake.pipelines.ingest_steps import parse_records, source_label
    from speclake.pipelines.readers.splits import detect_format, plan_splits

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"spectrum file not found: {p}")
    detect_format(str(p))  # ValueError naming the file when its format is unknown
    settings = settings or NormalizeSettings()
    out = SpectrumFile(path=str(p))
    with tempfile.TemporaryDirectory(prefix="speclake-read-") as staging:
        for split in plan_splits([str(p)], staging):
            for row in parse_records(split, source=source_label(split, source), settings=settings):
                if row["kind"] == "quarantine":
                    out.quarantine.append(row)
                elif ms_level is None or row.get("ms_level") == ms_level:
                    out.spectra.append(row)
    return out


def neutral_mass_of(row: dict[str, Any]) -> float | None:
    """Neutral monoisotopic mass from a spectrum row's precursor m/z and adduct; without an adduct,
    ``[M+H]+`` or ``[M-H]-`` by ion mode; None when the precursor is unknown."""
    from speclake.pipelines.normalize.adduct import neutral_mass

    ionmode = row.get("ionmode")
    adduct = row.get("adduct") or {"positive": "[M+H]+", "negative": "[M-H]-"}.get(ionmode or "")
    return neutral_mass(row.get("precursor_mz"), adduct, ionmode)
