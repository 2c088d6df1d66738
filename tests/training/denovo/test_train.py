"""Training the de novo model under Ray Train: loss falls, the structure set never holds a held-out structure."""
from __future__ import annotations

import json

import pytest

from speclake.training.denovo.data import structure_set
from speclake.training.denovo.train import list_denovo
from speclake.training.split import SplitSettings, assign_split
from tests.conftest import REPO

pytestmark = pytest.mark.ray


def test_vae_loss_falls_under_ray_train(denovo_lake):
    """The VAE's epoch loss falls over the run, then the mapper trains with early stopping on validation (the best
    epoch kept); the model is registered with its figures."""
    lake, trained = denovo_lake
    vae = [h for h in trained.metrics["history"] if h["phase"] == "vae"]
    mapper = [h for h in trained.metrics["history"] if h["phase"] == "mapper"]
    assert len(vae) == 15 and len(mapper) == 3
    assert vae[-1]["loss"] < 0.8 * vae[0]["loss"], [h["loss"] for h in vae]
    assert mapper[-1]["spectra"] > 50
    figures = trained.metrics["figures"]
    assert all("validation_mse" in h for h in mapper), "the mapper is watched on validation spectra"
    assert figures["mapper_mse"] == pytest.approx(min(h["validation_mse"] for h in mapper), rel=1e-4), \
        "the registered mapper is the best validation epoch's"
    assert [m["model_id"] for m in list_denovo(lake)] == [trained.model_id]
    figures = trained.metrics["figures"]
    assert 0 <= figures["validity"] <= 1 and 0 <= figures["novelty"] <= 1 and figures["mapper_spectra"] > 0


def test_vae_training_set_excludes_validation_and_test_structures(denovo_lake):
    """No InChIKey-14 the VAE trained on is in the lake's validation or test split, though the lake has such
    compounds; the run record says how many structures were held out."""
    from speclake.lake import sql

    lake, trained = denovo_lake
    keys = set(json.loads((trained.path / "structures.json").read_text()))
    lake_keys = set(sql.query(lake, "SELECT inchikey14 FROM compounds").column("inchikey14").to_pylist())
    held_out = {k for k in lake_keys if assign_split(k, SplitSettings()) != "train"}
    assert held_out, "the sample lake should have validation/test compounds"
    assert not keys & held_out
    assert all(assign_split(k, SplitSettings()) == "train" for k in keys)
    assert keys & lake_keys, "training-split lake compounds are part of the structure set"
    assert trained.metrics["counts"]["structures_held_out"] >= len(held_out)


def test_structure_set_drops_held_out_structures_of_the_smiles_file(denovo_lake):
    """A SMILES file structure whose key hashes to test is dropped like a lake compound, and counted."""
    lake, _ = denovo_lake
    s = structure_set(lake, [REPO / "tests" / "data" / "zinc_moses_400.smi"], SplitSettings(), limit=100)
    assert s.counts["held_out"] > 0 and s.counts["kept"] == len(s.smiles) == len(s.inchikey14)
    assert all(assign_split(k, SplitSettings()) == "train" for k in s.inchikey14)
    assert len(set(s.inchikey14)) == len(s.inchikey14)
