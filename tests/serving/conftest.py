"""Fixtures of the serving tests: the bundled MassBank sample ingested into a lake (one Spark run)."""
from __future__ import annotations

import pytest

from tests.conftest import SAMPLE


@pytest.fixture(scope="session")
def sample_spectra_lake(spark, tmp_path_factory):
    """The bundled MassBank sample ingested (no features): the lake root. Tests that change it copy it first."""
    from speclake.pipelines.ingest import IngestSettings, run_ingest

    root = tmp_path_factory.mktemp("library-lake")
    run_ingest([str(SAMPLE / "massbank_sample.txt.gz")], root, IngestSettings(), spark=spark)
    return root
