"""Builders and by-hand reference scores for the library search tests."""
from __future__ import annotations

import math

import numpy as np

from speclake.pipelines.features import similarity as sim
from speclake.serving.library.clean import FlatSpectra, clean_spectra, offsets_of
from speclake.serving.library.index import LibraryIndex
from speclake.serving.library.segment import Segment
from speclake.serving.library.settings import LibrarySettings


def random_library(n: int = 400, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Random spectra with shared fragment m/z (so that hits overlap) and precursors in a narrow range."""
    rng = np.random.default_rng(seed)
    vocab = np.sort(rng.uniform(50, 400, 300)).round(4)
    precursor = rng.uniform(300, 420, n).round(4)
    mzs, its = [], []
    for p in precursor:
        k = int(rng.integers(2, 25))
        mz = rng.choice(vocab[vocab < p - 2], size=k, replace=False) + rng.normal(0, 0.004, k)
        mzs.append(np.sort(mz))
        its.append(rng.uniform(0.001, 1.0, k))
    return mzs, its, precursor


def index_of(mzs: list[np.ndarray], its: list[np.ndarray], precursor: np.ndarray,
             settings: LibrarySettings | None = None, *, segments: int = 1) -> LibraryIndex:
    """An in-memory index of the given spectra (split into ``segments`` segments), ids ``s<i>``."""
    settings = settings or LibrarySettings()
    flat = FlatSpectra(offsets_of(np.array([len(m) for m in mzs])), np.concatenate(mzs), np.concatenate(its))
    cleaned, why = clean_spectra(flat, precursor, settings)
    ok = np.flatnonzero(why == "")
    segs = [Segment.build(np.array([f"s{i}" for i in part]), precursor[part], cleaned.take(part),
                         settings.min_peak_distance_da)
            for part in np.array_split(ok, segments)]
    return LibraryIndex(None, {"settings": settings.model_dump(mode="json")}, {"positive": segs})  # type: ignore[arg-type]


def cleaned(mz: np.ndarray, it: np.ndarray, precursor: float, settings: LibrarySettings | None = None) -> sim.Peaks:
    """One spectrum cleaned as the index cleans it."""
    flat = FlatSpectra(np.array([0, len(mz)]), np.asarray(mz, float), np.asarray(it, float))
    c, _ = clean_spectra(flat, np.array([precursor]), settings or LibrarySettings())
    return sim.Peaks(c.mz, c.intensities, precursor)


def weigh(p: np.ndarray) -> np.ndarray:
    """Entropy weighting of intensities (Li et al. 2021): normalise; low-entropy spectra raised to a power."""
    p = p / p.sum()
    s = -float(np.sum(p * np.log(p)))
    if s < 3:
        p = p ** (0.25 + 0.25 * s)
        p = p / p.sum()
    return p


def reference_entropy(a: sim.Peaks, b: sim.Peaks, tolerance: float) -> float:
    """Weighted spectral entropy similarity (Li et al. 2021) written out: weights, pairs, sum."""
    wa, wb = weigh(a.intensities), weigh(b.intensities)
    total = 0.0
    for i, m in enumerate(a.mz):
        for j, n in enumerate(b.mz):
            if n >= m - tolerance and n <= m + tolerance:
                x, y = wa[i], wb[j]
                total += ((x + y) * math.log(x + y) - x * math.log(x) - y * math.log(y)) / math.log(4)
    return total


def reference_hybrid(lib: sim.Peaks, query: sim.Peaks, tolerance: float) -> float:
    """Hybrid entropy similarity by hand: fragments matched by m/z first, then by neutral loss among the
    library and query peaks not yet matched (Flash entropy search's hybrid search)."""
    wa, wb = weigh(lib.intensities), weigh(query.intensities)
    gain = lambda x, y: ((x + y) * math.log(x + y) - x * math.log(x) - y * math.log(y)) / math.log(4)  # noqa: E731
    used_lib_direct: set[int] = set()
    used_q_direct: set[int] = set()
    total = 0.0
    for i, m in enumerate(lib.mz):
        for j, n in enumerate(query.mz):
            if m - tolerance <= n <= m + tolerance:
                total += gain(wa[i], wb[j])
                used_lib_direct.add(i)
                used_q_direct.add(j)
    for i, m in enumerate(lib.mz):
        if i in used_lib_direct:
            continue
        for j, n in enumerate(query.mz):
            if j in used_q_direct:
                continue
            la, lb = lib.precursor_mz - m, query.precursor_mz - n
            if la - tolerance <= lb <= la + tolerance:
                total += gain(wa[i], wb[j])
    return total
