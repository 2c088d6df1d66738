"""Prefect 3 flows over the real stages: ``full``, ``refresh``, ``retrain``, ``index``, ``annotate``.

Each flow loads the platform config (``config``: a YAML path; ``params``: dotted overrides such as
``{"study": "S1", "files": "runs/*.mzML", "train.epochs": "3"}``), then calls its stages as Prefect
tasks, in order::

    full      ingest -> features -> train (each architecture) -> index -> prepare -> annotate -> report
    refresh   ingest -> features -> prepare          (nightly: a library source changed)
    retrain   features -> train (each architecture) -> prepare      (weekly)
    index     index                                  (the structure files or the compounds changed)
    annotate  annotate -> report                     (new study files)

Every task retries with exponential backoff (``retry`` in the config) and returns its summary
(:mod:`.stages`), also published as a table artifact (Prefect UI: Artifacts). A stage whose inputs
are unchanged is skipped and says so. A stage that still fails after its retries ends the flow run
(state Failed) with :class:`StageFailed`, which carries every summary so far: stages committed before
it keep their table versions (each stage commits atomically through the run contract). Training is
optional: a failed ``train-<arch>`` is reported (status failed) and the flow goes on without that model.

With ``PREFECT_API_URL`` unset, :func:`run_flow` runs under Prefect's temporary local server (no
server to install or start); Prefect's home is then ``<lake>/_prefect`` unless ``PREFECT_HOME`` is set.
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import yaml
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from speclake.infra.config import PlatformConfig, load_config, parse_config
from speclake.pipelines.flows import stages

log = logging.getLogger(__name__)

#: ``--param`` names that stand for a config key (the rest are dotted config keys).
PARAM_ALIASES = {"study": "study.name", "files": "study.files", "lake": "lake", "sources": "sources",
                 "structures": "structures", "architectures": "architectures"}
#: Config keys that hold lists: a ``--param`` value for them is split at commas.
LIST_KEYS = {"study.files", "sources", "structures", "architectures", "features.only"}


class StageFailed(RuntimeError):
    """A stage failed after its retries; ``summaries`` holds every stage's summary, the failed one last."""

    def __init__(self, stage: str, error: str, summaries: list[dict[str, Any]]) -> None:
        super().__init__(f"stage {stage} failed: {error}")
        self.stage, self.error, self.summaries = stage, error, summaries

    def __reduce__(self):  # Prefect keeps the exception as the flow's result: it must pickle
        return (StageFailed, (self.stage, self.error, self.summaries))


# -- config and parameters ---------------------------------------------------------------------------
def apply_params(cfg: PlatformConfig, params: dict[str, Any] | None, base: str | os.PathLike[str] = ".") -> PlatformConfig:
    """``cfg`` with ``params`` (``key=value`` overrides, dotted keys or :data:`PARAM_ALIASES`) applied.

    Values are read as YAML scalars (``3`` an int, ``null`` None, ``true`` a bool); list keys split at
    commas. Relative paths in the overrides are resolved against ``base`` (the working directory)."""
    if not params:
        return cfg
    data = cfg.model_dump(mode="json")
    for key, raw in params.items():
        dotted = PARAM_ALIASES.get(key, key)
        if dotted in LIST_KEYS and isinstance(raw, str):
            value: Any = [v.strip() for v in raw.split(",") if v.strip()]
        else:
            value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"--param {key}: {p!r} is not a section of the config (dotted key {dotted!r})")
            node = node[p]
        node[leaf] = value
    return parse_config(data, Path(base).resolve(), origin="--param")


def flow_config(config: str | None, params: dict[str, Any] | None) -> PlatformConfig:
    """The config of a flow run: the YAML file (None: the defaults), then ``params``."""
    return apply_params(load_config(config), params, Path.cwd())


# -- tasks -------------------------------------------------------------------------------------------
def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:60] or "stage"


