"""Per-peak attributions of a descriptor model's prediction: integrated gradients in plain torch.

:func:`integrated_gradients` integrates the gradient of a scalar function along the straight
path from a baseline (default: the empty spectrum) to the input, with a midpoint Riemann sum of
``steps`` points; the attributions sum to f(x) - f(baseline) up to the returned ``delta``
(exact for a linear f: attribution = (x - baseline) * w). :func:`peak_attributions` maps the
per-bin attributions back to peaks: a bin's value comes from its strongest peak
(:func:`speclake.training.encoding.bin_indices`), so that peak receives the bin's attribution
and the other peaks of the bin 0. :func:`explain` does this for one spectrum of the lake and one
descriptor of a registered model (the descriptor's logit is explained); :func:`plot_attribution`
draws the spectrum as sticks coloured by attribution.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .encoding import BinSettings, bin_spectrum
from .eval_report import save_figure

log = logging.getLogger(__name__)


def integrated_gradients(f: Callable[[Any], Any], x: Any, baseline: Any | None = None, *, steps: int = 64,
                         batch: int = 64) -> tuple[Any, float]:
    """(attributions shaped like ``x``, completeness delta) of scalar-per-row ``f`` at the 1-D input ``x``.

    ``f`` maps an (m, n_in) tensor to (m,) outputs. delta = sum(attr) - (f(x) - f(baseline)).
    """
    import torch

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    x = torch.as_tensor(x, dtype=torch.float32).detach()
    if x.ndim != 1:
        raise ValueError(f"integrated_gradients explains one input vector, got shape {tuple(x.shape)}")
    base = torch.zeros_like(x) if baseline is None else torch.as_tensor(baseline, dtype=torch.float32).detach()
    if base.shape != x.shape:
        raise ValueError(f"baseline {tuple(base.shape)} and input {tuple(x.shape)} differ in shape")
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    grads = torch.zeros_like(x)
    for lo in range(0, steps, batch):
        a = alphas[lo:lo + batch, None]
        path = (base[None, :] + a * (x - base)[None, :]).requires_grad_(True)
        out = f(path)
        if out.shape != (len(a),):
            raise ValueError(f"f must return one value per row, got shape {tuple(out.shape)}")
        (g,) = torch.autograd.grad(out.sum(), path)
        grads += g.sum(dim=0)
    attr = (x - base) * grads / steps
    with torch.no_grad():
        ends = f(torch.stack([x, base]))
    delta = float(attr.sum() - (ends[0] - ends[1]))
    return attr.detach(), delta


def peak_attributions(mz: np.ndarray, intensities: np.ndarray, bins: BinSettings,
                      bin_attr: np.ndarray) -> np.ndarray:
    """Attribution of each peak: its bin's attribution if it is the bin's strongest peak, else 0."""
    mz_a = np.asarray(mz, dtype=np.float64)
    it = np.asarray(intensities, dtype=np.float64)
    attr = np.asarray(bin_attr, dtype=np.float64)
    if attr.shape != (bins.n_bins,):
        raise ValueError(f"bin attributions have shape {attr.shape}, expected ({bins.n_bins},)")
    out = np.zeros(len(mz_a))
    inside = (mz_a >= bins.min_mz) & (mz_a < bins.max_mz) & (it > 0) & np.isfinite(mz_a)
    idx = np.minimum(((mz_a - bins.min_mz) / bins.bin_width).astype(np.int64), bins.n_bins - 1)
    owner: dict[int, int] = {}
    for p in np.flatnonzero(inside):
        b = int(idx[p])
        if b not in owner or it[p] > it[owner[b]]:
            owner[b] = int(p)
    for b, p in owner.items():
        out[p] = attr[b]
    return out


@dataclass
class Explanation:
    """Integrated gradients of one descriptor's logit for one spectrum."""

    spectrum_id: str
    model_id: str
    descriptor: str
    probability: float
    logit: float
    baseline_logit: float
    mz: np.ndarray
    intensities: np.ndarray
    attributions: np.ndarray      # per peak
    delta: float                  # completeness error

    def top_peaks(self, n: int = 10) -> list[tuple[float, float, float]]:
        """(m/z, intensity, attribution) of the ``n`` peaks with the largest absolute attribution."""
        order = np.argsort(-np.abs(self.attributions), kind="stable")[:n]
        return [(float(self.mz[i]), float(self.intensities[i]), float(self.attributions[i])) for i in order]


