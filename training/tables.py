"""Lake tables of the training stage, declared once and registered with :mod:`speclake.lake.schema`.

``model_metrics``: one row per (evaluation run, model, method, candidate mode, stratum). Every
method of one run is evaluated on the same test spectra and the same candidate lists. Methods:
``model`` / ``model+prior`` (registered neural models), ``logreg`` / ``random_forest`` (classical,
fitted in the run) and their ``+prior`` forms, ``library_cosine`` (+prior), and the spectrum-free
references ``random`` (a seeded random ranking), ``random_expected`` (its exact expectation k/n)
and ``prior`` (each candidate's highest Tanimoto to the training structures). Strata:
``all/all``, ``ionmode/<mode>``, ``novelty/<bin>`` (the true structure's highest Tanimoto to the
training structures). Ties in scores count against the method (pessimistic rank).
"""
from __future__ import annotations

import pyarrow as pa

from speclake.lake.schema import TableSpec, register_table

MODEL_METRICS = pa.schema([
    pa.field("evaluation_run_id", pa.string(), nullable=False),
    pa.field("model_id", pa.string(), nullable=False),       # registry id, classical:<name>, library:cosine, reference:<name>
    pa.field("arch", pa.string(), nullable=False),           # arch1..arch5, classical, library, reference
    pa.field("method", pa.string(), nullable=False),         # model | model+prior | logreg | prior | random ...
    pa.field("candidate_mode", pa.string(), nullable=False), # formula | mass
    pa.field("stratum_kind", pa.string(), nullable=False),   # all | ionmode | novelty
    pa.field("stratum", pa.string(), nullable=False),        # all | positive | <0.5 | 0.5-0.7 ...
    pa.field("n_spectra", pa.int64(), nullable=False),
    pa.field("n_structures", pa.int64()),
    pa.field("mean_candidates", pa.float64()),
    pa.field("hit1", pa.float64()),
    pa.field("hit5", pa.float64()),
    pa.field("hit20", pa.float64()),
    pa.field("hit1_ci_low", pa.float64()),                   # 95% bootstrap interval (test structures resampled)
    pa.field("hit1_ci_high", pa.float64()),
    pa.field("top1_tanimoto", pa.float64()),                 # Tanimoto (Morgan) of the top candidate to the truth
    pa.field("descriptor_auc", pa.float64()),                # macro over descriptors with both classes in the stratum
    pa.field("descriptor_f1", pa.float64()),                 # macro, threshold 0.5
    pa.field("descriptor_auc_micro", pa.float64()),
    pa.field("descriptor_f1_micro", pa.float64()),
    pa.field("prior_lambda", pa.float64()),                  # +prior methods: lambda chosen on validation
    pa.field("train_spectra_per_s", pa.float64()),
    pa.field("train_seconds", pa.float64()),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
])

TRAINING_TABLES: dict[str, TableSpec] = {
    "model_metrics": TableSpec(
        "model_metrics", MODEL_METRICS,
        key=("evaluation_run_id", "model_id", "method", "candidate_mode", "stratum_kind", "stratum"),
        description="Retrieval (hit@1/5/20, top-1 Tanimoto) and descriptor metrics of every model, baseline and "
                    "reference per evaluation run, candidate mode and stratum.",
    ),
}


def register_training_tables() -> None:
    """Declare the training tables in the lake schema registry (idempotent)."""
    for spec in TRAINING_TABLES.values():
        register_table(spec)


register_training_tables()
