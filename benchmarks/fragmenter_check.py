"""Does the in-silico fragmenter tell a MassBank spectrum's true structure from a regio-isomer?

Pairs are chosen by a rule, not by hand: MassBank records in file order (contributor files sorted by
name), LC-ESI MS2, precursor type ``[M+H]+`` (and ``[M-H]-`` with ``--negative``), a parsable SMILES of
one connected component, at least ``--min-peaks`` peaks below the precursor m/z, not all of them
at unit resolution (the fragmenter matches at ppm tolerance); one spectrum per
InChIKey-14 (the first). Each is paired with a regio-isomer from ``massbank_isomers.smi.gz`` with the
same molecular formula and another InChIKey-14: ``--rule similar`` takes the isomer with the highest
Morgan Tanimoto to the true structure (the hardest, usually one substituent moved), ``--rule first`` the
first in file order. The first ``--pairs`` records that have such an isomer are scored with
:func:`speclake.serving.annotate.fragmenter.score_spectrum`; a pair is won when the true structure
scores higher, tied when equal. Also the fragmentation and scoring time per candidate (cold cache).

    .venv/bin/python benchmarks/fragmenter_check.py --pairs 200
    .venv/bin/python benchmarks/fragmenter_check.py --pairs 200 --rule first --negative

Not registered in ``python -m benchmarks``: a check of one scorer, run by hand.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Iterator

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

#: Atom tokens of a SMILES string (bracket atoms, two-letter halogens, organic subset).
_ATOM = re.compile(r"\[(?:\d*)([A-Z][a-z]?|[a-z][a-z]?)[^\]]*\]|(Cl|Br|[BCNOSPFI]|[bcnops])")


def heavy_atom_key(smiles: str) -> tuple:
    """Sorted heavy-atom counts read from the SMILES text (no RDKit): equal for regio-isomers."""
    counts: dict[str, int] = defaultdict(int)
    for bracket, plain in _ATOM.findall(smiles):
        sym = (bracket or plain)
        sym = sym[0].upper() + sym[1:]
        if sym != "H":
            counts[sym] += 1
    return tuple(sorted(counts.items()))


def iter_records(paths: list[Path]) -> Iterator[dict]:
    """Metadata + peaks of every parsable MassBank record of ``paths`` (in order)."""
    from speclake.pipelines.readers._text import RecordProblem
    from speclake.pipelines.readers.massbank import parse_record

    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            buf: list[str] = []
            for line in fh:
                if line.startswith("//"):
                    text = "".join(buf)
                    buf = []
                    try:
                        p = parse_record(text, 1)
                    except (RecordProblem, ValueError):
                        continue
                    yield {**p.metadata, "mz": np.asarray(p.mz, float), "intensities": np.asarray(p.intensities, float)}
                else:
                    buf.append(line)


def select_queries(paths: list[Path], adducts: tuple[str, ...], min_peaks: int, limit: int) -> list[dict]:
    """The rule-chosen query records (see the module doc), at most ``limit``, one per InChIKey-14."""
    from rdkit import Chem, RDLogger

    from speclake.pipelines.normalize.peaks import is_unit_resolution

    RDLogger.DisableLog("rdApp.*")
    out, seen = [], set()
    for r in iter_records(paths):
        if r.get("adduct") not in adducts or r.get("ms_level") != "MS2" or "ESI" not in str(r.get("instrument_type")):
            continue
        try:
            prec = float(str(r.get("precursor_mz")).split()[0])
        except (TypeError, ValueError):
            continue
        below = r["mz"][r["mz"] < prec - 0.01]
        if len(below) < min_peaks or is_unit_resolution(below, 1):
            continue
        mol = Chem.MolFromSmiles(str(r.get("smiles") or ""))
        if mol is None or len(Chem.GetMolFrags(mol)) != 1:
            continue
        key14 = Chem.MolToInchiKey(mol)[:14]
        if not key14 or key14 in seen:
            continue
        seen.add(key14)
        out.append({**r, "precursor_mz": prec, "mol": mol, "ik14": key14})
        if len(out) >= limit:
            break
    return out


def _signature(smiles: str) -> tuple[int, int, int, int]:
    """A cheap prefilter of :func:`heavy_atom_key`: C, O, N and S-or-halogen letters counted in the text."""
    return (smiles.count("C") + smiles.count("c") - smiles.count("l"),
            smiles.count("O") + smiles.count("o"), smiles.count("N") + smiles.count("n"),
            smiles.count("S") + smiles.count("s") + smiles.count("l") + smiles.count("r") + smiles.count("F"))


#: Bit fields of a packed :func:`_signature` (C, O, N, S/halogen letters) in one uint32.
_SHIFTS = (0, 10, 18, 25)


def _packed(sig: tuple[int, int, int, int]) -> int:
    return sum(v << sh for v, sh in zip(sig, _SHIFTS))


def _line_signatures(data: bytes, chunk: int = 1 << 23) -> tuple[np.ndarray, np.ndarray]:
    """Packed :func:`_signature` (:func:`_packed`) of every line's SMILES (the text before its tab) of a
    ``SMILES<TAB>ID`` file, summed per line in numpy (one table lookup and one ``add.reduceat`` per chunk of
    lines); and each line's start offset."""
    arr = np.frombuffer(data, np.uint8)
    starts = np.concatenate(([0], np.flatnonzero(arr[:-1] == ord("\n")) + 1))
    tabs = np.flatnonzero(arr == ord("\t"))
    if len(tabs) != len(starts):
        raise ValueError("every line must be SMILES<TAB>ID")
    lut = np.zeros(256, np.uint32)
    for chars, shift in zip(("Cc", "Oo", "Nn", "SsrF"), _SHIFTS):
        lut[[ord(c) for c in chars]] = 1 << shift
    lut[ord("l")] = (1 << _SHIFTS[3]) - 1          # Cl: one more S/halogen, one C letter less
    out = np.zeros(len(starts), np.uint32)
    lines_per_chunk = max(1, int(len(starts) * chunk / max(len(arr), 1)))
    for lo in range(0, len(starts), lines_per_chunk):
        hi = min(lo + lines_per_chunk, len(starts))
        base = starts[lo]
        end = starts[hi] if hi < len(starts) else len(arr)
        bounds = np.column_stack([starts[lo:hi] - base, tabs[lo:hi] - base]).ravel()
        out[lo:hi] = np.add.reduceat(lut[arr[base:end]], bounds, dtype=np.uint32)[::2]
    return out, starts


