"""arch5 (ADAPTIVE, JESTR): spectrum encoder g and graph encoder f in one space, triplet loss.

Anchor: a spectrum; positive: its structure; negatives: hard candidates of the same formula
(isobaric) from the training compounds, else the nearest by mass, plus the other structures of the
batch; the hardest negative (by current embedding) enters ``max(0, d(a, p) - d(a, n) + margin)``.
"""
from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from speclake.training.models.graph import GraphEncoder
from speclake.training.models.layers import SpectrumEncoder


class Arch5Settings(BaseModel):
    """Encoders and triplet loss of arch5."""

    model_config = ConfigDict(extra="forbid")

    spectrum_hidden: tuple[int, ...] = Field((512,), description="Hidden sizes of the spectrum encoder g.")
    graph_hidden: int = Field(128, ge=4, description="Atom state width of the graph encoder f.")
    mp_layers: int = Field(3, ge=1, description="Message-passing steps.")
    embedding_dim: int = Field(128, ge=2)
    dropout: float = Field(0.1, ge=0, lt=1)
    margin: float = Field(0.2, gt=0)
    contrastive_weight: float = Field(
        1.0, ge=0, description="Weight of an InfoNCE term over the same negatives (0: triplet loss alone). The "
                               "hardest-negative triplet loss alone collapses on CPU-sized runs (every embedding "
                               "equal, loss = margin, no gradient); the contrastive term keeps a gradient there.")
    temperature: float = Field(0.1, gt=0, description="Temperature of the InfoNCE term.")
    hard_negatives: int = Field(4, ge=0, description="Same-formula / nearest-mass negatives per anchor.")


class JointEmbedding(nn.Module):
    """``forward(spectra, graphs)`` -> (spectrum embeddings, structure embeddings), both L2-normalised."""

    def __init__(self, n_in: int, settings: Arch5Settings) -> None:
        super().__init__()
        self.spectrum = SpectrumEncoder(n_in, settings.spectrum_hidden, settings.embedding_dim, settings.dropout)
        self.structure = GraphEncoder(settings.graph_hidden, settings.mp_layers, settings.embedding_dim)

    def forward(self, spectra: torch.Tensor | None, graphs: dict[str, torch.Tensor] | None
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        s = self.spectrum(spectra) if spectra is not None else None
        g = None
        if graphs is not None:
            g = self.structure(graphs["atoms"], graphs["edges"], graphs["bonds"], graphs["graph_of"],
                               int(graphs["n_graphs"]))
        return s, g


def triplet_loss(anchor: torch.Tensor, structures: torch.Tensor, positive: torch.Tensor,
                 negative_mask: torch.Tensor, margin: float, *, contrastive_weight: float = 0.0,
                 temperature: float = 0.1) -> torch.Tensor:
    """Hardest-negative triplet loss in cosine distance, plus (``contrastive_weight`` > 0) an InfoNCE term
    over the positive and the same negatives.

    ``structures`` (m, d) holds every structure of the step; ``positive`` (n,) the index of each
    anchor's structure; ``negative_mask`` (n, m) which structures may serve as its negatives.
    """
    sim = anchor @ structures.T                                         # (n, m)
    dist = 1.0 - sim
    d_pos = dist.gather(1, positive[:, None]).squeeze(1)
    d_neg = dist.masked_fill(~negative_mask, float("inf")).min(dim=1).values
    ok = torch.isfinite(d_neg)
    if not ok.any():
        return (d_pos * 0).sum()
    loss = torch.relu(d_pos[ok] - d_neg[ok] + margin).mean()
    if contrastive_weight > 0:
        allowed = negative_mask.clone()
        allowed[torch.arange(len(positive), device=positive.device), positive] = True
        logits = (sim / temperature).masked_fill(~allowed, float("-inf"))
        loss = loss + contrastive_weight * nn.functional.cross_entropy(logits[ok], positive[ok])
    return loss
