"""Spark sessions: local[*] by default, any master (standalone, YARN, Kubernetes) by configuration."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

LOG4J_CONFIG = Path(__file__).resolve().parent / "log4j2.properties"


class SparkSettings(BaseModel):
    """How to reach Spark. Unknown keys are refused; saved beside every run."""

    model_config = ConfigDict(extra="forbid")

    master: str = Field(default_factory=lambda: os.environ.get("SPECLAKE_SPARK_MASTER", "local[*]"))
    app_name: str = "speclake"
    driver_memory: str = "4g"
    shuffle_partitions: int | None = None  # default: 2 x cores of a local master
    arrow_batch_rows: int = 2000
    conf: dict[str, str] = Field(default_factory=dict)  # any other spark.* setting

    def local_cores(self) -> int:
        """Cores of a local master (local, local[N], local[*]); the machine's cores otherwise."""
        m = self.master
        if m.startswith("local[") and m.endswith("]") and m[6:-1] not in ("*", ""):
            return max(1, int(m[6:-1].split(",")[0]))
        if m == "local":
            return 1
        return os.cpu_count() or 1


def spark_conf(settings: SparkSettings) -> dict[str, Any]:
    """The spark.* settings speclake uses."""
    shuffle = settings.shuffle_partitions or 2 * settings.local_cores()
    conf = {
        "spark.driver.memory": settings.driver_memory,
        "spark.sql.shuffle.partitions": str(shuffle),
        "spark.default.parallelism": str(shuffle),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.arrow_batch_rows),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.adaptive.enabled": "true",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.python.worker.reuse": "true",
        "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "spark.sql.parquet.compression.codec": "zstd",
    }
    conf.update(settings.conf)
    return conf


def get_spark(settings: SparkSettings | None = None):  # -> pyspark.sql.SparkSession
    """Start (or reuse) a Spark session with speclake's configuration."""
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # a laptop needs no routable address
    builder = SparkSession.builder.master(settings.master).appName(settings.app_name)
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    log.info("Spark %s on %s", spark.version, settings.master)
    return spark
