"""What an evaluation runs on: the split examples, the query sets, candidate structures' descriptors.

The test (and validation) spectra are a fixed, hash-ordered subset when capped, so two runs with
the same settings score the same spectra.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from speclake.lake.catalog import Lake
from speclake.pipelines.features.descriptors import DescriptorSettings as FingerprintSettings
from speclake.pipelines.features.descriptors import compute_descriptors

from . import metrics as M
from .candidates import ensure_index
from .eval_settings import EvaluationSettings
from speclake.lake.run import Progress

log = logging.getLogger(__name__)

#: Columns of the examples the evaluation reads (models get the full rows).
QUERY_COLUMNS = ("spectrum_id", "inchikey", "inchikey14", "smiles", "formula", "monoisotopic_mass", "ionmode",
                 "precursor_mz", "adduct", "morgan_on", "maccs_on", "substructure_on", "chemont_classes")


@dataclass
class QuerySet:
    """Spectra of one split with everything precomputed that does not depend on the candidates."""

    name: str
    examples: pa.Table                     # full example rows (models' input)
    rows: list[dict[str, Any]]             # QUERY_COLUMNS as dicts
    probs: dict[str, np.ndarray] = field(default_factory=dict)          # method key -> (n, n_desc)
    hits: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)  # key -> (sims, hit fps)
    spectrum_emb: dict[str, np.ndarray] = field(default_factory=dict)   # arch5 key -> (n, d)

    def __len__(self) -> int:
        return self.examples.num_rows

    @classmethod
    def of(cls, name: str, examples: pa.Table) -> "QuerySet":
        return cls(name, examples, examples.select(list(QUERY_COLUMNS)).to_pylist())


def _hash_order(ids: Sequence[str], seed: int) -> np.ndarray:
    return np.argsort([hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids], kind="stable")


def take_subset(table: pa.Table, cap: int | None, seed: int) -> pa.Table:
    """A fixed subset of at most ``cap`` rows (hash order of spectrum_id), then sorted by spectrum_id."""
    order = _hash_order(table.column("spectrum_id").to_pylist(), seed)
    if cap is not None:
        order = order[:cap]
    return table.take(pa.array(np.sort(order), pa.int64()))


def load_split_examples(lake: Lake, settings: EvaluationSettings) -> dict[str, pa.Table]:
    """train / validation / test examples (with adduct) that have a precursor m/z, a structure and descriptors."""
    from speclake.lake import sql

    from .data import load_examples

    if lake.current("descriptors") is None:
        raise ValueError(f"evaluation needs structure descriptors: {lake.root} has no `descriptors` table; "
                         f"run `speclake features --lake {lake.root}`")
    ex = load_examples(lake.root, settings.split, settings.ms_level)
    table = ex.table()
    con = sql.connect(lake.root, threads=2)
    try:
        con.register("_ids", table.select(["spectrum_id"]))
        adducts = con.sql("SELECT i.spectrum_id, s.adduct FROM _ids i JOIN spectra s USING (spectrum_id)"
                          ).to_arrow_table()
    finally:
        con.close()
    amap = dict(zip(adducts.column("spectrum_id").to_pylist(), adducts.column("adduct").to_pylist()))
    if "adduct" not in table.column_names:
        table = table.append_column("adduct", pa.array([amap.get(s) for s in table.column("spectrum_id").to_pylist()],
                                                       pa.string()))
    ok = pc.and_(pc.and_(pc.is_valid(table.column("precursor_mz")), pc.is_valid(table.column("morgan_on"))),
                 pc.is_valid(table.column("smiles")))
    dropped = table.num_rows - int(pc.sum(ok).as_py() or 0)
    if dropped:
        log.info("%d spectra without precursor m/z, structure or descriptors left out", dropped)
    table = table.filter(ok)
    out = {s: table.filter(pc.equal(table.column("split"), s)) for s in ("train", "validation", "test")}
    out["test"] = take_subset(out["test"], settings.max_test, settings.seed)
    out["validation"] = take_subset(out["validation"], settings.max_validation, settings.seed)
    if out["test"].num_rows == 0:
        raise ValueError(f"no test spectra in {lake.root} under split {settings.split.model_dump()}")
    if out["train"].num_rows == 0:
        raise ValueError(f"no training spectra in {lake.root}")
    return out


def fingerprint_settings(lake: Lake) -> FingerprintSettings:
    """Morgan settings of the lake's ``descriptors`` table (candidates are fingerprinted the same way)."""
    tv = lake.current("descriptors")
    conf = ((tv.settings or {}).get("features") or {}).get("descriptors") if tv else None
    return FingerprintSettings.model_validate(conf) if conf else FingerprintSettings()


