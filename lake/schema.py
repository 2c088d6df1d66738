"""Every lake table's columns, declared once.

Every stage reads and writes through these schemas; :data:`TABLES` is the
registry the catalog, the writers and the DuckDB views use. Bump
:data:`SCHEMA_VERSION` on any change of columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = 1
#: Parquet codec of every lake file (Spark's writer and the Python writers alike).
PARQUET_CODEC = "zstd"

PEAK_ANNOTATION = pa.struct(
    [
        pa.field("mz", pa.float64()),
        pa.field("formula", pa.string()),
        pa.field("ppm_error", pa.float64()),
    ]
)

SPECTRA = pa.schema(
    [
        pa.field("spectrum_id", pa.string(), nullable=False),  # sha256(source, peaks, key metadata)[:24]
        pa.field("source", pa.string(), nullable=False),       # library label: massbank, gnps, mona, in-house ...
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("record_locator", pa.string(), nullable=False),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("accession", pa.string()),
        pa.field("usi", pa.string()),
        pa.field("splash", pa.string()),                   # computed by speclake
        pa.field("splash_reported", pa.string()),          # the record's own (PK$SPLASH ...)
        pa.field("splash_match", pa.bool_()),
        pa.field("compound_name", pa.string()),
        pa.field("inchikey", pa.string()),                 # standardized structure's key (join to compounds)
        pa.field("inchikey14", pa.string()),
        pa.field("inchikey_reported", pa.string()),
        pa.field("inchikey_mismatch", pa.bool_()),         # reported key disagrees with computed (first block)
        pa.field("smiles_reported", pa.string()),
        pa.field("inchi_reported", pa.string()),
        pa.field("formula_reported", pa.string()),
        pa.field("ms_level", pa.int8(), nullable=False),
        pa.field("ionmode", pa.string(), nullable=False),  # positive | negative | unknown
        pa.field("precursor_mz", pa.float64()),
        pa.field("precursor_mz_chain", pa.list_(pa.float64())),  # MSn: precursor of each stage
        pa.field("adduct", pa.string()),                   # canonical, e.g. [M+H]+
        pa.field("charge", pa.int8()),
        pa.field("precursor_ppm_error", pa.float64()),     # vs. structure mass + adduct
        pa.field("collision_energy", pa.float64()),        # numeric value
        pa.field("collision_energy_unit", pa.string()),    # eV | % (NCE) | None
        pa.field("collision_energy_text", pa.string()),    # as written
        pa.field("fragmentation_mode", pa.string()),
        pa.field("instrument", pa.string()),
        pa.field("instrument_type", pa.string()),
        pa.field("ionization", pa.string()),
        pa.field("resolution", pa.string()),
        pa.field("retention_time", pa.float64()),          # seconds
        pa.field("scan_number", pa.int64()),
        pa.field("license", pa.string()),
        pa.field("authors", pa.string()),
        pa.field("copyright", pa.string()),
        pa.field("title", pa.string()),
        pa.field("num_peaks", pa.int32(), nullable=False),
        pa.field("mz", pa.list_(pa.float64()), nullable=False),
        pa.field("intensities", pa.list_(pa.float32()), nullable=False),      # scaled to max 1
        pa.field("intensities_raw", pa.list_(pa.float32()), nullable=False),  # as recorded, same peaks
        pa.field("peak_annotations", pa.list_(PEAK_ANNOTATION)),
        pa.field("normalization_notes", pa.list_(pa.string())),  # what normalization changed
        pa.field("metadata_extra", pa.map_(pa.string(), pa.string())),  # every unmapped key, nothing dropped
        pa.field("ingest_run_id", pa.string(), nullable=False),
    ]
)

COMPOUNDS = pa.schema(
    [
        pa.field("inchikey", pa.string(), nullable=False),
        pa.field("inchikey14", pa.string(), nullable=False),
        pa.field("smiles", pa.string(), nullable=False),   # canonical, standardized (largest fragment, neutral)
        pa.field("inchi", pa.string()),
        pa.field("formula", pa.string(), nullable=False),
        pa.field("monoisotopic_mass", pa.float64(), nullable=False),
        pa.field("compound_name", pa.string()),
        pa.field("chemont_id", pa.string()),
        pa.field("chemont_classes", pa.list_(pa.string())),  # kingdom -> ... -> most specific
        pa.field("n_spectra", pa.int64(), nullable=False),
        pa.field("sources", pa.list_(pa.string())),
        pa.field("licenses", pa.list_(pa.string())),
    ]
)

QUARANTINE = pa.schema(
    [
        pa.field("quarantine_id", pa.string(), nullable=False),  # stable: source_file, locator, reason_code
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("record_locator", pa.string(), nullable=False),
        pa.field("source_format", pa.string()),
        pa.field("stage", pa.string(), nullable=False),    # read | normalize | structure | write
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("raw_excerpt", pa.string()),
        pa.field("ingest_run_id", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class TableSpec:
    """A lake table: its schema, partition columns and write mode."""

    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    key: tuple[str, ...] = ()
    mode: str = "append"  # append: each version adds parts; replace: each version is one whole part
    description: str = ""


TABLES: dict[str, TableSpec] = {
    "spectra": TableSpec(
        "spectra", SPECTRA, partition_by=("ionmode", "ms_level"), key=("spectrum_id",),
        description="One row per spectrum: normalized metadata (matchms names), peaks, SPLASH, licence.",
    ),
    "compounds": TableSpec(
        "compounds", COMPOUNDS, key=("inchikey",), mode="replace",
        description="One row per standardized structure (InChIKey), with ChemOnt classes.",
    ),
    "quarantine": TableSpec(
        "quarantine", QUARANTINE, key=("quarantine_id",),
        description="Every input record that did not make it into a table, with the reason.",
    ),
}


#: Entry-point group naming the modules of later stages that declare tables (``pyproject.toml``).
TABLES_ENTRY_POINTS = "speclake.tables"
_stage_tables_loaded = False


def load_stage_tables() -> None:
    """Import every stage's table module listed under the ``speclake.tables`` entry points (once).

    The lake calls this when it is opened, so every command sees every table (``vacuum``,
    ``tables``, SQL views), whichever stage modules it happened to import itself. A stage whose
    module cannot be imported (an optional dependency missing) is logged and left out.
    """
    global _stage_tables_loaded
    if _stage_tables_loaded:
        return
    import importlib
    import logging
    from importlib.metadata import entry_points

    _stage_tables_loaded = True
    for ep in entry_points(group=TABLES_ENTRY_POINTS):
        try:
            importlib.import_module(ep.value.split(":")[0])
        except ImportError as exc:
            logging.getLogger(__name__).warning("tables of stage %s not declared: %s", ep.name, exc)


def all_tables() -> dict[str, TableSpec]:
    """Every declared table (core and stages)."""
    load_stage_tables()
    return TABLES


def table_spec(name: str) -> TableSpec:
    """Return the spec of table ``name`` or raise a ValueError naming the known tables."""
    if name not in TABLES:
        load_stage_tables()
    try:
        return TABLES[name]
    except KeyError:
        raise ValueError(f"unknown lake table {name!r}; known tables: {', '.join(sorted(TABLES))}") from None


#: Analyst views over lake tables (name -> SELECT), declared by the stages beside their tables and
#: created by every DuckDB connection of :func:`speclake.lake.sql.connect` after the table views.
VIEWS: dict[str, str] = {}


def register_view(name: str, select_sql: str) -> None:
    """Declare a view over lake tables (a stage's analyst view, e.g. ``annotations_top1``)."""
    if name in TABLES:
        raise ValueError(f"view {name!r} would hide the lake table of the same name")
    VIEWS[name] = select_sql


def register_table(spec: TableSpec) -> None:
    """Add a table declared by a later stage (features, training, index, serving)."""
    if spec.name in TABLES and TABLES[spec.name] != spec:
        raise ValueError(f"lake table {spec.name!r} is already declared with another schema")
    TABLES[spec.name] = spec
