"""Building blocks shared by the architectures (device-agnostic PyTorch)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def mlp(sizes: Sequence[int], dropout: float = 0.0, last_activation: bool = True) -> nn.Sequential:
    """Linear-ReLU-Dropout stack through ``sizes`` (the last layer without activation unless asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def spectrum_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` for a dense or sparse (COO/CSR) batch of binned spectra."""
    if x.is_sparse or x.layout == torch.sparse_csr:
        return torch.sparse.mm(x, weight)
    return x @ weight


def uniform_init_(param: torch.Tensor, fan_in: int) -> torch.Tensor:
    """PyTorch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(max(fan_in, 1))
    with torch.no_grad():
        return param.uniform_(-bound, bound)


class SpectrumEncoder(nn.Module):
    """Binned spectrum -> L2-normalised embedding (MLP; first layer accepts sparse input)."""

    def __init__(self, n_in: int, hidden: Sequence[int], dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        first = hidden[0] if hidden else dim
        self.w0 = nn.Parameter(uniform_init_(torch.empty(n_in, first), n_in))
        self.b0 = nn.Parameter(torch.zeros(first))
        rest = [first, *hidden[1:], dim] if hidden else [first]
        self.rest = mlp(rest, dropout, last_activation=False) if len(rest) > 1 else nn.Identity()
        self.act = nn.Sequential(nn.ReLU(), nn.Dropout(dropout)) if hidden else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(spectrum_matmul(x, self.w0) + self.b0)
        return nn.functional.normalize(self.rest(h), dim=-1)