#: Candidate lists at least this long are described in worker processes (RDKit holds the GIL).
PARALLEL_STRUCTURES = 20_000


def structure_rows(smiles: Sequence[str], fp: FingerprintSettings, *, processes: int | None = None
                   ) -> list[dict[str, Any]]:
    """Descriptor on-bits (morgan_on, maccs_on, substructure_on) of candidate SMILES (empty when unparsable);
    long lists in a pool of ``processes`` (default: all cores), in order."""
    procs = processes or (os.cpu_count() or 1)
    if len(smiles) >= PARALLEL_STRUCTURES and procs > 1:
        import multiprocessing as mp
        from functools import partial

        chunks = [list(smiles[i:i + 5000]) for i in range(0, len(smiles), 5000)]
        with mp.get_context("fork").Pool(procs) as pool:
            return [r for part in pool.imap(partial(structure_rows, fp=fp, processes=1), chunks) for r in part]
    out = []
    for s in smiles:
        d = compute_descriptors(s, fp)
        if hasattr(d, "morgan_on"):
            out.append({"morgan_on": d.morgan_on, "maccs_on": d.maccs_on, "substructure_on": d.substructure_on})
        else:
            out.append({"morgan_on": [], "maccs_on": [], "substructure_on": []})
    return out


def train_fingerprints(train: pa.Table, morgan_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Packed Morgan fingerprints of the distinct training structures (the prior) and of every training
    spectrum's structure (the library's hits), in row order."""
    first: dict[str, Any] = {}
    for r in train.select(["inchikey14", "morgan_on"]).to_pylist():
        first.setdefault(r["inchikey14"], r["morgan_on"])
    return (M.pack_fingerprints(list(first.values()), morgan_bits),
            M.pack_fingerprints(train.column("morgan_on").to_pylist(), morgan_bits))


def prepare_candidate_index(lake: Lake, structures: Sequence[str | os.PathLike[str]], test: pa.Table,
                            val: pa.Table, settings: EvaluationSettings) -> list[str | os.PathLike[str]]:
    """Make the structure index hold the lake compounds, the true structures and ``structures`` (prefiltered to
    the possible candidates of ``test`` and ``val`` unless disabled); return the files actually indexed."""
    required = sorted(set(test.column("inchikey14").to_pylist()) | set(val.column("inchikey14").to_pylist()))
    files = list(structures)
    if files and settings.prefilter_structures:
        from .prefilter import prefilter_structure_files

        files = list(prefilter_structure_files(files, [test, val], settings.ppm, lake.root / "models" / "_prefilter"))
    ensure_index(lake.root, files, index_name=settings.index_name, required_inchikeys=required,
                 num_cpus=settings.num_cpus)
    return files


def progress_bar(items: Sequence[Any], progress: Progress | None, desc: str) -> Iterator[Any]:
    """``items``, each reported to ``progress`` as ``(desc, done, total)``."""
    total = len(items)
    for i, item in enumerate(items):
        if progress is not None:
            progress(desc, i, total)
        yield item
    if progress is not None:
        progress(desc, total, total)