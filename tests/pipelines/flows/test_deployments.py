"""Deployments of the flows: the config's cron schedules, `speclake flow show`, serve without a server."""
from __future__ import annotations

from click.testing import CliRunner

from speclake.cli import main
from speclake.infra.config import load_config
from tests.conftest import REPO

LOCAL = REPO / "infra" / "local.yaml"


def test_deployments_follow_the_config_schedules():
    """Each deployment is its flow with the config's cron (annotate and full on demand) and the config's
    absolute path as parameter; Prefect's RunnerDeployments carry the same cron and timezone."""
    from speclake.pipelines.flows.deployments import deployment_specs, to_deployments

    cfg = load_config(LOCAL).model_copy(update={"schedules": load_config(LOCAL).schedules.model_copy(
        update={"annotate": "30 * * * *", "timezone": "Europe/Berlin"})})
    specs = deployment_specs(cfg, LOCAL)
    crons = {s.flow: s.cron for s in specs}
    assert crons == {"refresh": "0 2 * * *", "retrain": "0 3 * * 0", "index": "0 4 * * *",
                     "annotate": "30 * * * *", "full": None}
    deployments = {d.name: d for d in to_deployments(specs)}
    refresh = deployments["speclake-refresh"]
    assert refresh.flow_name == "refresh" and refresh.entrypoint.endswith("flows.py:refresh")
    assert [(s.schedule.cron, s.schedule.timezone) for s in refresh.schedules] == [("0 2 * * *", "Europe/Berlin")]
    assert refresh.parameters == {"config": str(LOCAL), "params": {}}
    assert not deployments["speclake-full"].schedules


def test_flow_show_prints_every_deployment():
    """`speclake flow show` lists the five deployments with their schedules and the engines."""
    res = CliRunner().invoke(main, ["flow", "show", "--config", str(LOCAL)])
    assert res.exit_code == 0, res.output
    rows = {line.split()[0]: line.split()[2] for line in res.stdout.splitlines() if line.startswith("speclake-")}
    assert rows == {"speclake-refresh": "0", "speclake-retrain": "0", "speclake-index": "0",
                    "speclake-annotate": "on", "speclake-full": "on"}
    assert "Spark local[2]; Ray local" in res.stdout


def test_serve_without_a_server_says_what_to_set(monkeypatch):
    """`speclake flow serve` without PREFECT_API_URL exits 1 naming PREFECT_API_URL (nothing served)."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    res = CliRunner().invoke(main, ["flow", "serve", "--config", str(LOCAL)])
    assert res.exit_code == 1 and "set PREFECT_API_URL" in res.output


def test_bad_param_refused_before_any_work(tmp_path):
    """A --param naming no config key, or without '=', is one clear error and no lake is made."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lake: lake\n")
    res = CliRunner().invoke(main, ["flow", "run", "full", "--config", str(cfg), "--param", "engines.spark_mastr=x"])
    assert res.exit_code == 1 and "engines.spark_mastr: Extra inputs are not permitted" in res.output
    res = CliRunner().invoke(main, ["flow", "run", "full", "--config", str(cfg), "--param", "study"])
    assert res.exit_code == 1 and "expected KEY=VALUE" in res.output
    assert not (tmp_path / "lake").exists()
