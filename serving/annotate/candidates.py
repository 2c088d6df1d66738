"""Structure candidates of blind scans from the structure index's catalog, under every adduct hypothesis.

For a batch of scans, one table of m/z windows (scan x adduct hypothesis of :mod:`.precursor`) is
registered in DuckDB and range-joined with the catalog's ``structures`` in one SQL statement: no
query per scan. A structure is a candidate when its ion under the hypothesis is within ``ppm`` of the
precursor m/z.

**One row per skeleton.** A list holds each InChIKey-14 once. When a skeleton matches under more
than one hypothesis (stereoisomers or the same structure from several sources under one adduct; two
adducts of one mass within ``ppm`` of each other), the best-supported row is kept: the adduct with the
higher lake prior (lower ``adduct_rank``), then the smaller absolute mass error, then the lowest
index id (stable across runs).

**Formulas.** Per scan, the distinct (formula, adduct) pairs of its candidates are ranked by
fragmentation-tree score (:func:`.precursor.rank_formulas`): only the ``max_formulas`` pairs with
most candidates (then smallest mass error, then adduct rank) get a tree, the rest keep
``formula_rank=None``; ``max_formulas=None`` trees every pair.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from .model import Candidate, Query
from .precursor import (TreeCache, active_adducts, adduct_priors, adduct_ranks, hypotheses, mz_window,
                        rank_formulas)

log = logging.getLogger(__name__)

#: Catalog columns copied into every candidate.
_COLUMNS = ("faiss_id", "inchikey", "inchikey14", "smiles", "formula", "monoisotopic_mass", "source",
            "compound_name")


def morgan_compatible(embedding: Mapping[str, Any] | None) -> bool:
    """Whether an index embedding (manifest ``embedding``) is the Morgan ``fingerprint`` embedder made with this
    RDKit, so its stored vectors are the packed Morgan bits RDKit would compute here."""
    if not embedding or embedding.get("name") != "fingerprint" or embedding.get("kind") != "binary":
        return False
    from rdkit import rdBase

    from speclake.index.embed import MorganFingerprint as MF

    return (int(embedding.get("dim", 0)) == MF.n_bits and
            embedding.get("version") == f"morgan-r{MF.radius}-{MF.n_bits}-rdkit{rdBase.rdkitVersion}")


def index_fingerprints(lake: str | os.PathLike[str], smiles: Sequence[str],
                       index_name: str = "fingerprint") -> dict[str, np.ndarray]:
    """Packed Morgan bits (uint64 words) of the SMILES found verbatim in the lake's structure index, read from its
    shards; {} without a compatible index (:func:`morgan_compatible`)."""
    from speclake.index.search import IndexNotFound, StructureIndex, index_dir
    from speclake.index.shards import ShardError

    if not smiles:
        return {}
    try:
        index = StructureIndex.open(index_dir(lake, index_name))
    except (IndexNotFound, ShardError, OSError):
        return {}
    try:
        if not morgan_compatible(index.embedding):
            return {}
        con = index.catalog.con.cursor()
        try:
            con.register("_s", pa.table({"smiles": pa.array(sorted(set(smiles)), pa.string())}))
            found = con.sql("SELECT smiles, min(faiss_id) AS faiss_id FROM structures JOIN _s USING (smiles) "
                            "GROUP BY smiles").to_arrow_table()
        finally:
            con.close()
        if found.num_rows == 0:
            return {}
        fps = np.ascontiguousarray(index.vectors(found.column("faiss_id").to_numpy())).view(np.uint64)
        return dict(zip(found.column("smiles").to_pylist(), fps))
    finally:
        index.close()


def window_table(queries: Sequence[Query], ppm: float, ranks: Mapping[tuple[str, str], int],
                 adducts: Mapping[str, Sequence[str]] | None = None) -> pa.Table:
    """One row per (scan, adduct hypothesis): query, adduct, adduct_rank, lo, hi (neutral mass), n, shift,
    absz (to recompute the ion m/z) and precursor_mz."""
    cols: dict[str, list[Any]] = defaultdict(list)
    for i, q in enumerate(queries):
        for add, _mass in hypotheses(q.precursor_mz, q.ionmode, q.charge, adducts=adducts):
            lo, hi = mz_window(add, q.precursor_mz, ppm)
            mode = "positive" if add.charge > 0 else "negative"
            cols["query"].append(i)
            cols["adduct"].append(add.name)
            cols["adduct_rank"].append(ranks.get((mode, add.name), len(ranks) + 1))
            cols["lo"].append(min(lo, hi))
            cols["hi"].append(max(lo, hi))
            cols["n"].append(add.n_molecules)
            cols["shift"].append(add.mass_shift)
            cols["absz"].append(abs(add.charge))
            cols["precursor_mz"].append(float(q.precursor_mz))
    types = {"query": pa.int64(), "adduct": pa.string(), "adduct_rank": pa.int32(), "lo": pa.float64(),
             "hi": pa.float64(), "n": pa.int32(), "shift": pa.float64(), "absz": pa.int32(),
             "precursor_mz": pa.float64()}
    return pa.table({k: pa.array(cols.get(k, []), t) for k, t in types.items()})


@dataclass
class CandidateSource:
    """Candidates of blind scans from one structure index (see the module doc).

    >>> source = CandidateSource.open(lake)
    >>> lists = source.candidates(queries)      # one list of Candidate per query
    """

    catalog: Any                                   # speclake.index.catalog.Catalog
    ppm: float = 10.0
    priors: dict[str, dict[str, float]] = field(default_factory=dict)
    max_formulas: int | None = 4
    tree_ppm: float | None = None
    trees: TreeCache = field(default_factory=TreeCache)
    _index: Any = None
    _morgan: bool | None = None

    def __post_init__(self) -> None:
        if not self.ppm > 0:
            raise ValueError(f"ppm must be positive, got {self.ppm}")
        if self.max_formulas is not None and self.max_formulas < 0:
            raise ValueError(f"max_formulas must be >= 0 or None, got {self.max_formulas}")
        self.ranks = adduct_ranks(self.priors)
        self.adducts = active_adducts(self.priors) if self.priors else None

    @classmethod
    def open(cls, lake: str | os.PathLike[str], index_name: str = "fingerprint", ppm: float = 10.0, *,
             max_formulas: int | None = 4, priors: dict[str, dict[str, float]] | None = None) -> "CandidateSource":
        """The current version of ``<lake>/index/<index_name>``, with the adduct prior counted from the lake
        (:class:`speclake.index.search.IndexNotFound` when the index was never built)."""
        from speclake.index.search import StructureIndex, index_dir

        index = StructureIndex.open(index_dir(lake, index_name))
        return cls(index.catalog, ppm=ppm, priors=priors if priors is not None else adduct_priors(lake),
                   max_formulas=max_formulas, _index=index)

    @property
    def index(self) -> Any:
        """The opened :class:`speclake.index.search.StructureIndex` (None for a source made from a bare catalog)."""
        return self._index

    @property
    def morgan_index(self) -> bool:
        """Whether the index stores the Morgan fingerprints evidence uses (:func:`morgan_compatible`): candidates
        then carry them (:attr:`Candidate.fingerprint`), no RDKit needed downstream."""
        if self._morgan is None:
            self._morgan = morgan_compatible(getattr(self._index, "embedding", None))
        return self._morgan

    def close(self) -> None:
        """Close the index (and its catalog)."""
        if self._index is not None:
            self._index.close()
        else:
            self.catalog.close()

    def __enter__(self) -> "CandidateSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prior(self, ionmode: str, adduct: str) -> float:
        """P(adduct | ion mode) from the lake's spectra."""
        return float(self.priors.get(ionmode, {}).get(adduct, 0.0))

    # -- the join ----------------------------------------------------------------------------------
    def matches(self, queries: Sequence[Query]) -> pa.Table:
        """One row per (query, InChIKey-14): catalog columns + adduct, adduct_rank, mass_error_ppm,
        sorted by query then InChIKey-14 (the best-supported hypothesis per skeleton, module doc)."""
        windows = window_table(queries, self.ppm, self.ranks, self.adducts)
        con = self.catalog.con.cursor()   # a cursor: safe when several threads share the catalog
        cols = ", ".join(f"s.{c}" for c in _COLUMNS)
        try:
            con.register("_w", windows)
            return con.sql(f"""
                SELECT * EXCLUDE (rn) FROM (
                  SELECT w.query, {cols}, w.adduct, w.adduct_rank,
                         (w.precursor_mz - (w.n * s.monoisotopic_mass + w.shift) / w.absz)
                           / ((w.n * s.monoisotopic_mass + w.shift) / w.absz) * 1e6 AS mass_error_ppm,
                         row_number() OVER (PARTITION BY w.query, s.inchikey14
                           ORDER BY w.adduct_rank, abs(w.precursor_mz - (w.n * s.monoisotopic_mass + w.shift)
                                                       / w.absz), s.faiss_id) AS rn
                  FROM _w w JOIN structures s ON s.monoisotopic_mass BETWEEN w.lo AND w.hi)
                WHERE rn = 1 ORDER BY query, inchikey14""").to_arrow_table()
        finally:
            con.close()

    def candidates(self, queries: Sequence[Query]) -> list[list[Candidate]]:
        """Candidates of every query (same order); formula ranks from fragmentation trees."""
        table = self.matches(queries)
        out: list[list[Candidate]] = [[] for _ in queries]
        if table.num_rows == 0:
            return out
        data = {c: table.column(c).to_pylist() for c in table.column_names if c != "query"}
        qcol = table.column("query").to_numpy()
        bounds = np.searchsorted(qcol, np.arange(len(queries) + 1))
        fps = None
        if self.morgan_index:   # every candidate's packed Morgan bits in one read of the shards
            ids = table.column("faiss_id").to_numpy()
            fps = np.ascontiguousarray(self._index.vectors(ids)).view(np.uint64)
        for i, q in enumerate(queries):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            if lo == hi:
                continue
            cands = [Candidate(inchikey=data["inchikey"][j], inchikey14=data["inchikey14"][j],
                               smiles=data["smiles"][j], formula=data["formula"][j],
                               monoisotopic_mass=float(data["monoisotopic_mass"][j]), adduct=data["adduct"][j],
                               mass_error_ppm=float(data["mass_error_ppm"][j]),
                               compound_name=data["compound_name"][j], adduct_rank=int(data["adduct_rank"][j]),
                               source=data["source"][j], faiss_id=int(data["faiss_id"][j]),
                               fingerprint=None if fps is None else fps[j]) for j in range(lo, hi)]
            self.rank_formulas(q, cands)
            out[i] = cands
        return out

    def by_formula(self, queries: Sequence[Query], formulas: Sequence[str | None]) -> list[list[Candidate]]:
        """Candidates of each query when its molecular formula is given (``formulas[i]``; None: no candidates):
        every indexed structure of that formula, one per InChIKey-14 (lowest index id), under the adduct
        hypothesis of the query's ion mode whose ion is closest to the precursor m/z (the formula mode of
        ``speclake evaluate`` and of MassSpecGym's bonus challenge: the m/z window plays no part)."""
        from speclake.pipelines.normalize.adduct import adduct_mz
        from speclake.pipelines.normalize.masses import formula_mass

        wanted = sorted({f for f in formulas if f})
        out: list[list[Candidate]] = [[] for _ in queries]
        if not wanted:
            return out
        con = self.catalog.con.cursor()
        cols = ", ".join(_COLUMNS)
        try:
            con.register("_f", pa.table({"formula": pa.array(wanted, pa.string())}))
            table = con.sql(f"""
                SELECT {cols} FROM (
                  SELECT s.*, row_number() OVER (PARTITION BY s.formula, s.inchikey14 ORDER BY s.faiss_id) AS rn
                  FROM structures s JOIN _f USING (formula)) WHERE rn = 1
                ORDER BY formula, inchikey14""").to_arrow_table()
        finally:
            con.close()
        data = {c: table.column(c).to_pylist() for c in table.column_names}
        rows_of: dict[str, list[int]] = defaultdict(list)
        for j, f in enumerate(data["formula"]):
            rows_of[f].append(j)
        fps = None
        if self.morgan_index and table.num_rows:
            fps = np.ascontiguousarray(self._index.vectors(table.column("faiss_id").to_numpy())).view(np.uint64)
        for i, (q, f) in enumerate(zip(queries, formulas)):
            if not f or f not in rows_of:
                continue
            mass = formula_mass(f)
            best = None
            for add, _m in hypotheses(q.precursor_mz, q.ionmode, q.charge, adducts=self.adducts):
                ion = adduct_mz(mass, add)
                err = (float(q.precursor_mz) - ion) / ion * 1e6
                mode = "positive" if add.charge > 0 else "negative"
                key = (abs(err), self.ranks.get((mode, add.name), len(self.ranks) + 1))
                if best is None or key < best[0]:
                    best = (key, add.name, err)
            if best is None:
                continue
            (_, rank), adduct, err = best
            cands = [Candidate(inchikey=data["inchikey"][j], inchikey14=data["inchikey14"][j],
                               smiles=data["smiles"][j], formula=f, monoisotopic_mass=float(data["monoisotopic_mass"][j]),
                               adduct=adduct, mass_error_ppm=float(err), compound_name=data["compound_name"][j],
                               adduct_rank=int(rank), source=data["source"][j], faiss_id=int(data["faiss_id"][j]),
                               fingerprint=None if fps is None else fps[j]) for j in rows_of[f]]
            self.rank_formulas(q, cands)
            out[i] = cands
        return out

    def rank_formulas(self, query: Query, cands: list[Candidate]) -> None:
        """Fill formula_rank / formula_score of a query's candidates (top ``max_formulas`` pairs get trees)."""
        count: dict[tuple[str, str], int] = defaultdict(int)
        best_ppm: dict[tuple[str, str], float] = {}
        rank: dict[tuple[str, str], int] = {}
        for c in cands:
            key = (c.formula, c.adduct)
            count[key] += 1
            best_ppm[key] = min(best_ppm.get(key, float("inf")), abs(c.mass_error_ppm))
            rank[key] = c.adduct_rank
        # most candidates first, then the smallest mass error, then the likelier adduct
        chosen = sorted(count, key=lambda k: (-count[k], best_ppm[k], rank[k], k))
        if self.max_formulas is not None:
            chosen = chosen[:self.max_formulas]
        if not chosen or not len(query.mz):
            return
        by_adduct: dict[str, list[str]] = defaultdict(list)
        for f, a in chosen:
            by_adduct[a].append(f)
        ranked = rank_formulas(query, by_adduct, cache=self.trees, ppm=self.tree_ppm)
        for c in cands:
            rank, score = ranked.get((c.formula, c.adduct), (None, None))
            c.formula_rank, c.formula_score = rank, score
