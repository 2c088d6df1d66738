"""Spark sessions: local[*] by default, any master (standalone, YARN, Kubernetes) by configuration."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.schema import PARQUET_CODEC

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
    #: Local masters: JIT only with C1 and use the serial GC. speclake's JVM mostly plans queries and
    #: moves small rows (peaks stay in Python/Arrow), so on a few cores the C2 compiler's minutes of
    #: compile time cost more than its faster code gains (ingest of MassBank: JVM CPU halved).
    quick_jvm: bool = True
    #: Folder of a JVM class-data-sharing archive of Spark's classes: the first session writes it
    #: when its JVM exits, every later one maps it in (JVM start and first queries about twice as
    #: fast: a small ingest 21 s -> 12 s). None or "" turns it off.
    jvm_class_cache: str | None = Field(default_factory=lambda: os.environ.get("SPECLAKE_JVM_CACHE",
                                                                               str(default_jvm_cache())))
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
        "spark.driver.extraJavaOptions": " ".join(
            [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}"]
            + (["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"] if settings.quick_jvm and settings.master.startswith("local") else [])
            + (class_cache_options(Path(settings.jvm_class_cache)) if settings.jvm_class_cache else [])),
        "spark.sql.parquet.compression.codec": PARQUET_CODEC,
    }
    conf.update(settings.conf)
    return conf


def default_jvm_cache() -> Path:
    """``$XDG_CACHE_HOME/speclake/jvm`` (``~/.cache/speclake/jvm``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "speclake" / "jvm"


def _archive_key() -> str:
    """What the archive depends on: the Java runtime and every Spark jar's path, size and mtime.

    The JVM refuses an archive whose class path changed in any of these (a reinstalled pyspark has
    new jar mtimes), so they name the archive: a reinstall writes a fresh one instead of failing to
    load the old one on every start.
    """
    import hashlib
    import shutil

    import pyspark

    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    java = os.path.realpath(java) if java else "java"
    stamp = os.stat(java).st_mtime if os.path.exists(java) else 0
    digest = hashlib.sha1(f"{pyspark.__version__}|{java}|{stamp}".encode())
    jars = Path(os.path.dirname(pyspark.__file__)) / "jars"
    for jar in sorted(jars.glob("*.jar")) if jars.is_dir() else []:
        info = jar.stat()
        digest.update(f"|{jar}|{info.st_size}|{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


#: CDS logging off: the dump's per-class "Skipping ...: Signed JAR" warnings and a refused archive's
#: "Unable to use shared archive" are noise on the user's terminal, not errors
_QUIET_CDS = "-Xlog:cds*=off"


def class_cache_options(folder: Path) -> list[str]:
    """JVM options that map in the class-data-sharing archive, or have this JVM write it at exit.

    A JVM writes ``spark-{key}.{pid}.jsa`` (pid of the Python driver); a later start renames a
    finished one (its driver gone) to ``spark-{key}.jsa`` and removes archives of other keys. A
    damaged archive only costs speed: the JVM checks it and starts without it (``-Xshare:auto``).
    """
    key = _archive_key()
    archive = folder / f"spark-{key}.jsa"
    try:
        for written in sorted(folder.glob(f"spark-{key}.*.jsa")):  # archives of drivers that have exited
            pid = written.name.split(".")[1]
            if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
                continue
            if archive.exists():
                written.unlink(missing_ok=True)  # one archive is enough
                continue
            os.replace(written, archive)
            for old in folder.glob("spark-*.jsa"):
                if not old.name.startswith(f"spark-{key}."):
                    old.unlink(missing_ok=True)
        if archive.exists():  # a damaged one is skipped by the JVM: it only costs speed
            return [f"-XX:SharedArchiveFile={archive}", _QUIET_CDS]
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.debug("no JVM class cache in %s: %s", folder, exc)
        return []
    return [f"-XX:ArchiveClassesAtExit={folder / f'spark-{key}.{os.getpid()}.jsa'}", _QUIET_CDS]


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


#: Seconds to wait for a stopped session's JVM to exit (it writes the class cache at exit).
JVM_EXIT_TIMEOUT = 120.0


def stop_spark(spark: Any, *, timeout: float = JVM_EXIT_TIMEOUT) -> None:
    """Stop a session started by :func:`get_spark` and wait until its JVM has exited.

    ``spark.stop()`` alone leaves the JVM running (re-parented when Python exits) for the 30-50 s
    it takes to shut down and write the class cache: scripts that chain commands would overlap
    JVMs. Closing the gateway's stdin is how the JVM learns that its driver is done.
    """
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    proc = getattr(gateway, "proc", None) if gateway is not None else None
    if gateway is not None:
        gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if proc is None:
        return
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=timeout)
    except Exception as exc:  # the JVM would not stop in time: make sure it goes
        log.warning("Spark's JVM (pid %s) did not exit in %.0f s (%s): killing it", proc.pid, timeout, exc)
        proc.kill()
        proc.wait(timeout=10)
    log.info("Spark stopped (JVM pid %s exited)", proc.pid)


def start_spark(settings: SparkSettings | None = None, spark: Any = None) -> tuple[Any, bool]:
    """``(session, started)``: the given session, the running one, or a new one (``started`` True:
    the caller owns it and stops it with :func:`stop_spark`)."""
    if spark is not None:
        return spark, False
    from pyspark import SparkContext

    running = SparkContext._active_spark_context is not None
    return get_spark(settings), not running
