"""Benchmark of de novo generation (issue 18): the SELFIES VAE trained in a stated CPU budget, then
evaluated as MassSpecGym evaluates de novo generation, on the lake's structure-disjoint test split.

    .venv/bin/python -m benchmarks denovo                         # defaults below (~25 min on 2 loaded cores)
    .venv/bin/python -m benchmarks denovo -- --minutes 30 --limit 200000 --queries 500 --draws 2000

Parts, one printed table each:

1. lake: ``--work``/lake is made once from ``--lake`` (spectra, compounds and catalog copied: the source
   lake is only read). A de novo model is trained on it (``train_denovo``: MOSES first ``--limit`` lines
   + lake compounds, never a validation or test InChIKey-14) with a VAE budget of ``--minutes`` wall
   minutes (mapper: a fifth of it) under Ray Train on one worker; the newest model is reused unless
   ``--retrain``. Its figures: reconstruction accuracy, validity, uniqueness, novelty, smoothness, mapper R^2.
2. de novo with the formula given (MassSpecGym's "bonus" setting): one spectrum per test-split structure
   (``--queries`` of them), ``--draws`` latent points around the spectrum's predicted latent point,
   filtered by the true formula, top 10 by latent likelihood. Validity and uniqueness of the draws,
   formula match rate (valid draws of the true formula), top-1/top-10 exact match (InChIKey-14), best
   and mean Tanimoto (Morgan r2, 2048 bits) and MCES distance in the top 10 (RDKit rdRascalMCES, 1 s
   timeout; distance = bonds(a) + bonds(b) - 2 bonds(MCES)). Beside it, random generation with the same
   formula: up to 10 random structures of that formula from the same structure pool (MOSES lines +
   training compounds). Queries without any proposal count as misses (Tanimoto 0, MCES not counted).
3. ``--near`` radius: mean Tanimoto to the parent of decodes around test parents at several radii vs free
   (prior) sampling.
4. the impurity case: pairs of lake compounds where the product is the parent after one transformation
   (aromatic hydroxylation +O, O/N-demethylation -CH2, dechlorination Cl->H, N-oxidation), the product a
   validation/test structure (never seen by the VAE); from the product's spectrum, ``--draws`` decodes near
   the parent with the product's formula: how often the true product is in the top 10.

JSON goes to benchmarks/results/denovo_bench.json (git-ignored). Published MassSpecGym figures with the
formula given, for orientation: DiffMS top-10 Tanimoto 0.39, top-1 exact 2.3 %; random 0.11 / 0 %.

Measured 2026-12-05 (evening) on the shared 2-core box: model trained with ``speclake denovo-train --lake
benchmarks/results/denovo/lake --structures zinc_moses_1.9M.smi.gz --limit 200000 --minutes 40`` (VAE hidden 192,
latent 48, embedding 48, max 72 tokens, beta 0.05; 162,959 training structures, 8,576 held out, validation and
test InChIKey-14s dropped; 2 torch threads at nice 15 beside other work): one epoch in the 40 min (reconstruction
loss 27.0 -> 14.4 nats per molecule), mapper 13 epochs in 8 min. Figures: reconstruction accuracy 0.036,
validity 0.938, uniqueness 0.857, novelty 0.993, mapper validation R^2 0.29 (train loss still falling: it
over-fits without early stopping). Then ``--queries 60 --draws 300 --pairs 30`` (321 s): with the formula
given, formula-constrained decoding gives proposals for 95 % of the test structures (filtering free decodes:
13 %) with 35.7 % of valid draws of the exact formula (0.1 %); top-1 / top-10 exact 0.000 / 0.033 (2 of 60),
best Tanimoto in the top 10 0.202, best MCES 34.8; re-ranked by the library prior (the annotation fallback
ranker with a training-split library) 0.017 / 0.017, 0.204; random structures of the same formula from the
MOSES lines + training compounds (a database lookup, not generation: only 55 % of formulas have any) 0.017 /
0.017, 0.272. --near: Tanimoto to the parent 0.200 / 0.202 / 0.185 / 0.156 at radius 0.1 / 0.25 / 0.5 / 1.0
vs 0.054 free. Impurity pairs: 15 evaluable, the true product in the top 10 for 1 (6.7 %; demethylation 1 of
8). An epoch of CPU training is far from the GPU-days of published models: the figures show the method working
end to end, not its ceiling.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import random
import shutil
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

log = logging.getLogger("benchmarks.denovo")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = REPO.parent / "shared" / "data"

#: One transformation each: (name, reaction SMARTS applied to the parent, formula change).
TRANSFORMATIONS = (
    ("hydroxylation", "[cH:1]>>[c:1]O", {"O": 1}),
    ("demethylation", "[O,N,S;!$([N,O,S]=*):1]-[CH3]>>[*:1]", {"C": -1, "H": -2}),
    ("dechlorination", "[#6:1]Cl>>[#6:1]", {"Cl": -1, "H": 1}),
    ("N-oxidation", "[NX3;H0;!$(N-C=[O,S,N]);!$(N-a);!$(N-[!#6]);!$([N+]):1]>>[N+:1][O-]", {"O": 1}),
    ("N-oxidation (aromatic)", "[nX2;H0:1]>>[n+:1][O-]", {"O": 1}),
)


def copy_lake(src: Path, dst: Path) -> None:
    """Copy the tables the benchmark reads (spectra, compounds, catalog) once; the source is never written."""
    if (dst / "_catalog" / "catalog.json").exists():
        (dst / "_catalog" / "runs").mkdir(exist_ok=True)
        return
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("spectra", "compounds"):
        shutil.copytree(src / name, dst / name)
    (dst / "_catalog" / "runs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "_catalog" / "catalog.json", dst / "_catalog" / "catalog.json")


def mces_distance(a: str, b: str, timeout: int = 1) -> float | None:
    """Bond edit distance through RDKit's RascalMCES (None on timeout or unreadable SMILES)."""
    from rdkit import Chem
    from rdkit.Chem import rdRascalMCES

    ma, mb = Chem.MolFromSmiles(a), Chem.MolFromSmiles(b)
    if ma is None or mb is None:
        return None
    opts = rdRascalMCES.RascalOptions()
    opts.similarityThreshold, opts.timeout, opts.returnEmptyMCES = 0.0, timeout, True
    res = rdRascalMCES.FindMCES(ma, mb, opts)
    if not res or res[0].timedOut:
        return None
    return float(ma.GetNumBonds() + mb.GetNumBonds() - 2 * len(res[0].bondMatches()))


