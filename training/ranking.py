"""Validation hit@1 during training: one fixed ranking set, ranked by the model after every epoch.

:func:`ranking_set` (the driver, once per run) takes up to ``TrainSettings.rank_queries`` validation
spectra that have the architecture's inputs (a fixed subset in the seeded hash order of
:func:`~speclake.training.eval_data.take_subset`) and gives each a candidate list of lake compounds
(one structure per InChIKey-14):

* the compounds with the true structure's molecular formula: the ``formula`` candidate mode of
  ``speclake evaluate``, over the lake's own compounds (the structure index and its extra structure
  files are not read while training); a seeded sample of at most ``rank_candidates - 1`` besides the
  truth;
* a list with fewer than ``rank_min_candidates`` structures (most formulas of a small lake have one
  compound, whose list every model would rank first) is topped up with the compounds nearest in
  monoisotopic mass, as arch5's hard negatives are chosen (:func:`~speclake.training.data.negative_pool`);
  :attr:`RankingSet.topped_up` counts those lists.

The true structure is always in its list; compounds without what the architecture scores with
(descriptors for arch1-arch4, a SMILES for arch5) are never candidates.

:class:`ValidationRanker` (in the training loop, rank 0 only) scores every list the way
``speclake evaluate`` scores the architecture (:func:`speclake.training.eval_scoring.method_scores`):

* descriptor models (arch1, arch2, arch2-flat, arch3): Bernoulli log-likelihood of each candidate's
  structure descriptors under the predicted probabilities (:func:`~.scoring.descriptor_log_likelihood`,
  clipped at evaluate's 1e-3), unweighted: evaluate's reliability weights are fitted on validation
  spectra, the very spectra ranked here;
* arch4 (spectrum embeddings only, no structure side): analogue search, the similarity-weighted mean
  Tanimoto of each candidate to the structures of the query's top same-ion-mode library spectra by
  embedding cosine (:func:`~.eval_queries.embedding_hits`, :func:`~.scoring.analogue_scores`, evaluate's
  ``library_top_k``); the library is a seeded sample of at most ``rank_library`` training spectra
  (evaluate searches all of them);
* arch5: cosine of the spectrum embedding to each candidate's structure embedding
  (:func:`~.scoring.embedding_scores`; an unparsable SMILES scores worst).

hit@k is the share of lists whose truth ranks within the first k, ties pessimistic
(:func:`~.metrics.rank_of_truth`: a constant scorer gets 0).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from speclake.training.data import DESCRIPTOR_COLUMNS, FEATURE_BLOCKS, Examples, _latest_hash_sql
from speclake.training.inputs import as_batch, has_inputs
from speclake.training.metrics import rank_of_truth
from speclake.training.models import ARCH_INPUTS, ARCH_KIND, ModelContext

log = logging.getLogger(__name__)

#: Structure descriptor families a candidate carries (ChemOnt classes come from library records only).
BIT_FAMILIES: tuple[str, ...] = ("morgan", "maccs", "substructure")
#: Columns of a query spectrum the models read (arch3 also reads the feature blocks).
QUERY_INPUTS: tuple[str, ...] = ("spectrum_id", "inchikey14", "ionmode", "precursor_mz", "smiles", "mz", "intensities")
#: Predicted probabilities are clipped to [CLIP, 1 - CLIP], as ``EvaluationSettings.clip`` by default.
CLIP = 1e-3

Csr = tuple[np.ndarray, np.ndarray]   # (indptr, values): row i is values[indptr[i]:indptr[i + 1]]


@dataclass
class RankingSet:
    """Query spectra and their candidate lists; plain lists and arrays, so it travels in a loop's ``config``.

    Lists are flat: list ``q`` is the structure rows ``members[offsets[q]:offsets[q + 1]]``, its truth at
    position ``truth[q]``. Structures hold what the architecture scores with: ``smiles`` (arch5) or the
    on-bits of each family in ``bits`` (the others); arch4's ``library`` spectra have their own structures'
    Morgan on-bits in ``library_bits``.
    """

    arch: str
    queries: dict[str, list]
    offsets: np.ndarray
    members: np.ndarray
    truth: np.ndarray
    smiles: list[str] = field(default_factory=list)
    bits: dict[str, Csr] = field(default_factory=dict)
    library: dict[str, list] = field(default_factory=dict)
    library_bits: Csr | None = None
    topped_up: int = 0

    def __len__(self) -> int:
        return len(self.truth)

    @property
    def counts(self) -> np.ndarray:
        """Candidates per list."""
        return np.diff(self.offsets)

    def to_config(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, d: dict[str, Any]) -> "RankingSet":
        return cls(**d)

    def summary(self) -> dict[str, Any]:
        """What a model records of its validation ranking (metrics.json ``val_ranking``)."""
        n = self.counts
        return {"queries": len(self), "mean_candidates": float(n.mean()) if len(n) else 0.0,
                "min_candidates": int(n.min()) if len(n) else 0, "max_candidates": int(n.max()) if len(n) else 0,
                "topped_up_by_mass": self.topped_up,
                "library": len(self.library.get("mz", [])) if self.library else 0}

    def structure_rows(self) -> list[dict[str, list[int]]]:
        """``descriptors``-like rows (``morgan_on``, ``maccs_on``, ``substructure_on``) of every structure."""
        cols = {fam: csr_lists(self.bits[fam]) for fam in BIT_FAMILIES if fam in self.bits}
        n = len(next(iter(cols.values()))) if cols else 0
        return [{f"{fam}_on": lists[i] for fam, lists in cols.items()} for i in range(n)]


def csr_of(lists: pa.Array | pa.ChunkedArray | Sequence[Sequence[int] | None]) -> Csr:
    """CSR of on-bit lists (a null list is empty)."""
    arr = lists if isinstance(lists, (pa.Array, pa.ChunkedArray)) else pa.array(list(lists), pa.list_(pa.int32()))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int32)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), values


def csr_lists(csr: Csr) -> list[list[int]]:
    indptr, values = csr
    return [values[lo:hi].tolist() for lo, hi in zip(indptr[:-1], indptr[1:])]


# -- candidate lists ------------------------------------------------------------------------------

def candidate_lists(formulas: Sequence[str | None], masses: Sequence[float], truths: Sequence[int], *, cap: int,
                    minimum: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Candidate lists over a structure table (``formulas``, ``masses``), one per true structure row in ``truths``.

    A list holds its truth and a seeded sample of at most ``cap - 1`` other structures of the same formula;
    one shorter than ``minimum`` is topped up with the structures nearest in mass (ties by row; structures
    without a mass never). Returns offsets, members (each list ascending), the truth's position in each
    list, and the number of lists topped up.
    """
    if cap < 1:
        raise ValueError(f"cap must be at least 1, got {cap}")
    m = np.asarray(masses, dtype=np.float64)
    by_formula: dict[str, list[int]] = {}
    for i, f in enumerate(formulas):
        if f:
            by_formula.setdefault(f, []).append(i)
    finite = np.flatnonzero(np.isfinite(m))
    order = finite[np.argsort(m[finite], kind="stable")]
    where = np.full(len(m), -1, np.int64)
    where[order] = np.arange(len(order))
    minimum = min(minimum, cap)
    lists, positions, topped = [], [], 0
    for t in (int(x) for x in truths):
        same = [j for j in by_formula.get(formulas[t] or "", []) if j != t]
        if len(same) > cap - 1:
            same = rng.choice(same, cap - 1, replace=False).tolist()
        chosen = [t, *same]
        need = minimum - len(chosen)
        if need > 0 and where[t] >= 0:
            reach = need + len(chosen)  # the ``need`` nearest outside ``chosen`` lie this close in mass order
            taken = set(chosen)
            window = order[max(0, where[t] - reach): where[t] + reach + 1]
            near = sorted((int(j) for j in window if int(j) not in taken), key=lambda j: (abs(m[j] - m[t]), j))[:need]
            chosen += near
            topped += bool(near)
        members = sorted(chosen)
        lists.append(members)
        positions.append(members.index(t))
    offsets = np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)
    members = np.asarray([j for x in lists for j in x], np.int64)
    return offsets, members, np.asarray(positions, np.int64), topped


