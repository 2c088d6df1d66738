"""arch1 (DeepEI): one independent MLP per descriptor, all trained at once as a batch of networks.

The weights of layer ``l`` are one parameter of shape ``[n_descriptors, in, out]`` (the first
layer ``[in, n_descriptors, out]`` so a sparse spectrum batch multiplies all networks in one
``sparse.mm``); network ``d`` only ever reads slice ``d``, so no weight is shared and descriptor
``d``'s loss has zero gradient on every other network.
"""
from __future__ import annotations

from typing import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from speclake.training.models.layers import spectrum_matmul, uniform_init_


class Arch1Settings(BaseModel):
    """Sizes of each per-descriptor network (DeepEI: 2000-1000-500)."""

    model_config = ConfigDict(extra="forbid")

    hidden: tuple[int, ...] = Field((2000, 1000, 500), min_length=1, description="Hidden sizes of every per-descriptor MLP. Parameters grow as "
                                   "n_descriptors x (n_bins x hidden[0] + ...): the DeepEI sizes with a few hundred "
                                   "descriptors are ~1e9 weights, so use smaller sizes on a CPU.")
    dropout: float = Field(0.2, ge=0, lt=1)
    sparse_input: bool = Field(True, description="Feed binned spectra as sparse tensors to the first layer.")


class IndependentMLPs(nn.Module):
    """``n_nets`` MLPs ``in -> hidden... -> 1`` with no shared parameter; output (n, n_nets) logits."""

    def __init__(self, n_in: int, n_nets: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.n_in, self.n_nets = n_in, n_nets
        h0 = hidden[0]
        self.w0 = nn.Parameter(uniform_init_(torch.empty(n_in, n_nets, h0), n_in))
        self.b0 = nn.Parameter(torch.zeros(n_nets, 1, h0))
        sizes = [*hidden, 1]
        self.ws = nn.ParameterList(
            [nn.Parameter(uniform_init_(torch.empty(n_nets, a, b), a)) for a, b in zip(sizes[:-1], sizes[1:])])
        self.bs = nn.ParameterList([nn.Parameter(torch.zeros(n_nets, 1, b)) for b in sizes[1:]])
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        h0 = self.w0.shape[-1]
        first = spectrum_matmul(x, self.w0.reshape(self.n_in, self.n_nets * h0))  # (n, nets*h0)
        h = first.reshape(n, self.n_nets, h0).transpose(0, 1) + self.b0            # (nets, n, h0)
        h = self.dropout(torch.relu(h))
        for i, (w, b) in enumerate(zip(self.ws, self.bs)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.ws) - 1:
                h = self.dropout(torch.relu(h))
        return h.squeeze(-1).transpose(0, 1)  # (n, nets)

    def network_parameters(self, d: int) -> list[torch.Tensor]:
        """Views of the parameters of network ``d`` (for inspection and tests)."""
        return [self.w0[:, d], self.b0[d], *[w[d] for w in self.ws], *[b[d] for b in self.bs]]


def build(settings: Arch1Settings, n_in: int, n_descriptors: int) -> IndependentMLPs:
    return IndependentMLPs(n_in, n_descriptors, settings.hidden, settings.dropout)
