"""Mass-range shards: planning, building (one Ray task per shard) and exact/ANN search inside one shard.

A shard holds the structures whose monoisotopic mass lies in ``[lo_edge, hi_edge)``,
sorted by mass, so a precursor window is one contiguous range of positions
(found by binary search: the exact mass filter) and FAISS is restricted to it
with ``IDSelectorRange``. Files of a shard directory::

    codes.npy      vectors in position order (packed bits, or float32), memory-mapped
    mass.npy       monoisotopic masses, ascending (float64), memory-mapped
    popcount.npy   bits set per fingerprint (binary only), for Tanimoto
    meta.arrow     catalog columns in position order (Arrow IPC, memory-mapped)
    ann.faiss      ANN index over the same positions (large shards only)

FAISS ids inside a shard are positions; global ids are ``serial << 32 | position``.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speclake.index.embed import arrow_to_vectors
from speclake.index.settings import IndexSettings

log = logging.getLogger(__name__)

ID_SHIFT = 32
#: Outer edges of the first and last shard (JSON has no infinity).
MASS_MIN, MASS_MAX = 0.0, 1.0e12
#: IVF-PQ needs enough vectors to train its quantizers; smaller float shards get HNSW instead.
IVF_MIN_SIZE = 20_000
META_COLUMNS = ("inchikey", "smiles", "formula", "monoisotopic_mass", "source", "record_id", "compound_name")


class ShardError(RuntimeError):
    """A shard directory is missing files or inconsistent with the manifest."""


def global_ids(serial: int, positions: np.ndarray) -> np.ndarray:
    """Global FAISS ids of positions in shard ``serial``."""
    return (np.int64(serial) << ID_SHIFT) | positions.astype(np.int64)


def split_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`global_ids`: ``(serials, positions)``."""
    ids = np.asarray(ids, dtype=np.int64)
    return ids >> ID_SHIFT, ids & ((1 << ID_SHIFT) - 1)


def plan_edges(masses: np.ndarray, target_size: int) -> list[float]:
    """Inner shard edges: mass quantiles giving about ``target_size`` structures per shard.

    Edges fall between distinct masses, so equal masses never straddle two shards.
    """
    n = len(masses)
    n_shards = max(1, math.ceil(n / target_size))
    if n_shards == 1:
        return []
    sorted_m = np.sort(masses)
    edges: list[float] = []
    for i in range(1, n_shards):
        j = int(round(i * n / n_shards))
        lo, hi = sorted_m[j - 1], sorted_m[j]
        edge = float((lo + hi) / 2) if hi > lo else float(np.nextafter(hi, np.inf))
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def members_hash(inchikeys: list[str]) -> str:
    """Identity of a shard's content (its InChIKeys in position order)."""
    h = hashlib.sha256()
    for key in inchikeys:
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()[:24]


def choose_index_type(n: int, kind: str, settings: IndexSettings) -> str:
    """``flat`` (exact only) for small shards, else the configured ANN type for this vector kind."""
    if n <= settings.flat_max or settings.ann == "none":
        return "flat"
    if kind == "binary":
        if settings.ann == "ivf":
            raise ValueError("ann='ivf' is not possible for binary embeddings: FAISS IndexBinaryIVF does not "
                             "accept an IDSelector; use ann='hnsw' or 'none'")
        return "binary_hnsw"
    if settings.ann == "ivf" and n >= IVF_MIN_SIZE:
        return "ivf_pq"
    return "hnsw"


def _use_gpu(settings: IndexSettings) -> bool:
    import faiss

    present = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if settings.use_gpu and not present:
        raise ShardError("use_gpu=True but FAISS sees no GPU (install faiss-gpu on a GPU machine)")
    return present if settings.use_gpu is None else bool(settings.use_gpu)


def _pq_subquantizers(dim: int) -> int:
    for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1):
        if dim % m == 0 and m <= dim:
            return m
    return 1