def _lake_structures(lake_dir: str | Path, kind: str, keys: Sequence[str] | None = None,
                     details: bool = False) -> pa.Table:
    """One row per InChIKey-14 of the lake's compounds that ``kind`` can score (descriptors, or a SMILES):
    inchikey14, formula, monoisotopic_mass; with ``details`` also smiles and the on-bit columns. ``keys``
    limits the rows to those structures."""
    from speclake.lake import sql
    from speclake.lake.catalog import Lake

    has_desc = Lake(lake_dir).current("descriptors") is not None
    bit_cols = [c for c in DESCRIPTOR_COLUMNS if c != "chemont_classes"]
    if kind != "joint" and not has_desc:
        return pa.table({"inchikey14": pa.array([], pa.string())})
    join = f"LEFT JOIN {_latest_hash_sql('descriptors')} d ON d.inchikey = c.inchikey" if has_desc else ""
    desc = ", ".join(f"d.{c}" if has_desc else f"CAST(NULL AS SMALLINT[]) AS {c}" for c in bit_cols)
    usable = "d.morgan_on IS NOT NULL" if kind != "joint" else "c.smiles IS NOT NULL AND c.smiles <> ''"
    prefer = "d.morgan_on IS NULL, " if has_desc else ""
    cols = "inchikey14, formula, monoisotopic_mass" + (", smiles, " + ", ".join(bit_cols) if details else "")
    con = sql.connect(lake_dir, threads=2)
    try:
        only = ""
        if keys is not None:
            con.register("_keys", pa.table({"k": pa.array(list(keys), pa.string())}))
            only = "AND c.inchikey14 IN (SELECT k FROM _keys)"
        return con.sql(
            f"""SELECT {cols} FROM (
                  SELECT c.inchikey14, c.formula, c.monoisotopic_mass, c.smiles, {desc},
                         row_number() OVER (PARTITION BY c.inchikey14 ORDER BY {prefer}c.inchikey) AS rn
                  FROM compounds c {join}
                  WHERE c.inchikey14 IS NOT NULL AND {usable} {only}) WHERE rn = 1
                ORDER BY inchikey14""").to_arrow_table()
    finally:
        con.close()


