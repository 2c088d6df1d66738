"""Export a study's annotations with the column names analysts already parse.

One row per ``annotations`` row (rank rows and ``no_candidates`` rows), ordered by file, scan and rank,
with three groups of columns:

* speclake's own: every column of the ``annotations`` table (:mod:`.tables`);
* SIRIUS-style (``structure_identifications.tsv``): ``id`` (the query id), ``structurePerIdRank``,
  ``formulaRank``, ``molecularFormula``, ``adduct``, ``InChIkey2D`` (InChIKey first block), ``InChI``,
  ``smiles``, ``name``, ``ConfidenceScore`` (rank 1 only), ``retentionTimeInSeconds``, ``precursorMz``,
  ``ionMass``; ``adduct`` and ``smiles`` are speclake's columns of the same name and meaning;
* GNPS-style library match columns (of the candidate's best library spectrum, empty when none):
  ``#Scan#`` (scan number, else the query id), ``SpectrumFile`` (file name), ``Compound_Name``,
  ``SpectrumID`` (library accession, e.g. CCMSLIB..., else the lake spectrum id), ``LibraryName``,
  ``LibMZ``, ``SpecMZ``, ``MZErrorPPM`` ((query - library precursor) / library, ppm), ``MassDiff``,
  ``SharedPeaks``, ``MQScore`` (cosine), ``EntropySimilarity``, ``ModifiedCosine``, ``MatchType``
  (identity | analogue), ``LibraryAdduct``, ``IonMode``, ``RT_Query``.

Written as ``.tsv``, ``.csv`` or ``.parquet`` (by the file name). Column names differ only in case
(``Compound_Name`` / ``compound_name``), so the table is built in Arrow, not as one SQL select.
:func:`write_export` also writes ``speclake export denovo`` (:mod:`.denovo_export`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

FORMATS = (".tsv", ".csv", ".parquet")

#: (output name, SQL expression over ``annotations a`` LEFT JOIN ``spectra s`` LEFT JOIN ``compounds c``).
SIRIUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "a.query_id"),
    ("structurePerIdRank", "a.rank"),
    ("formulaRank", "a.formula_rank"),
    ("molecularFormula", "a.formula"),
    ("InChIkey2D", "a.inchikey14"),
    ("InChI", "c.inchi"),
    ("name", "a.compound_name"),
    ("ConfidenceScore", "a.confidence"),
    ("retentionTimeInSeconds", "a.retention_time"),
    ("precursorMz", "a.precursor_mz"),
    ("ionMass", "a.precursor_mz"),
)
GNPS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("#Scan#", "coalesce(CAST(a.scan_number AS VARCHAR), a.query_id)"),
    ("SpectrumFile", "regexp_extract(a.source_file, '[^/\\\\]+$')"),
    ("Compound_Name", "a.library_compound_name"),
    ("SpectrumID", "CASE WHEN a.library_spectrum_id IS NOT NULL THEN coalesce(s.accession, a.library_spectrum_id) END"),
    ("LibraryName", "s.source"),
    ("LibMZ", "s.precursor_mz"),
    ("SpecMZ", "CASE WHEN a.library_spectrum_id IS NOT NULL THEN a.precursor_mz END"),
    ("MZErrorPPM", "(a.precursor_mz - s.precursor_mz) / s.precursor_mz * 1e6"),
    ("MassDiff", "abs(a.precursor_mz - s.precursor_mz)"),
    ("SharedPeaks", "a.shared_peaks"),
    ("MQScore", "a.library_cosine"),
    ("EntropySimilarity", "a.library_entropy"),
    ("ModifiedCosine", "a.library_modified_cosine"),
    ("MatchType", "a.library_match"),
    ("LibraryAdduct", "s.adduct"),
    ("IonMode", "a.ionmode"),
    ("RT_Query", "a.retention_time"),
)


def export_table(lake: str | os.PathLike[str], study: str, *, rank1: bool = False) -> pa.Table:
    """The export table of ``study`` (ValueError naming the lake's studies when it has none)."""
    from speclake.lake.sql import connect
    from speclake.serving.annotate.tables import ANNOTATIONS

    con = connect(lake)
    try:
        extra = SIRIUS_COLUMNS + GNPS_COLUMNS
        select = ", ".join(f'{expr} AS "x{i}"' for i, (_, expr) in enumerate(extra))
        where = "a.study = ?" + (" AND (a.rank = 1 OR a.status = 'no_candidates')" if rank1 else "")
        table = con.sql(f"""
            SELECT a.*, {select}
            FROM annotations a
            LEFT JOIN spectra s ON s.spectrum_id = a.library_spectrum_id
            LEFT JOIN compounds c ON c.inchikey = a.inchikey
            WHERE {where}
            ORDER BY a.source_file, a.scan_number NULLS LAST, a.query_id, a.rank NULLS FIRST""",
                        params=[study]).to_arrow_table()
        if table.num_rows == 0:
            raise unknown_study(con, "annotations", study, lake, "annotations", "speclake annotate")
    finally:
        con.close()
    names = [f.name for f in ANNOTATIONS] + [name for name, _ in extra]
    return table.rename_columns(names)


def export_path(out: str | os.PathLike[str]) -> Path:
    """``out`` as a Path when its name ends in one of :data:`FORMATS` (ValueError naming them otherwise)."""
    path = Path(out)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"cannot write {path.name}: use a file name ending in {', '.join(FORMATS)}")
    return path


def unknown_study(con: Any, table: str, study: str, lake: str | os.PathLike[str], what: str, command: str
                  ) -> ValueError:
    """The error for a study with no rows in ``table``, naming the studies that have some."""
    studies = [r[0] for r in con.sql(f"SELECT DISTINCT study FROM {table} ORDER BY 1").fetchall()]
    return ValueError(f"no {what} of study {study!r} in {lake}; studies there: "
                      f"{', '.join(studies) if studies else f'none (run `{command}` first)'}")


def write_export(table: pa.Table, out: str | os.PathLike[str]) -> Path:
    """Write ``table`` as TSV, CSV or Parquet, chosen by the file name (ValueError for another one)."""
    path = export_path(out)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
        return path
    import pyarrow.csv as csv

    text = pa.table({n: (pc.cast(c, pa.string()) if pa.types.is_timestamp(c.type) else c)
                     for n, c in zip(table.column_names, table.columns)})
    csv.write_csv(text, path, write_options=csv.WriteOptions(delimiter="\t" if suffix == ".tsv" else ",",
                                                              quoting_style="needed"))
    return path


def export_annotations(lake: str | os.PathLike[str], study: str, out: str | os.PathLike[str], *,
                       rank1: bool = False) -> tuple[Path, int]:
    """Export ``study``'s annotations to ``out``; returns the path and the rows written."""
    export_path(out)  # a bad file name fails before the lake is read
    table = export_table(lake, study, rank1=rank1)
    return write_export(table, out), table.num_rows


__all__ = ["FORMATS", "GNPS_COLUMNS", "SIRIUS_COLUMNS", "export_annotations", "export_path", "export_table",
           "write_export"]
