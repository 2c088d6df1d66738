"""Per-candidate evidence, one feature matrix per query (rows: candidates, columns: :data:`FEATURES`).

* ``prior``: the library prior, a candidate's highest Tanimoto (Morgan) to the library's structures
  (1.0 for a library structure). The library is the lake's spectra: *training split only* while a
  ranker is fitted or evaluated (:meth:`LibraryReference.from_lake` with ``splits=("train",)``), every
  lake structure when a study is annotated;
* ``identity`` / ``analogue``: library analogue evidence as MS2Query does
  (:func:`speclake.training.scoring.analogue_scores`): the score-weighted mean Tanimoto of the
  candidate to the structures of the query's identity / analogue hits; ``identity_top`` /
  ``analogue_top``: Tanimoto to the best hit's structure times that hit's score, over the first
  ``max_hits`` hits of spectra in the library (hits of other spectra, e.g. other splits, are skipped);
* ``tree_gap``: best tree score of the query minus the candidate's (formula, adduct) tree score
  (:data:`TREE_GAP_CAP` without a tree), ``formula_top``: 1 for the best-ranked formula;
* ``abs_ppm``: absolute precursor mass error; ``adduct_logprior``: log P(adduct | ion mode) from the lake.

Candidate fingerprints are cached once per distinct SMILES (:class:`FingerprintCache`, an LRU per
process): read from the structure index when the candidates carry them (:attr:`Candidate.fingerprint`,
filled by :class:`.candidates.CandidateSource` from a ``fingerprint`` index with the same Morgan
settings and RDKit), else computed with RDKit. Library fingerprints come from the lake's
``descriptors`` (``morgan_on``) when present, else from the structure index (the same SMILES) or
computed from ``compounds``. The prior is one bfloat16 matrix product per block of distinct skeletons
(intersections are exact small integers, :class:`.priors.ReferenceBits`), so every route gives the same
features; for indexed candidates it is read from the index's precomputed prior files when they exist
(:mod:`.priors`).
"""
from __future__ import annotations

import logging
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from speclake.pipelines.features.descriptors import DescriptorSettings
from speclake.training import metrics as M

from .model import Candidate, Query
from .priors import IndexPriors, ReferenceBits, reference_digest

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = ("prior", "identity", "identity_top", "analogue", "analogue_top", "tree_gap",
                             "formula_top", "abs_ppm", "adduct_logprior")
#: tree_gap of a candidate whose formula got no tree.
TREE_GAP_CAP = 20.0
#: Library search modes whose hits are evidence.
HIT_MODES = ("identity", "analogue")