def _pick(examples: Examples, split: str, inputs: Sequence[str], cap: int, seed: int,
          columns: Sequence[str]) -> pa.Table:
    """A seeded subset of at most ``cap`` spectra of ``split`` having ``inputs``, with ``columns``."""
    from speclake.training.eval_data import take_subset

    ids = examples.table([split], ["spectrum_id", "smiles", "morgan_on"])
    light = {"smiles": ids.column("smiles").to_pylist(),  # has_inputs reads only whether morgan_on is there
             "morgan_on": [True if v else None for v in pc.is_valid(ids.column("morgan_on")).to_pylist()]}
    ids = ids.filter(pa.array(has_inputs(light, inputs)))
    chosen = take_subset(ids, cap, seed).column("spectrum_id").to_pylist()
    if not chosen:
        return pa.table({c: pa.array([], pa.null()) for c in columns})
    tab = pq.read_table(examples.path, columns=list(columns),
                        filters=[("split", "=", split), ("spectrum_id", "in", chosen)])
    return tab.sort_by("spectrum_id")


def ranking_set(lake_dir: str | Path, examples: Examples, arch: str, train: Any) -> RankingSet | None:
    """The validation ranking set of one run (see the module docstring); None when ``train.rank_queries``
    is 0 or no validation spectrum (or no candidate structure) has what ``arch`` needs."""
    if train.rank_queries == 0 or not examples.counts.get("validation"):
        return None
    kind, inputs = ARCH_KIND[arch], ARCH_INPUTS[arch]
    columns = [*QUERY_INPUTS, *(FEATURE_BLOCKS if arch == "arch3" else ())]
    queries = _pick(examples, "validation", inputs, train.rank_queries, train.seed, columns)
    table = _lake_structures(lake_dir, kind)
    keys = table.column("inchikey14").to_pylist()
    row_of = {k: i for i, k in enumerate(keys)}
    found = [row_of.get(k) for k in queries.column("inchikey14").to_pylist()] if queries.num_rows else []
    keep = [i for i, r in enumerate(found) if r is not None]
    if len(keep) < len(found):
        log.info("validation ranking: %d of %d query structures not among the lake's usable compounds: left out",
                 len(found) - len(keep), len(found))
    if not keep:
        return None
    queries = queries.take(pa.array(keep, pa.int64()))
    masses = table.column("monoisotopic_mass").to_numpy(zero_copy_only=False).astype(np.float64)
    offsets, members, truth, topped = candidate_lists(
        table.column("formula").to_pylist(), masses, [found[i] for i in keep],
        cap=train.rank_candidates, minimum=train.rank_min_candidates, rng=np.random.default_rng(train.seed))
    used, members = np.unique(members, return_inverse=True)
    details = _lake_structures(lake_dir, kind, [keys[i] for i in used], details=True)
    if details.column("inchikey14").to_pylist() != [keys[i] for i in used]:
        raise RuntimeError("validation ranking: the lake's compounds changed while the ranking set was built")
    rs = RankingSet(arch, as_batch(queries), offsets, members.astype(np.int64), truth, topped_up=topped)
    if kind == "joint":
        rs.smiles = details.column("smiles").to_pylist()
    else:
        rs.bits = {fam: csr_of(details.column(f"{fam}_on")) for fam in BIT_FAMILIES}
    if kind == "siamese":
        lib = _pick(examples, "train", inputs, train.rank_library, train.seed,
                    ["spectrum_id", "ionmode", "precursor_mz", "mz", "intensities", "morgan_on"])
        rs.library_bits = csr_of(lib.column("morgan_on"))
        rs.library = as_batch(lib.drop_columns(["morgan_on"]))
    log.info("validation ranking: %s", rs.summary())
    return rs


# -- scoring in the training loop -------------------------------------------------------------------

