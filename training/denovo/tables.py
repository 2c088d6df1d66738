"""The ``denovo_candidates`` lake table (registered with :mod:`speclake.lake.schema`).

One row per proposed structure per study scan (rank 1 = best), written by ``speclake denovo``::

    SELECT query_id, rank, smiles, formula, score FROM denovo_candidates
    WHERE study = 'NAME' AND rank <= 5 ORDER BY query_id, rank;

``method`` says how the list was ranked: the annotation ranker's id (its fused evidence, the default) or
``latent_likelihood`` (log-density of the proposal's latent mean under the spectrum's predicted latent
Gaussian, always kept in ``latent_score``); ``near_smiles`` is the parent of a ``--near``
run (NULL for free generation); ``formula_source`` says where the formula filter came from
(``given``, ``fragtree`` = the best precursor formula by fragmentation tree, or NULL: no filter).
``denovo_errors``: every scan without proposals, with the reason (unreadable record, no peaks, no
decoded structure of the formula ...), so no scan vanishes.
"""
from __future__ import annotations

import pyarrow as pa

from speclake.lake.schema import TableSpec, register_table

DENOVO_CANDIDATES = pa.schema([
    pa.field("study", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("query_id", pa.string(), nullable=False),
    pa.field("record_locator", pa.string()),
    pa.field("precursor_mz", pa.float64()),
    pa.field("ionmode", pa.string()),
    pa.field("rank", pa.int32(), nullable=False),
    pa.field("smiles", pa.string(), nullable=False),
    pa.field("inchikey", pa.string()),
    pa.field("inchikey14", pa.string()),
    pa.field("formula", pa.string()),
    pa.field("score", pa.float64()),                       # the ranking score of ``method``
    pa.field("latent_score", pa.float64()),                # latent likelihood (the VAE's own order)
    pa.field("method", pa.string(), nullable=False),
    pa.field("near_smiles", pa.string()),
    pa.field("target_formula", pa.string()),
    pa.field("formula_source", pa.string()),                # given | fragtree | NULL
    pa.field("model_id", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
])

DENOVO_CANDIDATES_SPEC = TableSpec(
    "denovo_candidates", DENOVO_CANDIDATES, key=("study", "source_file", "query_id", "run_id", "rank"),
    description="De novo structure proposals of study scans from the SELFIES VAE (free or near a parent), "
                "formula-filtered and ranked, one row per proposal.",
)

DENOVO_ERRORS = pa.schema([
    pa.field("study", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("query_id", pa.string()),                      # NULL when the whole file could not be read
    pa.field("record_locator", pa.string()),
    pa.field("scan_number", pa.int64()),
    pa.field("stage", pa.string(), nullable=False),         # read | normalize | query | denovo
    pa.field("reason_code", pa.string(), nullable=False),   # no_peaks, missing_precursor, no_proposals ...
    pa.field("reason", pa.string(), nullable=False),
    pa.field("raw_excerpt", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
])

DENOVO_ERRORS_SPEC = TableSpec(
    "denovo_errors", DENOVO_ERRORS, key=("study", "source_file", "record_locator", "run_id"),
    description="Every study scan of a denovo run without proposals: file, scan, stage, reason code and reason.",
)

register_table(DENOVO_CANDIDATES_SPEC)
register_table(DENOVO_ERRORS_SPEC)

__all__ = ["DENOVO_CANDIDATES", "DENOVO_CANDIDATES_SPEC", "DENOVO_ERRORS", "DENOVO_ERRORS_SPEC"]