def top10_metrics(truth_smiles: str, truth_key: str, proposals: list[str], with_mces: bool) -> dict[str, float]:
    """Exact match at 1 and 10 (InChIKey-14), best/mean Tanimoto and best/mean MCES distance of a top-10 list."""
    from speclake.training.denovo.chem import inchikey_of, tanimoto_to

    top = proposals[:10]
    keys = [(inchikey_of(s) or "")[:14] for s in top]
    tan = tanimoto_to(truth_smiles, top) if top else np.zeros(0)
    out = {"top1": float(bool(keys) and keys[0] == truth_key), "top10": float(truth_key in keys),
           "best_tanimoto": float(np.nanmax(tan)) if len(tan) else 0.0,
           "mean_tanimoto": float(np.nanmean(tan)) if len(tan) else 0.0, "n": len(top)}
    if with_mces and top:
        d = [x for x in (mces_distance(truth_smiles, s) for s in top) if x is not None]
        if d:
            out.update(best_mces=float(min(d)), mean_mces=float(np.mean(d)))
    return out


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Means over queries (MCES over queries where it was computed)."""
    out: dict[str, float] = {"queries": len(rows), "with_proposals": float(np.mean([r["n"] > 0 for r in rows]))}
    for key in ("top1", "top10", "best_tanimoto", "mean_tanimoto", "best_mces", "mean_mces", "validity",
                "uniqueness", "formula_match"):
        vals = [r[key] for r in rows if key in r]
        if vals:
            out[key] = float(np.mean(vals))
    return out


def prior_ranker(lake: Path):
    """The annotation fallback ranker (library prior; no library hits here) with a *training-split* library,
    so a test structure is never a library structure (prior 1.0) by leakage."""
    from speclake.serving.annotate.evidence import EvidenceBuilder, LibraryReference
    from speclake.serving.annotate.precursor import adduct_priors
    from speclake.serving.annotate.rankers import FALLBACK, Ranker

    return Ranker(FALLBACK, EvidenceBuilder(LibraryReference.from_lake(lake, splits=("train",)), adduct_priors(lake)))


def rerank_by_prior(ranker, q: dict, found: list) -> list[str]:
    """SMILES of ``found`` ordered by ``ranker`` (as ``speclake denovo`` orders them), the query as a blind scan."""
    from speclake.serving.annotate.model import Query
    from speclake.training.denovo.job import DEFAULT_ADDUCT, proposal_candidates

    if not found:
        return []
    query = Query(query_id=q["spectrum_id"], source_file="bench", record_locator="", precursor_mz=q["precursor_mz"],
                  ionmode=q["ionmode"], mz=np.asarray(q["mz"], float), intensities=np.asarray(q["intensities"], float))
    cands = proposal_candidates(query, found, DEFAULT_ADDUCT[q["ionmode"]])
    return [c.smiles for c in ranker.rank([query], [cands], None)[0].candidates]


def structure_pool(limit: int, files: list[Path], train_compounds) -> dict[str, list[str]]:
    """Formula -> SMILES of the random baseline's pool (structure file lines + training compounds)."""
    from speclake.training.denovo.chem import formula_of
    from speclake.training.denovo.data import read_smiles_file

    pool: dict[str, list[str]] = defaultdict(list)
    for path in files:
        for s in read_smiles_file(path, limit):
            f = formula_of(s)
            if f:
                pool[f].append(s)
    for s, f in train_compounds:
        pool[f].append(s)
    return pool


