"""Proposals from a trained de novo model: around a spectrum's latent point or around a parent's.

* spectrum mode: the mapper predicts the latent point of the spectrum's structure; latent points are
  drawn from N(prediction, (``scale`` x the mapper's residual SD)^2), one per dimension, measured on
  validation spectra at training;
* ``near`` mode: points are drawn from N(latent mean of the parent, ``radius``^2): proposals stay
  close to the parent (the benchmark reports their Tanimoto to it);
* each point is decoded greedily to a SELFIES string (always a valid molecule), canonicalised and
  de-duplicated; with a formula the decoder spells only its heavy atoms (:mod:`.constrain`) and only
  structures of exactly that formula are kept;
* ranking (``method='latent_likelihood'``): the log-density of a proposal's own latent mean under the
  spectrum's predicted Gaussian, so among proposals the one the spectrum points at most comes first.
  No fingerprint or fragmentation evidence is used here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .chem import formula_of, inchikey_of, same_formula
from .vocab import Vocab, canonical_smiles, encode_smiles

log = logging.getLogger(__name__)

METHOD = "latent_likelihood"


class SampleSettings(BaseModel):
    """How many latent points are drawn and how far from the centre."""

    model_config = ConfigDict(extra="forbid")

    n: int = Field(50, ge=1, description="Proposals kept per scan (top n after ranking).")
    draws: int = Field(1000, ge=1, description="Latent points decoded per scan (more when a formula filters).")
    scale: float = Field(1.0, gt=0, description="Spectrum mode: multiple of the mapper's residual SD.")
    radius: float = Field(0.5, gt=0, description="--near mode: SD of the latent noise around the parent.")
    temperature: float = Field(0.0, ge=0, description="Decoder sampling temperature (0: argmax).")
    constrained: bool = Field(True, description="With a formula, decode inside it (:mod:`.constrain`), not only filter.")
    batch: int = Field(500, ge=1)
    seed: int = 0


@dataclass
class Proposal:
    """One proposed structure."""

    smiles: str
    inchikey: str | None
    formula: str | None
    score: float


class DenovoModel:
    """A trained VAE and mapper, on CPU, ready to propose structures."""

    def __init__(self, model_id: str, vocab: Vocab, settings: Any, vae, mapper, residual_sd: np.ndarray,
                 n_inputs: int) -> None:
        self.model_id, self.vocab, self.settings = model_id, vocab, settings
        self.vae, self.mapper = vae.eval(), mapper.eval()
        self.residual_sd = np.asarray(residual_sd, np.float32)
        self.n_inputs = n_inputs

    @classmethod
    def from_state(cls, model_id: str, vocab: Vocab, settings: Any, state: dict[str, Any], n_inputs: int
                   ) -> "DenovoModel":
        from .model import build_networks

        vae, mapper = build_networks(len(vocab), n_inputs, settings.vae)
        vae.load_state_dict(state["vae"])
        mapper.load_state_dict(state["mapper"])
        sd = state.get("residual_sd")
        sd = np.ones(settings.vae.latent, np.float32) if sd is None else np.asarray(sd, np.float32)
        return cls(model_id, vocab, settings, vae, mapper, sd, n_inputs)

    # -- latent space ----------------------------------------------------------------------------
    def encode(self, smiles: Sequence[str]) -> np.ndarray:
        """(n, latent) latent means; rows of SMILES the vocabulary cannot spell are NaN."""
        import torch

        canon = [canonical_smiles(s) or "" for s in smiles]
        keep, toks = encode_smiles(canon, self.vocab)
        out = np.full((len(smiles), self.settings.vae.latent), np.nan, np.float32)
        if len(keep):
            with torch.no_grad():
                mu = [self.vae.encode(torch.from_numpy(toks[i:i + 512]))[0].numpy() for i in range(0, len(toks), 512)]
            out[keep] = np.concatenate(mu)
        return out

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """(n, latent) latent points predicted from mapper inputs (:func:`~.data.spectrum_inputs`)."""
        import torch

        if inputs.shape[1] != self.n_inputs:
            raise ValueError(f"model {self.model_id} takes {self.n_inputs} inputs per spectrum, got {inputs.shape[1]}")
        with torch.no_grad():
            return self.mapper(torch.from_numpy(np.asarray(inputs, np.float32))).numpy()

    def decode(self, z: np.ndarray, temperature: float = 0.0, seed: int = 0, formula: str | None = None
               ) -> list[str | None]:
        """Canonical SMILES decoded from latent points (None for an empty decode); with ``formula`` the decoder
        spells only that formula's heavy atoms (:class:`~.constrain.FormulaConstraint`)."""
        import torch

        from .constrain import FormulaConstraint

        gen = torch.Generator().manual_seed(seed)
        constraint = FormulaConstraint(self.vocab.tokens, formula) if formula else None
        ids = self.vae.generate(torch.from_numpy(np.asarray(z, np.float32)), temperature, gen, constraint).numpy()
        return [self.vocab.decode(row) for row in ids]

    # -- proposals -------------------------------------------------------------------------------
    def propose(self, center: np.ndarray, spread: np.ndarray | float, settings: SampleSettings, *,
                formula: str | None = None, target: np.ndarray | None = None,
                target_sd: np.ndarray | None = None, exclude: Sequence[str] = (),
                stats: dict[str, int] | None = None) -> list[Proposal]:
        """Up to ``settings.n`` distinct structures decoded around ``center`` (SD ``spread``), of ``formula``
        when given, ranked by log-density under N(``target``, ``target_sd``^2) (default: the centre and spread).

        ``stats`` (when given) is filled with the counts of the draws: ``draws``, ``valid`` (non-empty
        decodes), ``unique`` (distinct valid), ``formula_match`` (valid decodes of ``formula``)."""
        rng = np.random.default_rng(settings.seed)
        latent = len(center)
        spread = np.broadcast_to(np.asarray(spread, np.float32), (latent,))
        found: dict[str, None] = {}
        skip = {canonical_smiles(s) for s in exclude}
        counts = {"draws": settings.draws, "valid": 0, "formula_match": 0}
        valid: set[str] = set()
        for start in range(0, settings.draws, settings.batch):
            k = min(settings.batch, settings.draws - start)
            z = center[None, :] + rng.standard_normal((k, latent)).astype(np.float32) * spread[None, :]
            inside = formula if formula is not None and settings.constrained else None
            for s in self.decode(z, settings.temperature, settings.seed + start, inside):
                if not s:
                    continue
                counts["valid"] += 1
                valid.add(s)
                match = formula is None or same_formula(formula_of(s), formula)
                counts["formula_match"] += int(match)
                if match and s not in skip:
                    found.setdefault(s)
        if stats is not None:
            stats.update(counts, unique=len(valid))
        smiles = list(found)
        if not smiles:
            return []
        mu = self.encode(smiles)
        tgt = center if target is None else target
        sd = spread if target_sd is None else np.broadcast_to(np.asarray(target_sd, np.float32), (latent,))
        score = -0.5 * np.nansum(np.square((mu - tgt[None, :]) / np.maximum(sd, 1e-6)[None, :]), axis=1)
        score = np.where(np.isnan(mu).any(1), -np.inf, score)
        order = np.argsort(-score, kind="stable")[:settings.n]
        return [Proposal(smiles[i], inchikey_of(smiles[i]), formula_of(smiles[i]), float(score[i])) for i in order]


