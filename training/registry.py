"""Trained models under ``<lake>/models/<model_id>/``: save, list, load, predict.

A model folder holds ``model.pt`` (state_dict), ``settings.json`` (the RunSettings it was trained
with), ``context.json`` (architecture context: binning, descriptors, groups, block sizes),
``descriptors.json``, ``split.json`` (split settings and counts), ``metrics.json`` and
``model.json`` (summary). It is written to a temporary folder and renamed, so a model is either
complete or absent.
"""
from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from speclake.lake.catalog import Lake
from speclake.training.models import ARCH_KIND, ModelContext, build_model
from speclake.training.split import SplitSettings

RESERVED = ("_ray", "_examples", "_tune", "_prefilter")


class ModelNotFound(ValueError):
    """No registered model of that id."""


def models_root(lake_dir: str | Path) -> Path:
    return Lake(lake_dir).root / "models"


def model_dir(lake_dir: str | Path, model_id: str) -> Path:
    if not model_id or "/" in model_id or model_id.startswith((".", "_")):
        raise ValueError(f"not a model id: {model_id!r}")
    return models_root(lake_dir) / model_id


def new_model_id(arch: str) -> str:
    """``<arch>-<UTC timestamp>-<6 hex>``: sortable by time, unique."""
    return f"{arch}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def save_model(lake_dir: str | Path, model_id: str, ctx: ModelContext, state_dict: dict, settings: dict[str, Any],
               split: dict[str, Any], metrics: dict[str, Any], extra: dict[str, Any] | None = None) -> Path:
    """Write a model folder atomically; returns its path."""
    import torch

    final = model_dir(lake_dir, model_id)
    tmp = final.with_name(f".{model_id}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp / "model.pt")
    summary = {
        "model_id": model_id, "arch": ctx.arch, "kind": ctx.kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "epochs": metrics.get("epochs"), "best_val_loss": metrics.get("best_val_loss"),
        "n_descriptors": len(ctx.descriptors), "spectra": split.get("spectra", {}),
        "structures": split.get("structures", {}),
    }
    files = {"model.json": summary, "settings.json": settings, "context.json": ctx.to_dict(),
             "descriptors.json": ctx.descriptors, "split.json": split, "metrics.json": metrics, **(extra or {})}
    for name, obj in files.items():
        (tmp / name).write_text(json.dumps(obj, indent=2, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def list_models(lake_dir: str | Path) -> list[dict[str, Any]]:
    """Summaries (model.json) of every registered model, oldest first."""
    root = models_root(lake_dir)
    if not root.exists():
        return []
    out = [json.loads(p.read_text()) for p in root.glob("*/model.json") if not p.parent.name.startswith((".", "_"))]
    return sorted(out, key=lambda m: (m.get("created", ""), m["model_id"]))


@dataclass
class LoadedModel:
    """A registered model ready to predict (CPU, or the GPU when ``device='cuda'``)."""

    model_id: str
    arch: str
    descriptor_names: list[str]
    split: SplitSettings
    settings: dict[str, Any]
    context: ModelContext
    module: Any
    metrics: dict[str, Any]
    device: str = "cpu"
    batch_size: int = 256

    def _chunks(self, examples: pa.Table):
        from speclake.training.inputs import as_batch

        for start in range(0, examples.num_rows, self.batch_size):
            yield as_batch(examples.slice(start, self.batch_size))

    def predict_descriptors(self, examples: pa.Table) -> np.ndarray:
        """(n, n_descriptors) float32 probabilities (arch1, arch2, arch2-flat, arch3)."""
        import torch

        from speclake.training.tasks import descriptor_logits

        if ARCH_KIND[self.arch] != "descriptors":
            raise ValueError(f"{self.model_id} ({self.arch}) does not predict descriptors; use embed_spectra")
        out = [np.zeros((0, len(self.descriptor_names)), np.float32)]
        with torch.no_grad():
            for batch in self._chunks(examples):
                out.append(torch.sigmoid(descriptor_logits(self.module, batch, self.context, self.device))
                           .cpu().numpy().astype(np.float32))
        return np.concatenate(out)

    def embed_spectra(self, examples: pa.Table) -> np.ndarray:
        """(n, d) L2-normalised spectrum embeddings (arch4, arch5)."""
        import torch

        from speclake.training.tasks import spectrum_embeddings

        if ARCH_KIND[self.arch] == "descriptors":
            raise ValueError(f"{self.model_id} ({self.arch}) does not embed spectra; use predict_descriptors")
        dim = self.context.model["embedding_dim"]
        out = [np.zeros((0, dim), np.float32)]
        with torch.no_grad():
            for batch in self._chunks(examples):
                out.append(spectrum_embeddings(self.module, batch, self.context, self.device).cpu().numpy())
        return np.concatenate(out).astype(np.float32)

    def embed_structures(self, smiles: list[str]) -> np.ndarray:
        """(n, d) L2-normalised structure embeddings (arch5); rows of unparsable SMILES are NaN."""
        import torch

        from speclake.training.models.graph import collate, mol_graph

        if self.arch != "arch5":
            raise ValueError(f"{self.model_id} ({self.arch}) does not embed structures; only arch5 does")
        dim = self.context.model["embedding_dim"]
        out = np.full((len(smiles), dim), np.nan, np.float32)
        with torch.no_grad():
            for start in range(0, len(smiles), self.batch_size):
                graphs = [(i, mol_graph(s)) for i, s in enumerate(smiles[start:start + self.batch_size], start)]
                graphs = [(i, g) for i, g in graphs if g is not None]
                if not graphs:
                    continue
                batch = {k: v.to(self.device) for k, v in collate([g for _, g in graphs]).items()}
                _, emb = self.module(None, batch)
                out[[i for i, _ in graphs]] = emb.cpu().numpy()
        return out


def load_model(lake_dir: str | Path, model_id: str, device: str = "cpu") -> LoadedModel:
    """Rebuild a registered model from its folder (ModelNotFound when there is none)."""
    import torch

    path = model_dir(lake_dir, model_id)
    if not (path / "model.json").exists():
        known = ", ".join(m["model_id"] for m in list_models(lake_dir)) or "none"
        raise ModelNotFound(f"no model {model_id!r} in {models_root(lake_dir)} (models: {known})")
    ctx = ModelContext.from_dict(json.loads((path / "context.json").read_text()))
    settings = json.loads((path / "settings.json").read_text())
    split = json.loads((path / "split.json").read_text())
    module = build_model(ctx)
    module.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    module.to(device).eval()
    return LoadedModel(model_id=model_id, arch=ctx.arch, descriptor_names=list(ctx.descriptors),
                       split=SplitSettings.model_validate(split["settings"]), settings=settings, context=ctx,
                       module=module, metrics=json.loads((path / "metrics.json").read_text()), device=device)
