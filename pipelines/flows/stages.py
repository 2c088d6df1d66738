"""The flow stages: the real stage functions behind a skip-unchanged check, each returning a summary.

Every stage takes the :class:`~speclake.infra.config.PlatformConfig` and the flow's :class:`Engines`,
computes its fingerprint (:mod:`.ledger`), and either skips (inputs unchanged since its last success,
outputs present) or runs the stage job and records the new fingerprint. The summary is a flat dict::

    {"stage": "ingest", "status": "done" | "skipped", "seconds": 12.3, "run_id": "...",
     "reason": "sources changed", "counts": {"spectra_new": 369, ...}, "tables": {"spectra": 2}}

No Prefect here: :mod:`.flows` wraps these as tasks (retries, artifacts); tests and scripts may call
them directly.
"""
from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from speclake.infra.config import PlatformConfig
from speclake.pipelines.flows import ledger

log = logging.getLogger(__name__)

DONE, SKIPPED = "done", "skipped"
#: Lake tables whose versions each stage reads (its fingerprint's ``tables``).
READS: dict[str, tuple[str, ...]] = {
    "features": ("spectra", "compounds"),
    "train": ("spectra", "compounds", "descriptors", "spectrum_features"),
    "index": ("compounds",),
    "prepare": ("spectra", "compounds", "descriptors"),
    "annotate": ("spectra", "compounds", "descriptors"),
    "report": ("annotations", "annotation_errors", "annotation_files"),
}


class Engines:
    """The flow's Spark session and Ray, each started on first use and stopped by :meth:`close`
    (one JVM and one Ray for every stage of a flow run instead of one per stage)."""

    def __init__(self, cfg: PlatformConfig) -> None:
        self.cfg = cfg
        self._stack = ExitStack()
        self._ray_stack = ExitStack()
        self._spark: Any = None
        self._ray = False

    def spark(self) -> Any:
        """The flow's Spark session (a running one reused; one started here is stopped at close).

        Its JVM is the quick one (C1 JIT) that suits ingest, unless the features train in the JVM
        (Spec2Vec's Word2Vec, the patterns' LDA), which need the full JIT (see FeaturesSettings.spark)."""
        if self._spark is None:
            from speclake.infra.spark import start_spark, stop_spark

            only = self.cfg.features.only
            jvm_features = only is None or bool({"spec2vec", "patterns"} & set(only))
            self._spark, started = start_spark(self.cfg.engines.spark(quick_jvm=not jvm_features))
            if started:
                self._stack.callback(stop_spark, self._spark)
        return self._spark

    def running_spark(self) -> Any:
        """The flow's Spark session if one was started (else None: a stage may start its own)."""
        return self._spark

    def ray(self) -> None:
        """Connect to ``engines.ray_address`` or start a local Ray for the rest of the flow run."""
        if not self._ray:
            from speclake.infra.ray import ray_session

            self._ray_stack.enter_context(ray_session(self.cfg.engines.ray()))
            self._ray = True

    def reset_ray(self) -> None:
        """Stop the Ray this flow started (after a failed attempt: its actors and placement groups go
        with it, so the retry starts on a clean Ray instead of waiting for resources a dead run holds)."""
        self._ray_stack.close()
        self._ray = False

    def close(self) -> None:
        try:
            self.reset_ray()
        finally:
            self._stack.close()
            self._spark = None

    def __enter__(self) -> "Engines":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _summary(stage: str, status: str, t0: float, **extra: Any) -> dict[str, Any]:
    return {"stage": stage, "status": status, "seconds": round(time.perf_counter() - t0, 2), **extra}


def run_stage(cfg: PlatformConfig, stage: str, fingerprint: dict[str, Any], work: Callable[[], dict[str, Any]],
              outputs: list[str | Path] | None = None) -> dict[str, Any]:
    """Skip ``stage`` when its inputs are unchanged, else run ``work`` (-> summary fields) and record it."""
    t0 = time.perf_counter()
    lake = cfg.lake
    previous = ledger.unchanged(lake, stage, fingerprint, outputs or ())
    if previous is not None:
        last = previous.get("summary", {})
        log.info("%s: inputs unchanged since %s: skipped", stage, previous.get("finished"))
        return _summary(stage, SKIPPED, t0, run_id=last.get("run_id", ""),
                        reason=f"inputs unchanged since {previous.get('finished')}",
                        counts={}, tables=last.get("tables", {}))
    old = ledger.read_record(lake, stage)
    why = ", ".join(ledger.changed_keys(old.get("fingerprint") if old else None, fingerprint))
    fields = work()
    summary = _summary(stage, DONE, t0, reason=f"changed: {why}", **fields)
    ledger.write_record(lake, stage, fingerprint, summary)
    return summary


