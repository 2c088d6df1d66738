"""The de novo networks: a GRU VAE over SELFIES tokens and an MLP from a binned spectrum to its latent.

:class:`SelfiesVAE` encodes a token sequence with a bidirectional GRU into a Gaussian (``mu``,
``logvar``) of ``latent`` dimensions and decodes with a GRU that sees the latent at every step
(teacher forcing in training, sampling or argmax in :meth:`SelfiesVAE.generate`).
:class:`SpectrumToLatent` regresses the VAE's ``mu`` of a spectrum's structure from the spectrum.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn import functional as F


class VaeSettings(BaseModel):
    """Sizes of the two networks (saved with the model)."""

    model_config = ConfigDict(extra="forbid")

    embedding: int = Field(64, ge=4)
    hidden: int = Field(256, ge=8, description="GRU units of encoder (per direction) and decoder.")
    latent: int = Field(64, ge=2)
    max_len: int = Field(72, ge=8, description="Most SELFIES tokens of a structure; longer ones are left out.")
    mapper_hidden: list[int] = Field(default_factory=lambda: [512, 256])
    dropout: float = Field(0.1, ge=0, lt=1)


class SelfiesVAE(nn.Module):
    """Token ids (batch, max_len + 2: ``<bos> ... <eos> <pad>``) <-> latent vectors."""

    def __init__(self, vocab_size: int, settings: VaeSettings) -> None:
        super().__init__()
        s = settings
        self.settings = s
        self.embed = nn.Embedding(vocab_size, s.embedding, padding_idx=0)
        self.encoder = nn.GRU(s.embedding, s.hidden, batch_first=True, bidirectional=True)
        self.to_mu = nn.Linear(2 * s.hidden, s.latent)
        self.to_logvar = nn.Linear(2 * s.hidden, s.latent)
        self.to_h0 = nn.Linear(s.latent, s.hidden)
        self.decoder = nn.GRU(s.embedding + s.latent, s.hidden, batch_first=True)
        self.out = nn.Linear(s.hidden, vocab_size)

    def encode(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of each sequence (the start token is skipped, padding is packed away)."""
        x = ids[:, 1:]
        lengths = (x != 0).sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), lengths, batch_first=True, enforce_sorted=False)
        _, h = self.encoder(packed)
        h = torch.cat([h[0], h[1]], dim=1)
        return self.to_mu(h), self.to_logvar(h).clamp(-10, 6)

    def decode_logits(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-token logits (batch, max_len + 1, vocab) for inputs ``ids[:, :-1]``."""
        inp = ids[:, :-1]
        emb = torch.cat([self.embed(inp), z.unsqueeze(1).expand(-1, inp.shape[1], -1)], dim=2)
        out, _ = self.decoder(emb, torch.tanh(self.to_h0(z)).unsqueeze(0))
        return self.out(out)

    def forward(self, ids: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss (:meth:`loss`), so DDP sees a forward call."""
        return self.loss(ids, beta)

    def loss(self, ids: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
        """Reconstruction (token cross-entropy summed per molecule) + ``beta`` x KL, both batch means.

        Columns after the batch's longest sequence hold only padding and are cut first (a batch of short
        molecules then costs its own length, not ``max_len``)."""
        ids = ids[:, :max(int((ids != 0).sum(1).max()), 2)]
        mu, logvar = self.encode(ids)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        logits = self.decode_logits(z, ids)
        target = ids[:, 1:]
        rec = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=0,
                              reduction="sum") / ids.shape[0]
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()
        return rec + beta * kl, {"reconstruction": float(rec.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def generate(self, z: torch.Tensor, temperature: float = 0.0, generator: torch.Generator | None = None,
                 constraint: Any = None) -> torch.Tensor:
        """Token ids (batch, max_len + 1) decoded from ``z``: argmax at ``temperature`` 0, else sampled;
        ``constraint`` (a :class:`~.constrain.FormulaConstraint`) masks tokens that leave its formula."""
        n, steps = z.shape[0], self.settings.max_len + 1
        state = constraint.start(n) if constraint is not None else None
        h = torch.tanh(self.to_h0(z)).unsqueeze(0)
        tok = torch.ones(n, 1, dtype=torch.long, device=z.device)
        out = torch.zeros(n, steps, dtype=torch.long, device=z.device)
        done = torch.zeros(n, dtype=torch.bool, device=z.device)
        for t in range(steps):
            emb = torch.cat([self.embed(tok), z.unsqueeze(1)], dim=2)
            o, h = self.decoder(emb, h)
            logits = self.out(o[:, 0])
            logits[:, 0] = -float("inf")       # never padding
            logits[:, 1] = -float("inf")       # never the start token
            if constraint is not None:
                logits = logits.masked_fill(constraint.mask(state), -float("inf"))
            if temperature > 0:
                nxt = torch.multinomial(F.softmax(logits / temperature, dim=1), 1, generator=generator)[:, 0]
            else:
                nxt = logits.argmax(1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)
            if constraint is not None:
                constraint.update(state, nxt, ~done)
            out[:, t] = nxt
            done |= nxt == 2
            if bool(done.all()):
                break
            tok = nxt.unsqueeze(1)
        return out


class SpectrumToLatent(nn.Module):
    """Binned spectrum (+ ion mode, precursor m/z) -> the VAE latent mean of its structure."""

    def __init__(self, n_inputs: int, settings: VaeSettings) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_inputs
        for h in settings.mapper_hidden:
            layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(settings.dropout)]
            width = h
        layers.append(nn.Linear(width, settings.latent))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_networks(vocab_size: int, n_inputs: int, settings: VaeSettings | dict[str, Any]
                   ) -> tuple[SelfiesVAE, SpectrumToLatent]:
    """Both networks of one model, freshly initialised."""
    s = VaeSettings.model_validate(settings) if isinstance(settings, dict) else settings
    return SelfiesVAE(vocab_size, s), SpectrumToLatent(n_inputs, s)


__all__ = ["SelfiesVAE", "SpectrumToLatent", "VaeSettings", "build_networks"]
