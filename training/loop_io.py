"""How the training loop talks to its runner: Ray Train (DDP workers) or Ray Tune (one process per trial):
data shards, device, model preparation, the checkpoint to resume from, and per-epoch reports with checkpoints."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

#: The loop's whole state (model, optimizer, history, early stopping) inside each checkpoint directory.
STATE_FILE = "state.pt"


class LoopIO:
    """How the loop gets data, devices, checkpoints and reports: Ray Train (DDP) or Ray Tune (one process)."""

    def __init__(self, mode: str, datasets: dict[str, Any] | None = None, use_gpu: bool = False,
                 resume_path: str | None = None) -> None:
        self.mode, self.datasets, self.use_gpu, self.resume_path = mode, datasets or {}, use_gpu, resume_path

    def _api(self):
        import ray.train
        import ray.tune

        return ray.train if self.mode == "train" else ray.tune

    def rank(self) -> int:
        return self._api().get_context().get_world_rank() if self.mode == "train" else 0

    def world_size(self) -> int:
        return self._api().get_context().get_world_size() if self.mode == "train" else 1

    def device(self):
        import torch

        if self.mode == "train":
            import ray.train.torch

            return ray.train.torch.get_device()
        return torch.device("cuda" if self.use_gpu and torch.cuda.is_available() else "cpu")

    def prepare(self, model):
        if self.mode == "train":
            import ray.train.torch

            return ray.train.torch.prepare_model(model)
        return model.to(self.device())

    def data(self, name: str):
        if self.mode == "train":
            import ray.train

            return ray.train.get_dataset_shard(name)
        return self.datasets[name]

    def load_state(self) -> dict | None:
        import torch

        ckpt = self._api().get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
        if self.resume_path and (Path(self.resume_path) / STATE_FILE).exists():
            return torch.load(Path(self.resume_path) / STATE_FILE, map_location="cpu", weights_only=False)
        return None

    def report(self, metrics: dict[str, Any], state: dict | None) -> None:
        import torch

        api = self._api()
        if state is None or self.rank() != 0:
            api.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / STATE_FILE)
            api.report(metrics, checkpoint=api.Checkpoint.from_directory(d))


__all__ = ["LoopIO", "STATE_FILE"]
