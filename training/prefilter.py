"""Structure files cut down to the structures that can be a candidate of an evaluation.

An evaluation only ever reads candidate lists: the indexed structures with a query's formula, or
within ``ppm`` of its neutral mass. Standardizing and indexing a 2.5M-structure database to then
read ~0.1% of it costs most of an evaluation on a small machine, so :func:`prefilter_structure_files`
keeps only the lines of SMILES / CID-SMILES files whose structure *can* end in some list, judged
from RDKit's formula and exact mass of the parsed molecule.

The filter is a superset by construction: for a neutral, single-fragment molecule of organic
elements, standardization (cleanup, largest fragment, uncharge) keeps formula and mass, so the
test here is the catalog's own; every other line (charged atoms, several fragments, metals,
isotopes, unparsable SMILES) is kept unjudged and standardized as usual. The candidate lists from
the filtered files are therefore identical to those from the full files (checked by
``tests/training/test_prefilter.py``). Files of other formats (SDF, lakes) pass through.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import multiprocessing as mp
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from .candidates import query_table

log = logging.getLogger(__name__)

ORGANIC = frozenset({"C", "H", "N", "O", "P", "S", "F", "Cl", "Br", "I", "B", "Si", "Se"})
CHUNK_LINES = 20_000


def candidate_windows(queries: Iterable[pa.Table], ppm: float) -> tuple[set[str], np.ndarray, np.ndarray]:
    """Formulas and merged, sorted mass windows ``[lo, hi]`` of every query, by the candidate modes' own rules."""
    formulas: set[str] = set()
    los, his = [], []
    for table in queries:
        if table.num_rows == 0:
            continue
        formulas.update(f for f in table.column("formula").to_pylist() if f)
        qt, _, _ = query_table(table, "mass", ppm)
        lo, hi = qt.column("lo").to_numpy(), qt.column("hi").to_numpy()
        ok = np.isfinite(lo) & np.isfinite(hi)
        los.append(lo[ok])
        his.append(hi[ok])
    lo = np.concatenate(los) if los else np.zeros(0)
    hi = np.concatenate(his) if his else np.zeros(0)
    order = np.argsort(lo)
    lo, hi = lo[order], hi[order]
    merged_lo: list[float] = []
    merged_hi: list[float] = []
    for a, b in zip(lo, hi):
        if merged_hi and a <= merged_hi[-1]:
            merged_hi[-1] = max(merged_hi[-1], b)
        else:
            merged_lo.append(float(a))
            merged_hi.append(float(b))
    return formulas, np.asarray(merged_lo), np.asarray(merged_hi)


def in_windows(masses: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Bool per mass: inside one of the sorted, disjoint windows (inclusive)."""
    if len(lo) == 0:
        return np.zeros(len(masses), bool)
    i = np.searchsorted(lo, masses, side="right") - 1
    ok = i >= 0
    out = np.zeros(len(masses), bool)
    out[ok] = masses[ok] <= hi[i[ok]]
    return out


def judge_smiles(smiles: Sequence[str]) -> tuple[np.ndarray, list[str | None], np.ndarray]:
    """Per SMILES: whether it can be judged here, its formula and exact mass (as the catalog computes them)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdMolDescriptors

    RDLogger.DisableLog("rdApp.*")
    judged = np.zeros(len(smiles), bool)
    masses = np.full(len(smiles), np.nan)
    formulas: list[str | None] = [None] * len(smiles)
    for i, smi in enumerate(smiles):
        mol = Chem.MolFromSmiles(smi) if smi else None
        if mol is None or "." in smi:
            continue
        if any(a.GetFormalCharge() or a.GetIsotope() or a.GetSymbol() not in ORGANIC for a in mol.GetAtoms()):
            continue
        judged[i] = True
        formulas[i] = rdMolDescriptors.CalcMolFormula(mol, separateIsotopes=True, abbreviateHIsotopes=True)
        masses[i] = rdMolDescriptors.CalcExactMolWt(mol)
    return judged, formulas, masses


def _smiles_of(line: str, cid_first: bool) -> str:
    text = line.rstrip("\r\n")
    parts = text.split("\t") if "\t" in text else text.split(None, 2)
    if cid_first:
        return parts[1].strip() if len(parts) > 1 else ""
    return parts[0].strip() if parts else ""


def _keep_chunk(args: tuple[list[str], bool, frozenset[str], np.ndarray, np.ndarray]) -> tuple[int, list[str]]:
    """(lines read, lines kept) of one chunk."""
    lines, cid_first, formulas, lo, hi = args
    smiles = [_smiles_of(line, cid_first) for line in lines]
    judged, fs, masses = judge_smiles(smiles)
    keep = ~judged
    keep |= np.fromiter((f in formulas if f else False for f in fs), bool, len(fs))
    keep |= judged & in_windows(np.nan_to_num(masses, nan=-1.0), lo, hi)
    return len(lines), [line for line, k in zip(lines, keep) if k]


def _chunks(path: Path) -> Iterator[list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
        buf: list[str] = []
        for line in fh:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            buf.append(line if line.endswith("\n") else line + "\n")
            if len(buf) >= CHUNK_LINES:
                yield buf
                buf = []
        if buf:
            yield buf


def _digest(paths: Sequence[Path], formulas: set[str], lo: np.ndarray, hi: np.ndarray) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(sorted(formulas)).encode())
    h.update(np.ascontiguousarray(lo).tobytes())
    h.update(np.ascontiguousarray(hi).tobytes())
    return h.hexdigest()[:16]


def prefilter_structure_files(files: Sequence[str | os.PathLike[str]], queries: Sequence[pa.Table], ppm: float,
                              out_dir: str | os.PathLike[str], *, processes: int | None = None) -> list[Path]:
    """SMILES / CID-SMILES files reduced to possible candidates of ``queries`` (cached under ``out_dir``);
    other sources are returned as they are. See the module docstring for why nothing needed is lost."""
    from speclake.index.sources import detect_format

    formulas, lo, hi = candidate_windows(queries, ppm)
    paths = [Path(f) for f in files]
    out_root = Path(out_dir) / _digest(paths, formulas, lo, hi)
    out_root.mkdir(parents=True, exist_ok=True)
    result: list[Path] = []
    frozen = frozenset(formulas)
    procs = processes or min(2, os.cpu_count() or 1)
    for n, path in enumerate(paths):
        fmt = detect_format(path)
        if fmt not in ("smiles", "cid_smiles"):
            result.append(path)
            continue
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        target = out_root / f"{n:02d}-{name}"
        if not target.exists():
            tmp = target.with_name(target.name + ".tmp")
            kept = total = 0
            cid_first = fmt == "cid_smiles"
            with open(tmp, "w") as out, mp.get_context("fork").Pool(procs) as pool:
                work = ((chunk, cid_first, frozen, lo, hi) for chunk in _chunks(path))
                for n_in, lines in pool.imap(_keep_chunk, work):
                    total += n_in
                    kept += len(lines)
                    out.writelines(lines)
            tmp.rename(target)
            log.info("prefilter %s: %d of %d structures can be candidates (%d formulas, %d mass windows)",
                     path.name, kept, total, len(formulas), len(lo))
        result.append(target)
    return result
