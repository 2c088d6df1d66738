"""Figures of a trained de novo model, measured at training time on structures and spectra it did not fit.

* reconstruction accuracy: holdout structures decoded (argmax) from their latent mean, same canonical SMILES;
* validity / uniqueness / novelty of ``n`` molecules decoded from prior draws z ~ N(0, I):
  valid = non-empty decode, unique among valid, novel = not in the VAE's training set;
* smoothness: mean Tanimoto of each holdout structure to decodes of its latent mean plus noise of SD
  0.1 / 0.5 / 1.0, and of consecutive decodes along a 10-step line between two holdout structures;
* mapper: validation-split spectra's latent mean squared error and R^2 against the VAE's own latent of
  their structure, and the residual SD per latent dimension (spectrum-mode sampling spread).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .chem import tanimoto
from .sample import DenovoModel


def _mean(values: Sequence[float | None]) -> float:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def reconstruction_accuracy(model: DenovoModel, smiles: Sequence[str]) -> float:
    """Share of ``smiles`` decoded back to the same canonical SMILES from their latent mean."""
    if not smiles:
        return float("nan")
    mu = model.encode(smiles)
    ok = ~np.isnan(mu).any(1)
    decoded = model.decode(mu[ok]) if ok.any() else []
    hits = sum(d == s for d, s in zip(decoded, [s for s, k in zip(smiles, ok) if k]))
    return hits / len(smiles)


def prior_figures(model: DenovoModel, n: int, train: set[str], seed: int) -> dict[str, float]:
    """Validity, uniqueness and novelty of ``n`` decodes of prior draws."""
    z = np.random.default_rng(seed).standard_normal((n, model.settings.vae.latent)).astype(np.float32)
    decoded = model.decode(z)
    valid = [s for s in decoded if s]
    unique = set(valid)
    return {"validity": len(valid) / n, "uniqueness": len(unique) / max(len(valid), 1),
            "novelty": len(unique - train) / max(len(unique), 1)}


def smoothness(model: DenovoModel, smiles: Sequence[str], seed: int, noise: Sequence[float] = (0.1, 0.5, 1.0)
               ) -> dict[str, float]:
    """Tanimoto to the source under latent noise, and between consecutive decodes of an interpolation."""
    rng = np.random.default_rng(seed)
    mu = model.encode(smiles)
    ok = ~np.isnan(mu).any(1)
    mu, smiles = mu[ok], [s for s, k in zip(smiles, ok) if k]
    out: dict[str, float] = {}
    for sd in noise:
        z = mu + rng.standard_normal(mu.shape).astype(np.float32) * sd
        out[f"noise{sd:g}_tanimoto"] = _mean([tanimoto(s, d) if d else 0.0 for s, d in zip(smiles, model.decode(z))])
    steps = []
    for i in range(0, len(mu) - 1, 2)[:20]:
        line = np.linspace(0, 1, 10, dtype=np.float32)[:, None]
        path = [d for d in model.decode(mu[i] * (1 - line) + mu[i + 1] * line) if d]
        steps += [tanimoto(a, b) for a, b in zip(path, path[1:])]
    out["interpolation_step_tanimoto"] = _mean(steps)
    return out


def vae_figures(model: DenovoModel, holdout: Sequence[str], train: set[str], n: int, seed: int) -> dict[str, float]:
    """Every VAE figure of the module docstring (holdout capped at ``n`` structures)."""
    sample = list(holdout[:n])
    figures = {"reconstruction_accuracy": reconstruction_accuracy(model, sample), "holdout_structures": len(sample)}
    figures.update(prior_figures(model, n, train, seed))
    figures.update(smoothness(model, sample[:200], seed))
    return figures


def mapper_figures(model: DenovoModel, x_val: np.ndarray, tokens_val: np.ndarray, x_train: np.ndarray,
                   tokens_train: np.ndarray) -> dict[str, Any]:
    """Validation MSE and R^2 of the mapper, and its residual SD per dimension (training spectra when no
    validation spectrum can be spelled)."""
    import torch

    use_val = len(x_val) > 1
    x, toks = (x_val, tokens_val) if use_val else (x_train, tokens_train)
    if not len(x):
        return {"figures": {"mapper_spectra": 0}, "residual_sd": np.ones(model.settings.vae.latent, np.float32)}
    with torch.no_grad():
        target = model.vae.encode(torch.from_numpy(toks))[0].numpy()
    resid = model.predict(x) - target
    mse = float(np.mean(np.square(resid)))
    var = float(np.mean(np.square(target - target.mean(0))))
    return {"figures": {"mapper_mse": mse, "mapper_r2": 1 - mse / var if var > 0 else float("nan"),
                        "mapper_spectra": int(len(x)), "mapper_on_validation": float(use_val)},
            "residual_sd": np.maximum(resid.std(0), 1e-3).astype(np.float32)}


__all__ = ["mapper_figures", "prior_figures", "reconstruction_accuracy", "smoothness", "vae_figures"]