# -- the stages --------------------------------------------------------------------------------------
def ingest(cfg: PlatformConfig, engines: Engines) -> dict[str, Any]:
    """Ingest the library sources (bundled sample when none) into the lake."""
    from speclake.pipelines.ingest import IngestSettings, run_ingest

    sources = cfg.library_sources()
    settings = IngestSettings(spark=cfg.engines.spark())
    fp = {"sources": ledger.files_digest(sources), "settings": settings.model_dump(mode="json", exclude={"spark"})}

    def work() -> dict[str, Any]:
        rep = run_ingest(sources, cfg.lake, settings, spark=engines.spark())
        return {"run_id": rep.run_id, "tables": rep.table_versions,
                "counts": {"records_read": rep.records_read, "spectra_new": rep.spectra_new,
                           "quarantined": rep.quarantined, "compounds_new": rep.compounds_new}}

    return run_stage(cfg, "ingest", fp, work)


def features(cfg: PlatformConfig, engines: Engines) -> dict[str, Any]:
    """Compute the configured features of new spectra and structures."""
    from speclake.pipelines.features.job import FeaturesSettings, parse_only, run_features

    settings = FeaturesSettings.model_validate({**cfg.features.settings,
                                                "spark": cfg.engines.spark(quick_jvm=False).model_dump()})
    only = parse_only(cfg.features.only)
    fp = {"tables": ledger.table_versions(cfg.lake, READS["features"]), "settings": settings.settings_hash(),
          "only": only}

    def work() -> dict[str, Any]:
        rep = run_features(cfg.lake, settings, only=only, spark=engines.spark())
        skipped = {f: sum(v.values()) for f, v in rep.skipped.items()}
        return {"run_id": rep.run_id, "tables": rep.table_versions,
                "counts": {"spectra": rep.spectra_in_lake, **{f"{k}_computed": v for k, v in rep.computed.items()},
                           **{f"{k}_skipped": v for k, v in skipped.items() if v}}}

    return run_stage(cfg, "features", fp, work)


def train_settings(cfg: PlatformConfig, arch: str) -> Any:
    """The :class:`~speclake.training.trainer.RunSettings` of ``arch`` under this config."""
    from speclake.training.trainer import RunSettings

    t = cfg.train
    return RunSettings.model_validate({
        "arch": arch, "model": t.model.get(arch, {}),
        "train": {"epochs": t.epochs, "batch_size": t.batch_size, "patience": t.patience, "lr": t.lr,
                  "num_workers": t.num_workers, "cpus_per_worker": t.cpus_per_worker, "use_gpu": t.use_gpu}})


def train(cfg: PlatformConfig, engines: Engines, arch: str) -> dict[str, Any]:
    """Train and register one model of ``arch`` (when the data or the settings changed)."""
    from speclake.training.registry import models_root
    from speclake.training.trainer import train_model

    settings = train_settings(cfg, arch)
    fp = {"tables": ledger.table_versions(cfg.lake, READS["train"]), "settings": settings.model_dump(mode="json")}
    record = ledger.read_record(cfg.lake, f"train-{arch}")
    model = (record or {}).get("summary", {}).get("counts", {}).get("model_id")
    outputs = [models_root(cfg.lake) / model] if model else [models_root(cfg.lake) / f"missing-{arch}"]

    def work() -> dict[str, Any]:
        # Ray Train runs on its own Ray (started and stopped by train_model unless the flow's is up):
        # a failed attempt's workers and placement groups end with it
        result = train_model(cfg.lake, settings, ray_address=cfg.engines.ray_address, num_cpus=cfg.engines.num_cpus)
        m = result.metrics
        return {"run_id": result.model_id, "tables": {},
                "counts": {"model_id": result.model_id, "epochs": m.get("epochs"),
                           "best_val_loss": round(float(m["best_val_loss"]), 4) if m.get("best_val_loss") is not None
                           else None, "spectra_per_s": round(float(m.get("spectra_per_s") or 0), 1)}}

    return run_stage(cfg, f"train-{arch}", fp, work, outputs)


def _index_state(cfg: PlatformConfig, name: str = "fingerprint") -> Any:
    from speclake.index.search import IndexNotFound, index_dir, read_manifest

    try:
        m = read_manifest(index_dir(cfg.lake, name))
    except IndexNotFound:
        return None
    return {"run_id": m.get("run_id"), "count": m.get("count")}


def index(cfg: PlatformConfig, engines: Engines) -> dict[str, Any]:
    """The fingerprint structure index: every lake compound plus the ``structures`` files."""
    from speclake.index.search import index_dir
    from speclake.serving.annotate.prepare import lake_inchikey14, missing_from_index
    from speclake.training.candidates import ensure_index

    name = "fingerprint"
    fp = {"tables": ledger.table_versions(cfg.lake, READS["index"]), "structures": ledger.files_digest(cfg.structures),
          "index": name}

    def work() -> dict[str, Any]:
        from speclake.lake.catalog import Lake

        keys = lake_inchikey14(Lake(cfg.lake))
        missing = missing_from_index(Path(cfg.lake), name, keys)
        engines.ray()
        ensure_index(cfg.lake, cfg.structures, index_name=name, required_inchikeys=keys,
                     num_cpus=cfg.engines.num_cpus)
        state = _index_state(cfg, name) or {}
        return {"run_id": state.get("run_id") or "", "tables": {},
                "counts": {"structures": state.get("count"), "structure_files": len(cfg.structures),
                           "lake_compounds_missing_before": missing}}

    return run_stage(cfg, "index", fp, work, [index_dir(cfg.lake, name)])


