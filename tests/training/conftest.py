"""Training fixtures: one local Ray (2 CPUs) for the session, and models trained once and shared."""
from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")

#: Tiny architecture settings so a Ray Train run on the ~200 sample spectra takes seconds.
TINY_MODELS = {
    "arch1": {"hidden": [16, 8], "dropout": 0.0},
    "arch2": {"trunk": [32], "group_hidden": 8, "n_groups": 4, "dropout": 0.0},
    "arch2-flat": {"trunk": [32], "dropout": 0.0},
    "arch3": {"block_hidden": 8, "spectrum_hidden": 16, "hidden": [16], "dropout": 0.0},
    "arch4": {"hidden": [32], "embedding_dim": 16, "dropout": 0.0},
    "arch5": {"spectrum_hidden": [32], "graph_hidden": 16, "mp_layers": 2, "embedding_dim": 16, "dropout": 0.0},
}


def tiny_settings(arch: str, **train):
    """RunSettings of ``arch`` sized for the sample lake: 2 workers of half a CPU each."""
    from speclake.training.trainer import RunSettings

    t = {"epochs": 2, "batch_size": 32, "num_workers": 2, "cpus_per_worker": 0.5, "lr": 3e-3, **train}
    return RunSettings(arch=arch, model=TINY_MODELS[arch], train=t, descriptors={"min_positives": 3})


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray with 2 CPUs for every training test; shut down at the end."""
    import ray

    from speclake.infra.ray import ensure_ray

    started = ensure_ray(num_cpus=2)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def trained(sample_feature_lake, ray_session):
    """Train (once per session, on demand) a tiny model of an architecture: ``trained(arch) -> TrainResult``."""
    from speclake.training.trainer import train_model

    lake, _ = sample_feature_lake
    cache: dict = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = train_model(lake, tiny_settings(arch))
        return cache[arch]

    return get


@pytest.fixture(scope="session")
def ingest_only_lake(sample_feature_lake, tmp_path_factory):
    """A copy of the sample lake as `speclake ingest` left it: only the table versions of the ingest run
    (no ``descriptors``, no ``spectrum_features``, no models), so no second ingest is needed."""
    from speclake.lake.catalog import Lake

    src, _ = sample_feature_lake
    dst = tmp_path_factory.mktemp("ingest-only") / "lake"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("_staging", "models", "reports"))
    lake = Lake(dst)
    ingest_run = lake.current("spectra").run_id
    catalog = lake._read_catalog()
    for entry in catalog["tables"].values():
        entry["versions"] = [v for v in entry["versions"] if v["run_id"] == ingest_run]
    catalog["tables"] = {name: entry for name, entry in catalog["tables"].items() if entry["versions"]}
    lake._write_catalog(catalog)
    lake.vacuum()
    return dst