def build_ann(vectors: np.ndarray, index_type: str, dim: int, settings: IndexSettings, seed: int = 0) -> Any:
    """Build the ANN index of one shard over positions 0..n-1 (IVF trained on a sample)."""
    import faiss

    if index_type == "binary_hnsw":
        index = faiss.IndexBinaryHNSW(dim, settings.hnsw_m)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.add(np.ascontiguousarray(vectors))
        return index
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = settings.hnsw_ef_construction
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index
    if index_type == "ivf_pq":
        n = len(vectors)
        nlist = int(min(max(16, 4 * math.sqrt(n)), max(1, n // 39)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, _pq_subquantizers(dim), 8, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[np.sort(rng.choice(n, size=min(n, settings.train_sample), replace=False))]
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if _use_gpu(settings):
            gpu = faiss.index_cpu_to_all_gpus(index)
            gpu.train(sample)
            index = faiss.index_gpu_to_cpu(gpu)
        else:
            index.train(sample)
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index
    raise ShardError(f"unknown index type {index_type!r}")


def _write_atomic_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def build_shard(input_path: str, out_dir: str, serial: int, embedding: dict[str, Any],
                settings_json: str) -> dict[str, Any]:
    """Build one shard directory from a Parquet file of its rows (in position order).

    Runs as a Ray task (one CPU); returns the shard's manifest entry.
    """
    import faiss

    faiss.omp_set_num_threads(1)
    settings = IndexSettings.model_validate_json(settings_json)
    table = pq.read_table(input_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind, dim = str(embedding["kind"]), int(embedding["dim"])
    vectors = arrow_to_vectors(table.column("vector"), kind, dim)
    masses = table.column("monoisotopic_mass").to_numpy()
    if len(masses) > 1 and np.any(np.diff(masses) < 0):
        raise ShardError(f"shard {serial}: rows are not sorted by mass")
    _write_atomic_npy(out / "codes.npy", np.ascontiguousarray(vectors))
    _write_atomic_npy(out / "mass.npy", masses.astype(np.float64))
    if kind == "binary":
        pop = np.bitwise_count(vectors.view(np.uint64) if vectors.shape[1] % 8 == 0 else vectors).sum(
            axis=1, dtype=np.uint16)
        _write_atomic_npy(out / "popcount.npy", pop)
    meta = table.select(list(META_COLUMNS))
    tmp = out / "meta.arrow.tmp"
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, meta.schema) as writer:
        writer.write_table(meta, max_chunksize=1 << 20)
    os.replace(tmp, out / "meta.arrow")
    index_type = choose_index_type(len(table), kind, settings)
    if index_type != "flat":
        index = build_ann(vectors, index_type, dim, settings, seed=serial)
        tmp_idx = str(out / "ann.faiss.tmp")
        if kind == "binary":
            faiss.write_index_binary(index, tmp_idx)
        else:
            faiss.write_index(index, tmp_idx)
        os.replace(tmp_idx, out / "ann.faiss")
    keys = table.column("inchikey").to_pylist()
    return {
        "serial": serial,
        "count": len(table),
        "index_type": index_type,
        "mass_min": float(masses[0]) if len(masses) else None,
        "mass_max": float(masses[-1]) if len(masses) else None,
        "members": members_hash(keys),
        "bytes": sum(f.stat().st_size for f in out.iterdir() if f.is_file()),
    }


def _topk(scores: np.ndarray, positions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``k`` by score, ties broken by position (deterministic)."""
    if len(scores) > k:
        threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
        keep = scores >= threshold
        scores, positions = scores[keep], positions[keep]
    order = np.lexsort((positions, -scores))[:k]
    return scores[order], positions[order]


@dataclass
class ShardInfo:
    """A shard's manifest entry."""

    serial: int
    dir: str
    lo_edge: float
    hi_edge: float
    count: int
    index_type: str
    mass_min: float | None
    mass_max: float | None
    members: str
    bytes: int


class Shard:
    """One shard opened for search: memory-mapped arrays, ANN index loaded on first need."""

    def __init__(self, root: Path, info: ShardInfo, kind: str, dim: int, settings: IndexSettings) -> None:
        self.info = info
        self.kind = kind
        self.dim = dim
        self.settings = settings
        self.path = root / info.dir
        try:
            self.codes = np.load(self.path / "codes.npy", mmap_mode="r")
            self.mass = np.load(self.path / "mass.npy", mmap_mode="r")
            self.popcount = np.load(self.path / "popcount.npy", mmap_mode="r") if kind == "binary" else None
        except FileNotFoundError as exc:
            raise ShardError(f"shard {info.serial} at {self.path} is incomplete: {exc}") from None
        if len(self.mass) != info.count:
            raise ShardError(f"shard {info.serial}: {len(self.mass)} rows on disk, manifest says {info.count}")
        self._words = self.codes.view(np.uint64) if kind == "binary" and self.codes.shape[1] % 8 == 0 else None
        self._meta: pa.Table | None = None
        self._ann: Any = None

    @property
    def meta(self) -> pa.Table:
        """Catalog columns in position order (memory-mapped Arrow)."""
        if self._meta is None:
            self._meta = pa.ipc.open_file(pa.memory_map(str(self.path / "meta.arrow"))).read_all()
        return self._meta

    @property
    def ann(self) -> Any:
        """The shard's FAISS ANN index (None for flat shards)."""
        if self._ann is None and self.info.index_type != "flat":
            import faiss

            path = str(self.path / "ann.faiss")
            self._ann = faiss.read_index_binary(path) if self.kind == "binary" else faiss.read_index(path)
            if hasattr(self._ann, "hnsw"):
                self._ann.hnsw.efSearch = self.settings.hnsw_ef_search
        return self._ann

    def mass_range(self, lo_mass: float, hi_mass: float) -> tuple[int, int]:
        """Positions ``[lo, hi)`` of structures with ``lo_mass <= mass <= hi_mass`` (exact)."""
        return int(np.searchsorted(self.mass, lo_mass, "left")), int(np.searchsorted(self.mass, hi_mass, "right"))

    def exact_scores(self, query: np.ndarray, lo: int, hi: int, subset: np.ndarray | None = None) -> np.ndarray:
        """Exact similarity (Tanimoto or cosine) of ``query`` to positions ``lo..hi`` or to ``subset``."""
        sel: slice | np.ndarray = slice(lo, hi) if subset is None else subset
        if self.kind == "binary":
            if self._words is not None:
                q = np.ascontiguousarray(query, dtype=np.uint8).view(np.uint64)
                inter = np.bitwise_count(self._words[sel] & q).sum(axis=1, dtype=np.int32)
                qpop = int(np.bitwise_count(q).sum())
            else:
                inter = np.bitwise_count(self.codes[sel] & query).sum(axis=1, dtype=np.int32)
                qpop = int(np.bitwise_count(query).sum())
            union = self.popcount[sel].astype(np.int32) + qpop - inter
            return np.divide(inter, union, out=np.zeros(len(inter), np.float64), where=union > 0)
        return np.asarray(self.codes[sel] @ query.astype(np.float32), dtype=np.float64)

    def search(self, query: np.ndarray, lo: int, hi: int, k: int, *, subset: np.ndarray | None = None,
               exact: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top ``k`` positions among ``lo..hi`` (optionally only ``subset``), ranked by exact similarity.

        Small candidate sets (and flat shards, and ``exact=True``) are scored exactly;
        larger ones go through the ANN index restricted by an IDSelector, then the
        ``k * oversample`` returned candidates are re-ranked exactly. Returns
        ``(scores, positions, used_ann)``.
        """
        n_cand = (hi - lo) if subset is None else len(subset)
        if n_cand <= 0:
            return np.zeros(0), np.zeros(0, np.int64), False
        if exact or self.info.index_type == "flat" or n_cand <= self.settings.exact_scan_max:
            scores = self.exact_scores(query, lo, hi, subset)
            positions = np.arange(lo, hi, dtype=np.int64) if subset is None else subset.astype(np.int64)
            s, p = _topk(scores, positions, k)
            return s, p, False
        import faiss

        k2 = min(n_cand, k * self.settings.oversample)
        if subset is None:
            selector = faiss.IDSelectorRange(lo, hi)
        else:
            selector = faiss.IDSelectorBatch(subset.astype(np.int64))
        if self.info.index_type in ("binary_hnsw", "hnsw"):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=max(self.settings.hnsw_ef_search, k2))
        else:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.settings.ivf_nprobe)
        q = query.reshape(1, -1)
        q = np.ascontiguousarray(q, dtype=np.uint8 if self.kind == "binary" else np.float32)
        _, labels = self.ann.search(q, k2, params=params)
        found = labels[0][labels[0] >= 0].astype(np.int64)
        scores = self.exact_scores(query, 0, 0, found)
        s, p = _topk(scores, found, k)
        return s, p, True
