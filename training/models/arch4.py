"""arch4 (MS2DeepScore, GLEAMS): Siamese spectrum encoder trained so embedding distance = structural distance.

Loss ``(d_embedding - (1 - Tanimoto))^2`` with ``d_embedding = 1 - cos(e_i, e_j)`` over spectrum
pairs sampled evenly across Tanimoto bins (Morgan fingerprints of the ``descriptors`` table).
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from speclake.training.models.layers import SpectrumEncoder


class Arch4Settings(BaseModel):
    """Encoder sizes and pair sampling of arch4."""

    model_config = ConfigDict(extra="forbid")

    hidden: tuple[int, ...] = Field((512, 512), description="Hidden sizes of the spectrum encoder.")
    embedding_dim: int = Field(200, ge=2)
    dropout: float = Field(0.1, ge=0, lt=1)
    tanimoto_bins: int = Field(10, ge=1, description="Pairs are sampled evenly over this many Tanimoto bins.")
    pairs_per_bin: int = Field(32, ge=1, description="Pairs per Tanimoto bin and batch.")


class SiameseEncoder(nn.Module):
    """One encoder applied to both sides of every pair."""

    def __init__(self, n_in: int, settings: Arch4Settings) -> None:
        super().__init__()
        self.encoder = SpectrumEncoder(n_in, settings.hidden, settings.embedding_dim, settings.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def pair_loss(emb: torch.Tensor, left: torch.Tensor, right: torch.Tensor, tanimoto: torch.Tensor) -> torch.Tensor:
    """Mean of ``(1 - cos(e_l, e_r) - (1 - tanimoto))^2`` over the pairs."""
    d_emb = 1.0 - (emb[left] * emb[right]).sum(-1)
    return ((d_emb - (1.0 - tanimoto)) ** 2).mean()
