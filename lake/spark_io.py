"""Reading lake tables into Spark with their declared columns (hive partition columns included)."""
from __future__ import annotations

from functools import reduce
from typing import Any

from speclake.lake.catalog import Lake
from speclake.lake.schema import TABLES


def read_table(spark: Any, lake: Lake, name: str, version: int | None = None) -> Any:
    """The table's current (or given) version as a Spark DataFrame, or None when it was never written.

    Each part is read with its own ``basePath`` so partition columns (e.g. ``ionmode``,
    ``ms_level`` of ``spectra``) come back, cast to their declared types and in schema order.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_schema

    tv = lake.current(name) if version is None else next(v for v in lake.versions(name) if v.version == version)
    if tv is None:
        return None
    frames = []
    for part in tv.parts:
        path = str(lake.root / part)
        frames.append(spark.read.option("basePath", path).parquet(path))
    df = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), frames)
    spec = TABLES.get(name)
    if spec is None:
        return df
    declared = from_arrow_schema(spec.schema)
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in declared.fields if f.name in df.columns])
