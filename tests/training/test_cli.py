"""`speclake train`, `speclake tune`, `speclake models` on the command line."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from speclake.cli import main
from tests.training.conftest import TINY_MODELS


def test_help_of_training_commands():
    """Each training command explains its options."""
    runner = CliRunner()
    for cmd, opt in (("train", "--resume"), ("tune", "--trials"), ("models", "--lake")):
        result = runner.invoke(main, [cmd, "--help"])
        assert result.exit_code == 0, result.output
        assert opt in result.output


@pytest.mark.ray
def test_train_then_models_lists_it(sample_feature_lake, ray_session, tmp_path):
    """`train` with a settings file registers a model (its summary line names the best validation hit@1) that
    `models` then lists with its split counts.

    Two workers of the default 1 CPU on the 2-CPU test Ray are shrunk so the data pipeline keeps a CPU
    (else the run would hang waiting for Ray Data).
    """
    lake, _ = sample_feature_lake
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"model": TINY_MODELS["arch2-flat"], "descriptors": {"min_positives": 3},
                                    "train": {"lr": 3e-3}}))
    runner = CliRunner()
    result = runner.invoke(main, ["train", "--arch", "arch2-flat", "--lake", str(lake), "--workers", "2",
                                  "--epochs", "1", "--settings", str(settings), "--model-id", "cli-model"])
    assert result.exit_code == 0, result.output
    assert "model cli-model" in result.output
    assert "best validation hit@1" in result.output  # the learning curve's hit@1 column reaches the summary
    listed = runner.invoke(main, ["models", "--lake", str(lake)])
    assert listed.exit_code == 0, listed.output
    line = next(l for l in listed.output.splitlines() if l.startswith("cli-model"))
    assert "arch2-flat" in line


def test_unknown_settings_key_is_refused(sample_feature_lake, tmp_path):
    """A misspelt model setting fails with a clear error instead of being ignored."""
    lake, _ = sample_feature_lake
    settings = tmp_path / "bad.json"
    settings.write_text(json.dumps({"model": {"trunkk": [8]}}))
    result = CliRunner().invoke(main, ["train", "--arch", "arch2-flat", "--lake", str(lake), "--settings", str(settings)])
    assert result.exit_code != 0
    assert "trunkk" in result.output
