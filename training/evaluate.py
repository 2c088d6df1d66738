"""The fair evaluation: every model, the classical baselines, library search and two spectrum-free
references, on the same structure-disjoint test spectra and the same candidate lists.

:func:`evaluate`, one run (:class:`speclake.lake.run.Run`, kind ``evaluation``):

1. examples from the lake, split by InChIKey-14; the test (and validation) spectra are a fixed,
   hash-ordered subset when capped (:mod:`.eval_data`);
2. the structure index holds the lake compounds, the true structures and the given structure
   files, prefiltered to the possible candidates (:mod:`.eval_data`, :mod:`.candidates`);
3. the methods (:mod:`.eval_methods`): registered models, ``logreg`` / ``random_forest`` fitted here
   on the train split (:mod:`.baselines`), library searches (analogue scheme), ``random`` and the
   library ``prior``;
4. per query set, what does not depend on the candidates: predictions, library hits, embeddings,
   reliability weights (:mod:`.eval_queries`);
5. per candidate mode, scores of every candidate list and the metrics rows overall, per ion mode and
   per novelty stratum; every model-like method also as ``<method>+prior`` with lambda chosen on
   the validation split (:mod:`.eval_scoring`);
6. the rows as a new version of the lake table ``model_metrics`` (:mod:`.tables`; the lake lock is
   taken for the commit only, so other writers go on meanwhile), a comparison table in the log and a
   PNG plot under ``<lake>/reports/`` (:mod:`.eval_report`); the run record holds the
   :class:`~.eval_report.EvaluationReport`.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa

from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run

from .eval_data import (PARALLEL_STRUCTURES, QUERY_COLUMNS, QuerySet, fingerprint_settings, load_split_examples,
                        prepare_candidate_index, structure_rows, train_fingerprints)
from .eval_methods import (DESCRIPTOR_ARCHS, LIBRARY_METHODS, Method, classical_methods, methods_to_score,
                           model_method, neural_methods, reference_methods)
from .eval_queries import embedding_hits, library_hits, prepare_queries, query_sets
from .eval_report import (REPORTS_DIR, EvaluationReport, format_comparison, metrics_table, plot_metrics,
                          run_plot_path, run_record)
from .eval_scoring import ScoredMode, metric_rows, score_modes, strata
from .eval_settings import EvaluationSettings

log = logging.getLogger(__name__)


def evaluate(
    lake_dir: str | os.PathLike[str],
    model_ids: Sequence[str] | None = None,
    structures: Sequence[str | os.PathLike[str]] = (),
    settings: EvaluationSettings | None = None,
    *,
    plot_path: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    extra_models: Sequence[Any] = (),
) -> pa.Table:
    """Evaluate registered models (``model_ids``, default all), baselines, library search and references.

    Returns this run's ``model_metrics`` rows (also appended to the lake table). ``structures``
    files are added to the structure index first. ``extra_models`` (objects with the
    :class:`~speclake.training.registry.LoadedModel` API) are scored like registered models.
    ``progress(stage, done, total)`` hears of every stage and of the long loops inside them.
    """
    settings = settings or EvaluationSettings()
    lake = Lake(lake_dir)
    report = EvaluationReport(structures=[str(s) for s in structures])
    with Run(lake, "evaluation", settings, report, progress=progress, lock=None) as run:
        with run.stage("examples"):
            data = load_split_examples(lake, settings)
            train, val, test = data["train"], data["validation"], data["test"]
            fp = fingerprint_settings(lake)
            train_fps, library_fps = train_fingerprints(train, fp.morgan_bits)
        log.info("evaluation %s: %d train, %d validation, %d test spectra", run.run_id, train.num_rows,
                 val.num_rows, test.num_rows)
        with run.stage("structure index"):
            indexed = prepare_candidate_index(lake, structures, test, val, settings)
            report.structures_indexed = [str(s) for s in indexed]
        with run.stage("methods"):
            methods = methods_to_score(lake, model_ids, extra_models, train, settings, progress)
            methods += reference_methods()
            report.methods = [m.model_id for m in methods]
        with run.stage("queries"):
            sets = query_sets(test, val, methods, train, library_fps, settings, progress)
        with run.stage("scoring"):
            rows = score_modes(lake.root, sets, methods, train_fps, fp, settings, report.candidates, progress)
        table = metrics_table(rows, run.run_id, datetime.now(timezone.utc))
        with run.stage("write"):
            report.rows = run.write_part("model_metrics", table, settings={
                "candidates": report.candidates, "methods": report.methods, "structures": report.structures,
                "structures_indexed": report.structures_indexed})
            report.model_metrics_version = run.commit()["model_metrics"].version
        with run.stage("plot"):
            report.plot = str(plot_metrics(table, Path(plot_path) if plot_path else run_plot_path(lake.root,
                                                                                                    run.run_id)))
    log.info("evaluation %s done in %.1f s (model_metrics version %d, plot %s)\n%s", run.run_id, report.seconds,
             report.model_metrics_version, report.plot, format_comparison(table))
    return table


__all__ = ["DESCRIPTOR_ARCHS", "LIBRARY_METHODS", "PARALLEL_STRUCTURES", "QUERY_COLUMNS", "REPORTS_DIR",
           "EvaluationReport", "EvaluationSettings", "Method", "QuerySet", "ScoredMode", "classical_methods",
           "embedding_hits", "evaluate", "fingerprint_settings", "format_comparison", "library_hits",
           "load_split_examples", "metric_rows", "metrics_table", "model_method", "neural_methods", "plot_metrics",
           "prepare_candidate_index", "prepare_queries", "run_plot_path", "run_record", "strata", "structure_rows"]
