"""Per-peak attributions of a model's support for an annotation's candidate structure.

A fitted ranker may use registered descriptor models as evidence (fusion features ``model:<id>``,
:class:`speclake.serving.annotate.evidence.ModelScorer`): the model predicts descriptor probabilities
p(x) from the binned spectrum x, and the candidate's evidence is the log-likelihood of its
descriptors y, sum_j [y_j log p_j + (1 - y_j) log(1 - p_j)] (clipped as the scorer clips). The report
explains that number with integrated gradients against the empty spectrum
(:func:`speclake.training.attribution.integrated_gradients`), mapped back to peaks (a bin's
attribution goes to its strongest peak): a positive attribution is a peak that makes the model
support this structure. Attributions sum to LL(spectrum) - LL(empty spectrum) up to ``delta``.

Only descriptor models with a plain spectrum input (arch1, arch2, arch2-flat) are explained; the
ranker ``library+prior`` and rankers without models give no attributions (the report says so).
"""
from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Architectures whose candidate evidence is explained (spectrum-only descriptor models).
EXPLAINED_ARCHS = ("arch1", "arch2", "arch2-flat")


@dataclass(frozen=True)
class PeakAttribution:
    """Attributions of one candidate's model evidence to the query peaks."""

    model_id: str
    mz: np.ndarray
    attributions: np.ndarray   # per peak, same order as mz
    value: float               # the evidence (log-likelihood) of the candidate for this spectrum
    baseline: float            # ... for the empty spectrum
    delta: float               # completeness error: sum(attributions) - (value - baseline)

    def top(self, n: int = 5) -> list[tuple[float, float]]:
        """(m/z, attribution) of the ``n`` peaks with the largest absolute attribution."""
        order = np.argsort(-np.abs(self.attributions), kind="stable")[:n]
        return [(float(self.mz[i]), float(self.attributions[i])) for i in order if self.attributions[i] != 0]


def ranker_models(lake: str | os.PathLike[str], method: str | None) -> list[str]:
    """Model ids a fitted ranker uses as evidence (its ``model:<id>`` fusion features); [] for the
    ``library+prior`` fallback, a ranker without models, or a ranker no longer in the lake."""
    from speclake.serving.annotate.rankers import rankers_root

    if not method:
        return []
    weights = rankers_root(lake) / method / "weights.json"
    if not weights.is_file():
        return []
    features = json.loads(weights.read_text()).get("features", [])
    return [f.partition(":")[2] for f in features if str(f).startswith("model:")]


