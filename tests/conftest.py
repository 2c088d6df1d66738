"""Shared test fixtures: paths to the bundled sample and to ../shared/data, one Spark session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "speclake" / "sample"
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test when it is absent (fresh clone without it)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (../shared/data is optional)")
    return path


@pytest.fixture(scope="session")
def spark():
    """One real local Spark session (local[2]) for the whole test run."""
    from speclake.infra.spark import SparkSettings, get_spark

    session = get_spark(SparkSettings(master="local[2]", driver_memory="2g", shuffle_partitions=4))
    yield session
    session.stop()
