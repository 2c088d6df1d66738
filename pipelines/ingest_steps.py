"""Per-batch steps of the ingest job, run inside Spark tasks via mapInArrow.

Each step is a generator over Arrow record batches, wrapping pure per-record
functions from :mod:`speclake.pipelines.readers` and
:mod:`speclake.pipelines.normalize`. No step ever raises for bad data: every
input record leaves a step either as a spectrum row or as a quarantine row.
"""
from __future__ import annotations

import hashlib
import json
import logging
import traceback
from dataclasses import asdict
from typing import Any, Iterable, Iterator

import pyarrow as pa

from speclake.lake.schema import SPECTRA
from speclake.pipelines.readers.base import RawRecord, RecordError, Split

log = logging.getLogger(__name__)

#: Columns of ``spectra`` that the structure step fills (not the parse step).
STRUCTURE_COLUMNS = ("inchikey", "inchikey14", "inchikey_mismatch", "precursor_ppm_error")
#: Per-record compound facts carried from parsing to the compounds table.
COMPOUND_FACTS = [
    pa.field("chemont_id", pa.string()),
    pa.field("chemont_classes", pa.list_(pa.string())),
    pa.field("exact_mass_reported", pa.float64()),
]
#: Quarantine facts carried in the same rows (kind == "quarantine").
#: Adduct arithmetic carried to the structure join: m/z = (n * M + shift) / |z|.
ADDUCT_FACTS = [
    pa.field("adduct_n_molecules", pa.int32()),
    pa.field("adduct_mass_shift", pa.float64()),
    pa.field("adduct_abs_charge", pa.int32()),
]
QUARANTINE_FACTS = [
    pa.field("stage", pa.string()),
    pa.field("reason_code", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("raw_excerpt", pa.string()),
]


def _nullable(fields: Iterable[pa.Field]) -> list[pa.Field]:
    return [f.with_nullable(True) for f in fields]


#: Output of the parse step: spectrum rows and quarantine rows in one schema.
PARSED = pa.schema(
    [pa.field("kind", pa.string())]
    + _nullable(f for f in SPECTRA if f.name not in STRUCTURE_COLUMNS and f.name != "ingest_run_id")
    + COMPOUND_FACTS
    + ADDUCT_FACTS
    + QUARANTINE_FACTS
)

#: Output of the structure step: one row per distinct (smiles, inchi) as reported.
STRUCTURES = pa.schema(
    [
        pa.field("smiles_reported", pa.string()),
        pa.field("inchi_reported", pa.string()),
        pa.field("inchikey", pa.string()),
        pa.field("inchikey14", pa.string()),
        pa.field("smiles", pa.string()),
        pa.field("inchi", pa.string()),
        pa.field("formula", pa.string()),
        pa.field("monoisotopic_mass", pa.float64()),
        pa.field("error_code", pa.string()),
        pa.field("error", pa.string()),
    ]
)

BATCH_ROWS = 512


def quarantine_id(source_file: str, locator: str, reason_code: str) -> str:
    """Stable id of a quarantine row: the same bad record quarantined twice is one row."""
    digest = hashlib.sha256(f"{source_file}\x1f{locator}\x1f{reason_code}".encode()).hexdigest()
    return digest[:24]


def _quarantine_row(source_file: str, locator: str, fmt: str | None, stage: str, code: str, reason: str,
                    excerpt: str, source: str) -> dict[str, Any]:
    return {
        "kind": "quarantine", "source": source, "source_file": source_file, "record_locator": locator,
        "source_format": fmt, "stage": stage, "reason_code": code, "reason": reason,
        "raw_excerpt": (excerpt or "")[:2000],
    }


def _batches(rows: Iterable[dict[str, Any]], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    buf: list[dict[str, Any]] = []
    for row in rows:
        buf.append(row)
        if len(buf) >= BATCH_ROWS:
            yield pa.RecordBatch.from_pylist(buf, schema=schema)
            buf = []
    if buf:
        yield pa.RecordBatch.from_pylist(buf, schema=schema)


def source_label(split: Split, override: str | None) -> str:
    """The library label of a split: --source if given, else from the format or file name."""
    if override:
        return override
    if split.fmt == "massbank":
        return "massbank"
    if split.fmt == "gnps_json":
        return "gnps"
    name = split.source_file.rsplit("/", 1)[-1]
    for ext in (".gz", ".mgf", ".msp", ".mzml", ".mzxml", ".json", ".txt"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name or split.fmt


def parse_records(split: Split, *, source: str, settings: Any) -> Iterator[dict[str, Any]]:
    """Read and normalize every record of one split into spectrum or quarantine rows."""
    from speclake.pipelines.normalize.errors import NormalizationError
    from speclake.pipelines.normalize.spectrum import normalize_record
    from speclake.pipelines.readers import read_split

    try:
        results = read_split(split)
        for item in results:
            if isinstance(item, RecordError):
                yield _quarantine_row(item.source_file, item.locator, item.fmt, "read", item.reason_code,
                                      item.reason, item.raw_excerpt, source)
                continue
            yield _normalized(item, source=source, settings=settings, normalize=normalize_record,
                              error_type=NormalizationError)
    except Exception as exc:  # a reader bug must not kill the batch, nor lose the split
        log.exception("reader failed on %s", split.source_file)
        yield _quarantine_row(split.source_file, f"split bytes {split.start}-{split.end} (from record {split.first_record + 1})",
                              split.fmt, "read", "reader_failure",
                              f"reader crashed: {type(exc).__name__}: {exc}", traceback.format_exc(limit=3), source)


def _normalized(record: RawRecord, *, source: str, settings: Any, normalize: Any, error_type: type) -> dict[str, Any]:
    try:
        row = normalize(record, source=source, settings=settings)
    except error_type as exc:
        return _quarantine_row(record.source_file, record.locator, record.fmt, "normalize",
                               getattr(exc, "reason_code", "invalid_value"), str(exc), record.raw_excerpt, source)
    except Exception as exc:  # never crash the batch: quarantine with the bug's message
        log.exception("normalization failed on %s %s", record.source_file, record.locator)
        return _quarantine_row(record.source_file, record.locator, record.fmt, "normalize", "internal_error",
                               f"{type(exc).__name__}: {exc}", record.raw_excerpt, source)
    row["kind"] = "spectrum"
    row["usi"] = row.get("usi") or derive_usi(row.get("accession"), source)
    if row.get("adduct"):
        from speclake.pipelines.normalize.adduct import parse_adduct

        adduct = parse_adduct(row["adduct"])
        row.update(adduct_n_molecules=adduct.n_molecules, adduct_mass_shift=adduct.mass_shift,
                   adduct_abs_charge=abs(adduct.charge))
    if row.get("ms_level") is None:
        return _quarantine_row(record.source_file, record.locator, record.fmt, "normalize", "missing_ms_level",
                               "the MS level could not be determined from the record", record.raw_excerpt, source)
    return row


def parse_splits_batches(batches: Iterator[pa.RecordBatch], *, source_override: str | None,
                         settings_json: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: batches of split descriptions in, parsed rows out."""
    from speclake.pipelines.normalize.spectrum import NormalizeSettings

    settings = NormalizeSettings.model_validate_json(settings_json)

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            for desc in batch.column("split").to_pylist():
                split = Split(**json.loads(desc))
                yield from parse_records(split, source=source_label(split, source_override), settings=settings)

    yield from _batches(rows(), PARSED)


def standardize_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: distinct reported structures in, standardized structures (or errors) out."""
    from speclake.pipelines.normalize.errors import NormalizationError
    from speclake.pipelines.normalize.structure import standardize_structure

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            for smiles, inchi in zip(batch.column("smiles_reported").to_pylist(), batch.column("inchi_reported").to_pylist()):
                row: dict[str, Any] = {"smiles_reported": smiles, "inchi_reported": inchi}
                try:
                    st = standardize_structure(smiles, inchi)
                except NormalizationError as exc:
                    row.update(error_code=getattr(exc, "reason_code", "invalid_structure"), error=str(exc))
                except Exception as exc:  # RDKit can fail in unexpected ways on odd input
                    row.update(error_code="invalid_structure", error=f"{type(exc).__name__}: {exc}")
                else:
                    row.update(inchikey=st.inchikey, inchikey14=st.inchikey14, smiles=st.smiles, inchi=st.inchi,
                               formula=st.formula, monoisotopic_mass=st.monoisotopic_mass)
                yield row

    yield from _batches(rows(), STRUCTURES)


def derive_usi(accession: str | None, source: str | None) -> str | None:
    """Universal Spectrum Identifier of a public library spectrum, where one exists."""
    if not accession:
        return None
    if accession.startswith("CCMSLIB"):
        return f"mzspec:GNPS:GNPS-LIBRARY:accession:{accession}"
    if accession.startswith("MSBNK-") or source == "massbank":
        return f"mzspec:MASSBANK::accession:{accession}"
    return None


def split_json(split: Split) -> str:
    return json.dumps(asdict(split), sort_keys=True)
