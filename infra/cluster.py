"""A Spark standalone cluster and a Ray cluster on one machine, as real separate processes.

For the cluster test and for users who want to try the cluster layout (``infra/cluster.yaml``)
before they have machines::

    with SparkStandalone(Path("logs/spark")) as spark, RayLocalCluster(Path("/tmp/slray")) as ray_:
        os.environ.update(ray_.env())             # the Ray cluster's auth token for this driver
        ...  # SparkSettings(master=spark.master_url), ray.init(address=ray_.address)

``SparkStandalone`` runs ``spark-class org.apache.spark.deploy.master.Master`` and one
``...deploy.worker.Worker`` from the pyspark wheel (which ships ``bin/spark-class`` but not the
``sbin`` start scripts); ``RayLocalCluster`` runs ``ray start --head`` and more nodes with
``ray start --address``, each ``--block`` in its own process session so that stopping the cluster
ends exactly its processes (``ray stop`` would end every Ray of the user on the machine). Every
port is a free one, and each Ray cluster has its own ``--temp-dir``, so neither collides with
another Spark or Ray on the machine. ``python -m speclake.infra.cluster`` starts both and waits.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from speclake.infra.config import expand_env, load_config
from speclake.infra.processes import (LOOPBACK, ClusterError, Daemon, signal_pids, log_tail, free_port,
                                      pids_mentioning, port_open, session_pids, wait_until)

log = logging.getLogger(__name__)

#: JVM options of the Spark daemons (master, worker): C1 JIT and the serial GC start faster on few cores.
QUICK_DAEMON_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

#: One loader for every config: ``${VAR:-default}`` references are expanded by :func:`.config.load_config`.
load_cluster_config = load_config


# -- Spark standalone --------------------------------------------------------------------------------
def spark_home() -> Path:
    """``SPARK_HOME``, or the pyspark wheel's folder (it holds ``bin/spark-class`` and the jars)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def java_available() -> bool:
    """Whether a Java runtime is there for Spark (``JAVA_HOME`` or ``java`` on the PATH)."""
    home = os.environ.get("JAVA_HOME")
    return bool((home and Path(home, "bin", "java").exists()) or shutil.which("java"))


class SparkStandaloneSettings(BaseModel):
    """The local Spark standalone cluster: one master, ``workers`` workers of ``cores`` / ``memory``."""

    model_config = ConfigDict(extra="forbid")

    host: str = LOOPBACK
    workers: int = Field(1, ge=1)
    cores: int = Field(1, ge=1, description="cores each worker offers")
    memory: str = Field("1g", description="memory each worker offers to executors")
    daemon_memory: str = Field("256m", description="heap of the master and worker JVMs themselves")
    daemon_java_opts: str = QUICK_DAEMON_JVM