def latest_denovo(lake_dir: str | Path) -> str:
    """Id of the newest de novo model of a lake (ValueError naming the training command when there is none)."""
    from .train import denovo_root, list_denovo

    models = list_denovo(lake_dir)
    if not models:
        raise ValueError(f"no de novo model in {denovo_root(lake_dir)}: train one with `speclake denovo-train --lake DIR`")
    return models[-1]["model_id"]


def load_denovo(lake_dir: str | Path, model_id: str | None = None) -> DenovoModel:
    """A registered de novo model (the newest when ``model_id`` is None)."""
    import torch

    from .train import DenovoTrainSettings, denovo_root

    model_id = model_id or latest_denovo(lake_dir)
    path = denovo_root(lake_dir) / model_id
    if not (path / "model.json").exists():
        raise ValueError(f"no de novo model {model_id!r} under {denovo_root(lake_dir)}")
    settings = DenovoTrainSettings.model_validate(json.loads((path / "settings.json").read_text()))
    v = json.loads((path / "vocab.json").read_text())
    summary = json.loads((path / "model.json").read_text())
    state = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
    state["residual_sd"] = state["residual_sd"].numpy()
    return DenovoModel.from_state(model_id, Vocab(v["tokens"], v["max_len"]), settings, state, summary["n_inputs"])


__all__ = ["METHOD", "DenovoModel", "Proposal", "SampleSettings", "latest_denovo", "load_denovo"]
