"""Per-architecture training steps and predictions: batch -> tensors -> loss, or -> outputs.

Shared by the Ray Train workers, the Ray Tune trials and :class:`~speclake.training.registry.LoadedModel`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from speclake.training.encoding import DescriptorSpace
from speclake.training.inputs import (Batch, binned_csr, block_matrix, descriptor_targets, has_inputs,
                                      sample_tanimoto_pairs, tanimoto_matrix)
from speclake.training.models import ModelContext
from speclake.training.models.arch4 import pair_loss
from speclake.training.models.arch5 import triplet_loss
from speclake.training.models.graph import MolGraph, collate, mol_graph


def spectrum_tensor(batch: Batch, ctx: ModelContext, device: torch.device | str = "cpu") -> torch.Tensor:
    """Binned spectra of a batch: sparse COO when the model asks for sparse input, else dense."""
    bins = ctx.bin_settings
    indptr, indices, data = binned_csr(batch, bins)
    n = len(indptr) - 1
    rows = np.repeat(np.arange(n), np.diff(indptr))
    if ctx.model.get("sparse_input", False):
        idx = torch.from_numpy(np.stack([rows, indices]))
        return torch.sparse_coo_tensor(idx, torch.from_numpy(data), (n, bins.n_bins),
                                       check_invariants=False).coalesce().to(device)
    dense = torch.zeros(n, bins.n_bins)
    dense[torch.from_numpy(rows), torch.from_numpy(indices)] = torch.from_numpy(data)
    return dense.to(device)


def block_tensors(batch: Batch, ctx: ModelContext, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    return {b: torch.from_numpy(block_matrix(batch, b, d)).to(device) for b, d in ctx.block_dims.items() if d > 0}


def descriptor_logits(model: nn.Module, batch: Batch, ctx: ModelContext, device: torch.device | str = "cpu"
                      ) -> torch.Tensor:
    """(n, D) logits of a descriptor model (arch1, arch2, arch2-flat, arch3)."""
    x = spectrum_tensor(batch, ctx, device)
    if ctx.arch == "arch3":
        return model(x, block_tensors(batch, ctx, device))
    return model(x)


def spectrum_embeddings(model: nn.Module, batch: Batch, ctx: ModelContext, device: torch.device | str = "cpu"
                        ) -> torch.Tensor:
    """(n, d) L2-normalised spectrum embeddings (arch4, arch5)."""
    x = spectrum_tensor(batch, ctx, device)
    if ctx.arch == "arch5":
        return model(x, None)[0]
    return model(x)


@dataclass
class StepState:
    """Worker-local state of one training run: RNG, descriptor space, graph cache, hard-negative pool."""

    ctx: ModelContext
    seed: int = 0
    pool: dict[str, Any] = field(default_factory=dict)
    rng: np.random.Generator = field(init=False)
    space: DescriptorSpace = field(init=False)
    graphs: dict[str, MolGraph | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.space = DescriptorSpace(self.ctx.descriptors)

    def graph(self, smiles: str) -> MolGraph | None:
        if smiles not in self.graphs:
            self.graphs[smiles] = mol_graph(smiles)
        return self.graphs[smiles]


def _bce(logits: torch.Tensor, y: torch.Tensor, ctx: ModelContext) -> torch.Tensor:
    pw = torch.as_tensor(ctx.pos_weight, dtype=logits.dtype, device=logits.device) if ctx.pos_weight else None
    return nn.functional.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)


def _select(batch: Batch, keep: np.ndarray) -> dict[str, list]:
    idx = np.flatnonzero(keep)
    return {k: [v[i] for i in idx] for k, v in batch.items()}


def step_loss(model: nn.Module, batch: Batch, state: StepState, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, int]:
    """Loss of one batch and the number of spectra it used (0: nothing usable in this batch)."""
    ctx = state.ctx
    keep = has_inputs(batch, ctx.inputs)
    if not keep.any():
        return torch.zeros((), device=device), 0
    batch = _select(batch, keep)
    n = int(keep.sum())
    if ctx.kind == "descriptors":
        y = torch.from_numpy(descriptor_targets(batch, state.space)).to(device)
        return _bce(descriptor_logits(model, batch, ctx, device), y, ctx), n
    if ctx.kind == "siamese":
        s = ctx.settings
        sim = tanimoto_matrix(batch["morgan_on"])
        left, right = sample_tanimoto_pairs(sim, np.ones(n, bool), s.tanimoto_bins, s.pairs_per_bin, state.rng)
        emb = spectrum_embeddings(model, batch, ctx, device)
        if len(left) == 0:
            return (emb * 0).sum(), n
        tani = torch.from_numpy(sim[left, right]).to(device)
        return pair_loss(emb, torch.from_numpy(left).to(device), torch.from_numpy(right).to(device), tani), n
    return _triplet_step(model, batch, state, device)


def _triplet_step(model: nn.Module, batch: Batch, state: StepState, device: torch.device | str
                  ) -> tuple[torch.Tensor, int]:
    """arch5: anchors = spectra; structures = the batch's own plus their hard (isobaric / nearest-mass) negatives."""
    ctx, s = state.ctx, state.ctx.settings
    graphs = [state.graph(smi) for smi in batch["smiles"]]
    keep = np.array([g is not None for g in graphs], bool)
    batch = _select(batch, keep)
    graphs = [g for g in graphs if g is not None]
    if not graphs:
        return torch.zeros((), device=device), 0
    keys = list(batch["inchikey14"])
    struct_keys: list[str] = []
    struct_graphs: list[MolGraph] = []
    slot: dict[str, int] = {}
    for k, g in zip(keys, graphs):
        if k not in slot:
            slot[k] = len(struct_keys)
            struct_keys.append(k)
            struct_graphs.append(g)
    negatives = state.pool.get("negatives", {})
    pool_smiles, pool_keys = state.pool.get("smiles", []), state.pool.get("inchikey14", [])
    for k in list(slot):
        cands = negatives.get(k, [])
        for i in state.rng.permutation(len(cands))[: s.hard_negatives] if cands else []:
            pk, g = pool_keys[cands[i]], state.graph(pool_smiles[cands[i]])
            if g is not None and pk not in slot:
                slot[pk] = len(struct_keys)
                struct_keys.append(pk)
                struct_graphs.append(g)
    positive = torch.as_tensor([slot[k] for k in keys], device=device)
    key_arr = np.asarray(struct_keys)
    neg_mask = torch.from_numpy(key_arr[None, :] != np.asarray(keys)[:, None]).to(device)
    graph_batch = {k: v.to(device) for k, v in collate(struct_graphs).items()}
    spec, struct = model(spectrum_tensor(batch, ctx, device), graph_batch)
    return triplet_loss(spec, struct, positive, neg_mask, s.margin, contrastive_weight=s.contrastive_weight,
                        temperature=s.temperature), len(keys)
