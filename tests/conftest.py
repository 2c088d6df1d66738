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
    from speclake.infra.spark import SparkSettings, get_spark, stop_spark

    session = get_spark(SparkSettings(master="local[2]", driver_memory="2g", shuffle_partitions=4))
    yield session
    stop_spark(session)


def sample_feature_settings():
    """FeaturesSettings sized for the ~300 spectra of the bundled sample."""
    from speclake.pipelines.features.job import FeaturesSettings
    from speclake.pipelines.features.patterns import PatternSettings
    from speclake.pipelines.features.refpanel import RefSimSettings
    from speclake.pipelines.features.spec2vec import Spec2VecSettings

    return FeaturesSettings(
        patterns=PatternSettings(min_support=0.04, max_rules=2000, n_motifs=8, lda_min_df=2, lda_max_iter=10,
                                 max_mining_seconds=120),
        refsim=RefSimSettings(panel_size=20),
        spec2vec=Spec2VecSettings(min_count=2, vector_size=32),
    )


@pytest.fixture(scope="session")
def sample_feature_lake(spark, tmp_path_factory):
    """The bundled MassBank sample ingested, then every feature computed with settings sized for ~300 spectra.

    Shared by the feature integration tests and the training tests (one Spark run per test session).
    Returns (lake root, FeaturesReport).
    """
    from speclake.pipelines.features.job import run_features
    from speclake.pipelines.ingest import IngestSettings, run_ingest

    settings = sample_feature_settings()
    root = tmp_path_factory.mktemp("sample-feature-lake")
    run_ingest([str(SAMPLE / "massbank_sample.txt.gz")], root, IngestSettings(), spark=spark)
    report = run_features(root, settings, spark=spark)
    return root, report
