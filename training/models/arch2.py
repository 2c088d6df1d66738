"""arch2 (MetFID, extended): shared trunk, one shared layer per descriptor group, one head per descriptor.

Groups come from descriptor co-occurrence over training structures: Jaccard distance between
descriptor columns, average-linkage agglomerative clustering cut into ``n_groups`` clusters.
``arch2-flat`` is MetFID itself: the trunk and one linear multi-label head.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from speclake.training.models.layers import mlp, spectrum_matmul, uniform_init_


class Arch2Settings(BaseModel):
    """Trunk, group layers and grouping of arch2."""

    model_config = ConfigDict(extra="forbid")

    trunk: tuple[int, ...] = Field((1024, 512), min_length=1, description="Hidden sizes of the shared trunk.")
    group_hidden: int = Field(256, ge=1, description="Width of each group's shared layer.")
    n_groups: int = Field(8, ge=1, description="Descriptor groups (clusters of co-occurring descriptors).")
    dropout: float = Field(0.2, ge=0, lt=1)


class Arch2FlatSettings(BaseModel):
    """Trunk of the flat multi-label model (MetFID)."""

    model_config = ConfigDict(extra="forbid")

    trunk: tuple[int, ...] = Field((1024, 512), min_length=1)
    dropout: float = Field(0.2, ge=0, lt=1)


def descriptor_groups(targets: np.ndarray, n_groups: int) -> list[int]:
    """Group of each descriptor from a (structures, descriptors) 0/1 matrix of training structures.

    Jaccard distance of descriptor columns (co-occurrence), average linkage, cut into at most
    ``n_groups`` clusters; groups are renumbered 0.. by first appearance.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    n_desc = targets.shape[1]
    if n_desc == 0:
        raise ValueError("no descriptors to group")
    if n_desc == 1 or n_groups == 1:
        return [0] * n_desc
    cols = targets.T.astype(bool)
    dist = np.nan_to_num(pdist(cols, metric="jaccard"), nan=1.0)
    labels = fcluster(linkage(dist, method="average"), t=min(n_groups, n_desc), criterion="maxclust")
    renum: dict[int, int] = {}
    return [renum.setdefault(int(lab), len(renum)) for lab in labels]


class Trunk(nn.Module):
    """Binned spectrum -> shared representation (first layer accepts sparse input)."""

    def __init__(self, n_in: int, sizes: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.w0 = nn.Parameter(uniform_init_(torch.empty(n_in, sizes[0]), n_in))
        self.b0 = nn.Parameter(torch.zeros(sizes[0]))
        self.drop = nn.Dropout(dropout)
        self.rest = mlp(list(sizes), dropout) if len(sizes) > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.drop(torch.relu(spectrum_matmul(x, self.w0) + self.b0)))


class GroupedMultitask(nn.Module):
    """Trunk -> per-group layer (all groups batched) -> per-descriptor head on its group's layer."""

    def __init__(self, n_in: int, groups: Sequence[int], settings: Arch2Settings) -> None:
        super().__init__()
        n_groups = max(groups) + 1
        t, g = settings.trunk[-1], settings.group_hidden
        self.trunk = Trunk(n_in, settings.trunk, settings.dropout)
        self.group_w = nn.Parameter(uniform_init_(torch.empty(n_groups, t, g), t))
        self.group_b = nn.Parameter(torch.zeros(n_groups, g))
        self.head_w = nn.Parameter(uniform_init_(torch.empty(len(groups), g), g))
        self.head_b = nn.Parameter(torch.zeros(len(groups)))
        self.register_buffer("group_of", torch.as_tensor(list(groups), dtype=torch.long))
        self.drop = nn.Dropout(settings.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = self.trunk(x)                                                          # (n, t)
        grouped = self.drop(torch.relu(torch.einsum("nt,gth->ngh", shared, self.group_w) + self.group_b))
        per_desc = grouped[:, self.group_of, :]                                         # (n, D, g)
        return (per_desc * self.head_w).sum(-1) + self.head_b                           # (n, D) logits


class FlatMultilabel(nn.Module):
    """MetFID: trunk and one linear multi-label head."""

    def __init__(self, n_in: int, n_descriptors: int, settings: Arch2FlatSettings) -> None:
        super().__init__()
        self.trunk = Trunk(n_in, settings.trunk, settings.dropout)
        self.head = nn.Linear(settings.trunk[-1], n_descriptors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))
