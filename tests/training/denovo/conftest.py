"""De novo fixtures: one tiny VAE + mapper trained once per session under Ray Train on a copy of the sample lake."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import REPO

#: Sized so that a Ray Train run on ~500 structures (the MOSES 400 of tests/data + the sample's compounds)
#: learns a latent that matters (decodes near a structure resemble it) in seconds on 2 cores.
TINY = {"structures": [str(REPO / "tests" / "data" / "zinc_moses_400.smi")],
        "vae": {"embedding": 32, "hidden": 48, "latent": 16, "max_len": 40, "mapper_hidden": [32], "dropout": 0.0},
        "vae_epochs": 15, "mapper_epochs": 3, "batch_size": 32, "lr": 6e-3, "beta": 0.01, "warmup_steps": 100,
        "checkpoint_epochs": 100, "figure_samples": 30, "holdout": 0.05}


@pytest.fixture(scope="session")
def denovo_lake(sample_feature_lake, ray_session, tmp_path_factory):
    """(lake, TrainedDenovo): a copy of the sample lake holding one trained de novo model."""
    from speclake.training.denovo.train import DenovoTrainSettings, train_denovo

    src, _ = sample_feature_lake
    dst = tmp_path_factory.mktemp("denovo") / "lake"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_staging", "models"))
    return dst, train_denovo(dst, DenovoTrainSettings.model_validate(TINY))


@pytest.fixture(scope="session")
def denovo_model(denovo_lake):
    """The trained model, loaded from its registered folder."""
    import torch

    from speclake.training.denovo.sample import load_denovo

    torch.set_num_threads(1)
    return load_denovo(denovo_lake[0])
