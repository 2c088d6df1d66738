"""Check fragmentation trees against MassBank records nobody here produced.

(a) agreement of tree node formulas with the records' own PK$ANNOTATION
    tentative formulas (fragment peaks; precursor-formula annotations excluded);
(b) precursor-formula top-1 / top-5 accuracy with the formula hidden, by mass range;
plus the speed of known-formula trees (trees/s on one core).

    .venv/bin/python benchmarks/fragtree_check.py --limit 2000 --rank-limit 300

Uses a small self-contained MassBank parser (the project's reader is written elsewhere).
"""
from __future__ import annotations

import argparse
import glob
import gzip
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from speclake.pipelines.features.formula import (
    MONO_MASS,
    instrument_class,
    parse_formula,
    singly_charged_adduct,
    tolerance_for_instrument,
)
from speclake.pipelines.features.fragtree import FragTree, Skipped, compute_tree
from speclake.pipelines.features.precursor_formula import rank_precursor_formulas
from speclake.pipelines.features.loss_priors import default_loss_table

DEFAULT_DATA = "/work/shared/data/massbank"


@dataclass
class Record:
    """The fields of one MassBank record the checks need."""

    accession: str = ""
    formula: str | None = None
    adduct: str | None = None
    precursor_mz: float | None = None
    instrument_type: str | None = None
    ms_type: str | None = None
    mz: list[float] = field(default_factory=list)
    intensities: list[float] = field(default_factory=list)
    annotations: list[tuple[float, str]] = field(default_factory=list)  # (m/z, tentative formula)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_records(lines) -> list[Record]:
    """Parse MassBank record text (records separated by ``//``)."""
    out: list[Record] = []
    rec = Record()
    block = None  # "peak" | "annot"
    formula_col = None
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith("//"):
            out.append(rec)
            rec, block, formula_col = Record(), None, None
            continue
        if line.startswith("  "):
            parts = line.split()
            if block == "peak" and len(parts) >= 2:
                m, i = _float(parts[0]), _float(parts[1])
                if m is not None and i is not None:
                    rec.mz.append(m)
                    rec.intensities.append(i)
            elif block == "annot" and formula_col is not None and len(parts) > formula_col:
                m = _float(parts[0])
                if m is not None:
                    rec.annotations.append((m, parts[formula_col]))
            continue
        block = None
        key, _, value = line.partition(": ")
        value = value.strip()
        if key == "ACCESSION":
            rec.accession = value
        elif key == "CH$FORMULA":
            rec.formula = value
        elif key == "AC$INSTRUMENT_TYPE":
            rec.instrument_type = value
        elif key == "AC$MASS_SPECTROMETRY" and value.startswith("MS_TYPE"):
            rec.ms_type = value.split()[-1]
        elif key == "MS$FOCUSED_ION":
            sub, _, v = value.partition(" ")
            if sub == "PRECURSOR_TYPE":
                rec.adduct = v.strip()
            elif sub == "PRECURSOR_M/Z":
                rec.precursor_mz = _float(v.strip())
        elif key == "PK$PEAK":
            block = "peak"
        elif key == "PK$ANNOTATION":
            cols = value.split()
            formula_col = cols.index("tentative_formula") if "tentative_formula" in cols else None
            block = "annot"
    return out


def load_records(data_dir: str) -> list[Record]:
    """All records of all ``*.txt.gz`` files in ``data_dir``."""
    records: list[Record] = []
    for path in sorted(glob.glob(os.path.join(data_dir, "*.txt.gz"))):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            records.extend(parse_records(fh))
    return records


def eligible(rec: Record) -> bool:
    """High-resolution MS2 with formula, supported adduct and precursor m/z."""
    if rec.ms_type != "MS2" or not rec.formula or not rec.adduct or rec.precursor_mz is None or len(rec.mz) < 2:
        return False
    if instrument_class(rec.instrument_type) not in ("ft", "tof"):
        return False
    try:
        singly_charged_adduct(rec.adduct)
        parse_formula(rec.formula)
    except ValueError:
        return False
    return True


def _counts_key(formula: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in parse_formula(formula)[0])
    except ValueError:
        return None


def check_annotations(trees: list[tuple[Record, FragTree]]) -> dict[str, int]:
    """(a): compare annotated fragment formulas with the tree formula of the nearest peak."""
    stats = {"records": 0, "annotated": 0, "equal": 0, "other_formula": 0, "not_in_tree": 0}
    for rec, tree in trees:
        if not rec.annotations:
            continue
        root_key = _counts_key(tree.ion_formula)
        tol = tolerance_for_instrument(rec.instrument_type)
        node_mz = np.array([n.mz for n in tree.nodes[1:]])
        node_key = [_counts_key(n.formula) for n in tree.nodes[1:]]
        counted = False
        for mz, formula in rec.annotations:
            key = _counts_key(formula)
            if key is None or key == root_key:
                continue
            counted = True
            stats["annotated"] += 1
            if len(node_mz) == 0:
                stats["not_in_tree"] += 1
                continue
            j = int(np.argmin(np.abs(node_mz - mz)))
            if abs(node_mz[j] - mz) > max(float(tol.da(mz)), 0.002):
                stats["not_in_tree"] += 1
            elif node_key[j] == key:
                stats["equal"] += 1
            else:
                stats["other_formula"] += 1
        stats["records"] += counted
    return stats


