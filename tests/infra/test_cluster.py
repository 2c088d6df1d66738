"""A real multi-process cluster on one machine: a Spark standalone master + worker and a two-node Ray
cluster (separate processes, as on real machines), driven through the cluster config; then stopped."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from speclake.infra.cluster import (QUICK_DAEMON_JVM, ClusterError, RayClusterSettings, RayLocalCluster, SparkStandalone,
                                    SparkStandaloneSettings, expand_env, free_port, java_available,
                                    load_cluster_config)
from speclake.infra.config import ConfigError
from tests.conftest import REPO, SAMPLE
from tests.infra import cluster_job
from tests.serving.annotate.conftest import blind_mgf
from tests.training.conftest import TINY_MODELS

log = logging.getLogger(__name__)

CLUSTER_YAML = REPO / "infra" / "cluster.yaml"
#: Seconds each step may take on a loaded 2-core machine before the test fails (and stops the clusters).
STEP_TIMEOUT = {"start": 150, "job": 600, "stop": 90}


def step(name: str, timings: dict[str, float]):
    """Time one step of the test and fail it (TimeoutError raised in the test's thread) past ``STEP_TIMEOUT[name]``."""
    return cluster_job.step(name, timings, STEP_TIMEOUT)


def test_expand_env_takes_values_then_defaults_and_names_a_missing_variable():
    """${VAR} and ${VAR:-default} are filled from the environment given; an unset ${VAR} without default is refused."""
    env = {"MASTER": "spark://m:7077", "EMPTY": ""}
    assert expand_env("a: ${MASTER:-local[2]}\nb: ${OTHER:-x y}\nc: ${EMPTY:-d}", env) == "a: spark://m:7077\nb: x y\nc: d"
    with pytest.raises(ConfigError, match="NOPE is not set"):
        expand_env("lake: ${NOPE}", env)


def test_cluster_yaml_loads_with_defaults_and_with_site_variables(tmp_path):
    """infra/cluster.yaml validates as a PlatformConfig: cluster addresses by default, the environment's when set
    (GPU training switched on by SPECLAKE_USE_GPU); a bad value is refused naming its key."""
    cfg = load_cluster_config(CLUSTER_YAML, env={})
    assert cfg.engines.spark_master == "spark://spark-master:7077" and cfg.engines.ray_address == "ray-head:6379"
    assert cfg.lake == "/data/speclake-lake" and cfg.train.use_gpu is False
    assert cfg.engines.spark().master == "spark://spark-master:7077"
    site = load_cluster_config(CLUSTER_YAML, env={"SPECLAKE_SPARK_MASTER": "k8s://https://api.example:443",
                                                  "SPECLAKE_RAY_ADDRESS": "ray://head:10001", "SPECLAKE_USE_GPU": "true",
                                                  "SPECLAKE_LAKE": str(tmp_path / "lake"), "SPECLAKE_TRAIN_WORKERS": "4"})
    assert site.engines.spark_master == "k8s://https://api.example:443" and site.engines.ray().address == "ray://head:10001"
    assert site.train.use_gpu is True and site.train.num_workers == 4 and site.lake == str(tmp_path / "lake")
    with pytest.raises(ConfigError, match="train.num_workers"):
        load_cluster_config(CLUSTER_YAML, env={"SPECLAKE_TRAIN_WORKERS": "many"})


def _test_config(tmp_path: Path, spark: SparkStandalone, ray_cluster: RayLocalCluster) -> Path:
    """infra/cluster.yaml sized for one small machine: the lake in tmp, the started clusters' addresses
    (through the same ${VAR} references a site sets), the GNPS sample, one epoch of a tiny arch5."""
    text = expand_env(CLUSTER_YAML.read_text(), {
        "SPECLAKE_LAKE": str(tmp_path / "lake"), "SPECLAKE_SPARK_MASTER": spark.master_url,
        "SPECLAKE_RAY_ADDRESS": ray_cluster.address, "SPECLAKE_SPARK_DRIVER_MEMORY": "1g",
        "SPECLAKE_SPARK_EXECUTOR_MEMORY": "512m", "SPECLAKE_SPARK_EXECUTOR_CORES": "2",
        "SPECLAKE_SPARK_CORES_MAX": "2", "SPECLAKE_SPARK_PARTITIONS": "2",
        "SPECLAKE_TRAIN_WORKERS": "1", "SPECLAKE_TRAIN_CPUS": "1"})
    data = yaml.safe_load(text)
    # a small machine's JVMs: C1 JIT and the serial GC start and plan faster on 2 busy cores
    data["engines"]["spark_conf"].update({"spark.driver.defaultJavaOptions": QUICK_DAEMON_JVM,
                                          "spark.executor.defaultJavaOptions": QUICK_DAEMON_JVM})
    data["sources"] = [str(SAMPLE / "gnps_pesticides.mgf")]
    data["study"].update(name="cluster", files=[str(blind_mgf(SAMPLE / "gnps_pesticides.mgf", tmp_path / "study.mgf", 12))],
                         top_k=3)
    data["architectures"] = ["arch5"]
    data["train"].update(epochs=1, batch_size=32, model={"arch5": TINY_MODELS["arch5"]})
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.ray
def test_ingest_training_and_annotation_run_on_spark_standalone_and_a_two_node_ray(tmp_path):
    """Start a Spark master + worker and a Ray head + second node as separate processes; through the cluster
    config (in a fresh process, tests/infra/cluster_job.py): ingest the GNPS sample on Spark (the app registered
    with the master, its executor on the worker), one arch5 epoch under Ray Train on the Ray cluster, a 12-scan
    study annotated through Ray Data actors on both Ray nodes; then stop both clusters and find none of their
    processes left."""
    if not java_available():
        pytest.skip("no Java runtime: the Spark standalone master and worker need Java 17")
    try:
        free_port()
    except OSError as exc:
        pytest.skip(f"no free local TCP port for the cluster daemons: {exc}")
    from speclake.lake.sql import connect
    from speclake.training.registry import list_models

    timings: dict[str, float] = {}
    spark = SparkStandalone(tmp_path / "spark", SparkStandaloneSettings(cores=2, memory="1g"))
    ray_cluster = RayLocalCluster(settings=RayClusterSettings(nodes=2, cpus_per_node=2))
    try:
        with step("start", timings), ThreadPoolExecutor(2) as pool:  # both clusters start side by side
            started = [pool.submit(spark.start, STEP_TIMEOUT["start"]), pool.submit(ray_cluster.start, STEP_TIMEOUT["start"])]
            for f in started:
                f.result()
        node_ids = {n["NodeID"] for n in ray_cluster.nodes}
        assert len(node_ids) == 2, "two Ray nodes (head + one more), each a separate raylet"
        config = _test_config(tmp_path, spark, ray_cluster)
        cfg = load_cluster_config(config)
        assert cfg.engines.spark_master == spark.master_url and cfg.engines.ray_address == ray_cluster.address

        with step("job", timings):
            done = subprocess.run([sys.executable, "-m", "tests.infra.cluster_job", str(config), str(tmp_path / "out.json")],
                                  cwd=REPO, env={**os.environ, **ray_cluster.env(), "OMP_NUM_THREADS": "1"},
                                  capture_output=True, text=True, timeout=STEP_TIMEOUT["job"] - 20)
        assert done.returncode == 0, f"cluster job failed:\n{done.stderr[-4000:]}"
        result = json.loads((tmp_path / "out.json").read_text())
        timings.update(result["timings"])

        # -- ingest ran on the Spark standalone cluster -------------------------------------------------
        ingest = result["ingest"]
        assert ingest["spectra_new"] > 50 and ingest["records_read"] == ingest["spectra_accepted"] + ingest["quarantined"]
        apps = spark.apps()
        assert [a["state"] for a in apps if a["name"] == "speclake"] == ["FINISHED"], \
            "the ingest ran as an application of the standalone master and finished"
        app_id = next(a["id"] for a in apps if a["name"] == "speclake")
        assert list((tmp_path / "spark" / "work-0" / app_id).glob("*/stderr")), "its executor ran on the worker"

        # -- one epoch under Ray Train, the annotation through Ray Data, on the Ray cluster ----------------
        assert result["train"]["epochs"] == 1 and result["train"]["num_workers"] == 1
        assert [m["model_id"] for m in list_models(cfg.lake)] == [result["train"]["model_id"]], "the model is registered"
        report = result["annotate"]
        assert report["engines"] == ["ray"], "the study file went through Ray Data"
        assert report["n_scans"] == 12 and report["n_annotated"] + report["n_no_candidates"] + report["n_errors"] == 12
        con = connect(cfg.lake)
        try:
            scans = con.execute("SELECT count(DISTINCT query_id) FROM annotations WHERE study = 'cluster'").fetchone()[0]
        finally:
            con.close()
        assert scans + report["n_errors"] == 12, "every scan is in annotations or annotation_errors"
        placed = result["actor_nodes"]
        train_nodes = set().union(*(v for k, v in placed.items() if "TrainWorker" in k))
        data_nodes = set().union(*(v for k, v in placed.items() if "MapWorker" in k or "RayAnnotator" in k))
        assert train_nodes and train_nodes <= node_ids, f"Ray Train workers ran on the cluster's nodes: {placed}"
        assert data_nodes == node_ids, f"the annotation actors ran on both Ray nodes: {placed}"
    finally:
        with step("stop", timings):
            ray_cluster.stop()
            spark.stop()
        log.info("cluster test timings (s): %s", timings)
    assert spark.pids() == [] and ray_cluster.pids() == [], "no process of either cluster is left"
    assert not ray_cluster.temp_dir.exists(), "the Ray cluster's temp folder is removed after a clean stop"


def test_a_cluster_daemon_that_dies_is_reported_with_its_log(tmp_path):
    """A Spark worker pointed at a bad memory size exits at once: start() raises naming the worker and its
    log instead of waiting out the timeout, and stops the master it had started."""
    if not java_available():
        pytest.skip("no Java runtime: the Spark standalone daemons need Java 17")
    spark = SparkStandalone(tmp_path / "spark", SparkStandaloneSettings(memory="lots"))
    with pytest.raises(ClusterError, match=r"spark worker 0 exited .*worker-0\.log"):
        spark.start(timeout=120)
    assert spark.pids() == [], "the master started before the failure is stopped"