class SparkStandalone:
    """``spark-class`` Master + Worker(s) on free ports; logs under ``log_dir``. A context manager."""

    def __init__(self, log_dir: str | os.PathLike[str], settings: SparkStandaloneSettings | None = None) -> None:
        self.settings = settings or SparkStandaloneSettings()
        self.log_dir = Path(log_dir)
        h = self.settings.host
        self.port, self.ui_port, self.rest_port = free_port(h), free_port(h), free_port(h)
        self.daemons: list[Daemon] = []

    @property
    def master_url(self) -> str:
        """``spark://host:port``: the ``spark_master`` of a config, ``--master`` of spark-submit."""
        return f"spark://{self.settings.host}:{self.port}"

    @property
    def ui_url(self) -> str:
        """The master's web UI; ``/json`` of it is the cluster state (workers, running and finished apps)."""
        return f"http://{self.settings.host}:{self.ui_port}"

    def _env(self) -> dict[str, str]:
        s = self.settings
        return {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": s.host,
                "SPARK_DAEMON_MEMORY": s.daemon_memory, "SPARK_DAEMON_JAVA_OPTS": s.daemon_java_opts,
                "SPARK_MASTER_OPTS": f"-Dspark.master.rest.enabled=true -Dspark.master.rest.port={self.rest_port}",
                "SPARK_LOG_DIR": str(self.log_dir), "SPARK_NO_DAEMONIZE": "1",
                "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}

    def state(self) -> dict[str, Any]:
        """The master's ``/json``: ``aliveworkers``, ``cores``, ``activeapps``, ``completedapps``, ..."""
        with urllib.request.urlopen(f"{self.ui_url}/json", timeout=5) as resp:
            return json.loads(resp.read())

    def _state_or_none(self) -> dict[str, Any] | None:
        try:
            return self.state()
        except (OSError, urllib.error.URLError, ValueError):
            return None

    def _died(self) -> str | None:
        return next((m for m in (d.died() for d in self.daemons) if m), None)

    def start(self, timeout: float = 120.0) -> "SparkStandalone":
        """Start the master and the workers; return once every worker has registered with the master."""
        if not java_available():
            raise ClusterError("no Java runtime (set JAVA_HOME or put java on the PATH): Spark needs Java 17")
        s, env = self.settings, self._env()
        spark_class = str(spark_home() / "bin" / "spark-class")
        self.daemons.append(Daemon("spark master", [
            spark_class, "org.apache.spark.deploy.master.Master", "--host", s.host, "--port", str(self.port),
            "--webui-port", str(self.ui_port)], self.log_dir / "master.log", env))
        for i in range(s.workers):
            self.daemons.append(Daemon(f"spark worker {i}", [
                spark_class, "org.apache.spark.deploy.worker.Worker", "--host", s.host,
                "--port", str(free_port(s.host)), "--webui-port", str(free_port(s.host)),
                "--cores", str(s.cores), "--memory", s.memory, "--work-dir", str(self.log_dir / f"work-{i}"),
                self.master_url], self.log_dir / f"worker-{i}.log", env))
        try:
            wait_until(lambda: (st := self._state_or_none()) and st.get("aliveworkers", 0) >= s.workers,
                       timeout, f"Spark master {self.master_url} with {s.workers} worker(s)", alive=self._died)
        except BaseException:
            self.stop()
            raise
        log.info("Spark standalone up: %s (UI %s, REST port %d)", self.master_url, self.ui_url, self.rest_port)
        return self

    def apps(self) -> list[dict[str, Any]]:
        """Every application the master has seen (running and finished): ``name``, ``state``, ``cores``, ..."""
        st = self.state()
        return list(st.get("activeapps", [])) + list(st.get("completedapps", []))

    def pids(self) -> list[int]:
        """Processes of the cluster still running (master, workers, executors)."""
        return session_pids({d.proc.pid for d in self.daemons})

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the workers (and their executors) and the master."""
        for daemon in reversed(self.daemons):
            daemon.terminate()
        for daemon in reversed(self.daemons):
            daemon.stop(timeout)
        log.info("Spark standalone stopped")

    def __enter__(self) -> "SparkStandalone":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- Ray ---------------------------------------------------------------------------------------------
class RayClusterSettings(BaseModel):
    """The local Ray cluster: a head and ``nodes - 1`` more nodes of ``cpus_per_node`` CPUs each."""

    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(2, ge=1)
    cpus_per_node: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    object_store_mb: int = Field(200, ge=75, description="object store of each node (MiB)")
    drain_seconds: float = Field(0.0, ge=0, description="how long a stopping node drains (Ray's default 30 s)")
    #: Ray's memory monitor kills workers when the *machine's* memory use passes 95%: on a shared machine
    #: other programs' memory would fail this cluster's jobs, so it is off unless asked for.
    memory_monitor: bool = False


def _ray_node_ports() -> list[str]:
    """Free ports for everything a Ray node listens on (defaults such as 8265 or 52365 would collide)."""
    ports = {"--node-manager-port": free_port(), "--object-manager-port": free_port(),
             "--metrics-export-port": free_port(), "--dashboard-agent-listen-port": free_port(),
             "--dashboard-agent-grpc-port": free_port(), "--runtime-env-agent-port": free_port()}
    return [str(x) for kv in ports.items() for x in kv]


#: Connects to a Ray cluster and prints its alive nodes (JSON) once there are N of them (exit 1 on timeout).
_NODES_SCRIPT = """
import json, sys, time
import ray
address, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ray.init(address=address, log_to_driver=False)
deadline = time.monotonic() + timeout
while True:
    alive = [{"NodeID": x["NodeID"], "NodeManagerPort": x["NodeManagerPort"], "Resources": x["Resources"]}
             for x in ray.nodes() if x["Alive"]]
    if len(alive) >= n:
        print(json.dumps(alive))
        break
    if time.monotonic() > deadline:
        sys.exit(f"{len(alive)} of {n} Ray nodes alive after {timeout:.0f} s")
    time.sleep(0.5)
ray.shutdown()
"""

#: What ``ray start`` prints once its node runs (the next node is started only then).
RAY_STARTED = "Ray runtime started"


class RayLocalCluster:
    """``ray start --head`` plus ``ray start --address`` nodes, all under ``temp_dir``. A context manager.

    Ray 2.59+ authenticates with a token by default: the cluster gets a fresh one in ``temp_dir``;
    a driver connects with :meth:`env` in its environment (``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN_PATH``).
    ``temp_dir`` should be short (Ray's socket paths live under it; None: a new ``/tmp/slray-*``).
    """

    def __init__(self, temp_dir: str | os.PathLike[str] | None = None, settings: RayClusterSettings | None = None) -> None:
        self.settings = settings or RayClusterSettings()
        self.owns_temp_dir = temp_dir is None  # a folder made here is removed after a clean stop
        self.temp_dir = Path(temp_dir or tempfile.mkdtemp(prefix="slray-", dir="/tmp"))
        self.port = free_port()
        self.token_file = self.temp_dir / "auth_token"
        self.daemons: list[Daemon] = []
        self.nodes: list[dict[str, Any]] = []  # ray.nodes() entries once started

    @property
    def address(self) -> str:
        """``host:port`` of the head's GCS: ``ray.init(address=...)``, ``engines.ray_address``."""
        return f"{LOOPBACK}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment a driver needs to connect (the cluster's auth token)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)}

    def _node_cmd(self, head: bool) -> list[str]:
        s = self.settings
        ray_bin = str(Path(sys.executable).parent / "ray")
        cmd = [ray_bin, "start", "--block", "--disable-usage-stats", "--temp-dir", str(self.temp_dir),
               "--num-cpus", str(s.cpus_per_node), "--num-gpus", str(s.gpus_per_node),
               "--object-store-memory", str(s.object_store_mb * 2**20), *_ray_node_ports()]
        if head:
            return cmd + ["--head", "--node-ip-address", LOOPBACK, "--port", str(self.port),
                          "--include-dashboard", "false", "--dashboard-port", str(free_port())]
        return cmd + ["--address", self.address, "--node-ip-address", LOOPBACK]

    def _died(self) -> str | None:
        return next((m for m in (d.died() for d in self.daemons) if m), None)

    def start(self, timeout: float = 120.0) -> "RayLocalCluster":
        """Start the head, then the other nodes; return once all of them are alive in ``ray.nodes()``."""
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(secrets.token_hex(32))
        self.token_file.chmod(0o600)
        # a loaded machine registers a raylet slowly: Ray's default 10 s wait would fail the node start
        env = {**os.environ, **self.env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_raylet_start_wait_time_s": "120",
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": str(self.settings.drain_seconds)}
        if not self.settings.memory_monitor:
            env["RAY_memory_monitor_refresh_ms"] = "0"
        env.pop("RAY_ADDRESS", None)
        try:
            self.daemons.append(Daemon("ray head", self._node_cmd(True), self.temp_dir / "head.log", env))
            head_log = self.temp_dir / "head.log"
            wait_until(lambda: port_open(LOOPBACK, self.port) and RAY_STARTED in log_tail(head_log, 20_000), timeout,
                       f"Ray head on port {self.port}", alive=self._died)
            for i in range(1, self.settings.nodes):
                self.daemons.append(Daemon(f"ray node {i}", self._node_cmd(False), self.temp_dir / f"node-{i}.log", env))
            self.nodes = self.wait_for_nodes(self.settings.nodes, timeout)
        except BaseException:
            self.stop()
            raise
        log.info("Ray cluster up at %s: %d nodes x %d CPUs (temp dir %s)", self.address, self.settings.nodes,
                 self.settings.cpus_per_node, self.temp_dir)
        return self

    def wait_for_nodes(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """The alive nodes (``ray.nodes()`` entries) once there are ``n`` of them.

        Asked by a short-lived Python process with :meth:`env`: this process may hold a Ray connection of
        its own (a local Ray), and Ray reads its auth settings once, when first imported."""
        env = {**os.environ, **self.env()}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.Popen([sys.executable, "-c", _NODES_SCRIPT, self.address, str(n), str(timeout)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            wait_until(lambda: proc.poll() is not None, timeout + 60, f"{n} Ray nodes at {self.address}",
                       alive=self._died)
        finally:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate()
        if proc.returncode != 0:
            raise ClusterError(f"{n} Ray nodes at {self.address}: not within {timeout:.0f} s\n{err[-2000:]}")
        return json.loads(out.strip().splitlines()[-1])

    def pids(self) -> list[int]:
        """Processes of the cluster still running: the nodes' sessions and anything naming its temp dir."""
        return sorted(set(session_pids({d.proc.pid for d in self.daemons})) | set(pids_mentioning(str(self.temp_dir))))

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every node at once (each ``ray start --block`` ends its own processes on SIGTERM)."""
        for daemon in reversed(self.daemons):
            daemon.terminate()
        for daemon in reversed(self.daemons):
            daemon.stop(timeout)
        left = pids_mentioning(str(self.temp_dir))  # a worker that escaped its session
        if left:
            signal_pids(left, signal.SIGKILL)
        elif self.owns_temp_dir:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        log.info("Ray cluster stopped")

    def __enter__(self) -> "RayLocalCluster":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def actor_nodes() -> dict[str, set[str]]:
    """Node ids each actor class ran on, for every actor the connected Ray cluster has had (alive or
    dead): what proves that Ray Train workers or Ray Data actors really spread over the nodes.

    Reads the GCS actor table (``ray._private.state``): the public state API needs the dashboard,
    which ``ray[data,train,tune]`` does not install."""
    from ray._private import state

    out: dict[str, set[str]] = {}
    for actor in state.actors().values():
        node = (actor.get("Address") or {}).get("NodeID")
        if node:
            out.setdefault(actor.get("ActorClassName", "?"), set()).add(node)
    return out


def main() -> None:
    """``python -m speclake.infra.cluster [folder]``: a Spark master + worker and a 2-node Ray on this
    machine; prints the config lines and the environment to use them, and runs until Ctrl-C."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="speclake-cluster-"))
    spark = SparkStandalone(base / "spark")
    ray_cluster = RayLocalCluster()
    try:
        spark.start()
        ray_cluster.start()
        env = {"SPECLAKE_SPARK_MASTER": spark.master_url, "SPECLAKE_RAY_ADDRESS": ray_cluster.address,
               **ray_cluster.env()}
        sys.stdout.write("".join(f"export {k}={v}\n" for k, v in env.items())
                         + f"# Spark UI {spark.ui_url}; logs {base}, {ray_cluster.temp_dir}\n"
                         + "# then e.g. `speclake ingest --lake L` (Spark reads SPECLAKE_SPARK_MASTER), `speclake train "
                         "--arch arch1 --lake L --ray-address $SPECLAKE_RAY_ADDRESS`; Ctrl-C here stops the cluster\n")
        sys.stdout.flush()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        ray_cluster.stop()
        spark.stop()


__all__ = ["ClusterError", "RayClusterSettings", "RayLocalCluster", "SparkStandalone", "SparkStandaloneSettings",
           "actor_nodes", "expand_env", "free_port", "java_available", "load_cluster_config", "pids_mentioning",
           "session_pids", "spark_home", "wait_until"]


if __name__ == "__main__":
    main()
