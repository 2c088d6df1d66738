"""Candidate structures per query spectrum, from the structure index's DuckDB catalog.

Two modes:

* ``formula``: every indexed structure with the molecular formula of the true structure
  (the CSI:FingerID evaluation setting: the formula is assumed known);
* ``mass``: every indexed structure whose monoisotopic mass is within ``ppm`` of the neutral
  mass derived from the precursor m/z and the adduct. Library records often carry a nominal or
  wrong precursor m/z (a third of MassBank MS2 spectra are more than 10 ppm off); for those, and
  for spectra without a usable adduct, the window is centred on the true structure's mass instead
  (counted in :attr:`CandidateSets.n_recentered`), so every test spectrum keeps a realistic list
  and all modes are scored on the same spectra.

Lists are deduplicated by InChIKey-14 (the lowest ``faiss_id`` per skeleton is kept). The true
structure is always in its list: lake compounds are indexed; if it is still missing (an
unparsable adduct, a precursor m/z off by more than ``ppm``) it is added and counted in
:attr:`CandidateSets.n_truth_added`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pyarrow as pa

from speclake.index.catalog import Catalog
from speclake.pipelines.normalize.adduct import neutral_mass
from speclake.pipelines.normalize.masses import ppm_window

log = logging.getLogger(__name__)

CandidateMode = Literal["formula", "mass"]
CANDIDATE_MODES: tuple[str, ...] = ("formula", "mass")


@dataclass
class CandidateSets:
    """Candidates of many queries: one flat table plus per-query offsets.

    ``table`` has columns query (int), inchikey14, inchikey, smiles, formula, monoisotopic_mass,
    is_true (bool); rows of query ``i`` are ``table[offsets[i]:offsets[i+1]]``.
    """

    mode: str
    table: pa.Table
    offsets: np.ndarray
    n_truth_added: int = 0
    n_no_mass: int = 0
    n_recentered: int = 0

    @property
    def counts(self) -> np.ndarray:
        """Candidates per query."""
        return np.diff(self.offsets)

    def truth_index(self) -> np.ndarray:
        """Position of the true structure within each query's list."""
        is_true = np.asarray(self.table.column("is_true").to_numpy(zero_copy_only=False), dtype=bool)
        out = np.empty(len(self.offsets) - 1, np.int64)
        for i, (lo, hi) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            hits = np.flatnonzero(is_true[lo:hi])
            if len(hits) != 1:
                raise ValueError(f"query {i} has {len(hits)} true candidates, expected exactly 1")
            out[i] = hits[0]
        return out


def open_catalog(lake: str | os.PathLike[str], index_name: str = "fingerprint") -> Catalog:
    """The DuckDB catalog of the current version of ``<lake>/index/<index_name>``."""
    from speclake.index.search import StructureIndex, index_dir

    return StructureIndex.open(index_dir(lake, index_name)).catalog


def query_table(queries: pa.Table, mode: str, ppm: float) -> tuple[pa.Table, int, int]:
    """(query, formula, lo, hi) per query for the catalog join, queries without a usable mass, and
    windows centred on the true mass (no usable mass, or the precursor's mass more than ``ppm`` off)."""
    n = queries.num_rows
    formulas = queries.column("formula").to_pylist()
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    n_no_mass = n_recentered = 0
    if mode == "mass":
        true_mass = queries.column("monoisotopic_mass").to_pylist()
        for i, (mz, add, ion) in enumerate(zip(queries.column("precursor_mz").to_pylist(),
                                                queries.column("adduct").to_pylist(),
                                                queries.column("ionmode").to_pylist())):
            m = neutral_mass(mz, add, ion)
            n_no_mass += m is None
            t = true_mass[i]
            if t is not None and (m is None or not ppm_window(m, ppm)[0] <= t <= ppm_window(m, ppm)[1]):
                m = float(t)
                n_recentered += 1
            if m is not None:
                lo[i], hi[i] = ppm_window(m, ppm)
    elif mode != "formula":
        raise ValueError(f"unknown candidate mode {mode!r}; choose from {', '.join(CANDIDATE_MODES)}")
    return (pa.table({"query": np.arange(n, dtype=np.int64), "formula": pa.array(formulas, pa.string()),
                      "lo": lo, "hi": hi}), n_no_mass, n_recentered)


