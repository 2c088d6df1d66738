"""Tests of speclake.lake.spark_io: lake tables read back into Spark with partition columns."""
from __future__ import annotations

from pathlib import Path

import pytest

from speclake.lake.catalog import Lake
from speclake.lake.spark_io import read_table
from speclake.pipelines.ingest import IngestSettings, run_ingest
from tests.conftest import SAMPLE

pytestmark = pytest.mark.spark


def test_read_spectra_keeps_partition_columns(spark, tmp_path: Path) -> None:
    """Spectra read through read_table carry ionmode and ms_level with declared types, and every row."""
    run_ingest([str(SAMPLE / "gnps_pesticides.mgf")], tmp_path / "lake", IngestSettings(), spark=spark)
    lake = Lake(tmp_path / "lake")
    df = read_table(spark, lake, "spectra")
    assert df.count() == 76, "all 76 pesticide spectra read back"
    types = dict(df.dtypes)
    assert types["ionmode"] == "string" and types["ms_level"] == "tinyint", f"declared partition types: {types}"
    assert {r.ionmode for r in df.select("ionmode").distinct().collect()} == {"negative"}, "partition values kept"
    assert read_table(spark, lake, "quarantine") is None, "a never-written table reads as None"
