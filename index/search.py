"""Searching a built index: ``StructureIndex.open(path).query(...)`` / ``.query_batch(...)``.

A query is: mass filter (exact: binary search on each shard's sorted masses, the
same predicate as ``monoisotopic_mass BETWEEN lo AND hi`` in the catalog; an
optional formula/SQL filter goes through DuckDB), a FAISS search restricted to
those ids (IDSelectorRange/IDSelectorBatch) when the candidate set is large, or
an exact scan when it is small, then exact re-ranking (Tanimoto for
fingerprints, cosine for float embeddings), then rows with metadata.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from speclake.index.catalog import CATALOG_FILE, Catalog
from speclake.index.embed import Embedder, get_embedder, normalize_rows
from speclake.index.settings import IndexSettings
from speclake.index.shards import META_COLUMNS, Shard, ShardInfo, _topk, global_ids, split_ids
from speclake.pipelines.normalize.masses import ppm_window

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class IndexNotFound(FileNotFoundError):
    """No built index at the given path."""


class SpectrumQueryUnavailable(ValueError):
    """The index's embedding cannot embed spectra (fingerprint indexes cannot)."""


def index_dir(lake: str | Path, name: str) -> Path:
    """Where index ``name`` of a lake lives."""
    return Path(lake) / "index" / name


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The current manifest of the index at ``path`` (raises :class:`IndexNotFound`)."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise IndexNotFound(f"no structure index at {path} (no {MANIFEST}); build one with 'speclake index build'")
    manifest = json.loads(file.read_text())
    if manifest.get("format") != MANIFEST_FORMAT:
        raise IndexNotFound(f"{file} has manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}")
    return manifest


def _take_rows(table: pa.Table, positions: np.ndarray) -> pa.Table:
    """Rows of a (memory-mapped, many-batch) table: row slices for a few rows, ``take`` for many.

    ``take`` over a large chunked table costs milliseconds whatever the row count; a one-row
    slice is zero-copy, so a query's k hits cost microseconds.
    """
    if len(positions) > 256:
        return table.take(pa.array(positions))
    return pa.concat_tables([table.slice(int(p), 1) for p in positions]) if len(positions) else table.slice(0, 0)


@dataclass
class SearchResult:
    """Top-k per query: ``ids``/``scores`` are ``[n_queries, k]`` (id -1 pads short lists)."""

    ids: np.ndarray
    scores: np.ndarray
    n_candidates: np.ndarray
    used_ann: np.ndarray