def truth_ranks(scores: Sequence[np.ndarray], truth: Sequence[int]) -> np.ndarray:
    """1-based rank of each list's truth, ties pessimistic (:func:`~speclake.training.metrics.rank_of_truth`)."""
    return np.asarray([rank_of_truth(s, int(t)) for s, t in zip(scores, truth)], np.int64)


def _chunks(batch: dict[str, list], size: int):
    n = len(next(iter(batch.values()))) if batch else 0
    for lo in range(0, n, size):
        yield {k: v[lo:lo + size] for k, v in batch.items()}


class ValidationRanker:
    """Ranks a :class:`RankingSet`'s lists with a model of ``ctx``'s architecture (see the module docstring)."""

    def __init__(self, rs: RankingSet, ctx: ModelContext, batch_size: int = 256) -> None:
        from speclake.training.eval_settings import EvaluationSettings
        from speclake.training.metrics import pack_fingerprints
        from speclake.training.scoring import descriptor_matrix

        if rs.arch != ctx.arch:
            raise ValueError(f"ranking set of {rs.arch} given to a {ctx.arch} model")
        self.rs, self.ctx, self.batch_size = rs, ctx, batch_size
        self.top_k = EvaluationSettings.model_fields["library_top_k"].default
        self._graphs: list | None = None
        if ctx.kind == "descriptors":
            self.matrix, self.mask = descriptor_matrix(rs.structure_rows(), ctx.descriptors, sparse=True)
        elif ctx.kind == "siamese":
            if rs.library_bits is None:
                raise ValueError("arch4's ranking set has no library")
            n_bits = 1 + int(max(rs.bits["morgan"][1].max(initial=0), rs.library_bits[1].max(initial=0)))
            self.fps = pack_fingerprints(csr_lists(rs.bits["morgan"]), n_bits)
            self.library_fps = pack_fingerprints(csr_lists(rs.library_bits), n_bits)

    def _lists(self):
        off, mem = self.rs.offsets, self.rs.members
        return [mem[lo:hi] for lo, hi in zip(off[:-1], off[1:])]

    def _spectra(self, module, batch: dict[str, list], device) -> np.ndarray:
        import torch

        from speclake.training.tasks import descriptor_logits, spectrum_embeddings

        out = []
        for chunk in _chunks(batch, self.batch_size):
            if self.ctx.kind == "descriptors":
                out.append(torch.sigmoid(descriptor_logits(module, chunk, self.ctx, device)).cpu().numpy())
            else:
                out.append(spectrum_embeddings(module, chunk, self.ctx, device).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _structures(self, module, device) -> np.ndarray:
        """(n, d) structure embeddings of arch5 (NaN rows for unparsable SMILES)."""
        from speclake.training.models.graph import collate, mol_graph

        if self._graphs is None:
            self._graphs = [mol_graph(s) if s else None for s in self.rs.smiles]
        out = np.full((len(self._graphs), self.ctx.model["embedding_dim"]), np.nan)
        for lo in range(0, len(self._graphs), self.batch_size):
            part = [(i, g) for i, g in enumerate(self._graphs[lo:lo + self.batch_size], lo) if g is not None]
            if part:
                graphs = {k: v.to(device) for k, v in collate([g for _, g in part]).items()}
                out[[i for i, _ in part]] = module(None, graphs)[1].cpu().numpy()
        return out

    def scores(self, module, device="cpu") -> list[np.ndarray]:
        """Every list's candidate scores under ``module`` (an unwrapped model, put in eval mode meanwhile)."""
        import torch

        from speclake.training.scoring import analogue_scores, descriptor_log_likelihood, embedding_scores

        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                spectra = self._spectra(module, self.rs.queries, device)
                lists = self._lists()
                if self.ctx.kind == "descriptors":
                    return [descriptor_log_likelihood(p, self.matrix[idx], mask=self.mask, clip=CLIP)
                            for p, idx in zip(spectra, lists)]
                if self.ctx.kind == "joint":
                    structures = self._structures(module, device)
                    return [embedding_scores(e, structures[idx]) for e, idx in zip(spectra, lists)]
                from speclake.training.eval_queries import embedding_hits

                library = self._spectra(module, self.rs.library, device)
                hits = embedding_hits(spectra, self.rs.queries["ionmode"], library, self.rs.library["ionmode"],
                                      self.library_fps, self.top_k)
                return [analogue_scores(sims, hit_fps, self.fps[idx]) for (sims, hit_fps), idx in zip(hits, lists)]
        finally:
            module.train(was_training)

    def ranks(self, module, device="cpu") -> np.ndarray:
        """Rank of each list's truth under ``module``."""
        return truth_ranks(self.scores(module, device), self.rs.truth)
