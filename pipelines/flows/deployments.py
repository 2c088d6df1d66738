"""Deployments of the flows with the config's cron schedules, served by ``speclake flow serve``.

    refresh   schedules.refresh  (nightly)   ingest the sources, features, library index and ranker
    retrain   schedules.retrain  (weekly)    train every architecture, then the ranker
    index     schedules.index                rebuild the structure index (skipped unless its inputs changed)
    annotate  schedules.annotate (optional)  annotate new study files, write the report
    full      on demand                      the whole pipeline

Each deployment runs its flow with ``config`` = the absolute path of the config file, so the served
process and every run read the same file. Serving needs a Prefect server (``PREFECT_API_URL``): its
scheduler creates the runs; ``prefect server start`` runs one on this machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speclake.infra.config import PlatformConfig

#: Which schedule of the config each deployment follows (None: on demand only).
SCHEDULE_OF: dict[str, str | None] = {"refresh": "refresh", "retrain": "retrain", "index": "index",
                                      "annotate": "annotate", "full": None}


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: flow name, cron (None: on demand), timezone, parameters, what it does."""

    name: str
    flow: str
    cron: str | None
    timezone: str
    parameters: dict[str, Any]
    description: str


def deployment_specs(cfg: PlatformConfig, config_path: str | os.PathLike[str] | None) -> list[DeploymentSpec]:
    """The deployments of this config (``speclake flow show`` prints them; ``serve`` serves them)."""
    from speclake.pipelines.flows.flows import FLOW_HELP

    params = {"config": str(Path(config_path).resolve()) if config_path else None, "params": {}}
    out = []
    for flow_name, key in SCHEDULE_OF.items():
        cron = getattr(cfg.schedules, key) if key else None
        out.append(DeploymentSpec(name=f"speclake-{flow_name}", flow=flow_name, cron=cron,
                                  timezone=cfg.schedules.timezone, parameters=params,
                                  description=FLOW_HELP[flow_name]))
    return out


def to_deployments(specs: list[DeploymentSpec]) -> list[Any]:
    """Prefect ``RunnerDeployment`` objects (``flow.to_deployment``) of ``specs``, with their schedules."""
    from prefect.schedules import Cron

    from speclake.pipelines.flows.flows import FLOWS

    deployments = []
    for s in specs:
        schedules = [Cron(s.cron, timezone=s.timezone)] if s.cron else None
        deployments.append(FLOWS[s.flow].to_deployment(name=s.name, schedules=schedules, parameters=s.parameters,
                                                       description=s.description, tags=["speclake"]))
    return deployments


def serve_deployments(specs: list[DeploymentSpec], *, limit: int | None = 1) -> None:
    """Serve the deployments (blocks until interrupted); RuntimeError without ``PREFECT_API_URL``."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise RuntimeError("serving deployments needs a Prefect server: set PREFECT_API_URL "
                           "(e.g. `prefect server start`, then PREFECT_API_URL=http://127.0.0.1:4200/api); "
                           "`speclake flow run NAME` runs a flow once without one")
    serve(*to_deployments(specs), limit=limit)


__all__ = ["DeploymentSpec", "SCHEDULE_OF", "deployment_specs", "serve_deployments", "to_deployments"]
