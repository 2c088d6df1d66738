"""`speclake annotate` and `speclake export annotations` through the real command group."""
from __future__ import annotations

import re

from click.testing import CliRunner

from speclake.cli import main


def test_annotate_prints_both_counts_and_export_writes(fresh_lake, pesticides_mgf, bad_mgf, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["annotate", str(pesticides_mgf), str(bad_mgf), "--lake", str(fresh_lake),
                               "--study", "cli", "--top-k", "2"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert re.search(r"annotated\s+77\b", out), f"annotated count printed: {out}"
    assert re.search(r"errors\s+4\b", out), f"error count printed: {out}"
    assert "bad_scans.mgf: 5 scans, 1 annotated" in out or "bad_scans.mgf: 5 scans, 0 annotated" in out
    again = runner.invoke(main, ["annotate", str(pesticides_mgf), "--lake", str(fresh_lake), "--study", "cli"])
    assert again.exit_code == 0 and "1 skipped" in again.output and "already annotated" in again.output
    dest = tmp_path / "cli.tsv"
    res = runner.invoke(main, ["export", "annotations", "--study", "cli", "--lake", str(fresh_lake), "--out", str(dest)])
    assert res.exit_code == 0, res.output
    assert dest.is_file() and "structurePerIdRank" in dest.read_text().splitlines()[0]


def test_help_explains_columns_and_errors_are_one_line(tmp_path, annotate_lake):
    runner = CliRunner()
    res = runner.invoke(main, ["export", "annotations", "--help"])
    assert res.exit_code == 0 and "structurePerIdRank" in res.output and "MQScore" in res.output
    res = runner.invoke(main, ["annotate", "--help"])
    assert res.exit_code == 0 and "--structures" in res.output and "--ray-address" in res.output
    res = runner.invoke(main, ["annotate", str(tmp_path / "missing.mzML"), "--lake", str(annotate_lake),
                               "--study", "x"])
    assert res.exit_code != 0
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert lines == [f"Error: study file not found: {tmp_path / 'missing.mzML'}"], res.output
    res = runner.invoke(main, ["export", "annotations", "--study", "x", "--lake", str(annotate_lake),
                               "--out", str(tmp_path / "x.tsv")])
    assert res.exit_code != 0 and len([l for l in res.output.splitlines() if l.strip()]) == 1, res.output


def test_annotate_prepare_offers_the_fusion_kinds_and_refuses_others(tmp_path):
    """`annotate-prepare --fusion` explains the three fusion kinds and rejects an unknown one before any work."""
    runner = CliRunner()
    res = runner.invoke(main, ["annotate-prepare", "--help"])
    assert res.exit_code == 0 and "--fusion" in res.output and "out-of-fold" in res.output
    res = runner.invoke(main, ["annotate-prepare", "--lake", str(tmp_path), "--fusion", "forest"])
    assert res.exit_code == 2 and "auto" in res.output and "net" in res.output
