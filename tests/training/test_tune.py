"""Ray Tune: Optuna search with ASHA over a tiny space, best model registered with its config."""
from __future__ import annotations

import json

import pytest

from speclake.training.registry import load_model
from speclake.training.tune import model_values, search_space, tune_metric, tune_model
from tests.training.conftest import tiny_settings

pytestmark = pytest.mark.ray


def test_search_space_maps_to_valid_settings():
    """Every architecture's space has lr and its model keys map onto that architecture's settings."""
    from speclake.training.models import ARCHS, arch_settings

    for arch in ARCHS:
        space = search_space(arch)
        assert "lr" in space["train"]
        sample = {k: (v.sample() if hasattr(v, "sample") else v) for k, v in space["model"].items()}
        arch_settings(arch, model_values(arch, sample))


def test_the_trial_metric_follows_the_run_selection():
    """Tune cuts and picks trials on validation hit@1 (max) when runs select on it and a ranking set exists,
    otherwise on validation loss (min)."""
    assert tune_metric("val_hit1", True) == ("val_hit1", "max")
    assert tune_metric("val_hit1", False) == ("val_loss", "min")
    assert tune_metric("val_loss", True) == ("val_loss", "min")


def test_tune_two_trials_registers_best(sample_feature_lake, ray_session):
    """Two 1-epoch trials selected on validation hit@1 run; the trial with the best hit@1 wins, and its model
    and config are saved and it predicts."""
    lake, _ = sample_feature_lake
    result, summary = tune_model(lake, tiny_settings("arch2-flat", num_workers=1, select="val_hit1"), trials=2,
                                 max_epochs=1, cpus_per_trial=0.5)
    assert len(summary["trials"]) == 2
    assert all(t["error"] is None for t in summary["trials"])
    assert summary["metric"] == "val_hit1"
    assert result.metrics["best_val_hit1"] == max(t["best_val_hit1"] for t in summary["trials"])
    saved = json.loads((result.path / "tune.json").read_text())
    assert saved["best_config"] == summary["best_config"]
    model = load_model(lake, result.model_id)
    assert model.settings["train"]["lr"] == summary["best_config"]["train"]["lr"]
