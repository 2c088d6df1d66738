"""The per-batch steps of annotation: library search -> candidates -> rank -> table rows.

:class:`Annotator` holds what a batch needs (the library index, the structure candidate source, the
ranker, the library's spectrum -> structure lookup), opened once per process (the driver, or each Ray
Data actor), and turns a batch of :class:`~.model.Query` into ``annotations`` rows and
``annotation_errors`` rows. A batch that fails is retried scan by scan, so one bad scan becomes one
error row and its batch is still annotated.

Whatever the lake lacks is reported in :attr:`Annotator.missing` (what, and the command that makes it)
and left out: without a structure index the candidates are the structures of the scan's library hits;
without a fitted ranker :func:`~.rankers.load_ranker` gives the ``library+prior`` ranker.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from speclake.serving.annotate.model import Candidate, Query, Ranked
from speclake.serving.annotate.queries import error_row

log = logging.getLogger(__name__)

IDENTITY, ANALOGUE = "identity", "analogue"


@dataclass(frozen=True)
class StepSettings:
    """What the per-batch steps need (a subset of :class:`~.job.AnnotateSettings`)."""

    top_k: int = 20
    method: str | None = None
    ppm: float = 10.0
    index_name: str = "fingerprint"
    library_top_k: int = 10
    library_tolerance_da: float = 0.02


# -- the library's spectrum -> structure lookup ------------------------------------------------------
class LibraryLookup:
    """Structure and precursor of library spectra (lake ``spectra`` joined with ``compounds``), by id."""

    COLUMNS = ("spectrum_id", "inchikey", "compound_name", "precursor_mz")
    COMPOUND_COLUMNS = ("inchikey", "inchikey14", "smiles", "formula", "monoisotopic_mass", "compound_name")

    def __init__(self, lake_dir: str | os.PathLike[str]) -> None:
        from speclake.lake.catalog import Lake

        lake = Lake(lake_dir)
        self.spectra = _read(lake.files("spectra"), self.COLUMNS)
        self.compounds = _read(lake.files("compounds"), self.COMPOUND_COLUMNS)
        self._ids = self.spectra.column("spectrum_id").combine_chunks()
        self._keys = self.compounds.column("inchikey").combine_chunks()

    def get(self, spectrum_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``spectrum_id -> {inchikey, inchikey14, smiles, formula, monoisotopic_mass, compound_name,
        precursor_mz}`` for the ids found (structure fields None for a spectrum without structure)."""
        ids = pa.array(sorted(set(spectrum_ids)), pa.string())
        if not len(ids) or not len(self._ids):
            return {}
        pos = pc.index_in(ids, value_set=self._ids)
        found = pc.is_valid(pos)
        rows = self.spectra.take(pc.filter(pos, found)).to_pylist()
        keys = pa.array([r["inchikey"] for r in rows], pa.string())
        cpos = pc.index_in(keys, value_set=self._keys) if len(self._keys) else pa.nulls(len(rows), pa.int32())
        found_c = pc.is_valid(cpos)
        comps = iter(self.compounds.take(pc.filter(cpos, found_c)).to_pylist())
        out = {}
        for row, has in zip(rows, found_c.to_pylist()):
            info = dict(next(comps)) if has else {k: None for k in self.COMPOUND_COLUMNS}
            info["library_compound_name"] = row["compound_name"] or info.get("compound_name")
            info["precursor_mz"] = row["precursor_mz"]
            out[row["spectrum_id"]] = info
        return out


def _read(files: list[str], columns: Sequence[str]) -> pa.Table:
    if not files:
        return pa.table({c: pa.array([], pa.string() if c != "precursor_mz" and c != "monoisotopic_mass"
                                      else pa.float64()) for c in columns})
    return pa.concat_tables([pq.read_table(f, columns=list(columns)) for f in files], promote_options="default")


