"""The methods an evaluation scores: registered models, classical baselines fitted in the run,
library searches and the spectrum-free references (random ranking, library prior)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from speclake.lake.catalog import Lake

from speclake.lake.run import Progress
from .baselines import fit_baseline
from .encoding import DescriptorSpace
from .eval_data import progress_bar, take_subset
from .eval_settings import EvaluationSettings
from .split import SplitSettings

log = logging.getLogger(__name__)

DESCRIPTOR_ARCHS = ("arch1", "arch2", "arch2-flat", "arch3")
#: Library search method per similarity: (method name, model_id).
LIBRARY_METHODS: dict[str, tuple[str, str]] = {
    "modified_cosine": ("library_cosine", "library:modified_cosine"),
    "cosine": ("library_plain_cosine", "library:cosine"),
    "entropy": ("library_entropy", "library:entropy"),
}


@dataclass
class Method:
    """One scored method: identity, how it scores, its training statistics."""

    key: str
    model_id: str
    arch: str
    method: str
    kind: str                               # descriptor | analogue | joint | random | prior
    predictor: Any = None
    descriptor_names: list[str] = field(default_factory=list)
    weights: np.ndarray | None = None
    train_seconds: float | None = None
    train_spectra_per_s: float | None = None


#: Where a registered model's training statistics may sit in its ``metrics`` dict.
_STAT_KEYS = {"train_spectra_per_s": ("train_spectra_per_s", "spectra_per_s"),
              "train_seconds": ("train_seconds", "seconds")}


def _stat(model: Any, name: str) -> float | None:
    """A training statistic of a loaded model: attribute, entry of its ``metrics`` dict, or (train_seconds)
    training spectra over spectra/s summed over the epoch history."""
    v = getattr(model, name, None)
    metrics = getattr(model, "metrics", None)
    if v is None and isinstance(metrics, dict):
        v = next((metrics[k] for k in _STAT_KEYS.get(name, (name,)) if metrics.get(k) is not None), None)
        hist = metrics.get("history") or []
        if v is None and name == "train_seconds" and hist:
            try:
                v = sum(h["n_train"] / h["spectra_per_s"] for h in hist if h.get("spectra_per_s"))
            except (KeyError, TypeError):
                v = None
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def neural_methods(lake: Lake, model_ids: Sequence[str] | None, split: SplitSettings) -> list[Method]:
    """Registered models to evaluate (all when ``model_ids`` is None); a model on another split is refused."""
    try:
        from . import registry
    except ImportError as exc:
        if model_ids:
            raise ValueError(f"cannot load models {list(model_ids)}: {exc}") from exc
        log.info("no model registry available (%s): evaluating baselines only", exc)
        return []
    explicit = model_ids is not None
    if model_ids is None:
        model_ids = [_model_id(m) for m in registry.list_models(lake.root)]
    out = []
    for mid in model_ids:
        model = registry.load_model(lake.root, mid)
        msplit = getattr(model, "split", None)
        if msplit is not None and SplitSettings.model_validate(
                msplit.model_dump() if hasattr(msplit, "model_dump") else msplit) != split:
            msg = f"model {mid} was trained on split {msplit}, evaluation uses {split.model_dump()}"
            if explicit:
                raise ValueError(msg + ": its test structures would differ")
            log.warning("%s: skipped", msg)
            continue
        try:
            out.append(model_method(model))
        except ValueError as exc:
            if explicit:
                raise
            log.warning("%s: skipped", exc)
    return out


def model_method(model: Any) -> Method:
    """A :class:`Method` for a predictor with the registry API (``model_id``, ``arch``, predict/embed methods)."""
    arch = str(model.arch)
    kind = "descriptor" if arch in DESCRIPTOR_ARCHS else "joint" if arch == "arch5" else "analogue"
    if arch not in DESCRIPTOR_ARCHS + ("arch4", "arch5"):
        raise ValueError(f"model {model.model_id}: cannot evaluate architecture {arch!r}")
    return Method(str(model.model_id), str(model.model_id), arch, "model", kind, model,
                  list(getattr(model, "descriptor_names", []) or []),
                  train_seconds=_stat(model, "train_seconds"), train_spectra_per_s=_stat(model, "train_spectra_per_s"))


def _model_id(entry: Any) -> str:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return str(entry["model_id"])
    return str(entry.model_id)


def classical_methods(train: pa.Table, settings: EvaluationSettings, progress: Progress | None = None) -> list[Method]:
    """Fit the classical baselines on the training examples."""
    if not settings.baselines:
        return []
    train = take_subset(train, settings.max_baseline_train, settings.seed)
    rows = {}
    for r in train.select(["inchikey14", "morgan_on", "maccs_on", "substructure_on", "chemont_classes"]).to_pylist():
        rows.setdefault(r["inchikey14"], r)
    space = DescriptorSpace.fit(rows.values(), settings.descriptors)
    if len(space) == 0:
        log.warning("no descriptor frequent enough among %d training structures: no classical baselines", len(rows))
        return []
    targets = space.targets(train.select(["morgan_on", "maccs_on", "substructure_on", "chemont_classes"]).to_pylist(),
                            settings.descriptors.families)
    out = []
    for name in progress_bar(settings.baselines, progress, "fitting baselines"):
        model = fit_baseline(name, train, targets, space.names, settings.bins, settings.baseline)
        out.append(Method(model.model_id, model.model_id, "classical", name, "descriptor", model, space.names,
                          train_seconds=model.train_seconds, train_spectra_per_s=model.train_spectra_per_s))
    return out


def library_methods(settings: EvaluationSettings) -> list[Method]:
    """One analogue method per library search of the settings."""
    out = []
    for similarity in settings.library:
        name, mid = LIBRARY_METHODS[similarity]
        out.append(Method(f"library:{similarity}", mid, "library", name, "analogue"))
    return out


def reference_methods() -> list[Method]:
    """The spectrum-free references: a seeded random ranking and the library prior."""
    return [Method("reference:random", "reference:random", "reference", "random", "random"),
            Method("reference:prior", "reference:prior", "reference", "prior", "prior")]


def methods_to_score(lake: Lake, model_ids: Sequence[str] | None, extra_models: Sequence[Any], train: pa.Table,
                     settings: EvaluationSettings, progress: Progress | None = None) -> list[Method]:
    """Every model-like method of a run: ``extra_models``, registered models, classical baselines, library searches."""
    methods = [model_method(m) for m in extra_models] + neural_methods(lake, model_ids, settings.split)
    return methods + classical_methods(train, settings, progress) + library_methods(settings)
