"""No silent no-op training: each architecture trains on the examples that have its inputs, or is refused
with the command that makes them; a model that trained on nothing is never registered."""
from __future__ import annotations

import json

import numpy as np
import pytest

from speclake.lake.run import RunError
from speclake.training.data import MissingInputError, count_with_inputs, load_examples
from speclake.training.inputs import has_inputs
from speclake.training.models import ARCH_INPUTS, ARCHS
from speclake.training.registry import list_models
from speclake.training.trainer import TrainSettings, train_model, trained_metrics
from tests.training.conftest import tiny_settings


def _training_records(lake) -> list[dict]:
    records = (json.loads(p.read_text()) for p in (lake / "_catalog" / "runs").glob("*.json"))
    return [r for r in records if r["kind"] == "training"]


def test_every_architecture_declares_its_inputs():
    """Descriptor models and arch4 (Tanimoto targets) need descriptors, arch3 also feature blocks, arch5 SMILES only."""
    assert set(ARCH_INPUTS) == set(ARCHS)
    assert ARCH_INPUTS["arch3"] == ("descriptors", "features")
    assert ARCH_INPUTS["arch4"] == ("descriptors",)
    assert ARCH_INPUTS["arch5"] == ("structures",)


def test_examples_without_descriptors_are_kept_for_arch5_only():
    """A batch whose structures have no descriptors row: every example usable by arch5, none by arch1/arch4."""
    batch = {"morgan_on": [None, [1, 2], None], "smiles": ["CCO", "c1ccccc1", None]}
    assert has_inputs(batch, ARCH_INPUTS["arch5"]).tolist() == [True, True, False]
    assert has_inputs(batch, ARCH_INPUTS["arch1"]).tolist() == [False, True, False]
    assert has_inputs(batch, ARCH_INPUTS["arch4"]).tolist() == [False, True, False]


def test_a_run_that_saw_no_example_is_not_registered():
    """Metrics of a run whose epochs trained on 0 spectra raise instead of describing a model."""
    state = {"history": [{"epoch": 1, "train_loss": 0.0, "spectra_per_s": 0.0, "n_train": 0}],
             "epoch": 1, "best_epoch": 1, "best_val": 0.0}
    with pytest.raises(RunError, match="trained on no example"):
        trained_metrics("arch5-x", state, TrainSettings())
    with pytest.raises(RunError, match="trained on no example"):
        trained_metrics("arch5-x", {**state, "history": []}, TrainSettings())


@pytest.mark.parametrize("arch", ["arch2", "arch3", "arch4"])
def test_architecture_needing_descriptors_is_refused_on_an_ingest_only_lake(arch, ingest_only_lake):
    """No `descriptors` table: refused before Ray starts, naming the table and `speclake features`; no model."""
    with pytest.raises(MissingInputError, match=r"no `descriptors` table; run `speclake features --lake "):
        train_model(ingest_only_lake, tiny_settings(arch))
    assert not any(m["arch"] == arch for m in list_models(ingest_only_lake))
    failed = [r for r in _training_records(ingest_only_lake) if f"{arch} needs" in r.get("error", "")]
    assert failed and failed[0]["status"] == "failed" and "speclake features" in failed[0]["error"]


def test_cli_refusal_names_the_command(ingest_only_lake):
    """`speclake train --arch arch2` on an ingest-only lake exits with the message, not a 0-spectra model."""
    from click.testing import CliRunner

    from speclake.cli import main

    res = CliRunner().invoke(main, ["train", "--arch", "arch2", "--lake", str(ingest_only_lake), "--workers", "2",
                                    "--epochs", "3"])
    assert res.exit_code != 0
    assert "arch2 needs structure descriptors" in res.output and "speclake features" in res.output
    assert not any(m["arch"] == "arch2" for m in list_models(ingest_only_lake))


@pytest.mark.ray
def test_arch5_trains_on_real_examples_without_descriptors(ingest_only_lake, ray_session):
    """arch5 needs structures only: on a lake without descriptors it trains on every training spectrum."""
    examples = load_examples(ingest_only_lake)
    counts = count_with_inputs(examples, ("descriptors", "structures"))
    assert counts["descriptors"] == 0 and counts["structures"] == examples.counts["train"] > 50

    result = train_model(ingest_only_lake, tiny_settings("arch5", epochs=1))
    history = result.metrics["history"]
    assert history and all(0.9 * examples.counts["train"] <= h["n_train"] <= examples.counts["train"]
                           for h in history)
    assert all(np.isfinite(h["train_loss"]) and h["train_loss"] > 0 and h["spectra_per_s"] > 0 for h in history)
    assert all(0.0 <= h["val_hit1"] <= 1.0 for h in history)  # candidates need SMILES only, not descriptors
    assert result.model_id in [m["model_id"] for m in list_models(ingest_only_lake)]
    record, = [r for r in _training_records(ingest_only_lake) if r["report"]["model_id"] == result.model_id]
    assert record["status"] == "ok" and record["settings"]["arch"] == "arch5"
    report = record["report"]
    assert report["model_id"] == result.model_id and report["epochs"] == 1 and report["best_epoch"] == 1
    assert report["usable_train"] == examples.counts["train"] and report["spectra_per_s"] > 0