# -- library evidence per structure ------------------------------------------------------------------
def best_library_hits(identity: Sequence[Any], analogue: Sequence[Any], info: dict[str, dict[str, Any]],
                      ) -> dict[str, tuple[Any, str, dict[str, Any]]]:
    """``inchikey14 -> (hit, 'identity'|'analogue', info)``: the best library hit of each structure among a
    scan's hits (identity hits first, then by score)."""
    out: dict[str, tuple[Any, str, dict[str, Any]]] = {}
    for kind, hits in ((IDENTITY, identity), (ANALOGUE, analogue)):
        for h in sorted(hits, key=lambda h: -h.score):
            meta = info.get(h.spectrum_id)
            key = meta.get("inchikey14") if meta else None
            if key and key not in out:
                out[key] = (h, kind, meta)
    return out


def library_candidates(query: Query, hits: dict[str, tuple[Any, str, dict[str, Any]]], ppm: float,
                       ) -> list[Candidate]:
    """Candidates when the lake has no structure index: the structures of the scan's library hits whose
    mass fits the precursor under one of the ion mode's adducts within ``ppm`` (identity hits always)."""
    from speclake.serving.annotate.precursor import hypotheses

    hyps = hypotheses(query.precursor_mz, query.ionmode, query.charge)
    out = []
    for key, (hit, kind, meta) in hits.items():
        mass = meta.get("monoisotopic_mass")
        if mass is None or not meta.get("smiles"):
            continue
        best = None
        for rank, (add, neutral) in enumerate(hyps, start=1):
            err = (neutral - mass) / mass * 1e6
            if best is None or abs(err) < abs(best[2]):
                best = (add.name, rank, err)
        if best is None or (abs(best[2]) > ppm and kind != IDENTITY):
            continue
        out.append(Candidate(inchikey=meta["inchikey"], inchikey14=key, smiles=meta["smiles"],
                             formula=meta.get("formula") or "", monoisotopic_mass=float(mass), adduct=best[0],
                             mass_error_ppm=float(best[2]), compound_name=meta.get("compound_name"),
                             adduct_rank=best[1], source="library_hit"))
    return out


# -- rows --------------------------------------------------------------------------------------------
def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _query_cols(q: Query) -> dict[str, Any]:
    return {"source_file": q.source_file, "query_id": q.query_id, "record_locator": q.record_locator,
            "scan_number": q.scan_number, "query_usi": q.usi, "precursor_mz": q.precursor_mz,
            "retention_time": q.retention_time, "ionmode": q.ionmode}


def _library_cols(entry: tuple[Any, str, dict[str, Any]] | None) -> dict[str, Any]:
    if entry is None:
        return {"shared_peaks": None, "library_spectrum_id": None, "library_entropy": None, "library_cosine": None,
                "library_modified_cosine": None, "library_match": None, "library_compound_name": None}
    hit, kind, meta = entry
    return {"shared_peaks": int(hit.shared_peaks), "library_spectrum_id": hit.spectrum_id,
            "library_entropy": _num(hit.entropy), "library_cosine": _num(hit.cosine),
            "library_modified_cosine": _num(hit.modified_cosine), "library_match": kind,
            "library_compound_name": meta.get("library_compound_name")}


