"""Ray Train runs of every architecture on the sample lake: loss falls, checkpoints, resume after interruption."""
from __future__ import annotations

import pytest

from speclake.training.models import ARCHS
from speclake.training.trainer import improvement, latest_checkpoint_dir, ray_storage, train_model, unfinished_run
from tests.training.conftest import tiny_settings

pytestmark = pytest.mark.ray


@pytest.mark.parametrize("arch", ARCHS)
def test_training_loss_falls_under_ray_train(arch, trained, sample_feature_lake):
    """Two epochs on 2 Ray Train workers: the epoch-2 training loss is below epoch 1's; a checkpoint was kept."""
    lake, _ = sample_feature_lake
    result = trained(arch)
    history = result.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"], history
    assert all(h["spectra_per_s"] > 0 and h["n_train"] > 50 for h in history)
    assert latest_checkpoint_dir(ray_storage(lake) / result.model_id) is not None
    assert (result.path / "model.pt").exists()


@pytest.mark.parametrize("arch", ARCHS)
def test_every_epoch_records_validation_hit1(arch, trained):
    """Each epoch of the history has val_hit1/val_hit5 in [0, 1] over the same ranked validation lists (at
    least 2 candidates each); the best hit@1 and its epoch are recorded; early stopping stays on validation loss."""
    m = trained(arch).metrics
    history = m["history"]
    ranking = m["val_ranking"]
    assert ranking["queries"] > 5 and ranking["min_candidates"] >= 2, ranking
    for h in history:
        assert 0.0 <= h["val_hit1"] <= h["val_hit5"] <= 1.0, h
        assert h["n_ranked"] == ranking["queries"]
    best = max(history, key=lambda h: (h["val_hit1"], -h["epoch"]))
    assert (m["best_val_hit1"], m["best_val_hit1_epoch"]) == (best["val_hit1"], best["epoch"])
    assert m["best_epoch"] == min(history, key=lambda h: (h["val_loss"], h["epoch"]))["epoch"]


def test_interrupted_run_resumes_at_next_epoch(sample_feature_lake, ray_session):
    """A run that dies after epoch 1 is continued by resume=True from its checkpoint at epoch 2, not from scratch."""
    lake, _ = sample_feature_lake
    with pytest.raises(Exception, match="simulated interruption"):
        train_model(lake, tiny_settings("arch2-flat", epochs=2, fail_after_epoch=1, patience=10))
    run_id = unfinished_run(lake, "arch2-flat")
    assert run_id is not None
    first = latest_checkpoint_dir(ray_storage(lake) / run_id)
    import torch

    epoch1 = torch.load(first / "state.pt", weights_only=False)["history"][0]
    result = train_model(lake, tiny_settings("arch2-flat", epochs=2, patience=10), resume=True)
    assert result.model_id == run_id
    history = result.metrics["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == epoch1  # epoch 1 was not trained again
    assert unfinished_run(lake, "arch2-flat") is None


def test_time_budget_ends_training_after_the_epoch_that_spends_it(sample_feature_lake, ray_session):
    """A stated CPU budget: a run of up to 5 epochs whose budget is spent by epoch 1 stops there (patience
    would have let it go on) and still registers its best weights."""
    lake, _ = sample_feature_lake
    result = train_model(lake, tiny_settings("arch2-flat", epochs=5, patience=10, time_budget_s=1e-3))
    assert [h["epoch"] for h in result.metrics["history"]] == [1]
    assert (result.path / "model.pt").exists()


def test_selection_on_hit1_keeps_training_while_the_ranking_improves():
    """``select``: on val_loss a better loss wins whatever hit@1 does; on val_hit1 a rising hit@1 wins although
    the loss went up, a tie keeps the earlier weights, and no ranking (None) falls back to the loss."""
    assert improvement("val_loss", 0.50, 0.40, 0.60, 0.30) == (False, True)
    assert improvement("val_loss", 0.39, 0.40, 0.20, 0.30) == (True, False)
    assert improvement("val_hit1", 0.50, 0.40, 0.60, 0.30) == (True, True)
    assert improvement("val_hit1", 0.30, 0.40, 0.30, 0.30) == (False, False)
    assert improvement("val_hit1", 0.30, 0.40, None, None) == (True, False)
    assert improvement("val_hit1", 0.50, 0.40, 0.10, None) == (True, True)   # the first ranked epoch


def test_a_run_selected_on_hit1_registers_the_best_ranking_epoch(sample_feature_lake, ray_session):
    """With select=val_hit1 the registered weights' epoch is the first epoch of the best validation hit@1 (not
    the lowest loss's), and early stopping counts epochs without a better hit@1."""
    lake, _ = sample_feature_lake
    result = train_model(lake, tiny_settings("arch2-flat", epochs=3, patience=10, select="val_hit1"))
    m = result.metrics
    history = m["history"]
    assert len(history) == 3
    best = max(history, key=lambda h: (h["val_hit1"], -h["epoch"]))
    assert m["best_epoch"] == m["best_val_hit1_epoch"] == best["epoch"]
    assert m["best_val_loss"] == min(h["val_loss"] for h in history)


def test_resume_without_unfinished_run_is_an_error(sample_feature_lake):
    """resume=True with nothing to resume raises a clear ValueError."""
    lake, _ = sample_feature_lake
    with pytest.raises(ValueError, match="nothing to resume"):
        train_model(lake, tiny_settings("arch4"), resume=True)


def test_arch5_hard_negatives_are_isobaric_first_then_nearest_mass(sample_feature_lake):
    """Negatives of a training structure are other training compounds: same formula first, then closest in mass."""

    from speclake.lake import sql
    from speclake.training.data import load_examples
    from speclake.training.trainer import negative_pool

    lake, _ = sample_feature_lake
    pool = negative_pool(load_examples(lake), lake, k=4)
    con = sql.connect(lake)
    info = {r[0]: (r[1], r[2]) for r in con.execute(
        "SELECT inchikey14, any_value(formula), any_value(monoisotopic_mass) FROM compounds GROUP BY 1").fetchall()}
    con.close()
    assert len(pool["inchikey14"]) > 10
    for key, negs in pool["negatives"].items():
        assert len(negs) == 4
        formula, mass = info[key]
        neg_keys = [pool["inchikey14"][j] for j in negs]
        assert key not in neg_keys
        same = [info[k][0] == formula for k in neg_keys]
        assert same == sorted(same, reverse=True)  # isobaric candidates come first
        others = [abs(info[k][1] - mass) for k in neg_keys if info[k][0] != formula]
        all_other = sorted(abs(info[k][1] - mass) for k in pool["inchikey14"] if k != key and info[k][0] != formula)
        assert others == all_other[: len(others)]


def test_workers_leave_cpus_for_the_data_pipeline():
    """Workers asking for every Ray CPU are shrunk to leave DATA_CPUS free; impossible requests are refused."""
    from speclake.training.trainer import DATA_CPUS, TrainSettings, fit_workers

    fitted = fit_workers(TrainSettings(num_workers=2, cpus_per_worker=1.0), 2.0)
    assert fitted.cpus_per_worker * 2 + DATA_CPUS == pytest.approx(2.0)
    roomy = TrainSettings(num_workers=2, cpus_per_worker=1.0)
    assert fit_workers(roomy, 8.0) == roomy
    with pytest.raises(ValueError, match="do not fit"):
        fit_workers(TrainSettings(num_workers=50), 2.0)