def prepare(cfg: PlatformConfig, engines: Engines) -> dict[str, Any]:
    """What annotation needs beyond the index: the library index and (``ranker: true``) a fitted ranker."""
    from speclake.serving.annotate.prepare import PrepareSettings, prepare_lake
    from speclake.serving.library.index import LibraryIndex
    from speclake.training.registry import list_models

    fp = {"tables": ledger.table_versions(cfg.lake, READS["prepare"]), "index": _index_state(cfg),
          "models": [m["model_id"] for m in list_models(cfg.lake)], "ranker": cfg.ranker}

    def work() -> dict[str, Any]:
        if not cfg.ranker:
            rep = LibraryIndex.update(cfg.lake)
            return {"run_id": rep.run_id, "tables": {}, "counts": {"spectra_indexed": rep.spectra_indexed}}
        engines.ray()
        rep = prepare_lake(cfg.lake, settings=PrepareSettings(num_cpus=cfg.engines.num_cpus),
                           spark=engines.running_spark())
        counts: dict[str, Any] = {s["step"]: s["status"] for s in rep.steps}
        counts["ranker_id"] = rep.ranker_id
        fused = rep.test.get("fused") or {}
        if fused:
            counts["ranker_test_hit1"] = round(float(fused.get("hit1", float("nan"))), 3)
        return {"run_id": rep.run_id, "tables": rep.table_versions, "counts": counts}

    return run_stage(cfg, "prepare", fp, work)


def annotate(cfg: PlatformConfig, engines: Engines) -> dict[str, Any]:
    """Annotate the study's files (files already annotated, by sha256, are skipped by the job itself)."""
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study, study_files
    from speclake.serving.annotate.rankers import list_rankers

    study = cfg.study
    settings = AnnotateSettings(top_k=study.top_k, ionmode=study.ionmode, ray_address=cfg.engines.ray_address,
                                num_cpus=cfg.engines.num_cpus)
    files = [str(p) for p in study_files(cfg.study_files())]
    rankers = list_rankers(cfg.lake)
    fp = {"files": ledger.files_digest(files), "settings": settings.model_dump(mode="json"),
          "tables": ledger.table_versions(cfg.lake, READS["annotate"]), "index": _index_state(cfg),
          "ranker": rankers[0]["ranker_id"] if rankers else None}

    def work() -> dict[str, Any]:
        rep = annotate_study(files, cfg.lake, study.name, settings)
        return {"run_id": rep.run_id, "tables": rep.table_versions,
                "counts": {"study": study.name, "method": rep.method, "files_annotated": rep.files_annotated,
                           "files_skipped": rep.files_skipped, "scans": rep.n_scans, "annotated": rep.n_annotated,
                           "no_candidates": rep.n_no_candidates, "errors": rep.n_errors,
                           "scans_per_s": rep.scans_per_second}}

    return run_stage(cfg, stage_name(cfg, "annotate"), fp, work)


def report(cfg: PlatformConfig, engines: Engines) -> dict[str, Any]:
    """The study's HTML report (``report.out``, default ``<lake>/reports/<study>.html``)."""
    from speclake.serving.report import write_study_report

    out = cfg.report_path()
    fp = {"tables": ledger.table_versions(cfg.lake, READS["report"]), "study": cfg.study.name, "out": str(out)}

    def work() -> dict[str, Any]:
        path = write_study_report(cfg.lake, cfg.study.name, out)
        return {"run_id": "", "tables": {}, "counts": {"report": str(path), "bytes": path.stat().st_size}}

    return run_stage(cfg, stage_name(cfg, "report"), fp, work, [out])


def stage_name(cfg: PlatformConfig, stage: str, arch: str | None = None) -> str:
    """The name of a stage in summaries, task runs and the ledger: ``train-<arch>``, ``annotate-<study>``
    and ``report-<study>`` (study names made file-safe); the others as they are."""
    from speclake.serving.annotate.job import lock_name

    if stage == "train":
        return f"train-{arch}"
    if stage in ("annotate", "report"):
        return f"{stage}-{lock_name(cfg.study.name).removeprefix('annotate-')}"
    return stage


__all__ = ["DONE", "Engines", "SKIPPED", "annotate", "features", "index", "ingest", "prepare", "report",
           "run_stage", "stage_name", "train", "train_settings"]