def test_queries(lake: Path, split, n: int, seed: int):
    """One spectrum per test-split structure ([M+H]+ or [M-H]- first), at most ``n`` structures."""
    from speclake.training.denovo.data import training_spectra

    table = training_spectra(lake, split, "test")
    d = table.to_pylist()
    by_key: dict[str, dict] = {}
    for r in sorted(d, key=lambda r: (r["adduct"] not in ("[M+H]+", "[M-H]-"), r["spectrum_id"])):
        by_key.setdefault(r["inchikey14"], r)
    keys = sorted(by_key)
    random.Random(seed).shuffle(keys)
    return [by_key[k] for k in keys[:n]]


def impurity_pairs(compounds: list[dict], split, limit: int) -> list[dict]:
    """(parent, product, transformation) pairs of lake compounds, the product held out from the VAE."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from speclake.training.split import assign_split

    by_formula: dict[str, list[dict]] = defaultdict(list)
    for c in compounds:
        if assign_split(c["inchikey14"], split) != "train":
            by_formula[c["formula"]].append(c)
    pairs, seen = [], set()
    for name, smarts, delta in TRANSFORMATIONS:
        rxn = AllChem.ReactionFromSmarts(smarts)
        for parent in compounds:
            target = _shift(parent["formula"], delta) if parent["formula"].isalnum() else None
            products = by_formula.get(target or "", [])
            if not products:
                continue
            mol = Chem.MolFromSmiles(parent["smiles"])
            if mol is None:
                continue
            made = set()
            for prods in rxn.RunReactants((mol,)):
                p = prods[0]
                try:
                    Chem.SanitizeMol(p)
                    made.add(Chem.MolToInchiKey(p)[:14])
                except Exception:  # noqa: BLE001  (an impossible product of a generic SMARTS)
                    continue
            for prod in products:
                if prod["inchikey14"] in made and (parent["inchikey14"], prod["inchikey14"]) not in seen:
                    seen.add((parent["inchikey14"], prod["inchikey14"]))
                    pairs.append({"transformation": name, "parent": parent, "product": prod})
    random.Random(0).shuffle(pairs)
    return pairs[:limit]


def _shift(formula: str, delta: dict[str, int]) -> str | None:
    """``formula`` with element counts changed by ``delta`` (Hill order), None when a count goes negative."""
    import re

    counts: dict[str, int] = defaultdict(int)
    for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
        counts[el] += int(n or 1)
    for el, n in delta.items():
        counts[el] += n
    if any(v < 0 for v in counts.values()):
        return None
    order = (["C", "H"] if counts.get("C") else []) + sorted(k for k in counts if not (counts.get("C") and k in "CH"))
    return "".join(f"{el}{counts[el] if counts[el] > 1 else ''}" for el in order if counts[el] > 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=str(RESULTS / "lake_features"), help="MassBank lake to copy from (read only)")
    ap.add_argument("--work", default=str(RESULTS / "denovo"), help="the benchmark's own folder (lake made once)")
    ap.add_argument("--structures", default=str(DATA / "structures" / "zinc_moses_1.9M.smi.gz"))
    ap.add_argument("--limit", type=int, default=60_000, help="first N lines of the structure file")
    ap.add_argument("--minutes", type=float, default=10.0, help="VAE training budget (wall minutes); mapper 1/5")
    ap.add_argument("--vae", default='{"embedding": 48, "hidden": 192, "latent": 48, "max_len": 72}',
                    help="VaeSettings JSON")
    ap.add_argument("--train", default="{}", help="DenovoTrainSettings JSON overrides (batch_size, lr, beta, ...)")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--queries", type=int, default=100, help="test-split structures evaluated")
    ap.add_argument("--draws", type=int, default=500, help="latent points decoded per query")
    ap.add_argument("--pairs", type=int, default=30, help="impurity pairs evaluated")
    ap.add_argument("--no-mces", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS / "denovo_bench.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("ray", "speclake.lake.run"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import torch

    from speclake.lake import sql
    from speclake.training.denovo.data import spectrum_inputs
    from speclake.training.denovo.sample import SampleSettings, load_denovo
    from speclake.training.denovo.train import DenovoTrainSettings, list_denovo, train_denovo
    from speclake.training.split import SplitSettings, assign_split

    t_all = time.perf_counter()
    out: dict = {"date": str(dt.date.today()), "host": platform.node(), "cores": os.cpu_count(),
                 "load_average_start": os.getloadavg(), "args": vars(args)}
    work = Path(args.work)
    lake = work / "lake"
    copy_lake(Path(args.lake), lake)
    split = SplitSettings()

    # 1. model
    if args.retrain or not list_denovo(lake):
        base = {"structures": [args.structures], "structure_limit": args.limit, "vae": json.loads(args.vae),
                "vae_epochs": 1000, "vae_seconds": args.minutes * 60, "mapper_epochs": 1000,
                "mapper_seconds": args.minutes * 12, "batch_size": 128, "warmup_steps": 2000, "checkpoint_epochs": 1,
                "torch_threads": 1, "seed": args.seed, "figure_samples": 500}
        settings = DenovoTrainSettings.model_validate({**base, **json.loads(args.train)})
        t0 = time.perf_counter()
        trained = train_denovo(lake, settings, num_cpus=2)
        out["train_seconds"] = round(time.perf_counter() - t0, 1)
        out["history"] = trained.metrics["history"]
    torch.set_num_threads(1)
    model = load_denovo(lake)
    summary = json.loads((lake / "models" / "_denovo" / model.model_id / "model.json").read_text())
    out["model"] = summary
    history = json.loads((lake / "models" / "_denovo" / model.model_id / "metrics.json").read_text())["history"]
    vae = [h for h in history if h["phase"] == "vae"]
    out["model_training"] = {"vae_seconds": max((h["seconds"] for h in vae), default=0.0),
                             "vae_molecules": sum(h["molecules"] for h in vae), "vae_epochs": len(vae),
                             "mapper_epochs": sum(1 for h in history if h["phase"] == "mapper")}
    print(f"\n1. model {model.model_id}" + (" (trained here)" if "train_seconds" in out else " (the work lake's newest)")
          + f": VAE {out['model_training']['vae_seconds'] / 60:.0f} min, {out['model_training']['vae_molecules']:,} "
          f"molecules seen ({len(vae)} epoch reports), {out['model_training']['mapper_epochs']} mapper epochs")
    for k, v in {**summary["counts"], **summary["figures"]}.items():
        print(f"   {k:32s} {v:.3f}" if isinstance(v, float) else f"   {k:32s} {v}")

    # 2. de novo with formula vs random with formula
    compounds = sql.query(lake, "SELECT inchikey14, smiles, formula FROM compounds").to_pylist()
    train_compounds = [(c["smiles"], c["formula"]) for c in compounds if assign_split(c["inchikey14"], split) == "train"]
    pool = structure_pool(args.limit, [Path(args.structures)], train_compounds)
    queries = test_queries(lake, split, args.queries, args.seed)
    rng = random.Random(args.seed)
    rows: dict[str, list] = defaultdict(list)
    sample = SampleSettings(n=200, draws=args.draws, seed=args.seed)
    ranker = prior_ranker(lake)
    t0 = time.perf_counter()
    for q in queries:
        x = spectrum_inputs([q["mz"]], [q["intensities"]], [q["ionmode"]], [q["precursor_mz"]], model.settings.bins)
        pred = model.predict(x)[0]
        for name, constrained in (("vae (filter only)", False), ("vae", True)):
            stats: dict[str, int] = {}
            found = model.propose(pred, model.residual_sd, sample.model_copy(update={"constrained": constrained}),
                                  formula=q["formula"], stats=stats)
            row = top10_metrics(q["smiles"], q["inchikey14"], [p.smiles for p in found], not args.no_mces)
            row.update(validity=stats["valid"] / stats["draws"], uniqueness=stats["unique"] / max(stats["valid"], 1),
                       formula_match=stats["formula_match"] / max(stats["valid"], 1))
            rows[name].append(row)
        reranked = rerank_by_prior(ranker, q, found)
        rows["vae + library prior"].append(top10_metrics(q["smiles"], q["inchikey14"], reranked, not args.no_mces))
        same = [s for s in pool.get(q["formula"], [])]
        rnd = rng.sample(same, min(10, len(same)))
        rows["random_same_formula"].append(top10_metrics(q["smiles"], q["inchikey14"], rnd, not args.no_mces))
    out["denovo_seconds"] = round(time.perf_counter() - t0, 1)
    out["denovo"] = {name: summarise(r) for name, r in rows.items()}
    print(f"\n2. de novo, formula given: {len(queries)} test-split structures, {args.draws} draws each "
          f"({out['denovo_seconds']:.0f} s)")
    cols = ("with_proposals", "validity", "uniqueness", "formula_match", "top1", "top10", "best_tanimoto",
            "mean_tanimoto", "best_mces", "mean_mces")
    print("   " + "method".ljust(24) + "".join(c[:13].rjust(14) for c in cols))
    for name, s in out["denovo"].items():
        print("   " + name.ljust(24) + "".join(f"{s[c]:14.3f}" if c in s else "             -" for c in cols))

    # 3. --near radius
    parents = [q["smiles"] for q in queries[:20]]
    mu = model.encode(parents)
    radii = {}
    for r in (0.1, 0.25, 0.5, 1.0):
        vals = []
        for p, m in zip(parents, mu):
            if np.isnan(m).any():
                continue
            found = model.propose(m, r, SampleSettings(n=50, draws=100, seed=args.seed), exclude=[p])
            from speclake.training.denovo.chem import tanimoto_to
            t = tanimoto_to(p, [f.smiles for f in found])
            vals += [float(x) for x in t if x == x]
        radii[str(r)] = float(np.mean(vals)) if vals else float("nan")
    free = model.decode(np.random.default_rng(args.seed).standard_normal((100, model.settings.vae.latent))
                        .astype(np.float32))
    from speclake.training.denovo.chem import tanimoto_to
    radii["free"] = float(np.nanmean([np.nanmean(tanimoto_to(p, [f for f in free if f])) for p in parents]))
    out["near_radius_tanimoto"] = radii
    print("\n3. mean Tanimoto to the parent of proposals near it (20 test parents, 100 draws each)")
    for k, v in radii.items():
        print(f"   radius {k:6s} {v:.3f}")

    # 4. impurity case
    t0 = time.perf_counter()
    pairs = impurity_pairs(compounds, split, args.pairs)
    spectra_of = {q["inchikey14"]: q for q in test_queries(lake, split, 10**9, 0)}
    from speclake.training.denovo.data import training_spectra
    for r in training_spectra(lake, split, "validation").to_pylist():
        spectra_of.setdefault(r["inchikey14"], r)
    hits = defaultdict(list)
    tan_parent = []
    for pair in pairs:
        prod, parent = pair["product"], pair["parent"]
        q = spectra_of.get(prod["inchikey14"])
        m = model.encode([parent["smiles"]])[0]
        if q is None or np.isnan(m).any():
            continue
        x = spectrum_inputs([q["mz"]], [q["intensities"]], [q["ionmode"]], [q["precursor_mz"]], model.settings.bins)
        pred = model.predict(x)[0]
        found = model.propose(m, 0.5, SampleSettings(n=10, draws=args.draws, seed=args.seed), formula=prod["formula"],
                              target=pred, target_sd=model.residual_sd, exclude=[parent["smiles"]])
        keys = [(f.inchikey or "")[:14] for f in found]
        hits[pair["transformation"]].append(prod["inchikey14"] in keys)
        hits["all"].append(prod["inchikey14"] in keys)
        tan_parent += list(tanimoto_to(parent["smiles"], [f.smiles for f in found]))
    out["impurity"] = {k: {"pairs": len(v), "top10": float(np.mean(v)) if v else None} for k, v in hits.items()}
    out["impurity_mean_tanimoto_to_parent"] = float(np.nanmean(tan_parent)) if tan_parent else None
    out["impurity_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\n4. impurity case: {len(pairs)} parent/product pairs found (product held out), radius 0.5, "
          f"{args.draws} draws, product formula given")
    for k, v in out["impurity"].items():
        print(f"   {k:24s} pairs {v['pairs']:4d}   true product in top 10: "
              + (f"{v['top10']:.3f}" if v["top10"] is not None else "-"))
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    out["load_average_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    print(f"\n{out['seconds']:.0f} s in all; JSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
