"""Training examples from the lake: spectra with a structure, their feature blocks and descriptors.

:func:`load_examples` joins ``spectra`` (MS level, InChIKey-14 and a structure required) with
``compounds``, ``descriptors`` and ``spectrum_features`` in DuckDB, writes the join once as
Parquet under ``<lake>/models/_examples/<key>/`` (keyed by the table versions and settings, so a
changed lake gives a new cache and a stale one is never reused) and streams it into a Ray Data
dataset. The driver only ever holds structure-level data (the split of each InChIKey-14).

:func:`require_inputs` counts the training examples that have the inputs an architecture needs
and refuses, naming the command that makes them, when there are none; :func:`negative_pool`
holds arch5's hard negatives.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from speclake.lake import sql
from speclake.lake.catalog import Lake
from speclake.lake.run import RunError
from speclake.training.encoding import DescriptorSettings, DescriptorSpace
from speclake.training.split import SPLITS, SplitSettings, assign_split

log = logging.getLogger(__name__)

#: Per-spectrum feature blocks of ``spectrum_features`` (arch3 inputs).
FEATURE_BLOCKS: tuple[str, ...] = (
    "refsim_cosine", "refsim_modified_cosine", "refsim_entropy", "pattern_overlap", "tree_features", "spec2vec",
)
#: Structure-level descriptor columns of ``descriptors``.
DESCRIPTOR_COLUMNS: tuple[str, ...] = ("morgan_on", "maccs_on", "substructure_on", "chemont_classes")
#: Columns of every example, in order.
EXAMPLE_COLUMNS: tuple[str, ...] = (
    "spectrum_id", "inchikey", "inchikey14", "split", "ionmode", "precursor_mz", "smiles", "formula",
    "monoisotopic_mass", "mz", "intensities", *FEATURE_BLOCKS, *DESCRIPTOR_COLUMNS,
)


@dataclass
class Examples:
    """The examples of one lake: a cached Parquet directory, its split counts and block sizes."""

    path: Path
    split: SplitSettings
    counts: dict[str, int]
    structures: dict[str, int]
    block_dims: dict[str, int] = field(default_factory=dict)

    def dataset(self, split: str | None = None):
        """Ray Data dataset of all examples, or of one split (streamed from the cached Parquet)."""
        import ray.data

        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        from ray.data.expressions import col

        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = ray.data.read_parquet(str(self.path), num_cpus=0.25)
        return ds.filter(expr=col("split") == split, num_cpus=0.25) if split is not None else ds

    def table(self, splits: Sequence[str] | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """The examples of some splits as one Arrow table (evaluation and prediction on a held-out split)."""
        filters = [("split", "in", list(splits))] if splits else None
        return pq.read_table(self.path, columns=list(columns) if columns else None, filters=filters)

    def split_record(self) -> dict:
        """What a model records about its data: split settings, spectra and structures per split."""
        return {"settings": self.split.model_dump(), "spectra": self.counts, "structures": self.structures}


def _latest_hash_sql(table: str) -> str:
    """Rows of ``table`` from its most recent features run only (a lake may hold several settings)."""
    return (f"(SELECT * FROM {table} WHERE settings_hash = (SELECT settings_hash FROM {table} "
            f"ORDER BY features_run_id DESC LIMIT 1))")


def cache_key(lake: Lake, split: SplitSettings, ms_level: int) -> str:
    """Hash of the table versions and settings an example cache is built from."""
    versions = {t: (v.version if (v := lake.current(t)) else 0)
                for t in ("spectra", "compounds", "descriptors", "spectrum_features")}
    blob = json.dumps({"v": versions, "split": split.model_dump(), "ms_level": ms_level, "format": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def structure_splits(inchikey14s: Sequence[str], split: SplitSettings) -> pa.Table:
    """(inchikey14, split) for every distinct structure block."""
    keys = sorted(set(k for k in inchikey14s if k))
    return pa.table({"inchikey14": keys, "split": [assign_split(k, split) for k in keys]})


def load_examples(lake_dir: str | Path, split: SplitSettings = SplitSettings(), ms_level: int = 2,
                  *, rebuild: bool = False) -> Examples:
    """Build (or reuse) the example cache of a lake and return it with its split counts.

    Only spectra of ``ms_level`` with an InChIKey-14 and a structure in ``compounds`` are kept.
    Spectra without feature rows get null blocks (models read them as zeros); structures without
    a ``descriptors`` row get null descriptor lists.
    """
    lake = Lake(lake_dir)
    if lake.current("spectra") is None or lake.current("compounds") is None:
        raise ValueError(f"{lake.root} has no spectra/compounds; run `speclake ingest` first")
    out = lake.root / "models" / "_examples" / cache_key(lake, split, ms_level)
    meta_path = out / "_examples.json"
    if meta_path.exists() and not rebuild:
        meta = json.loads(meta_path.read_text())
        return Examples(out, split, meta["counts"], meta["structures"], meta["block_dims"])
    con = sql.connect(lake.root, threads=2)
    try:
        keys = [r[0] for r in con.execute(
            "SELECT DISTINCT s.inchikey14 FROM spectra s JOIN compounds c ON s.inchikey = c.inchikey "
            "WHERE s.ms_level = ? AND s.inchikey14 IS NOT NULL", [ms_level]).fetchall()]
        if not keys:
            raise ValueError(f"no MS{ms_level} spectra with a structure in {lake.root}")
        con.register("_splits", structure_splits(keys, split))
        has_feat = lake.current("spectrum_features") is not None
        has_desc = lake.current("descriptors") is not None
        feat = ", ".join(f"f.{b}" if has_feat else f"CAST(NULL AS FLOAT[]) AS {b}" for b in FEATURE_BLOCKS)
        desc = ", ".join(
            f"d.{c}" if has_desc else f"CAST(NULL AS {'VARCHAR' if c == 'chemont_classes' else 'SMALLINT'}[]) AS {c}"
            for c in DESCRIPTOR_COLUMNS)
        joins = ""
        if has_feat:
            joins += f" LEFT JOIN {_latest_hash_sql('spectrum_features')} f ON f.spectrum_id = s.spectrum_id"
        if has_desc:
            joins += f" LEFT JOIN {_latest_hash_sql('descriptors')} d ON d.inchikey = s.inchikey"
        query = (
            "SELECT s.spectrum_id, s.inchikey, s.inchikey14, p.split, s.ionmode, s.precursor_mz, c.smiles, "
            f"c.formula, c.monoisotopic_mass, s.mz, s.intensities, {feat}, {desc} "
            "FROM spectra s JOIN compounds c ON s.inchikey = c.inchikey "
            f"JOIN _splits p ON p.inchikey14 = s.inchikey14{joins} "
            f"WHERE s.ms_level = {int(ms_level)} ORDER BY s.spectrum_id"
        )
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        con.execute(f"COPY ({query}) TO '{tmp / 'examples.parquet'}' (FORMAT parquet, ROW_GROUP_SIZE 4096)")
        counts = dict(con.execute(f"SELECT split, count(*) FROM read_parquet('{tmp}/*.parquet') GROUP BY 1").fetchall())
        structures = dict(con.execute(
            f"SELECT split, count(DISTINCT inchikey14) FROM read_parquet('{tmp}/*.parquet') GROUP BY 1").fetchall())
        dims = {b: int(con.execute(f"SELECT coalesce(max(len({b})), 0) FROM read_parquet('{tmp}/*.parquet')").fetchone()[0])
                for b in FEATURE_BLOCKS}
    finally:
        con.close()
    counts = {s: int(counts.get(s, 0)) for s in SPLITS}
    structures = {s: int(structures.get(s, 0)) for s in SPLITS}
    (tmp / "_examples.json").write_text(json.dumps({"counts": counts, "structures": structures, "block_dims": dims}))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("examples of %s: %s spectra per split (%s structures) in %s", lake.root, counts, structures, out)
    return Examples(out, split, counts, structures, dims)


def split_counts(examples: Examples) -> dict:
    """Spectra and structures per split, with the split settings: what a model records."""
    return examples.split_record()


def train_structure_rows(examples: Examples) -> list[dict]:
    """One ``descriptors``-like row per training structure (InChIKey-14), for fitting descriptor spaces."""
    tab = pq.read_table(examples.path, columns=["inchikey14", "split", *DESCRIPTOR_COLUMNS],
                        filters=[("split", "=", "train")])
    seen: dict[str, dict] = {}
    for row in tab.to_pylist():
        if row["inchikey14"] not in seen and row["morgan_on"] is not None:
            seen[row["inchikey14"]] = row
    return list(seen.values())


def fit_descriptor_space(examples: Examples, settings: DescriptorSettings = DescriptorSettings()) -> DescriptorSpace:
    """The descriptors a model predicts, chosen on training structures only."""
    return DescriptorSpace.fit(train_structure_rows(examples), settings)



def negative_pool(examples: Examples, lake_dir: str | Path, k: int = 8) -> dict[str, Any]:
    """arch5 hard negatives: training-split lake compounds, and per training structure the pool entries
    of the same formula (isobaric), topped up with the nearest by monoisotopic mass."""
    con = sql.connect(lake_dir, threads=2)
    try:
        rows = con.execute("SELECT inchikey14, any_value(smiles), any_value(formula), any_value(monoisotopic_mass) "
                           "FROM compounds WHERE inchikey14 IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    rows = [r for r in rows if len(r[0]) == 14 and assign_split(r[0], examples.split) == "train"]
    keys = [r[0] for r in rows]
    masses = np.asarray([r[3] if r[3] is not None else np.inf for r in rows], np.float64)
    by_formula: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_formula.setdefault(r[2] or "", []).append(i)
    order = np.argsort(masses, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    negatives: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        same = [j for j in by_formula[rows[i][2] or ""] if j != i][:k]
        window = order[max(0, rank[i] - k): rank[i] + k + 1]  # the 2k nearest in mass, from the sorted order
        near = sorted((j for j in window if j != i and j not in same and np.isfinite(masses[j])),
                      key=lambda j: abs(masses[j] - masses[i]))
        negatives[key] = [int(j) for j in same] + [int(j) for j in near[: max(0, k - len(same))]]
    return {"inchikey14": keys, "smiles": [r[1] for r in rows], "negatives": negatives}

#: Per model input (:data:`speclake.training.models.ARCH_INPUTS`): what it is, the lake table it comes
#: from, the command that writes that table, and the SQL condition of an example that has it.
INPUT_SOURCES: dict[str, tuple[str, str, str, str]] = {
    "descriptors": ("structure descriptors", "descriptors", "speclake features --lake {lake}", "morgan_on IS NOT NULL"),
    "features": ("spectrum feature blocks", "spectrum_features", "speclake features --lake {lake}",
                 "(" + " OR ".join(f"{b} IS NOT NULL" for b in FEATURE_BLOCKS) + ")"),
    "structures": ("structures (SMILES)", "compounds", "speclake ingest FILES --lake {lake}", "smiles IS NOT NULL"),
}


class MissingInputError(RunError, ValueError):
    """The lake lacks an input an architecture needs (the message names the command that makes it)."""


def count_with_inputs(examples: Examples, inputs: Sequence[str], split: str = "train") -> dict[str, int]:
    """Examples of ``split`` that have each input, and (key ``all``) those having every per-example one
    (descriptors, structures; a spectrum without feature rows reads its blocks as zeros)."""
    import duckdb

    conds = {i: INPUT_SOURCES[i][3] for i in inputs}
    every = " AND ".join(c for i, c in conds.items() if i != "features") or "TRUE"
    cols = ", ".join(f"count(*) FILTER (WHERE {c})" for c in [*conds.values(), every])
    con = duckdb.connect()
    try:
        row = con.execute(f"SELECT {cols} FROM read_parquet('{examples.path}/*.parquet') WHERE split = ?",
                          [split]).fetchone()
    finally:
        con.close()
    return {**dict(zip(conds, map(int, row))), "all": int(row[-1])}


def require_inputs(lake_dir: str | Path, examples: Examples, arch: str) -> int:
    """Training examples that ``arch`` can learn from; a :class:`MissingInputError` naming the missing
    input and the command that makes it when there are none."""
    from speclake.training.models import ARCH_INPUTS

    lake = Lake(lake_dir)
    inputs = ARCH_INPUTS[arch]
    counts = count_with_inputs(examples, inputs)
    for name in inputs:
        what, table, command, _ = INPUT_SOURCES[name]
        command = command.format(lake=lake.root)
        if lake.current(table) is None:
            raise MissingInputError(f"{arch} needs {what}: the lake {lake.root} has no `{table}` table; "
                                    f"run `{command}`")
        if counts[name] == 0:
            raise MissingInputError(f"{arch} needs {what}: none of the {examples.counts['train']} training spectra "
                                    f"has them in `{table}`; run `{command}` over these spectra")
    if counts["all"] == 0:
        raise MissingInputError(f"{arch}: no training spectrum has every input it needs ({', '.join(inputs)})")
    return counts["all"]
