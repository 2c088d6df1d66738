"""Spark settings: JVM options for local masters and the JVM class-data-sharing cache (no JVM started)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from speclake.infra.spark import SparkSettings, _archive_key, class_cache_options, spark_conf


def _java_options(settings: SparkSettings) -> str:
    return spark_conf(settings)["spark.driver.extraJavaOptions"]


def test_local_master_gets_quick_jvm_options_and_a_cluster_master_does_not(tmp_path: Path) -> None:
    """C1-only JIT and the serial GC for local[N]; a cluster master keeps the JVM defaults."""
    local = _java_options(SparkSettings(master="local[2]", jvm_class_cache=str(tmp_path)))
    cluster = _java_options(SparkSettings(master="spark://head:7077", jvm_class_cache=str(tmp_path)))
    assert "-XX:TieredStopAtLevel=1" in local and "-XX:+UseSerialGC" in local
    assert "TieredStopAtLevel" not in cluster and "-Dlog4j2.configurationFile=" in cluster
    assert "TieredStopAtLevel" not in _java_options(SparkSettings(master="local[2]", quick_jvm=False, jvm_class_cache=""))


def test_class_cache_is_written_by_the_first_jvm_then_shared(tmp_path: Path) -> None:
    """No archive: this JVM writes one named by the driver's pid; once that driver is gone the archive is
    promoted and mapped in, and archives of other Spark/Java versions are removed."""
    first = class_cache_options(tmp_path)
    assert first == [f"-XX:ArchiveClassesAtExit={tmp_path / f'spark-{_archive_key()}.{os.getpid()}.jsa'}",
                     "-Xlog:cds*=off"]  # the dump's per-class warnings stay off the user's terminal
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    (tmp_path / f"spark-{_archive_key()}.{dead_pid}.jsa").write_bytes(b"archive")
    (tmp_path / "spark-0123456789ab.jsa").write_bytes(b"other version")
    shared = tmp_path / f"spark-{_archive_key()}.jsa"
    assert class_cache_options(tmp_path) == [f"-XX:SharedArchiveFile={shared}", "-Xlog:cds*=off"]
    assert shared.read_bytes() == b"archive" and not (tmp_path / "spark-0123456789ab.jsa").exists()


def test_class_cache_waits_for_a_running_writer(tmp_path: Path) -> None:
    """An archive still being written by a live driver is not used: this JVM writes its own."""
    live = tmp_path / f"spark-{_archive_key()}.1.jsa"  # pid 1 is always alive
    live.write_bytes(b"partial")
    options = class_cache_options(tmp_path)
    assert options[0].startswith("-XX:ArchiveClassesAtExit=") and live.exists()


def test_class_cache_off(tmp_path: Path) -> None:
    """An empty jvm_class_cache adds no CDS option."""
    options = _java_options(SparkSettings(master="local[1]", jvm_class_cache=""))
    assert "SharedArchiveFile" not in options and "ArchiveClassesAtExit" not in options


def test_class_cache_removes_extra_archives_of_exited_drivers(tmp_path: Path) -> None:
    """With an archive in place, archives later written by exited drivers are deleted, not kept."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    shared = tmp_path / f"spark-{_archive_key()}.jsa"
    shared.write_bytes(b"archive")
    extra = tmp_path / f"spark-{_archive_key()}.{int(done.stdout)}.jsa"
    extra.write_bytes(b"another")
    assert class_cache_options(tmp_path) == [f"-XX:SharedArchiveFile={shared}", "-Xlog:cds*=off"]
    assert not extra.exists() and shared.read_bytes() == b"archive"


def test_archive_key_follows_the_spark_jars(tmp_path: Path, monkeypatch) -> None:
    """A reinstalled pyspark (same version, jars rewritten with new mtimes) gets a new archive key, so
    the JVM never meets an archive whose class path it would refuse; an untouched install keeps its key."""
    import pyspark

    (tmp_path / "jars").mkdir()
    jar = tmp_path / "jars" / "spark-core.jar"
    jar.write_bytes(b"jar")
    monkeypatch.setattr(pyspark, "__file__", str(tmp_path / "__init__.py"))
    before = _archive_key()
    assert _archive_key() == before
    os.utime(jar, ns=(jar.stat().st_atime_ns, jar.stat().st_mtime_ns + 1_000_000_000))
    assert _archive_key() != before