class FingerprintCache:
    """Packed Morgan fingerprints per SMILES (LRU; an unparsable SMILES gives an empty fingerprint)."""

    def __init__(self, settings: DescriptorSettings = DescriptorSettings(), maxsize: int = 500_000) -> None:
        self.settings = settings
        self.maxsize = maxsize
        self.words = (settings.morgan_bits + 63) // 64
        self._d: OrderedDict[str, np.ndarray] = OrderedDict()
        self._indexed: bool | None = None

    def _compute(self, smiles: str) -> np.ndarray:
        from rdkit import Chem, RDLogger

        from speclake.pipelines.features.descriptors import morgan_on_bits

        RDLogger.DisableLog("rdApp.*")
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        bits = morgan_on_bits(mol, self.settings.morgan_radius, self.settings.morgan_bits) if mol is not None else []
        return M.pack_fingerprints([bits], self.settings.morgan_bits)[0]

    def indexed(self) -> bool:
        """Whether fingerprints read from a fingerprint index (:attr:`Candidate.fingerprint`) are these settings'."""
        if self._indexed is None:
            from speclake.index.embed import MorganFingerprint as MF

            self._indexed = self.settings.morgan_radius == MF.radius and self.settings.morgan_bits == MF.n_bits
        return self._indexed

    def get(self, smiles: Sequence[str], given: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
        """(len(smiles), words) uint64 fingerprints; ``given``: a known fingerprint per SMILES (None: compute
        it with RDKit), e.g. read from the structure index."""
        out = np.zeros((len(smiles), self.words), np.uint64)
        for i, s in enumerate(smiles):
            fp = self._d.get(s)
            if fp is None:
                g = given[i] if given is not None else None
                fp = self._d[s] = self._compute(s) if g is None or len(g) != self.words else np.array(g, np.uint64)
                if len(self._d) > self.maxsize:
                    self._d.popitem(last=False)
            else:
                self._d.move_to_end(s)
            out[i] = fp
        return out

    def of(self, cands: Sequence[Candidate]) -> np.ndarray:
        """Fingerprints of candidates: those they carry from the structure index when the settings match."""
        given = [c.fingerprint for c in cands] if self.indexed() else None
        if given and all(g is not None and len(g) == self.words for g in given):
            return np.stack(given).astype(np.uint64, copy=False)   # all read from the index: nothing to cache
        return self.get([c.smiles for c in cands], given)


@dataclass
class LibraryReference:
    """The library's structures: distinct InChIKey-14 with packed fingerprints, and each library
    spectrum's structure (to read hits)."""

    keys: list[str]                                  # distinct InChIKey-14
    fps: np.ndarray                                  # (len(keys), words) uint64
    spectrum_structure: dict[str, int]               # spectrum_id -> row of keys/fps
    settings: DescriptorSettings = field(default_factory=DescriptorSettings)
    splits: tuple[str, ...] | None = None            # the splits it holds (None: every lake structure)

    def __post_init__(self) -> None:
        self.key_row = {k: i for i, k in enumerate(self.keys)}

    @classmethod
    def from_lake(cls, lake: str | os.PathLike[str], *, splits: Sequence[str] | None = None,
                  split_settings: Any = None) -> "LibraryReference":
        """Structures of the lake's spectra; ``splits`` (e.g. ``("train",)``) keeps those of the named
        splits only (:func:`speclake.training.split.assign_split`)."""
        from speclake.lake import sql
        from speclake.lake.catalog import Lake
        from speclake.training.eval_data import fingerprint_settings
        from speclake.training.split import SplitSettings, assign_split

        lk = Lake(lake)
        fp = fingerprint_settings(lk)
        con = sql.connect(lake, threads=2)
        try:
            have_desc = lk.current("descriptors") is not None
            q = ("SELECT s.spectrum_id, c.inchikey14, c.smiles, {d} FROM spectra s JOIN compounds c USING (inchikey) "
                 "{j} WHERE c.inchikey14 IS NOT NULL ORDER BY s.spectrum_id, c.smiles")  # ordered: each skeleton's
            # first SMILES (its fingerprint) is the same in every run
            sql_text = q.format(d="d.morgan_on" if have_desc else "NULL AS morgan_on",
                                j="LEFT JOIN (SELECT inchikey, any_value(morgan_on) AS morgan_on FROM descriptors "
                                  "GROUP BY inchikey) d USING (inchikey)" if have_desc else "")
            rows = con.sql(sql_text).fetchall()
        finally:
            con.close()
        ss = split_settings or SplitSettings()
        keep = set(splits) if splits is not None else None
        keys: dict[str, int] = {}
        bits: list[Any] = []
        smiles: list[str | None] = []
        spec: dict[str, int] = {}
        for sid, k14, smi, on in rows:
            if len(k14) != 14 or (keep is not None and assign_split(k14, ss) not in keep):
                continue
            if k14 not in keys:
                keys[k14] = len(keys)
                bits.append(on)
                smiles.append(smi)
            elif bits[keys[k14]] is None and on is not None:
                bits[keys[k14]] = on
            spec[sid] = keys[k14]
        cache = FingerprintCache(fp)
        packed = M.pack_fingerprints([b if b is not None else [] for b in bits], fp.morgan_bits)
        todo = [i for i, b in enumerate(bits) if b is None and smiles[i]]
        known: dict[str, np.ndarray] = {}
        if todo and cache.indexed():   # the same SMILES in the structure index: its stored bits, no RDKit
            from .candidates import index_fingerprints

            known = index_fingerprints(lake, [smiles[i] for i in todo])
        for i in todo:
            packed[i] = cache.get([smiles[i]], [known.get(smiles[i])])[0]
        n_computed = sum(b is None for b in bits) - sum(smiles[i] in known for i in todo)
        if n_computed:
            log.info("library reference: %d of %d structures fingerprinted here (no descriptors row)",
                     n_computed, len(bits))
        return cls(list(keys), packed, spec, fp, tuple(splits) if splits is not None else None)


class EvidenceBuilder:
    """Evidence matrices of candidate lists against one library reference (see the module doc)."""

    def __init__(self, reference: LibraryReference, priors: Mapping[str, Mapping[str, float]], *,
                 cache: FingerprintCache | None = None, prior_cache_size: int = 500_000,
                 models: Sequence["ModelScorer"] = (), max_hits: int = 10) -> None:
        self.reference = reference
        self.max_hits = max_hits
        self.priors = priors
        self.models = list(models)
        self.names: tuple[str, ...] = FEATURES + tuple(m.feature for m in self.models)
        self.fps = cache or FingerprintCache(reference.settings)
        self._prior: OrderedDict[str, float] = OrderedDict()
        self._prior_max = prior_cache_size
        self._kernel: ReferenceBits | None = None
        self._digest: str | None = None
        self.index_priors: IndexPriors | None = None

    @property
    def kernel(self) -> ReferenceBits:
        """The reference's bits as the prior's matrix operand (made on first use)."""
        if self._kernel is None:
            self._kernel = ReferenceBits(self.reference.fps)
        return self._kernel

    @property
    def digest(self) -> str:
        """Names this reference's precomputed priors (:func:`.priors.reference_digest`)."""
        if self._digest is None:
            self._digest = reference_digest(self.reference.keys, self.reference.fps)
        return self._digest

    def use_index_priors(self, priors: IndexPriors | None) -> None:
        """Read priors of indexed candidates (``faiss_id``) from precomputed files instead of computing them."""
        self.index_priors = priors if priors else None

    def _max_tanimoto(self, fps: np.ndarray) -> np.ndarray:
        """Highest Tanimoto of each packed row to the reference (:meth:`.priors.ReferenceBits.max_tanimoto`)."""
        return self.kernel.max_tanimoto(fps)

    def warm_priors(self, cands: Sequence[Candidate]) -> dict[str, float]:
        """Compute the priors of every not yet cached skeleton among ``cands`` in one batch; returns the prior
        of each of their non-library skeletons (also those a small cache evicted meanwhile)."""
        out: dict[str, float] = {}
        todo: dict[str, Candidate] = {}
        for c in cands:
            k = c.inchikey14
            if k in self.reference.key_row or k in out or k in todo:
                continue
            v = self._prior.get(k)
            if v is None:
                todo[k] = c
            else:
                self._prior.move_to_end(k)   # in use: not the next evicted
                out[k] = v
        if todo:
            new = dict(zip(todo, self._max_tanimoto(self.fps.of(list(todo.values()))).tolist()))
            out.update(new)
            self._prior.update(new)
            while len(self._prior) > self._prior_max:
                self._prior.popitem(last=False)
        return out

    def prior(self, cands: Sequence[Candidate]) -> np.ndarray:
        """Library prior of each candidate: 1.0 for a library structure, else read from the index's precomputed
        files (indexed candidates, one vectorised read), else computed (cached per InChIKey-14)."""
        out = np.full(len(cands), np.nan)
        if self.index_priors is not None:
            rows = [i for i, c in enumerate(cands) if c.faiss_id is not None]
            if rows:
                out[rows] = self.index_priors.lookup([cands[i].faiss_id for i in rows])
        out[[i for i, c in enumerate(cands) if c.inchikey14 in self.reference.key_row]] = 1.0
        rest = np.flatnonzero(np.isnan(out))   # not indexed, or its shard has no prior file
        if len(rest):
            vals = self.warm_priors([cands[i] for i in rest])
            out[rest] = [vals[cands[i].inchikey14] for i in rest]
        return out

    def _hit_features(self, hits: Sequence[Any], fps: np.ndarray, query_id: str) -> tuple[np.ndarray, np.ndarray]:
        rows, sims = [], []
        for h in hits:
            r = self.reference.spectrum_structure.get(h.spectrum_id)
            if r is not None and h.spectrum_id != query_id and math.isfinite(h.score):
                rows.append(r)
                sims.append(float(h.score))
                if len(rows) == self.max_hits:
                    break
        if not rows:
            return np.zeros(len(fps)), np.zeros(len(fps))
        tan = M.tanimoto_matrix(fps, self.reference.fps[rows]).astype(np.float64)
        s = np.clip(np.asarray(sims), 0.0, None)
        weighted = tan @ (s / s.sum()) if s.sum() > 0 else tan.mean(axis=1)
        best = int(np.argmax(s))
        return weighted, tan[:, best] * s[best]

    def features(self, query: Query, cands: Sequence[Candidate],
                 hits: Mapping[str, Sequence[Any]] | None = None) -> np.ndarray:
        """(len(cands), len(FEATURES)) evidence of one query's candidates; ``hits``: mode -> that query's
        library hits (``identity`` / ``analogue``, :class:`speclake.serving.library.Hit`), None for none."""
        n = len(cands)
        X = np.zeros((n, len(self.names)))
        if n == 0:
            return X
        fps = self.fps.of(cands)
        X[:, 0] = self.prior(cands)
        for j, mode in enumerate(HIT_MODES):
            w, top = self._hit_features((hits or {}).get(mode) or (), fps, query.query_id)
            X[:, 1 + 2 * j], X[:, 2 + 2 * j] = w, top
        scores = np.array([np.nan if c.formula_score is None else c.formula_score for c in cands])
        best = np.nanmax(scores) if np.isfinite(scores).any() else np.nan
        X[:, 5] = np.where(np.isfinite(scores), np.clip(best - scores, 0.0, TREE_GAP_CAP), TREE_GAP_CAP)
        X[:, 6] = [1.0 if c.formula_rank == 1 else 0.0 for c in cands]
        X[:, 7] = [abs(c.mass_error_ppm) for c in cands]
        mode = query.ionmode
        X[:, 8] = [math.log(max(self.priors.get(mode if mode in self.priors else
                                                 ("positive" if c.adduct.endswith("+") else "negative"), {})
                                 .get(c.adduct, 0.0), 1e-6)) for c in cands]
        return X

    def matrices(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]],
                 hits: Mapping[str, Sequence[Sequence[Any]]] | None = None) -> list[np.ndarray]:
        """:meth:`features` of every query (model scores batched over the queries); ``hits``: mode -> per
        query list of hits."""
        block: list[Candidate] = []   # priors warmed in blocks that fit the cache (a block evicts older ones)
        for cands in candidates if self.index_priors is None else ():   # precomputed: read per list instead
            block.extend(cands)
            if len(block) >= self._prior_max // 4:
                self.warm_priors(block)
                block = []
        self.warm_priors(block)
        out = []
        for i, (q, cands) in enumerate(zip(queries, candidates)):
            qh = {m: h[i] for m, h in (hits or {}).items() if h is not None and i < len(h)}
            out.append(self.features(q, cands, qh))
        for j, model in enumerate(self.models):
            for X, col in zip(out, model.scores(queries, candidates)):
                X[:, len(FEATURES) + j] = col
        return out