def _publish(summary: dict[str, Any]) -> None:
    """The summary as a table artifact of the task run (one row per count)."""
    from prefect.artifacts import create_table_artifact

    rows = [{"item": k, "value": str(v)} for k, v in summary.items() if k not in ("counts", "tables")]
    rows += [{"item": k, "value": str(v)} for k, v in (summary.get("counts") or {}).items()]
    rows += [{"item": f"table {k}", "value": f"v{v}"} for k, v in (summary.get("tables") or {}).items()]
    create_table_artifact(key=_artifact_key(f"stage-{summary['stage']}"), table=rows,
                          description=f"speclake stage {summary['stage']}: {summary['status']}")


def _stage_task(cfg: PlatformConfig, engines: stages.Engines, attempts: dict[str, int], name: str,
                fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    from prefect.runtime import task_run

    attempts[name] = int(task_run.run_count or 1)
    try:
        summary = fn(cfg, engines, *args)
    except BaseException:
        engines.reset_ray()  # the retry (if any) gets a fresh Ray
        raise
    summary["attempts"] = attempts[name]
    _publish(summary)
    return summary


stage_task = task(_stage_task, name="stage", cache_policy=NO_CACHE, persist_result=False, log_prints=True)


class _Runner:
    """Calls stages as tasks (named, with the config's retries), collecting summaries and attempts."""

    def __init__(self, cfg: PlatformConfig, engines: stages.Engines) -> None:
        self.cfg, self.engines = cfg, engines
        self.summaries: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}

    def __call__(self, name: str, fn: Callable[..., dict[str, Any]], *args: Any, optional: bool = False
                 ) -> dict[str, Any]:
        """Run one stage; a required stage that fails after its retries raises :class:`StageFailed`, an
        optional one (training) is reported as failed and the flow goes on (annotation works without
        models: the ranker falls back to library evidence and the prior)."""
        retry = self.cfg.retry
        t = stage_task.with_options(name=name, task_run_name=name, retries=retry.retries,
                                    retry_delay_seconds=retry.delays() or 0)
        try:
            summary = t(self.cfg, self.engines, self.attempts, name, fn, *args)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            failed = {"stage": name, "status": "failed", "attempts": self.attempts.get(name, 0), "error": error}
            self.summaries.append(failed)
            log.error("stage %s failed after %d attempt(s): %s", name, failed["attempts"], error)
            if optional:
                failed["optional"] = True
                return failed
            _flow_artifact(self.summaries)
            raise StageFailed(name, error, self.summaries) from exc
        self.summaries.append(summary)
        return summary


def _flow_artifact(summaries: list[dict[str, Any]]) -> None:
    from prefect.artifacts import create_markdown_artifact

    lines = ["| stage | status | attempts | seconds | detail |", "|---|---|---|---|---|"]
    for s in summaries:
        detail = s.get("error") or ", ".join(f"{k} {v}" for k, v in (s.get("counts") or {}).items()) or s.get("reason", "")
        lines.append(f"| {s['stage']} | {s['status']} | {s.get('attempts', '')} | {s.get('seconds', '')} | {detail} |")
    create_markdown_artifact(markdown="\n".join(lines), key="speclake-flow-summary",
                             description="speclake flow: every stage")