def candidate_sets(catalog: Catalog, queries: pa.Table, mode: str, *, ppm: float = 10.0,
                   truths: pa.Table | None = None) -> CandidateSets:
    """Candidates of every query (rows with inchikey14, formula, precursor_mz, adduct, ionmode).

    ``truths`` (inchikey14, inchikey, smiles, formula, monoisotopic_mass per query, same order)
    supplies a true structure missing from the catalog; by default the query's own columns.
    """
    qt, n_no_mass, n_recentered = query_table(queries, mode, ppm)
    con = catalog.con
    con.register("_q", qt)
    cond = "s.formula = q.formula" if mode == "formula" else "s.monoisotopic_mass BETWEEN q.lo AND q.hi"
    try:
        found = con.sql(
            f"""SELECT query, inchikey14, inchikey, smiles, formula, monoisotopic_mass FROM (
                  SELECT q.query, s.inchikey14, s.inchikey, s.smiles, s.formula, s.monoisotopic_mass,
                         row_number() OVER (PARTITION BY q.query, s.inchikey14 ORDER BY s.faiss_id) AS rn
                  FROM _q q JOIN structures s ON {cond}) WHERE rn = 1
                ORDER BY query, inchikey14""").to_arrow_table()
    finally:
        con.unregister("_q")
    truths = truths if truths is not None else queries
    true_keys = truths.column("inchikey14").to_pylist()
    q_col = found.column("query").to_numpy()
    keys = found.column("inchikey14").to_pylist()
    is_true = np.fromiter((k == true_keys[q] for q, k in zip(q_col, keys)), dtype=bool, count=len(keys))
    have = set(q_col[is_true].tolist())
    missing = [i for i in range(queries.num_rows) if i not in have]
    table = found.append_column("is_true", pa.array(is_true))
    if missing:
        cols = ["inchikey14", "inchikey", "smiles", "formula", "monoisotopic_mass"]
        add = truths.select(cols).take(pa.array(missing, pa.int64()))
        add = add.add_column(0, "query", pa.array(missing, pa.int64())).append_column(
            "is_true", pa.array(np.ones(len(missing), bool)))
        table = pa.concat_tables([table, add.cast(table.schema)])
        log.info("%s mode: true structure added to %d of %d candidate lists", mode, len(missing), queries.num_rows)
    order = np.lexsort((np.asarray(table.column("inchikey14").to_pylist(), dtype=object).astype(str),
                        table.column("query").to_numpy()))
    table = table.take(pa.array(order, pa.int64()))
    counts = np.bincount(table.column("query").to_numpy(), minlength=queries.num_rows)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return CandidateSets(mode, table, offsets, n_truth_added=len(missing), n_no_mass=n_no_mass,
                         n_recentered=n_recentered)


def ensure_index(lake: str | os.PathLike[str], structures: Sequence[str | os.PathLike[str]] = (), *,
                 index_name: str = "fingerprint", required_inchikeys: Sequence[str] = (),
                 num_cpus: int | None = None) -> Path:
    """Make ``<lake>/index/<index_name>`` hold the lake compounds and ``structures``; return its path.

    Builds (``add=True``) when the index is missing, when files are given, or when some of
    ``required_inchikeys`` (InChIKey-14 of the evaluation's true structures) are not indexed.
    """
    from speclake.index.build import build_index
    from speclake.index.search import IndexNotFound, StructureIndex, index_dir
    from speclake.index.settings import IndexSettings

    path = index_dir(lake, index_name)
    sources: list[str] = [str(s) for s in structures]
    settings = IndexSettings(num_cpus=num_cpus)
    try:
        idx = StructureIndex.open(path)
        settings = IndexSettings.model_validate({**idx.settings.model_dump(), "num_cpus": num_cpus})
        try:
            if required_inchikeys:
                got = set(idx.catalog.lookup(inchikeys=list(required_inchikeys)).column("inchikey14").to_pylist())
                if set(required_inchikeys) - got:
                    sources.insert(0, str(lake))
        finally:
            idx.close()
    except IndexNotFound:
        sources.insert(0, str(lake))
    if sources:
        log.info("adding %s to structure index %s", sources, path)
        build_index(sources, lake, name=index_name, add=True, settings=settings)
    return path