#: Architectures whose scores are evidence: descriptor likelihood (arch1, arch2, arch2-flat), the joint
#: embedding (arch5) and the spectrum embedding's library neighbours (arch4, :class:`.neighbours.NeighbourScorer`).
#: arch3 needs the feature blocks of ``speclake features``, not made for study scans yet.
MODEL_ARCHS = {"arch1": "descriptor", "arch2": "descriptor", "arch2-flat": "descriptor", "arch4": "neighbours",
               "arch5": "joint"}


class ModelScorer:
    """One registered model as evidence (column ``model:<model_id>``): CSI:FingerID-style log-likelihood of
    the candidate's descriptors under the predicted probabilities (arch1-2), or the cosine of the spectrum and
    structure embeddings (arch5). Structure-side results are cached per SMILES."""

    def __init__(self, model: Any, *, clip: float = 1e-3, cache_size: int = 200_000) -> None:
        if model.arch not in MODEL_ARCHS:
            raise ValueError(f"model {model.model_id}: architecture {model.arch!r} is not used as evidence; "
                             f"supported: {', '.join(MODEL_ARCHS)}")
        if MODEL_ARCHS[model.arch] == "neighbours":
            raise ValueError(f"model {model.model_id} ({model.arch}) scores through the library's embeddings: "
                             "use neighbours.NeighbourScorer (model_scorers makes it)")
        self.model = model
        self.kind = MODEL_ARCHS[model.arch]
        self.feature = f"model:{model.model_id}"
        self.clip = clip
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_size = cache_size
        self._last: tuple[tuple[Query, ...], np.ndarray] | None = None

    @staticmethod
    def examples(queries: Sequence[Query]) -> Any:
        """The model input table of blind queries (peaks, precursor m/z, ion mode)."""
        import pyarrow as pa

        return pa.table({"mz": [np.asarray(q.mz, np.float64).tolist() for q in queries],
                         "intensities": [np.asarray(q.intensities, np.float64).tolist() for q in queries],
                         "precursor_mz": [float(q.precursor_mz) for q in queries],
                         "ionmode": [q.ionmode for q in queries]})

    def _structures(self, smiles: Sequence[str]) -> list[Any]:
        """Per SMILES its structure-side values (cached; a call with more distinct SMILES than the cache holds
        still gets all of its own)."""
        todo = list(dict.fromkeys(s for s in smiles if s not in self._cache))
        fresh: dict[str, Any] = {}
        if todo:
            if self.kind == "joint":
                vals: list[Any] = list(np.asarray(self.model.embed_structures(todo), np.float64))
            else:
                from speclake.training.eval_data import structure_rows

                vals = structure_rows(todo, DescriptorSettings(), processes=1)
            fresh = dict(zip(todo, vals))
            self._cache.update(fresh)
        out = [fresh[s] if s in fresh else self._cache[s] for s in smiles]
        while len(self._cache) > self._cache_size:   # evicted only once this call has its values
            self._cache.popitem(last=False)
        return out

    def predict(self, queries: Sequence[Query]) -> np.ndarray:
        """(len(queries), descriptors) predicted probabilities; the last call's are reused for the same query
        objects (a model's ``model:`` and ``fpll:`` columns of one batch)."""
        last = self._last
        if last is None or len(last[0]) != len(queries) or any(a is not b for a, b in zip(last[0], queries)):
            last = self._last = (tuple(queries),
                                 np.asarray(self.model.predict_descriptors(self.examples(queries)), np.float64))
        return last[1]

    def scores(self, queries: Sequence[Query], candidates: Sequence[Sequence[Candidate]]) -> list[np.ndarray]:
        """One score per candidate of every query (0 where the model cannot score a structure)."""
        from speclake.training.scoring import descriptor_log_likelihood, descriptor_matrix, embedding_scores

        if not queries:
            return []
        out = []
        if self.kind == "joint":
            q_emb = np.asarray(self.model.embed_spectra(self.examples(queries)), np.float64)
            for i, cands in enumerate(candidates):
                if not cands:
                    out.append(np.zeros(0))
                    continue
                emb = np.asarray(self._structures([c.smiles for c in cands]), np.float64)
                out.append(np.nan_to_num(embedding_scores(q_emb[i], emb)))
            return out
        probs = self.predict(queries)
        for i, cands in enumerate(candidates):
            if not cands:
                out.append(np.zeros(0))
                continue
            mat, mask = descriptor_matrix(self._structures([c.smiles for c in cands]), self.model.descriptor_names,
                                          sparse=True)
            out.append(descriptor_log_likelihood(probs[i], mat, mask=mask, clip=self.clip))
        return out