def isomer_index(path: Path, keys: set[tuple]) -> dict[tuple, list[str]]:
    """Heavy-atom key -> isomer SMILES (file order) for the wanted keys only (lines prefiltered by
    :func:`_signature` in numpy, then keyed exactly)."""
    data = gzip.open(path, "rb").read()
    sig, starts = _line_signatures(data)
    wanted = np.array(sorted({_packed(_signature("".join(e * n for e, n in k))) for k in keys}), np.uint32)
    out: dict[tuple, list[str]] = defaultdict(list)
    for i in np.flatnonzero(np.isin(sig, wanted)):
        line = data[starts[i]: data.index(b"\n", starts[i]) if i + 1 < len(starts) else len(data)]
        smi = line.split(b"\t", 1)[0].decode()
        k = heavy_atom_key(smi)
        if k in keys:
            out[k].append(smi)
    return out


def pick_isomer(query: dict, pool: list[str], rule: str) -> str | None:
    """The query's regio-isomer by ``rule`` (``similar``: highest Morgan Tanimoto, ties in file order;
    ``first``: file order) among ``pool``'s structures of the same formula and another InChIKey-14."""
    from rdkit import Chem, DataStructs
    from rdkit.Chem import rdFingerprintGenerator
    from rdkit.Chem.rdMolDescriptors import CalcMolFormula

    formula = CalcMolFormula(query["mol"])
    mols = [(smi, mol) for smi in pool if (mol := Chem.MolFromSmiles(smi)) is not None
            and CalcMolFormula(mol) == formula]
    if rule == "similar":
        gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
        ref = gen.GetFingerprint(query["mol"])
        sims = [DataStructs.TanimotoSimilarity(ref, gen.GetFingerprint(m)) for _, m in mols]
        mols = [mols[i] for i in sorted(range(len(mols)), key=lambda i: -sims[i])]
    return next((smi for smi, m in mols if Chem.MolToInchiKey(m)[:14] != query["ik14"]), None)