class StructureIndex:
    """A built structure index, opened for search (shards memory-mapped, ANN indexes loaded on need)."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.settings = IndexSettings.model_validate(manifest["settings"])
        self.embedding: dict[str, Any] = manifest["embedding"]
        self.kind = str(self.embedding["kind"])
        self.dim = int(self.embedding["dim"])
        infos = [ShardInfo(**s) for s in manifest["shards"]]
        self.shards = [Shard(path, info, self.kind, self.dim, self.settings) for info in infos]
        self.shards.sort(key=lambda s: s.info.lo_edge)
        self._by_serial = {s.info.serial: s for s in self.shards}
        self._lo_edges = np.array([s.info.lo_edge for s in self.shards], dtype=np.float64)
        self._embedder: Embedder | None = None
        self._catalog: Catalog | None = None

    @classmethod
    def open(cls, path: str | Path) -> "StructureIndex":
        """Open the current version of the index at ``path`` (``<lake>/index/<name>``)."""
        p = Path(path)
        return cls(p, read_manifest(p))

    def close(self) -> None:
        """Release the catalog connection."""
        if self._catalog is not None:
            self._catalog.close()
            self._catalog = None

    def __enter__(self) -> "StructureIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return sum(s.info.count for s in self.shards)

    @property
    def catalog(self) -> Catalog:
        """The DuckDB catalog (table ``structures``) of this version."""
        if self._catalog is None:
            self._catalog = Catalog(self.path / self.manifest["version_dir"] / CATALOG_FILE)
        return self._catalog

    @property
    def embedder(self) -> Embedder:
        """The embedder that made the index's vectors (checked against the manifest's version)."""
        if self._embedder is None:
            emb = get_embedder(self.embedding["name"], self._model_dir())
            if emb.version != self.embedding["version"]:
                log.warning("index was built with %s %s, query embedder is %s: scores may be off",
                            self.embedding["name"], self.embedding["version"], emb.version)
            self._embedder = emb
        return self._embedder

    def _model_dir(self) -> str | None:
        """The learned embedder's model directory: as recorded, or ``<lake>/models/<id>`` after a move."""
        model = self.embedding.get("model")
        if model is None or Path(model).exists():
            return model
        moved = self.path.parent.parent / "models" / Path(model).name
        return str(moved) if moved.exists() else model

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Stored vectors of global FAISS ids (rows in the order of ``ids``), read from the shards' codes."""
        serials, positions = split_ids(np.asarray(ids, np.int64))
        out = np.zeros((len(serials), self.dim // 8 if self.kind == "binary" else self.dim),
                       np.uint8 if self.kind == "binary" else np.float32)
        for serial in np.unique(serials):
            sel = np.nonzero(serials == serial)[0]
            out[sel] = self._by_serial[int(serial)].codes[positions[sel]]
        return out

    def embed_smiles(self, smiles: Sequence[str]) -> np.ndarray:
        """Query vectors for SMILES, standardized by the same rules as the indexed structures.

        Raises ValueError naming the SMILES that cannot be standardized or embedded.
        """
        from speclake.index.standardize import _standardizer, standardize_record

        standardize, error_type = _standardizer()
        std = []
        for smi in smiles:
            out = standardize_record(smi, None, None, standardize, error_type)
            if out.get("reason_code"):
                raise ValueError(f"query SMILES {smi!r} cannot be standardized: {out['reason']}")
            std.append(out["smiles"])
        vectors, ok = self.embedder.embed_smiles(std)
        if not ok.all():
            bad = [s for s, good in zip(smiles, ok) if not good]
            raise ValueError(f"cannot embed query SMILES: {', '.join(map(repr, bad[:5]))}")
        return normalize_rows(vectors) if self.kind == "float" else vectors

    def check_spectrum_queries(self) -> None:
        """Raise :class:`SpectrumQueryUnavailable` unless the index's embedder also embeds spectra."""
        if not getattr(self.embedder, "embeds_spectra", False):
            raise SpectrumQueryUnavailable(
                f"querying by spectrum needs an index built with a learned spectrum/structure embedding "
                f"(speclake index build --embedding arch5 or descriptors); this index uses {self.embedding['name']!r} "
                f"({self.embedding['version']}), which embeds structures only. Query with --smiles instead."
            )

    def embed_spectra(self, spectra: Sequence[object]) -> np.ndarray:
        """Query vectors for spectra (rows with ``mz`` and ``intensities``): learned embeddings only."""
        self.check_spectrum_queries()
        return normalize_rows(np.asarray(self.embedder.embed_spectra(spectra), np.float32))  # type: ignore[attr-defined]

    def _shards_for(self, lo: float, hi: float) -> list[Shard]:
        first = max(0, int(np.searchsorted(self._lo_edges, lo, "right")) - 1)
        last = max(0, int(np.searchsorted(self._lo_edges, hi, "right")) - 1)
        return self.shards[first:last + 1]

    def search(self, vectors: np.ndarray, masses: Sequence[float | None] | None = None, *, ppm: float = 10.0,
               k: int = 20, formulas: Sequence[str | None] | None = None, where: str | None = None,
               exact: bool = False) -> SearchResult:
        """Top ``k`` structures per query vector, within each query's mass window (None: no mass filter)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vectors = np.asarray(vectors)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        nq = len(vectors)
        masses = [None] * nq if masses is None else list(masses)
        formulas = [None] * nq if formulas is None else list(formulas)
        if len(masses) != nq or len(formulas) != nq:
            raise ValueError(f"{nq} query vectors but {len(masses)} masses and {len(formulas)} formulas")
        ids = np.full((nq, k), -1, dtype=np.int64)
        scores = np.zeros((nq, k), dtype=np.float64)
        n_cand = np.zeros(nq, dtype=np.int64)
        used_ann = np.zeros(nq, dtype=bool)
        for qi in range(nq):
            mass = masses[qi]
            lo, hi = ppm_window(mass, ppm) if mass is not None else (-np.inf, np.inf)
            subsets: dict[int, np.ndarray] | None = None
            if formulas[qi] is not None or where:
                found = self.catalog.filter_ids(
                    formula=formulas[qi], mass_lo=None if mass is None else lo, mass_hi=None if mass is None else hi,
                    where=where)
                serials, positions = split_ids(found)
                subsets = {int(s): positions[serials == s] for s in np.unique(serials)}
            parts_s, parts_id = [], []
            shards = self.shards if mass is None else self._shards_for(lo, hi)
            for shard in shards:
                if subsets is not None:
                    subset = subsets.get(shard.info.serial)
                    if subset is None or len(subset) == 0:
                        continue
                    s, p, ann = shard.search(vectors[qi], 0, 0, k, subset=subset, exact=exact)
                    n_cand[qi] += len(subset)
                else:
                    a, b = (0, shard.info.count) if mass is None else shard.mass_range(lo, hi)
                    if b <= a:
                        continue
                    s, p, ann = shard.search(vectors[qi], a, b, k, exact=exact)
                    n_cand[qi] += b - a
                used_ann[qi] |= ann
                parts_s.append(s)
                parts_id.append(global_ids(shard.info.serial, p))
            if not parts_s:
                continue
            s, g = _topk(np.concatenate(parts_s), np.concatenate(parts_id), k)
            ids[qi, : len(g)] = g
            scores[qi, : len(s)] = s
        return SearchResult(ids=ids, scores=scores, n_candidates=n_cand, used_ann=used_ann)

    def rows(self, result: SearchResult, masses: Sequence[float | None] | None = None) -> pa.Table:
        """Hits as a table: query, rank, score, faiss_id, catalog columns, mass error in ppm."""
        q_idx, rank = np.nonzero(result.ids >= 0)
        ids = result.ids[q_idx, rank]
        serials, positions = split_ids(ids)
        order_parts, tables = [], []
        for serial in np.unique(serials):
            sel = np.nonzero(serials == serial)[0]
            tables.append(_take_rows(self._by_serial[int(serial)].meta, positions[sel]))
            order_parts.append(sel)
        if tables:
            meta = pa.concat_tables(tables)
            inverse = np.empty(len(ids), dtype=np.int64)
            inverse[np.concatenate(order_parts)] = np.arange(len(ids))
            meta = meta.take(pa.array(inverse))
        else:
            meta = pa.table({c: pa.array([], pa.float64() if c == "monoisotopic_mass" else pa.string())
                             for c in META_COLUMNS})
        out = pa.table({
            "query": pa.array(q_idx.astype(np.int32)),
            "rank": pa.array((rank + 1).astype(np.int32)),
            "score": pa.array(result.scores[q_idx, rank]),
            "faiss_id": pa.array(ids),
        })
        for name in meta.column_names:
            out = out.append_column(name, meta.column(name))
        if masses is not None:
            qm = np.array([np.nan if m is None else m for m in masses], dtype=np.float64)[q_idx]
            err = (meta.column("monoisotopic_mass").to_numpy() - qm) / qm * 1e6 if len(qm) else np.zeros(0)
            out = out.append_column("mass_error_ppm", pa.array(err))
        return out

    def _vectors(self, smiles: Sequence[str] | None, vectors: np.ndarray | None,
                 spectra: Sequence[object] | None) -> np.ndarray:
        given = [x is not None for x in (smiles, vectors, spectra)]
        if sum(given) != 1:
            raise ValueError("give exactly one of smiles, vectors or spectra")
        if spectra is not None:
            return self.embed_spectra(spectra)
        if smiles is not None:
            return self.embed_smiles(smiles)
        v = np.asarray(vectors)
        return v[None, :] if v.ndim == 1 else v

    def query_batch(self, *, masses: Sequence[float | None] | None = None, ppm: float = 10.0,
                    smiles: Sequence[str] | None = None, vectors: np.ndarray | None = None,
                    spectra: Sequence[object] | None = None, k: int = 20,
                    formulas: Sequence[str | None] | None = None, where: str | None = None,
                    exact: bool = False) -> pa.Table:
        """Many queries at once (study annotation): one row per hit, ``query`` is the input position."""
        vecs = self._vectors(smiles, vectors, spectra)
        result = self.search(vecs, masses, ppm=ppm, k=k, formulas=formulas, where=where, exact=exact)
        return self.rows(result, masses)

    def query(self, *, mass: float | None = None, ppm: float = 10.0, smiles: str | None = None,
              vector: np.ndarray | None = None, spectrum: object | None = None, k: int = 20,
              formula: str | None = None, where: str | None = None, exact: bool = False) -> pa.Table:
        """One query: the ``k`` most similar structures within ``ppm`` of ``mass`` (None: anywhere)."""
        return self.query_batch(
            masses=[mass], ppm=ppm, smiles=None if smiles is None else [smiles],
            vectors=None if vector is None else np.asarray(vector),
            spectra=None if spectrum is None else [spectrum], k=k,
            formulas=None if formula is None else [formula], where=where, exact=exact,
        ).drop_columns(["query"])