def _logit_function(model: Any, example: dict[str, Any], j: int) -> Callable[[Any], Any]:
    """Binned spectra (m, n_bins) -> logit of descriptor ``j`` for a registered descriptor model."""
    import torch

    if model.arch == "arch3":
        from .tasks import block_tensors

        blocks = block_tensors({k: [v] for k, v in example.items()}, model.context, model.device)

        def f(x: torch.Tensor) -> torch.Tensor:
            rep = {k: v.expand(x.shape[0], *v.shape[1:]) for k, v in blocks.items()}
            return model.module(x, rep)[:, j]
        return f

    def g(x: torch.Tensor) -> torch.Tensor:
        return model.module(x)[:, j]
    return g


def explain_example(model: Any, example: dict[str, Any], descriptor: str, *, steps: int = 64) -> Explanation:
    """Integrated gradients for ``descriptor`` of a loaded descriptor model on one example row (mz, intensities...)."""
    import torch

    if model.arch not in ("arch1", "arch2", "arch2-flat", "arch3"):
        raise ValueError(f"model {model.model_id} ({model.arch}) predicts no descriptors; explain needs arch1-3")
    if descriptor not in model.descriptor_names:
        fam = descriptor.partition(":")[0]
        close = [n for n in model.descriptor_names if n.startswith(fam + ":")][:8]
        raise ValueError(f"model {model.model_id} does not predict {descriptor!r}; e.g. {', '.join(close) or 'none'}")
    bins = model.context.bin_settings
    x = torch.from_numpy(bin_spectrum(example["mz"], example["intensities"], bins))
    f = _logit_function(model, example, model.descriptor_names.index(descriptor))
    attr, delta = integrated_gradients(f, x, steps=steps)
    with torch.no_grad():
        ends = f(torch.stack([x, torch.zeros_like(x)]))
    logit = float(ends[0])
    return Explanation(str(example.get("spectrum_id", "")), model.model_id, descriptor,
                       float(1 / (1 + np.exp(-logit))), logit, float(ends[1]),
                       np.asarray(example["mz"], np.float64), np.asarray(example["intensities"], np.float64),
                       peak_attributions(example["mz"], example["intensities"], bins, attr.numpy()), delta)


def explain(lake_dir: str | os.PathLike[str], spectrum_id: str, model_id: str, descriptor: str, *,
            steps: int = 64) -> Explanation:
    """Integrated gradients for ``descriptor`` of registered model ``model_id`` on lake spectrum ``spectrum_id``."""
    from .registry import load_model

    return explain_example(load_model(lake_dir, model_id), _example(lake_dir, spectrum_id), descriptor, steps=steps)


def _example(lake_dir: str | os.PathLike[str], spectrum_id: str) -> dict[str, Any]:
    """One spectrum's example row: peaks, metadata and its spectrum_features blocks (latest settings)."""
    from speclake.lake import sql

    con = sql.connect(lake_dir, threads=2)
    try:
        spec = con.sql("SELECT spectrum_id, ionmode, precursor_mz, adduct, mz, intensities FROM spectra "
                       "WHERE spectrum_id = $id", params={"id": spectrum_id}).to_arrow_table().to_pylist()
        if not spec:
            raise ValueError(f"no spectrum {spectrum_id!r} in {lake_dir}")
        row = spec[0]
        feats = con.sql("SELECT * FROM spectrum_features WHERE spectrum_id = $id ORDER BY features_run_id DESC "
                        "LIMIT 1", params={"id": spectrum_id}).to_arrow_table().to_pylist()
    finally:
        con.close()
    if feats:
        row.update({k: v for k, v in feats[0].items() if k not in row})
    return row


def plot_attribution(expl: Explanation, path: str | os.PathLike[str]) -> Path:
    """PNG: the spectrum as sticks coloured by attribution (red: for the descriptor, blue: against)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    vmax = float(np.max(np.abs(expl.attributions))) if len(expl.attributions) else 0.0
    vmax = vmax if vmax > 0 else 1.0
    norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax)
    cmap = plt.get_cmap("RdBu_r")
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.vlines(expl.mz, 0, expl.intensities, colors=cmap(norm(expl.attributions)), linewidth=1.6)
    for mz, inten, a in expl.top_peaks(5):
        if a != 0:
            ax.annotate(f"{mz:.3f}", (mz, inten), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="integrated gradients (logit)")
    ax.set_xlabel("m/z")
    ax.set_ylabel("relative intensity")
    ax.set_ylim(0, max(1.05, float(np.max(expl.intensities, initial=0)) * 1.1))
    ax.set_title(f"{expl.spectrum_id}: {expl.descriptor} p={expl.probability:.3f} ({expl.model_id})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
