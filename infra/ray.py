"""Ray: a local Ray by default, an existing cluster by address; one starter for every stage.

>>> with ray_session(RaySettings(num_cpus=2)):
...     ...                                  # Ray Data / Ray Train work
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Iterator

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class RaySettings(BaseModel):
    """How to reach Ray. ``address`` (or ``SPECLAKE_RAY_ADDRESS``): an existing cluster (``auto``,
    ``ray://host:10001``); None starts a local Ray of ``num_cpus`` CPUs (default: all) for the run."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(default_factory=lambda: os.environ.get("SPECLAKE_RAY_ADDRESS") or None)
    num_cpus: int | None = Field(None, ge=1)


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray unless one is running; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if address:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        log.info("connected to Ray at %s", address)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
        log.info("started a local Ray (%s CPUs)", num_cpus or "all")
    return True


@contextmanager
def ray_session(settings: RaySettings | None = None, *, address: str | None = None,
                num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray, or connect/start one for the block and shut it down afterwards
    (a command returns only after the Ray it started has stopped)."""
    import ray

    if settings is not None:
        address, num_cpus = address or settings.address, num_cpus or settings.num_cpus
    started = ensure_ray(address, num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def cluster_cpus() -> int:
    """CPUs of the connected Ray (at least 1)."""
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


__all__ = ["RaySettings", "cluster_cpus", "ensure_ray", "ray_session"]