def mass_bin(mass: float) -> str:
    """Mass range label used by check (b)."""
    return "<200" if mass < 200 else "200-400" if mass < 400 else "400-600" if mass < 600 else ">600"


def main(argv: list[str] | None = None) -> int:
    """Run the checks and print tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=2000, help="records for (a) and the speed measurement")
    ap.add_argument("--rank-limit", type=int, default=200, help="records for (b) (formula hidden)")
    ap.add_argument("--data-dir", default=DEFAULT_DATA)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if not os.path.isdir(args.data_dir):
        print(f"no data at {args.data_dir}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    records = load_records(args.data_dir)
    ok = [r for r in records if eligible(r)]
    print(f"parsed {len(records)} records in {time.perf_counter() - t0:.1f}s; {len(ok)} eligible high-res MS2")
    rng = random.Random(args.seed)
    annotated = [r for r in ok if r.annotations]
    sample_a = rng.sample(annotated, min(args.limit, len(annotated)))
    sample_s = rng.sample(ok, min(args.limit, len(ok)))

    table = default_loss_table()
    # speed: known-formula trees on a random sample of all eligible records
    skipped: dict[str, int] = {}
    t0 = time.perf_counter()
    n_trees = 0
    for r in sample_s:
        res = compute_tree(r.formula, r.adduct, r.mz, r.intensities, precursor_mz=r.precursor_mz,
                           instrument_type=r.instrument_type, loss_priors=table)
        if isinstance(res, Skipped):
            skipped[res.reason_code] = skipped.get(res.reason_code, 0) + 1
        else:
            n_trees += 1
    dt = time.perf_counter() - t0
    print(f"\nspeed: {len(sample_s)} spectra ({n_trees} trees, skipped {skipped}) in {dt:.2f}s "
          f"= {len(sample_s) / dt:.0f} spectra/s on one core")

    # (a)
    trees = []
    for r in sample_a:
        res = compute_tree(r.formula, r.adduct, r.mz, r.intensities, precursor_mz=r.precursor_mz,
                           instrument_type=r.instrument_type, loss_priors=table)
        if isinstance(res, FragTree):
            trees.append((r, res))
    st = check_annotations(trees)
    n = max(st["annotated"], 1)
    print(f"\n(a) PK$ANNOTATION agreement ({len(sample_a)} annotated records sampled, {len(trees)} trees, "
          f"{st['records']} with fragment annotations)")
    print(f"  {'annotated fragment peaks':<28}{st['annotated']:>8}")
    for k in ("equal", "other_formula", "not_in_tree"):
        print(f"  {k:<28}{st[k]:>8}  {100 * st[k] / n:6.1f}%")

    # (b)
    sample_b = rng.sample(ok, min(args.rank_limit, len(ok)))
    bins = {b: [0, 0, 0, 0] for b in ("<200", "200-400", "400-600", ">600")}  # n, top1, top5, skipped
    t0 = time.perf_counter()
    for r in sample_b:
        key = _counts_key(r.formula)
        mass = float(parse_formula(r.formula)[0] @ MONO_MASS)
        b = bins[mass_bin(mass)]
        b[0] += 1
        res = rank_precursor_formulas(r.precursor_mz, r.adduct, r.mz, r.intensities,
                                      instrument_type=r.instrument_type, loss_priors=table)
        if isinstance(res, Skipped):
            b[3] += 1
            continue
        keys = [_counts_key(f) for f, _ in res]
        b[1] += bool(keys[:1] and keys[0] == key)
        b[2] += key in keys[:5]
    dt = time.perf_counter() - t0
    print(f"\n(b) precursor formula hidden: {len(sample_b)} records in {dt:.1f}s "
          f"({len(sample_b) / max(dt, 1e-9):.1f} spectra/s); skipped counted as misses")
    print(f"  {'mass (Da)':<10}{'n':>6}{'top-1':>9}{'top-5':>9}{'skipped':>9}")
    tot = [0, 0, 0, 0]
    for name, (cnt, t1, t5, sk) in bins.items():
        tot = [a + b for a, b in zip(tot, (cnt, t1, t5, sk))]
        if cnt:
            print(f"  {name:<10}{cnt:>6}{100 * t1 / cnt:>8.1f}%{100 * t5 / cnt:>8.1f}%{sk:>9}")
    if tot[0]:
        print(f"  {'all':<10}{tot[0]:>6}{100 * tot[1] / tot[0]:>8.1f}%{100 * tot[2] / tot[0]:>8.1f}%{tot[3]:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
