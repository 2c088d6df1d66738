"""The Prefect flows end to end under Prefect's temporary local server, on the bundled sample.

One module-scoped sequence on one lake (the expensive part, shared by every test here):

1. ``full`` with a study whose second file is unreadable (a dangling link): ingest, features, index
   and prepare commit; annotate fails on every try; the flow reports it;
2. ``full`` with the study fixed: the stages of run 1 are skipped (their work kept), annotate and
   report run;
3. ``speclake flow run full`` (the CLI) again: every stage skipped.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import SAMPLE

pytestmark = pytest.mark.spark

TABLES = ("spectra", "compounds", "quarantine", "descriptors", "annotations", "annotation_files")
BEFORE_ANNOTATE = ["ingest", "features", "index", "prepare"]


def _versions(lake: Path) -> dict[str, int]:
    from speclake.lake.catalog import Lake

    cur = Lake(lake).tables()
    return {t: cur[t].version if t in cur else 0 for t in TABLES}


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory):
    """Run 1 (annotate fails), run 2 (fixed), run 3 (CLI, all skipped) on one lake; see the module doc."""
    from speclake.cli import main
    from speclake.pipelines.flows.flows import run_flow

    root = tmp_path_factory.mktemp("flows")
    study = root / "runs"
    study.mkdir()
    good = study / "pesticides_blind.mgf"
    shutil.copy(SAMPLE / "study" / "pesticides_blind.mgf", good)
    lost = study / "lost.mzML"
    os.symlink(root / "unmounted" / "lost.mzML", lost)  # an unreadable study file
    config = root / "flow.yaml"
    config.write_text("lake: lake\n"
                      "study: {name: t1, files: [runs/pesticides_blind.mgf, runs/lost.mzML], top_k: 3}\n"
                      "ranker: false\narchitectures: []\n"
                      "engines: {spark_master: 'local[2]', num_cpus: 1}\n"
                      "retry: {retries: 1, delay_seconds: 0}\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(root / "prefect"))
        mp.delenv("PREFECT_API_URL", raising=False)
        first, failure = run_flow("full", str(config))
        after_first = _versions(root / "lake")
        second, second_failure = run_flow("full", str(config), {"files": str(good)})
        after_second = _versions(root / "lake")
        cli = CliRunner().invoke(main, ["flow", "run", "full", "--config", str(config), "--param", f"files={good}",
                                        "--json"])
    yield {"root": root, "config": config, "good": good, "lost": lost, "first": first, "failure": failure,
           "after_first": after_first, "second": second, "second_failure": second_failure,
           "after_second": after_second, "cli": cli}
    _stop_prefect_server()


def _stop_prefect_server() -> None:
    """Stop Prefect's temporary server now, while pytest's output capture (which Prefect's log handler
    writes to) is still open, instead of at interpreter exit."""
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=5)  # the flow runs' logs reach the server before it goes
    SubprocessASGIServer().stop()


def _by_stage(summaries: list[dict]) -> dict[str, dict]:
    return {s["stage"]: s for s in summaries}


def test_failing_stage_retries_and_is_reported(runs):
    """The unreadable study file fails annotate on both tries (retries 1); the flow stops there, says
    which stage and why, and the report stage never runs."""
    first = _by_stage(runs["first"])
    assert list(first) == [*BEFORE_ANNOTATE, "annotate-t1"]
    failed = first["annotate-t1"]
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert "FileNotFoundError" in failed["error"] and "lost.mzML" in failed["error"]
    assert runs["failure"] is not None and runs["failure"].stage == "annotate-t1"


def test_first_run_commits_the_stages_before_the_failure(runs):
    """Ingest, features, index and prepare ran once each and committed before annotate failed."""
    first = _by_stage(runs["first"])
    for stage in BEFORE_ANNOTATE:
        assert first[stage]["status"] == "done" and first[stage]["attempts"] == 1, first[stage]
    assert first["ingest"]["counts"]["spectra_new"] > 300
    assert first["features"]["counts"]["descriptors_computed"] > 100
    assert first["index"]["counts"]["structures"] > 100
    v = runs["after_first"]
    assert v["spectra"] >= 1 and v["descriptors"] >= 1 and v["annotations"] == 0


def test_second_run_keeps_earlier_work_and_finishes(runs):
    """With the study fixed, the stages committed by run 1 are skipped (same table versions) and
    annotate + report run: every scan of the blind MGF annotated or accounted for."""
    assert runs["second_failure"] is None
    second = _by_stage(runs["second"])
    for stage in BEFORE_ANNOTATE:
        assert second[stage]["status"] == "skipped", second[stage]
        assert second[stage]["reason"].startswith("inputs unchanged")
    for table in ("spectra", "compounds", "descriptors"):
        assert runs["after_second"][table] == runs["after_first"][table]
    ann = second["annotate-t1"]
    assert ann["status"] == "done" and ann["counts"]["files_annotated"] == 1
    assert ann["counts"]["scans"] == 24
    assert ann["counts"]["annotated"] + ann["counts"]["no_candidates"] + ann["counts"]["errors"] == 24
    report = Path(second["report-t1"]["counts"]["report"])
    assert report.is_file() and report.stat().st_size > 0 and runs["after_second"]["annotations"] >= 1


def test_third_run_from_the_cli_skips_everything(runs):
    """`speclake flow run full --json` on unchanged inputs: exit 0, every stage skipped, no table changed."""
    cli = runs["cli"]
    assert cli.exit_code == 0, cli.output
    summaries = json.loads(cli.stdout)
    assert [s["stage"] for s in summaries] == [*BEFORE_ANNOTATE, "annotate-t1", "report-t1"]
    assert {s["status"] for s in summaries} == {"skipped"}
    assert _versions(runs["root"] / "lake") == runs["after_second"]


def test_unreadable_source_fails_refresh_without_touching_the_lake(runs):
    """An unreadable library source (dangling link) fails the ingest of `refresh` after its retries,
    the CLI names it in one line, and no table version changes."""
    from speclake.cli import main

    lost_source = runs["root"] / "lost-library.mgf"
    os.symlink(runs["root"] / "unmounted" / "library.mgf", lost_source)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(runs["root"] / "prefect"))
        res = CliRunner().invoke(main, ["flow", "run", "refresh", "--config", str(runs["config"]),
                                        "--param", f"sources={SAMPLE / 'massbank_sample.txt.gz'},{lost_source}"])
    assert res.exit_code == 1
    assert "flow refresh: stage ingest failed: FileNotFoundError" in res.output and "lost-library.mgf" in res.output
    row = next(line for line in res.output.splitlines() if line.startswith("ingest"))
    assert row.split()[1:3] == ["failed", "2"]
    assert _versions(runs["root"] / "lake") == runs["after_second"]


def test_failed_training_is_optional(runs):
    """`retrain` with invalid arch1 settings: train-arch1 fails on both tries and is reported as failed,
    the flow goes on (prepare runs its skip check) and ends without a failure; no table changes."""
    from speclake.pipelines.flows.flows import run_flow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(runs["root"] / "prefect"))
        summaries, failure = run_flow("retrain", str(runs["config"]),
                                      {"architectures": "arch1", "train.model": "{arch1: {no_such_setting: 1}}"})
    assert failure is None
    by = _by_stage(summaries)
    assert list(by) == ["features", "train-arch1", "prepare"]
    assert by["train-arch1"]["status"] == "failed" and by["train-arch1"]["attempts"] == 2
    assert by["train-arch1"]["optional"] and "no_such_setting" in by["train-arch1"]["error"]
    assert by["features"]["status"] == by["prepare"]["status"] == "skipped"
    assert _versions(runs["root"] / "lake") == runs["after_second"]
