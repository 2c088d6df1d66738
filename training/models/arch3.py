"""arch3: engineered feature blocks, each through its own dense layer, concatenated, descriptor heads."""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from speclake.training.data import FEATURE_BLOCKS
from speclake.training.models.layers import mlp, spectrum_matmul, uniform_init_


class Arch3Settings(BaseModel):
    """Blocks used and layer widths of arch3."""

    model_config = ConfigDict(extra="forbid")

    blocks: tuple[str, ...] = Field(FEATURE_BLOCKS, description="spectrum_features blocks fed to the model.")
    include_spectrum: bool = Field(True, description="Also feed the binned spectrum as its own block.")
    block_hidden: int = Field(64, ge=1, description="Width of each block's dense layer.")
    spectrum_hidden: int = Field(256, ge=1, description="Width of the binned-spectrum block's dense layer.")
    hidden: tuple[int, ...] = Field((256,), description="Layers after the concatenation, before the heads.")
    dropout: float = Field(0.2, ge=0, lt=1)


class BlockModel(nn.Module):
    """One Linear+ReLU per block -> concat -> MLP -> (n, D) logits. Inputs: dict block -> tensor."""

    def __init__(self, block_dims: dict[str, int], n_bins: int, n_descriptors: int, settings: Arch3Settings) -> None:
        super().__init__()
        self.blocks = [b for b in settings.blocks if block_dims.get(b, 0) > 0]
        self.block_layers = nn.ModuleDict({b: nn.Linear(block_dims[b], settings.block_hidden) for b in self.blocks})
        width = settings.block_hidden * len(self.blocks)
        self.include_spectrum = settings.include_spectrum
        if settings.include_spectrum:
            self.spec_w = nn.Parameter(uniform_init_(torch.empty(n_bins, settings.spectrum_hidden), n_bins))
            self.spec_b = nn.Parameter(torch.zeros(settings.spectrum_hidden))
            width += settings.spectrum_hidden
        if width == 0:
            raise ValueError("arch3 has no input: no feature block present and include_spectrum is false")
        self.drop = nn.Dropout(settings.dropout)
        self.body = mlp([width, *settings.hidden], settings.dropout) if settings.hidden else nn.Identity()
        self.head = nn.Linear(settings.hidden[-1] if settings.hidden else width, n_descriptors)

    def forward(self, spectrum: torch.Tensor, blocks: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [torch.relu(self.block_layers[b](blocks[b])) for b in self.blocks]
        if self.include_spectrum:
            parts.append(torch.relu(spectrum_matmul(spectrum, self.spec_w) + self.spec_b))
        return self.head(self.body(self.drop(torch.cat(parts, dim=-1))))
