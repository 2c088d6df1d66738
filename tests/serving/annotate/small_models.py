"""Test helpers: a small real model of the sample lake, fitted by a direct torch loop (Ray Train takes
minutes) and registered, and a copy of the indexed sample lake holding it."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable


def fit_and_register(lake: Path, model_id: str, ctx: Any, module: Any, loss_of: Callable[[], Any],
                     steps: int) -> None:
    """Adam (lr 3e-3) on ``loss_of()`` for ``steps`` steps, then the model registered as ``model_id``."""
    import torch

    from speclake.training.registry import save_model
    from speclake.training.split import SplitSettings

    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        opt.step()
    save_model(lake, model_id, ctx, module.state_dict(), settings={"arch": ctx.arch},
               split={"settings": SplitSettings().model_dump()}, metrics={"train_loss": loss.item()})


def lake_with_model(annotate_lake: Path, tmp_path_factory: Any, name: str, train: Callable[[Path], None]) -> Path:
    """A copy of the indexed sample lake (without its staging area) in which ``train(lake)`` registered a model."""
    dst = tmp_path_factory.mktemp(name) / "lake"
    shutil.copytree(annotate_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    train(dst)
    return dst
