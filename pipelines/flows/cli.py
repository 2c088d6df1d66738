"""``speclake flow run|serve|show``: the Prefect flows from the command line.

    speclake flow run full --config infra/local.yaml
    speclake flow run annotate --config infra/cluster.yaml --param study=S1 --param files=runs/*.mzML
    speclake flow show --config infra/local.yaml
    speclake flow serve --config infra/local.yaml          # needs PREFECT_API_URL
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import click

log = logging.getLogger(__name__)

FLOW_NAMES = ("full", "refresh", "retrain", "index", "annotate")
_CONFIG = click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
                       help="Platform config (YAML, e.g. infra/local.yaml). Default: the built-in defaults.")


def parse_params(items: tuple[str, ...]) -> dict[str, str]:
    """``("study=S1", "train.epochs=3")`` -> ``{"study": "S1", "train.epochs": "3"}`` (ValueError naming a bad one)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--param {item!r}: expected KEY=VALUE (e.g. study=S1, files=runs/*.mzML, train.epochs=3)")
        out[key.strip()] = value
    return out


def format_summaries(summaries: list[dict[str, Any]]) -> str:
    """One row per stage: status, attempts, seconds, run id, and its counts (or the error / skip reason)."""
    from speclake.cli import format_table

    rows = []
    for s in summaries:
        counts = ", ".join(f"{k} {v}" for k, v in (s.get("counts") or {}).items())
        error = (s.get("error") or "").strip().splitlines()
        detail = error[0] if error else (s.get("reason", "") if s["status"] == "skipped" else counts or s.get("reason", ""))
        rows.append((s["stage"], s["status"], s.get("attempts", ""), f"{s.get('seconds', 0):.1f}", s.get("run_id", ""),
                     detail))
    return format_table(["stage", "status", "tries", "wall s", "run", "detail"], rows, len(rows), width=110)


@click.group("flow", context_settings={"help_option_names": ["-h", "--help"]})
def flow_group() -> None:
    """Prefect flows over every stage: run one now, show or serve the scheduled deployments.

    \b
    Flows: full (ingest, features, training, index, annotation prep, study, report),
    refresh (nightly), retrain (weekly), index, annotate.
    A stage whose inputs (table versions, settings, file digests) are unchanged is skipped.
    """


@flow_group.command("run")
@click.argument("name", type=click.Choice(FLOW_NAMES))
@_CONFIG
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override a config key: study=S1, files=runs/*.mzML (comma-separated list), lake=DIR, "
                   "train.epochs=3, engines.spark_master=spark://host:7077 ... Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the stage summaries as JSON.")
def run_cmd(name: str, config_path: str | None, params: tuple[str, ...], as_json: bool) -> None:
    """Run flow NAME once, now, in this process (no Prefect server needed: without PREFECT_API_URL
    Prefect's temporary local server is used, its data under <lake>/_prefect)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from speclake.pipelines.flows.flows import run_flow

    summaries, failure = run_flow(name, config_path, parse_params(params))
    if as_json:
        click.echo(json.dumps(summaries, indent=1, default=str))
    else:
        click.echo(format_summaries(summaries))
    for s in summaries:
        if s["status"] == "failed" and s.get("optional"):
            click.echo(f"warning: optional stage {s['stage']} failed after {s['attempts']} attempt(s); the flow went "
                       f"on without it: {_first_line(s['error'])}", err=True)
    if failure is not None:
        raise click.ClickException(f"flow {name}: {_first_line(str(failure))} (--json or -v for the whole error)")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


@flow_group.command("show")
@_CONFIG
def show_cmd(config_path: str | None) -> None:
    """Print the deployments of the config: flow, cron schedule, what each does."""
    from speclake.cli import format_table
    from speclake.infra.config import load_config
    from speclake.pipelines.flows.deployments import deployment_specs

    cfg = load_config(config_path)
    specs = deployment_specs(cfg, config_path)
    rows = [(s.name, s.flow, s.cron or "on demand", s.timezone if s.cron else "", s.description) for s in specs]
    click.echo(format_table(["deployment", "flow", "schedule", "tz", "what"], rows, len(rows), width=100))
    click.echo(f"lake {cfg.lake}; study {cfg.study.name}; architectures {', '.join(cfg.architectures) or 'none'}; "
               f"Spark {cfg.engines.spark_master}; Ray {cfg.engines.ray_address or 'local'}")


@flow_group.command("serve")
@_CONFIG
@click.option("--limit", type=click.IntRange(min=1), default=1, show_default=True,
              help="Flow runs at the same time.")
def serve_cmd(config_path: str | None, limit: int) -> None:
    """Serve the deployments with their cron schedules (blocks; Ctrl-C stops and pauses them).

    Needs a Prefect server: PREFECT_API_URL=http://HOST:4200/api (`prefect server start`)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from speclake.infra.config import load_config
    from speclake.pipelines.flows.deployments import deployment_specs, serve_deployments

    specs = deployment_specs(load_config(config_path), config_path)
    try:
        serve_deployments(specs, limit=limit)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