def candidate_descriptors(smiles: str, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
    """(0/1 descriptor vector of ``smiles`` over ``names``, mask of structure-computable names), or None
    when the SMILES does not parse; computed as the annotation's model evidence computes them."""
    from speclake.pipelines.features.descriptors import DescriptorSettings
    from speclake.training.eval_data import structure_rows
    from speclake.training.scoring import descriptor_matrix

    rows = structure_rows([smiles], DescriptorSettings(), processes=1)
    if not rows or not any(rows[0].get(k) for k in ("morgan_on", "maccs_on", "substructure_on")):
        return None
    mat, mask = descriptor_matrix(rows, list(names))
    return np.asarray(mat[0], np.float64), np.asarray(mask, bool)


def explain_candidate(model: Any, mz: Sequence[float], intensities: Sequence[float], descriptors: np.ndarray,
                      mask: np.ndarray, *, steps: int = 16, clip: float = 1e-3) -> PeakAttribution:
    """Integrated gradients of the candidate's descriptor log-likelihood under ``model`` (a loaded
    descriptor model: ``module``, ``context.bin_settings``, ``descriptor_names``, ``model_id``)."""
    import torch

    from speclake.training.attribution import integrated_gradients, peak_attributions
    from speclake.training.encoding import bin_spectrum

    if getattr(model, "arch", None) not in EXPLAINED_ARCHS:
        raise ValueError(f"model {model.model_id} ({model.arch}) is not explained; supported: "
                         f"{', '.join(EXPLAINED_ARCHS)}")
    if not 0 < clip < 0.5:
        raise ValueError(f"clip must be in (0, 0.5), got {clip}")
    y = torch.as_tensor(descriptors, dtype=torch.float32)
    w = torch.as_tensor(mask, dtype=torch.float32)
    if y.shape != (len(model.descriptor_names),) or w.shape != y.shape:
        raise ValueError(f"descriptors {tuple(y.shape)} do not match the model's {len(model.descriptor_names)}")

    def loglik(x: torch.Tensor) -> torch.Tensor:
        p = torch.sigmoid(model.module(x)).clamp(clip, 1 - clip)
        return ((y * torch.log(p) + (1 - y) * torch.log1p(-p)) * w).sum(dim=1)

    bins = model.context.bin_settings
    mz_a, it_a = np.asarray(mz, np.float64), np.asarray(intensities, np.float64)
    x = torch.from_numpy(bin_spectrum(mz_a, it_a, bins))
    was_training, threads = model.module.training, torch.get_num_threads()
    model.module.eval()
    torch.set_num_threads(1)  # tiny batches: one thread is ~5x faster than several on a busy machine
    try:
        attr, delta = integrated_gradients(loglik, x, steps=steps)
        with torch.no_grad():
            ends = loglik(torch.stack([x.float(), torch.zeros_like(x, dtype=torch.float32)]))
    finally:
        torch.set_num_threads(threads)
        model.module.train(was_training)
    return PeakAttribution(model.model_id, mz_a, peak_attributions(mz_a, it_a, bins, attr.numpy()),
                           float(ends[0]), float(ends[1]), float(delta))


@functools.lru_cache(maxsize=2)
def _load(lake: str, model_id: str, stamp: int) -> Any:
    """A registered model, loaded once per (lake, id, model file time): a server renders many reports."""
    from speclake.training.registry import load_model

    return load_model(lake, model_id)


def load_explainable(lake: str | os.PathLike[str], model_id: str) -> Any | None:
    """The registered model ``model_id`` if it is an explained architecture (checked before loading), else None."""
    from speclake.training.registry import list_models, model_dir

    arch = next((m.get("arch") for m in list_models(lake) if m.get("model_id") == model_id), None)
    if arch not in EXPLAINED_ARCHS:
        return None
    weights = model_dir(lake, model_id) / "model.pt"
    return _load(str(Path(lake).resolve()), model_id, weights.stat().st_mtime_ns)


class Attributor:
    """Attributions for the annotations of one ranker: the first explainable model it uses, loaded once."""

    def __init__(self, lake: str | os.PathLike[str], method: str | None, *, steps: int = 16) -> None:
        self.steps = steps
        self.model: Any = None
        self.note = (f"none available: the ranker {method or '(none)'} uses no model, so no model gave "
                     "per-peak attributions (`speclake explain` computes them for a descriptor model)")
        ids = ranker_models(lake, method)
        if not ids:
            return
        for model_id in ids:
            try:
                model = load_explainable(lake, model_id)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("model %s of ranker %s not loaded for attributions: %s", model_id, method, exc)
                continue
            if model is not None:
                self.model = model
                return
        self.note = (f"none available: the models of ranker {method} ({', '.join(ids)}) are not spectrum-only "
                     f"descriptor models ({', '.join(EXPLAINED_ARCHS)})")

    def explain(self, mz: Sequence[float], intensities: Sequence[float], smiles: str | None,
                ) -> tuple[PeakAttribution | None, str]:
        """(attributions, note) for a candidate; None with the reason when there are none."""
        if self.model is None:
            return None, self.note
        if not smiles:
            return None, "none: the annotation has no candidate structure"
        found = candidate_descriptors(smiles, self.model.descriptor_names)
        if found is None:
            return None, f"none: no descriptors for SMILES {smiles}"
        result = explain_candidate(self.model, mz, intensities, *found, steps=self.steps)
        return result, (f"model {result.model_id}: integrated gradients of the candidate's descriptor "
                        f"log-likelihood ({result.value:.2f}; empty spectrum {result.baseline:.2f}, "
                        f"completeness delta {result.delta:.1e})")


__all__ = ["Attributor", "EXPLAINED_ARCHS", "PeakAttribution", "candidate_descriptors", "explain_candidate",
           "load_explainable", "ranker_models"]