def _run(stage_names: list[str], config: str | None, params: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Run the named stages in order (``train`` expands to one stage per architecture)."""
    cfg = flow_config(config, params)
    with stages.Engines(cfg) as engines:
        run = _Runner(cfg, engines)
        for name in stage_names:
            if name == "train":
                for arch in cfg.architectures:
                    run(stages.stage_name(cfg, name, arch), stages.train, arch, optional=True)
            else:
                run(stages.stage_name(cfg, name), getattr(stages, name))
    _flow_artifact(run.summaries)
    return run.summaries


FLOW_STAGES: dict[str, list[str]] = {
    "full": ["ingest", "features", "train", "index", "prepare", "annotate", "report"],
    "refresh": ["ingest", "features", "prepare"],
    "retrain": ["features", "train", "prepare"],
    "index": ["index"],
    "annotate": ["annotate", "report"],
}
FLOW_HELP: dict[str, str] = {
    "full": "the whole pipeline: ingest, features, training, structure index, annotation prep, study, report",
    "refresh": "nightly library refresh: ingest the sources, features of new spectra, library index and ranker",
    "retrain": "weekly retraining of every configured architecture, then the ranker",
    "index": "structure index rebuild when the structure files or the lake compounds changed",
    "annotate": "annotate the study's new files and write its report",
}


_FLOW_OPTIONS: dict[str, Any] = {"log_prints": True, "persist_result": False, "validate_parameters": True}


# Module-level flow functions: a served deployment's run loads its flow by entrypoint (file:function).
@flow(name="full", description=FLOW_HELP["full"], **_FLOW_OPTIONS)
def full(config: str | None = None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The whole pipeline once: ingest, features, training, index, annotation prep, study, report."""
    return _run(FLOW_STAGES["full"], config, params)


@flow(name="refresh", description=FLOW_HELP["refresh"], **_FLOW_OPTIONS)
def refresh(config: str | None = None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Library refresh: ingest the sources, features of new spectra, library index and ranker."""
    return _run(FLOW_STAGES["refresh"], config, params)


@flow(name="retrain", description=FLOW_HELP["retrain"], **_FLOW_OPTIONS)
def retrain(config: str | None = None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Retraining of every configured architecture, then the ranker."""
    return _run(FLOW_STAGES["retrain"], config, params)


@flow(name="index", description=FLOW_HELP["index"], **_FLOW_OPTIONS)
def index(config: str | None = None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The structure index (rebuilt only when the structure files or the lake compounds changed)."""
    return _run(FLOW_STAGES["index"], config, params)


@flow(name="annotate", description=FLOW_HELP["annotate"], **_FLOW_OPTIONS)
def annotate(config: str | None = None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The study's new files annotated, then its report."""
    return _run(FLOW_STAGES["annotate"], config, params)


FLOWS: dict[str, Any] = {"full": full, "refresh": refresh, "retrain": retrain, "index": index, "annotate": annotate}


# -- running -----------------------------------------------------------------------------------------
#: Seconds to wait for Prefect's temporary local server to start (at least).
EPHEMERAL_STARTUP_SECONDS = 180
def prefect_home(cfg: PlatformConfig) -> Path:
    """Prefect's home for a serverless run: ``$PREFECT_HOME`` or ``<lake>/_prefect``."""
    return Path(os.environ.get("PREFECT_HOME") or Path(cfg.lake) / "_prefect")


def run_flow(name: str, config: str | None = None, params: dict[str, Any] | None = None
             ) -> tuple[list[dict[str, Any]], StageFailed | None]:
    """Run flow ``name`` in this process: ``(summaries, None)``, or ``(summaries so far, the failure)``.

    Without ``PREFECT_API_URL`` the flow runs under Prefect's temporary local server, its database
    under :func:`prefect_home`."""
    from prefect.settings import (PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_ANALYTICS_ENABLED,
                                  PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings)

    if name not in FLOWS:
        raise ValueError(f"unknown flow {name!r}; choose from {', '.join(FLOWS)}")
    cfg = flow_config(config, params)  # a config error is reported before Prefect starts
    with ExitStack() as stack:
        if not PREFECT_API_URL.value():
            home = prefect_home(cfg)
            home.mkdir(parents=True, exist_ok=True)
            # a first start creates Prefect's database: on a busy small machine that takes longer
            # than Prefect's default 20 s
            timeout = max(EPHEMERAL_STARTUP_SECONDS, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
            stack.enter_context(temporary_settings(updates={
                PREFECT_HOME: str(home), PREFECT_SERVER_ANALYTICS_ENABLED: False,
                PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: timeout}))
        state = FLOWS[name](config=str(config) if config else None, params=dict(params or {}), return_state=True)
    if state.is_completed():
        return state.result(), None
    exc = state.result(raise_on_failure=False)
    if isinstance(exc, StageFailed):
        return exc.summaries, exc
    if isinstance(exc, BaseException):
        raise exc
    raise RuntimeError(f"flow {name} ended in state {state.name}: {state.message}")


__all__ = ["FLOWS", "FLOW_HELP", "FLOW_STAGES", "PARAM_ALIASES", "StageFailed", "apply_params", "flow_config",
           "prefect_home", "run_flow"]
