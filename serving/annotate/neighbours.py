"""Spectrum-embedding neighbours as evidence (column ``model:<model_id>`` of an arch4 model).

An arch4 model (MS2DeepScore-like: the cosine of two spectrum embeddings estimates the Tanimoto of their
structures) has no structure side, so it scores candidates the way MS2Query does analogue search with
MS2DeepScore and ``speclake evaluate`` scores arch4 (:func:`speclake.training.scoring.analogue_scores`):

* the library is the lake's *training-split* MS2 spectra with a structure and peaks (the library
  :class:`.evidence.EvidenceBuilder` uses while a ranker is fitted), each embedded once by the model; the
  embeddings are cached beside the model as ``<lake>/models/<model_id>/library-<digest>.npy`` (the digest
  hashes the library's spectrum ids and the lake's ``spectra`` version, so a changed library is embedded
  again, never read stale; written to a temporary file and renamed);
* per query: its ``k`` (10) nearest library spectra of the same ion mode by embedding cosine (FAISS inner
  product on L2-normalised embeddings, one flat index per ion mode), a spectrum never being its own
  neighbour (``Query.query_id`` equal to the library spectrum id: leave-one-out for *known* queries);
* per candidate: ``sum_k w_k T(candidate, structure_k) / sum_k w_k`` with ``w_k = max(cos_k, 0) ** power``
  (``power`` 4: the nearest neighbours dominate, as in MS2Query's weighting of close analogues;
  with no positive cosine the plain mean), T the Tanimoto of the Morgan fingerprints
  (:class:`.evidence.FingerprintCache`, those the candidates carry from the structure index when present).

A model whose library is empty (no training spectrum of the query's ion mode), or a query without
peaks, scores 0 for every candidate.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from speclake.training.scoring import analogue_scores

from .evidence import FingerprintCache, LibraryReference, ModelScorer
from .model import Candidate, Query

log = logging.getLogger(__name__)

#: Embedding cache files beside the model: ``library-<digest>.npy``.
CACHE_PREFIX = "library-"


@dataclass
class NeighbourLibrary:
    """Library spectra that have a structure in ``reference``: ids, ion modes and (read on demand) peaks."""

    reference: LibraryReference
    spectrum_ids: list[str]
    ionmodes: list[str]
    lake: str | os.PathLike[str] | None = None   # where the peaks are read from (when ``peaks`` is None)
    peaks: Any = None                            # a pyarrow table: spectrum_id, mz, intensities, precursor_mz
    version: str = ""                            # what else the embeddings depend on (the lake's spectra)

    def __post_init__(self) -> None:
        if len(self.spectrum_ids) != len(self.ionmodes):
            raise ValueError(f"{len(self.spectrum_ids)} library spectra but {len(self.ionmodes)} ion modes")
        self.rows = np.array([self.reference.spectrum_structure[s] for s in self.spectrum_ids], np.int64)

    def __len__(self) -> int:
        return len(self.spectrum_ids)

    @property
    def digest(self) -> str:
        """Names the library's embedding cache: its spectrum ids, in order, and :attr:`version`."""
        h = hashlib.sha256(self.version.encode())
        for s in self.spectrum_ids:
            h.update(b"\0" + s.encode())
        return h.hexdigest()[:16]

    @classmethod
    def from_lake(cls, lake: str | os.PathLike[str], *, splits: Sequence[str] | None = ("train",),
                  split_settings: Any = None) -> "NeighbourLibrary":
        """The lake's MS2 spectra with peaks whose structure is in :meth:`.evidence.LibraryReference.from_lake`
        of ``splits`` (None: every split)."""
        from speclake.lake import sql
        from speclake.lake.catalog import Lake

        ref = LibraryReference.from_lake(lake, splits=splits, split_settings=split_settings)
        con = sql.connect(lake, threads=2)
        try:
            rows = con.sql("SELECT spectrum_id, ionmode FROM spectra WHERE " + _LIBRARY_WHERE
                           + " ORDER BY spectrum_id").fetchall()
        finally:
            con.close()
        rows = [(s, m or "") for s, m in rows if s in ref.spectrum_structure]
        tv = Lake(lake).current("spectra")
        return cls(ref, [s for s, _ in rows], [m for _, m in rows], lake=lake,
                   version=f"spectra:{tv.version}:{tv.run_id}" if tv is not None else "")

    def examples(self) -> Any:
        """The model input table of the library spectra, in :attr:`spectrum_ids` order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = self.peaks
        if table is None:
            from speclake.lake import sql

            if self.lake is None:
                raise ValueError("a library without peaks needs the lake to read them from")
            con = sql.connect(self.lake, threads=2)
            try:
                table = con.sql("SELECT spectrum_id, mz, intensities, precursor_mz, ionmode FROM spectra WHERE "
                                + _LIBRARY_WHERE + " ORDER BY spectrum_id").arrow()
            finally:
                con.close()
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
        ids = table.column("spectrum_id")
        table = table.filter(pc.is_in(ids, value_set=pa.array(self.spectrum_ids, ids.type)))
        pos = {s: i for i, s in enumerate(table.column("spectrum_id").to_pylist())}
        missing = [s for s in self.spectrum_ids if s not in pos]
        if missing:
            raise ValueError(f"{len(missing)} library spectra have no peaks, e.g. {missing[:3]}")
        table = table.take(pa.array([pos[s] for s in self.spectrum_ids], pa.int64()))
        return table.select(["mz", "intensities", "precursor_mz"]).append_column(
            "ionmode", pa.array(self.ionmodes, pa.string()))


#: MS2 spectra with peaks (the library's, and the queries' of :func:`.fusion.lake_queries`).
_LIBRARY_WHERE = "ms_level = 2 AND num_peaks > 0"


def _normalised(emb: np.ndarray) -> np.ndarray:
    e = np.ascontiguousarray(np.nan_to_num(np.asarray(emb, np.float32)))
    n = np.linalg.norm(e, axis=1, keepdims=True)
    return e / np.where(n > 0, n, 1.0)


class NeighbourScorer:
    """An arch4 model as evidence (column ``model:<model_id>``, see the module doc); the same interface as
    :class:`.evidence.ModelScorer` (``feature``, ``kind``, :meth:`scores`).

    ``library``: a :class:`NeighbourLibrary`, or a function giving it (called on first use, so building
    the scorer reads nothing); ``cache_dir``: where the library embeddings are cached (None: not cached)."""

    kind = "neighbours"

    def __init__(self, model: Any, library: NeighbourLibrary | Any, cache_dir: str | os.PathLike[str] | None, *,
                 k: int = 10, power: float = 4.0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if power <= 0:
            raise ValueError(f"power must be > 0, got {power}")
        self.model = model
        self.feature = f"model:{model.model_id}"
        self.k = k
        self.power = power
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._library = library
        self._index: dict[str, tuple[Any, np.ndarray]] | None = None   # ion mode -> (FAISS index, library rows)
        self._fps: FingerprintCache | None = None

    @property
    def library(self) -> NeighbourLibrary:
        if not isinstance(self._library, NeighbourLibrary):
            self._library = self._library()
        return self._library

    def cache_path(self) -> Path | None:
        """The library embedding cache file (None without a cache folder)."""
        return self.cache_dir / f"{CACHE_PREFIX}{self.library.digest}.npy" if self.cache_dir is not None else None

    def library_embeddings(self) -> np.ndarray:
        """(library spectra, d) normalised float32 embeddings: read from the cache file, else computed (and
        written when there is a cache folder)."""
        lib = self.library
        path = self.cache_path()
        if path is not None and path.is_file():
            emb = np.load(path)
            if emb.ndim == 2 and len(emb) == len(lib):
                return emb
            log.warning("%s holds %s embeddings for %d library spectra: computed again", path, emb.shape, len(lib))
        if len(lib) == 0:
            return np.zeros((0, 0), np.float32)
        log.info("%s: embedding %d library spectra", self.model.model_id, len(lib))
        emb = _normalised(self.model.embed_spectra(lib.examples()))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
            os.replace(tmp, path)
        return emb

    def index(self) -> dict[str, tuple[Any, np.ndarray]]:
        """Ion mode -> (FAISS inner-product index of its library embeddings, their library positions)."""
        if self._index is None:
            import faiss

            emb = self.library_embeddings()
            modes = np.asarray(self.library.ionmodes, dtype=object)
            self._index = {}
            for mode in sorted(set(self.library.ionmodes)):
                pos = np.flatnonzero(modes == mode)
                idx = faiss.IndexFlatIP(emb.shape[1])
                idx.add(np.ascontiguousarray(emb[pos]))
                self._index[mode] = (idx, pos)
        return self._index

    def neighbours(self, queries: Sequence[Query]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (library positions, cosines) of its up to ``k`` nearest same-ion-mode library spectra,
        nearest first, without the query's own spectrum; empty for a query without peaks."""
        out: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0))] * len(queries)
        todo = [i for i, q in enumerate(queries) if len(q.mz) and np.isfinite(np.asarray(q.intensities)).all()
                and (np.asarray(q.intensities) > 0).any()]
        if not todo or len(self.library) == 0:
            return out
        index = self.index()
        sub = [queries[i] for i in todo]
        q_emb = _normalised(self.model.embed_spectra(ModelScorer.examples(sub)))
        ids = self.library.spectrum_ids
        for mode, (idx, pos) in index.items():
            rows = [j for j, q in enumerate(sub) if q.ionmode == mode]
            if not rows:
                continue
            sims, found = idx.search(q_emb[rows], min(self.k + 1, idx.ntotal))   # + 1: the query itself
            for j, s, f in zip(rows, sims, found):
                keep = [(int(pos[p]), float(c)) for p, c in zip(f, s)
                        if p >= 0 and ids[pos[p]] != sub[j].query_id][:self.k]
                out[todo[j]] = (np.array([p for p, _ in keep], np.int64), np.array([c for _, c in keep]))
        return out

    def scores(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]]) -> list[np.ndarray]:
        """One score per candidate of every query: the weighted mean Tanimoto to its neighbours' structures."""
        if not queries:
            return []
        lib = self.library
        if self._fps is None:
            self._fps = FingerprintCache(lib.reference.settings)
        out = []
        for cands, (pos, cos) in zip(candidates, self.neighbours(queries)):
            if not cands or not len(pos):
                out.append(np.zeros(len(cands)))
                continue
            weights = np.clip(cos, 0.0, None) ** self.power
            out.append(analogue_scores(weights, lib.reference.fps[lib.rows[pos]], self._fps.of(cands)))
        return out


def neighbour_scorer(lake: str | os.PathLike[str], model: Any, split: Any = None, *,
                     library_splits: Sequence[str] | None = ("train",), **kwargs: Any) -> NeighbourScorer:
    """The :class:`NeighbourScorer` of a registered arch4 model: library = the lake's ``library_splits`` spectra
    under ``split`` (None: the model's own split settings), embeddings cached in the model's folder."""
    from speclake.training.registry import model_dir

    split_settings = split if split is not None else getattr(model, "split", None)
    return NeighbourScorer(model, lambda: NeighbourLibrary.from_lake(lake, splits=library_splits,
                                                                     split_settings=split_settings),
                           model_dir(lake, model.model_id), **kwargs)