def model_scorers(lake: str | os.PathLike[str], model_ids: Sequence[str] | None = None,
                  split: Any = None, *, library_splits: Sequence[str] | None = ("train",)) -> list[Any]:
    """Scorers of the lake's registered models (``model_ids``; None: every model of a supported
    architecture trained on ``split`` when given). [] when the lake has none or torch is missing.

    An arch4 model gives a :class:`.neighbours.NeighbourScorer` whose library is the lake's ``library_splits``
    spectra (None: all) under ``split`` (None: the model's own split settings), read on its first use."""
    try:
        from speclake.training import registry
    except ImportError as exc:
        if model_ids:
            raise ValueError(f"cannot load models {list(model_ids)}: {exc}") from exc
        return []
    explicit = model_ids is not None
    ids = list(model_ids) if explicit else [m["model_id"] for m in registry.list_models(lake)
                                            if m.get("arch") in MODEL_ARCHS]
    out = []
    for mid in ids:
        model = registry.load_model(lake, mid)
        if not explicit and split is not None and model.split != split:
            log.info("model %s was trained on another split: not used as evidence", mid)
            continue
        if MODEL_ARCHS.get(model.arch) == "neighbours":
            from .neighbours import neighbour_scorer

            out.append(neighbour_scorer(lake, model, split, library_splits=library_splits))
        else:
            out.append(ModelScorer(model))
    return out
