"""Per query set, before any candidate: descriptor predictions, library-search and embedding hits,
spectrum embeddings, and the descriptors' reliability weights from the validation predictions."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from speclake.lake.run import Progress
from .encoding import DescriptorSpace
from .eval_data import QuerySet, progress_bar
from .eval_methods import LIBRARY_METHODS, Method
from .eval_settings import EvaluationSettings
from .scoring import reliability_weights, top_hits


def _peaks(row: dict[str, Any]) -> Any:
    from speclake.pipelines.features.similarity import Peaks

    return Peaks.of(row["mz"], row["intensities"], row["precursor_mz"])


def library_hits(queries: pa.Table, library: pa.Table, library_fps: np.ndarray, *, k: int, tolerance: float,
                 similarity: str = "modified_cosine", progress: Progress | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: similarity of its top-``k`` same-ion-mode library spectra and their structures' fingerprints."""
    from speclake.pipelines.features import similarity as sim

    score = {"modified_cosine": sim.modified_cosine_to_panel, "cosine": sim.cosine_to_panel,
             "entropy": sim.entropy_to_panel}.get(similarity)
    if score is None:
        raise ValueError(f"unknown library similarity {similarity!r}; choose from {', '.join(LIBRARY_METHODS)}")
    build_panel = sim.build_panel

    lib_rows = library.select(["spectrum_id", "ionmode", "mz", "intensities", "precursor_mz"]).to_pylist()
    panels = {}
    for mode in sorted({r["ionmode"] for r in lib_rows}):
        idx = np.array([i for i, r in enumerate(lib_rows) if r["ionmode"] == mode], np.int64)
        panels[mode] = (idx, build_panel([lib_rows[i]["spectrum_id"] for i in idx], [_peaks(lib_rows[i]) for i in idx]))
    out = []
    q_rows = queries.select(["ionmode", "mz", "intensities", "precursor_mz"]).to_pylist()
    for row in progress_bar(q_rows, progress, "library search"):
        if row["ionmode"] not in panels:
            out.append((np.zeros(0), library_fps[:0]))
            continue
        idx, panel = panels[row["ionmode"]]
        sims = score(panel, _peaks(row), tolerance)
        top = top_hits(sims, k)
        out.append((sims[top], library_fps[idx[top]]))
    return out


def embedding_hits(q_emb: np.ndarray, q_modes: Sequence[str], lib_emb: np.ndarray, lib_modes: Sequence[str],
                   library_fps: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per query: cosine of its top-``k`` same-ion-mode library embeddings and their structures' fingerprints."""
    lib_modes_a = np.asarray(lib_modes)
    sims_all = np.asarray(q_emb, np.float64) @ np.asarray(lib_emb, np.float64).T
    out = []
    for i, mode in enumerate(q_modes):
        idx = np.flatnonzero(lib_modes_a == mode)
        top = top_hits(sims_all[i, idx], k)
        out.append((sims_all[i, idx[top]], library_fps[idx[top]]))
    return out


def prepare_queries(qs: QuerySet, methods: list[Method], library: pa.Table, library_fps: np.ndarray,
                    settings: EvaluationSettings, progress: Progress | None) -> None:
    """Predictions, library hits and spectrum embeddings of one query set (candidate-independent)."""
    for m in methods:
        if m.kind == "descriptor":
            probs = np.asarray(m.predictor.predict_descriptors(qs.examples), np.float64)
            if probs.shape != (len(qs), len(m.descriptor_names)):
                raise ValueError(f"{m.model_id}: predicted {probs.shape}, expected "
                                 f"({len(qs)}, {len(m.descriptor_names)})")
            qs.probs[m.key] = probs
        elif m.kind == "analogue" and m.arch == "library":
            similarity = m.key.partition(":")[2]
            tol = settings.entropy_tolerance if similarity == "entropy" else settings.library_tolerance
            qs.hits[m.key] = library_hits(qs.examples, library, library_fps, k=settings.library_top_k,
                                          tolerance=tol, similarity=similarity, progress=progress)
        elif m.kind == "analogue":
            lib_emb = m.predictor.embed_spectra(library)
            q_emb = m.predictor.embed_spectra(qs.examples)
            qs.hits[m.key] = embedding_hits(q_emb, qs.examples.column("ionmode").to_pylist(), lib_emb,
                                            library.column("ionmode").to_pylist(), library_fps,
                                            settings.library_top_k)
        elif m.kind == "joint":
            qs.spectrum_emb[m.key] = np.asarray(m.predictor.embed_spectra(qs.examples), np.float64)


def descriptor_targets(names: Sequence[str], rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """0/1 targets of the true structures in a descriptor space."""
    return DescriptorSpace(names).targets(rows)


def weigh_descriptors(methods: Sequence[Method], validation: QuerySet | None, settings: EvaluationSettings) -> None:
    """Reliability weights (2*AUC-1 on validation) of every descriptor method, when enabled."""
    if validation is None or not settings.reliability_weighting:
        return
    for m in methods:
        if m.kind == "descriptor":
            m.weights = reliability_weights(descriptor_targets(m.descriptor_names, validation.rows),
                                            validation.probs[m.key])


def query_sets(test: pa.Table, validation: pa.Table, methods: Sequence[Method], library: pa.Table,
               library_fps: np.ndarray, settings: EvaluationSettings, progress: Progress | None = None) -> dict[str, QuerySet]:
    """The test and (when not empty) validation query sets, prepared for every method."""
    sets = {name: QuerySet.of(name, tab) for name, tab in (("test", test), ("validation", validation)) if tab.num_rows}
    for qs in sets.values():
        prepare_queries(qs, list(methods), library, library_fps, settings, progress)
    weigh_descriptors(methods, sets.get("validation"), settings)
    return sets
