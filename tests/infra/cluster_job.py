"""The work of the cluster test, in a fresh Python process: ingest on the Spark master, one training epoch
and a study annotation on the Ray cluster, all through a cluster config; the results as JSON.

    python -m tests.infra.cluster_job CONFIG.yaml OUT.json     (RAY_AUTH_* of the cluster in the environment)

A separate process because the pytest process may already hold a local Spark session (``getOrCreate``
would hand it back instead of connecting to the master) and a local Ray (``ray_session`` would use it).
Each step fails with a TimeoutError past its bound.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

log = logging.getLogger("cluster_job")

#: Seconds each step may take on a loaded 2-core machine.
STEP_TIMEOUT = {"ingest": 240, "train": 240, "annotate": 240}


@contextmanager
def step(name: str, timings: dict[str, float], limits: dict[str, float] = STEP_TIMEOUT) -> Iterator[None]:
    """Time one step; a TimeoutError is raised in it (the main thread) past ``limits[name]`` seconds."""
    def expired(signum, frame):
        raise TimeoutError(f"cluster step {name!r} took more than {limits[name]} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, limits[name])
    t0 = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        timings[name] = round(time.perf_counter() - t0, 1)
        log.info("cluster step %s: %.1f s", name, timings[name])


def run(config_path: str) -> dict[str, Any]:
    """Ingest, train one epoch, annotate; what each did and which Ray nodes the actors ran on."""
    import ray

    from speclake.infra.cluster import actor_nodes, load_cluster_config
    from speclake.pipelines.ingest import IngestSettings, run_ingest
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study
    from speclake.training.trainer import RunSettings, train_model

    cfg = load_cluster_config(config_path)
    timings: dict[str, float] = {}
    with step("ingest", timings):
        ingest = run_ingest(cfg.library_sources(), cfg.lake, IngestSettings(spark=cfg.engines.spark()))
    arch = cfg.architectures[0]
    settings = RunSettings(arch=arch, model=cfg.train.model.get(arch, {}), descriptors={"min_positives": 3},
                           train={"epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
                                  "num_workers": cfg.train.num_workers, "cpus_per_worker": cfg.train.cpus_per_worker,
                                  "use_gpu": cfg.train.use_gpu})
    with step("train", timings):
        trained = train_model(cfg.lake, settings, ray_address=cfg.engines.ray_address)
    annotate = AnnotateSettings(top_k=cfg.study.top_k, ray_address=cfg.engines.ray_address, ray_min_scans=0,
                                batch_size=4)
    with step("annotate", timings):
        report = annotate_study(cfg.study_files(), cfg.lake, cfg.study.name, annotate)
    ray.init(address=cfg.engines.ray_address, log_to_driver=False)
    try:
        placed = {cls: sorted(nodes) for cls, nodes in actor_nodes().items()}
    finally:
        ray.shutdown()
    return {"timings": timings, "actor_nodes": placed,
            "ingest": {"records_read": ingest.records_read, "spectra_accepted": ingest.spectra_accepted,
                       "spectra_new": ingest.spectra_new, "quarantined": ingest.quarantined},
            "train": {"model_id": trained.model_id, "epochs": trained.metrics["epochs"],
                      "num_workers": trained.metrics["num_workers"]},
            "annotate": {"engines": [f.get("engine") for f in report.files], "n_scans": report.n_scans,
                         "n_annotated": report.n_annotated, "n_no_candidates": report.n_no_candidates,
                         "n_errors": report.n_errors}}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run(sys.argv[1])
    with open(sys.argv[2], "w") as out:
        json.dump(result, out)
