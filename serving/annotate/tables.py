"""Lake tables of study annotation, registered with :mod:`speclake.lake.schema`, and analyst views.

* ``annotations``: per annotated scan its ``top_k`` ranked structures (``status='annotated'``, rank 1..k),
  or one ``status='no_candidates'`` row (rank NULL; the best library hit still filled in when any);
* ``annotation_errors``: every scan that could not be annotated, with stage, reason code and reason;
* ``annotation_files``: one row per finished study file (its sha256, counts, run): the resume ledger.
  A file's rows in all three tables are committed together, so a file is in the ledger exactly when
  its scans are in the other two.

Every scan of every file ends in ``annotations`` or ``annotation_errors``, so per file
``n_scans = n_annotated + n_no_candidates + n_errors``.

Example queries (``speclake sql "..." --lake DIR``)::

    -- confident rank-1 answers of a study
    SELECT query_id, compound_name, smiles, confidence FROM annotations
    WHERE study = 'NAME' AND rank = 1 AND confidence >= 0.8 ORDER BY confidence DESC;
    -- why scans failed
    SELECT reason_code, count(*) FROM annotation_errors WHERE study = 'NAME' GROUP BY 1 ORDER BY 2 DESC;
    -- every scan accounted for, per file
    SELECT source_file, n_scans, n_annotated + n_no_candidates + n_errors AS accounted FROM annotation_files;

The views of :data:`ANALYST_VIEWS` join rank-1 rows with ``compounds`` and the matched library
``spectra``; they are registered with the lake, so every :func:`speclake.lake.sql.connect` (and
``speclake sql``) has them.
"""
from __future__ import annotations

import pyarrow as pa

from speclake.lake.schema import TableSpec, register_table, register_view

ANNOTATIONS = pa.schema([
    pa.field("study", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),     # the study file as given to annotate
    pa.field("query_id", pa.string(), nullable=False),        # MGF TITLE / SPECTRUMID, mzML native id; verbatim
    pa.field("record_locator", pa.string()),                  # where in the file, as the readers say it
    pa.field("scan_number", pa.int64()),
    pa.field("query_usi", pa.string()),                       # mzspec:<study>:<file>:scan:<n> (or the file's USI)
    pa.field("precursor_mz", pa.float64()),
    pa.field("retention_time", pa.float64()),                 # seconds
    pa.field("ionmode", pa.string()),                         # positive | negative
    pa.field("rank", pa.int32()),                             # 1 = best; NULL on a no_candidates row
    pa.field("status", pa.string(), nullable=False),          # annotated | no_candidates
    pa.field("inchikey", pa.string()),
    pa.field("inchikey14", pa.string()),
    pa.field("smiles", pa.string()),
    pa.field("compound_name", pa.string()),
    pa.field("formula", pa.string()),                         # neutral molecular formula of the candidate
    pa.field("adduct", pa.string()),                          # precursor hypothesis, e.g. [M+H]+
    pa.field("adduct_rank", pa.int32()),
    pa.field("formula_rank", pa.int32()),                     # rank of the formula by fragmentation-tree score
    pa.field("score", pa.float64()),                          # the method's score (higher is better)
    pa.field("method", pa.string()),                          # the ranker that ordered the list
    pa.field("confidence", pa.float64()),                     # calibrated P(rank 1 right, InChIKey-14); rank-1 rows
    pa.field("mass_error_ppm", pa.float64()),                 # precursor m/z vs candidate + adduct
    pa.field("shared_peaks", pa.int32()),                     # with the library spectrum of this structure
    pa.field("library_spectrum_id", pa.string()),             # best library spectrum of this structure (lake id)
    pa.field("library_entropy", pa.float64()),
    pa.field("library_cosine", pa.float64()),
    pa.field("library_modified_cosine", pa.float64()),
    pa.field("library_match", pa.string()),                   # identity | analogue
    pa.field("library_compound_name", pa.string()),
    pa.field("n_candidates", pa.int32()),                     # candidates ranked for this scan (before top-k)
    pa.field("annotation_run_id", pa.string(), nullable=False),
])

ANNOTATION_ERRORS = pa.schema([
    pa.field("study", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("query_id", pa.string()),                        # NULL when the whole file could not be read
    pa.field("record_locator", pa.string()),
    pa.field("scan_number", pa.int64()),
    pa.field("stage", pa.string(), nullable=False),           # read | normalize | query | annotate
    pa.field("reason_code", pa.string(), nullable=False),     # no_peaks, nan_peaks, missing_precursor, ...
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw_excerpt", pa.string()),
    pa.field("annotation_run_id", pa.string(), nullable=False),
])

ANNOTATION_FILES = pa.schema([
    pa.field("study", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("file_sha256", pa.string(), nullable=False),
    pa.field("n_scans", pa.int64(), nullable=False),
    pa.field("n_annotated", pa.int64(), nullable=False),
    pa.field("n_no_candidates", pa.int64(), nullable=False),
    pa.field("n_errors", pa.int64(), nullable=False),
    pa.field("annotation_run_id", pa.string(), nullable=False),
    pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
])

ANNOTATIONS_SPEC = TableSpec(
    "annotations", ANNOTATIONS, key=("study", "source_file", "query_id", "rank"),
    description="Ranked structure candidates of every annotated study scan (top-k per scan, or one "
                "no_candidates row), with method, calibrated rank-1 confidence and library match.",
)
ANNOTATION_ERRORS_SPEC = TableSpec(
    "annotation_errors", ANNOTATION_ERRORS, key=("study", "source_file", "record_locator"),
    description="Every study scan that could not be annotated: file, scan, stage, reason code and reason.",
)
ANNOTATION_FILES_SPEC = TableSpec(
    "annotation_files", ANNOTATION_FILES, key=("study", "file_sha256"),
    description="One row per finished study file (sha256, scan counts, run): annotate's resume ledger.",
)

for _spec in (ANNOTATIONS_SPEC, ANNOTATION_ERRORS_SPEC, ANNOTATION_FILES_SPEC):
    register_table(_spec)

#: Analyst views over the tables above (DuckDB SQL; each needs the lake views of ``connect``).
ANALYST_VIEWS: dict[str, str] = {
    # rank-1 answers with the structure's compound record and the matched library spectrum
    "annotations_top1": """
        SELECT a.*, c.inchi, c.monoisotopic_mass, c.chemont_classes, c.n_spectra AS compound_n_spectra,
               s.accession AS library_accession, s.usi AS library_usi, s.precursor_mz AS library_precursor_mz,
               s.adduct AS library_adduct, s.source AS library_source
        FROM annotations a
        LEFT JOIN compounds c ON c.inchikey = a.inchikey
        LEFT JOIN spectra s ON s.spectrum_id = a.library_spectrum_id
        WHERE a.rank = 1 OR a.status = 'no_candidates'
    """,
    # every scan of every study: its rank-1 answer or its error
    "annotation_outcomes": """
        SELECT study, source_file, query_id, record_locator, scan_number, status AS outcome, NULL AS reason_code,
               compound_name, confidence, annotation_run_id
        FROM annotations WHERE rank = 1 OR status = 'no_candidates'
        UNION ALL
        SELECT study, source_file, query_id, record_locator, scan_number, 'error', reason_code,
               NULL, NULL, annotation_run_id
        FROM annotation_errors
    """,
}


for _name, _select in ANALYST_VIEWS.items():
    register_view(_name, _select)


__all__ = ["ANALYST_VIEWS", "ANNOTATIONS", "ANNOTATION_ERRORS", "ANNOTATION_FILES"]