def time_candidate_list(query: dict, pool: list[str], n: int = 100) -> dict:
    """CPU seconds of :meth:`Fragmenter.features` for one query and up to ``n`` candidates of the pool (its
    same-heavy-atom structures plus the true one): cold (empty fragment cache) and warm (cached)."""
    from speclake.serving.annotate import fragmenter as F
    from speclake.serving.annotate.model import Candidate, Query

    smiles = [query["smiles"], *pool[: n - 1]]
    cands = [Candidate(inchikey="", inchikey14="", smiles=s, formula="", monoisotopic_mass=0.0, adduct=query["adduct"],
                       mass_error_ppm=0.0) for s in smiles]
    q = Query(query_id=query["accession"], source_file="massbank", record_locator=query["accession"],
              precursor_mz=query["precursor_mz"], ionmode="positive" if query["adduct"].endswith("+") else "negative",
              mz=query["mz"], intensities=query["intensities"] / query["intensities"].max())
    fragmenter = F.Fragmenter()
    t = time.process_time()
    fragmenter.features(q, cands)
    cold = time.process_time() - t
    t = time.process_time()
    fragmenter.features(q, cands)
    return {"candidates": len(cands), "cold_cpu_s": cold, "warm_cpu_s": time.process_time() - t,
            "fragments_mean": float(np.mean([len(fragmenter.fragments(s)) for s in smiles]))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--massbank", type=Path, default=SHARED / "massbank")
    ap.add_argument("--isomers", type=Path, default=SHARED / "structures" / "massbank_isomers.smi.gz")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--rule", choices=("similar", "first"), default="similar")
    ap.add_argument("--negative", action="store_true", help="[M-H]- records instead of [M+H]+")
    ap.add_argument("--min-peaks", type=int, default=5)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)

    from speclake.serving.annotate import fragmenter as F

    paths = sorted(args.massbank.glob("*.txt.gz"))
    adducts = ("[M-H]-",) if args.negative else ("[M+H]+",)
    t0 = time.perf_counter()
    queries = select_queries(paths, adducts, args.min_peaks, 6 * args.pairs)
    index = isomer_index(args.isomers, {heavy_atom_key(q["smiles"]) for q in queries})
    t_select = time.perf_counter() - t0
    settings = F.FragmenterSettings(max_depth=args.depth)
    wins = ties = losses = 0
    frag_s = score_s = 0.0
    timing = None
    n_cands = 0
    rows = []
    for q in queries:
        iso = pick_isomer(q, index.get(heavy_atom_key(q["smiles"]), []), args.rule)
        if iso is None:
            continue
        pool = index.get(heavy_atom_key(q["smiles"]), [])
        if timing is None and len(pool) >= 99:
            timing = time_candidate_list(q, pool)
        scores = []
        for smi in (q["smiles"], iso):
            t = time.process_time()
            fs = F.fragment_candidate(smi, max_depth=args.depth)
            t1 = time.process_time()
            s = F.score_spectrum(fs, q["mz"], q["intensities"], q["precursor_mz"], q["adduct"], settings=settings)
            frag_s += t1 - t
            score_s += time.process_time() - t1
            n_cands += 1
            scores.append(s.score)
        wins += scores[0] > scores[1]
        ties += scores[0] == scores[1]
        losses += scores[0] < scores[1]
        rows.append({"accession": q["accession"], "true": q["smiles"], "isomer": iso, "scores": scores})
        if len(rows) >= args.pairs:
            break
    n = len(rows)
    fig = {"pairs": n, "rule": args.rule, "adduct": adducts[0], "depth": args.depth, "wins": wins, "ties": ties,
           "losses": losses, "win_rate": wins / n if n else None,
           "win_rate_ties_half": (wins + 0.5 * ties) / n if n else None,
           "win_rate_decided": wins / (wins + losses) if wins + losses else None,
           "fragment_cpu_ms_per_candidate": 1000 * frag_s / max(n_cands, 1),
           "score_cpu_ms_per_candidate": 1000 * score_s / max(n_cands, 1), "selection_wall_s": t_select,
           "candidate_list": timing}
    print(json.dumps(fig, indent=1))
    if args.out:
        args.out.write_text(json.dumps({**fig, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