def ranked_rows(ranked: Ranked, lib: dict[str, tuple[Any, str, dict[str, Any]]], top_k: int,
                best_hit: tuple[Any, str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """``annotations`` rows of one scan (without study and run id): its top ``top_k`` candidates, or one
    ``no_candidates`` row carrying the scan's best library hit, if any."""
    base = _query_cols(ranked.query)
    n = ranked.n_candidates if ranked.n_candidates is not None else len(ranked.candidates)
    if not ranked.candidates:
        return [{**base, "rank": None, "status": "no_candidates", "inchikey": None, "inchikey14": None,
                 "smiles": None, "compound_name": None, "formula": None, "adduct": None, "adduct_rank": None,
                 "formula_rank": None, "score": None, "method": ranked.method, "confidence": None,
                 "mass_error_ppm": None, "n_candidates": 0, **_library_cols(best_hit)}]
    rows = []
    for i, (c, s) in enumerate(zip(ranked.candidates[:top_k], ranked.scores[:top_k]), start=1):
        rows.append({**base, "rank": i, "status": "annotated", "inchikey": c.inchikey, "inchikey14": c.inchikey14,
                     "smiles": c.smiles, "compound_name": c.compound_name, "formula": c.formula, "adduct": c.adduct,
                     "adduct_rank": c.adduct_rank, "formula_rank": c.formula_rank, "score": _num(s),
                     "method": ranked.method, "confidence": _num(ranked.confidence) if i == 1 else None,
                     "mass_error_ppm": _num(c.mass_error_ppm), "n_candidates": n,
                     **_library_cols(lib.get(c.inchikey14))})
    return rows


def _best_hit(identity: Sequence[Any], analogue: Sequence[Any], info: dict[str, dict[str, Any]],
              ) -> tuple[Any, str, dict[str, Any]] | None:
    for kind, hits in ((IDENTITY, identity), (ANALOGUE, analogue)):
        if hits:
            h = max(hits, key=lambda h: h.score)
            return h, kind, info.get(h.spectrum_id, {})
    return None


# -- the batch step ----------------------------------------------------------------------------------
class Annotator:
    """Everything one process needs to annotate batches of scans (see the module doc)."""

    def __init__(self, lake_dir: str | os.PathLike[str], settings: StepSettings) -> None:
        from speclake.serving.annotate.rankers import list_rankers, load_ranker

        self.lake_dir = str(lake_dir)
        self.settings = settings
        self.missing: list[str] = []
        self.library = self._open_library()
        self.lookup = LibraryLookup(lake_dir) if self.library is not None else None
        self.source = self._open_candidates()
        self.ranker = load_ranker(lake_dir, settings.method)
        self._open_priors()
        if settings.method is None and not list_rankers(lake_dir):
            self.missing.append(f"no fitted ranker: ranking with {self.ranker.name} (library evidence and the "
                                "prior, no confidence); fit one with `speclake annotate-prepare --lake DIR`")

    def _open_library(self):
        from speclake.serving.library.index import LibraryIndex

        try:
            return LibraryIndex.load(self.lake_dir)
        except Exception as exc:  # noqa: BLE001 - no index (or an unreadable one): annotate without it
            self.missing.append(f"no library index ({exc}); open it once with "
                                "speclake.serving.library.LibraryIndex.open(lake) to build it")
            return None

    def _open_candidates(self):
        from speclake.index.search import IndexNotFound
        from speclake.serving.annotate.candidates import CandidateSource

        try:
            return CandidateSource.open(self.lake_dir, self.settings.index_name, self.settings.ppm)
        except IndexNotFound:
            self.missing.append(f"no structure index {self.settings.index_name!r}: candidates are only the "
                                "structures of library hits; build it with `speclake index build --lake DIR` "
                                "or `speclake annotate --structures FILES`")
            return None

    def _open_priors(self) -> None:
        """Read indexed candidates' priors from the index's precomputed files (:mod:`.priors`) where they exist."""
        from speclake.serving.annotate.priors import IndexPriors

        if self.source is not None and self.source.morgan_index:
            ev = self.ranker.evidence
            ev.use_index_priors(IndexPriors.open(self.source.index, ev.digest))

    def ensure_priors(self, progress: Callable[[int, int], None] | None = None) -> dict[str, int] | None:
        """Precompute the library prior of every indexed structure not yet done for this library (once per
        index shard and library; :func:`.priors.ensure_shard_priors`), then read them from there; None when
        there is no Morgan fingerprint index (priors are then computed per candidate)."""
        from speclake.serving.annotate.priors import ensure_shard_priors

        if self.source is None or not self.source.morgan_index:
            return None
        ev = self.ranker.evidence
        stats = ensure_shard_priors(self.source.index, ev.reference.keys, ev.reference.fps, reference=ev.kernel,
                                    progress=progress)
        self._open_priors()
        return stats

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def search(self, queries: Sequence[Query]) -> tuple[list[list[Any]], list[list[Any]]]:
        """Identity and analogue hits of every query (empty lists without a library index)."""
        if self.library is None:
            return [[] for _ in queries], [[] for _ in queries]
        from speclake.serving.library.search import Query as LibQuery, search_batch

        lq = [LibQuery(q.mz, q.intensities, q.precursor_mz, q.ionmode) for q in queries]
        kw = dict(top_k=self.settings.library_top_k, tolerance_da=self.settings.library_tolerance_da)
        out = []
        for mode, extra in ((IDENTITY, {"precursor_ppm": self.settings.ppm}), (ANALOGUE, {})):
            try:
                out.append(search_batch(self.library, lq, mode=mode, **kw, **extra))
            except ValueError:  # a scan the library cleaner refuses (e.g. no peak left): no hits for it
                per = []
                for q in lq:
                    try:
                        per.append(search_batch(self.library, [q], mode=mode, **kw, **extra)[0])
                    except ValueError:
                        per.append([])
                out.append(per)
        return out[0], out[1]

    def annotate(self, queries: Sequence[Query]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``annotations`` rows and ``annotation_errors`` rows of a batch (a failing batch is retried scan
        by scan; a scan that still fails is one error row)."""
        try:
            return self._annotate(queries), []
        except Exception as exc:  # noqa: BLE001 - isolate the scan that fails
            if len(queries) == 1:
                q = queries[0]
                log.warning("scan %s of %s not annotated: %s", q.query_id, q.source_file, exc)
                return [], [error_row(q.source_file, q.query_id, q.record_locator, q.scan_number, "annotate",
                                      "annotate_failed", f"{type(exc).__name__}: {exc}")]
        rows, errors = [], []
        for q in queries:
            r, e = self.annotate([q])
            rows += r
            errors += e
        return rows, errors

    def _annotate(self, queries: Sequence[Query]) -> list[dict[str, Any]]:
        if not queries:
            return []
        identity, analogue = self.search(queries)
        ids = {h.spectrum_id for hits in (*identity, *analogue) for h in hits}
        info = self.lookup.get(sorted(ids)) if self.lookup is not None else {}
        lib = [best_library_hits(i, a, info) for i, a in zip(identity, analogue)]
        if self.source is not None:
            cands = self.source.candidates(list(queries))
        else:
            cands = [library_candidates(q, h, self.settings.ppm) for q, h in zip(queries, lib)]
        ranked = self.ranker.rank(list(queries), cands, {IDENTITY: identity, ANALOGUE: analogue},
                                  top=self.settings.top_k)
        rows: list[dict[str, Any]] = []
        for r, l, i, a in zip(ranked, lib, identity, analogue):
            rows += ranked_rows(r, l, self.settings.top_k, _best_hit(i, a, info))
        return rows


# -- Ray Data: queries as plain columns, one actor per worker ----------------------------------------
QUERY_FIELDS = ("query_id", "source_file", "record_locator", "precursor_mz", "ionmode", "scan_number",
                "retention_time", "charge", "usi")


def query_record(q: Query) -> dict[str, Any]:
    """A query as plain values for a Ray Data row (metadata is display only and stays behind)."""
    return {**{f: getattr(q, f) for f in QUERY_FIELDS}, "mz": np.asarray(q.mz, dtype=np.float64),
            "intensities": np.asarray(q.intensities, dtype=np.float64)}


def query_from_record(r: dict[str, Any]) -> Query:
    def opt(x: Any) -> Any:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else x
    return Query(query_id=str(r["query_id"]), source_file=str(r["source_file"]), record_locator=str(r["record_locator"]),
                 precursor_mz=float(r["precursor_mz"]), ionmode=str(r["ionmode"]),
                 mz=np.asarray(r["mz"], dtype=np.float64), intensities=np.asarray(r["intensities"], dtype=np.float64),
                 scan_number=None if opt(r["scan_number"]) is None else int(r["scan_number"]),
                 retention_time=opt(r["retention_time"]),
                 charge=None if opt(r["charge"]) is None else int(r["charge"]), usi=opt(r["usi"]))


class RayAnnotator:
    """The callable class of ``map_batches``: one :class:`Annotator` per actor; a batch of query rows in,
    one row out holding the batch's annotation and error rows (pickled)."""

    def __init__(self, lake_dir: str, settings: StepSettings) -> None:
        self.annotator = Annotator(lake_dir, settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import pickle

        queries = [query_from_record(r) for r in batch.to_pylist()]
        rows, errors = self.annotator.annotate(queries)
        return pa.table({"payload": pa.array([pickle.dumps((rows, errors))], pa.binary())})


__all__ = ["Annotator", "LibraryLookup", "RayAnnotator", "StepSettings", "best_library_hits", "library_candidates",
           "query_from_record", "query_record", "ranked_rows"]
