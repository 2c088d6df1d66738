"""``speclake denovo``: de novo structure proposals for every MS2 scan of study files.

Per scan (read and cleaned as annotation reads them, :func:`~speclake.serving.annotate.queries.read_queries`):

1. the mapper predicts the scan's latent point from its binned spectrum;
2. the formula filter is ``formula`` when given, else the best precursor formula by fragmentation tree
   (:func:`~speclake.pipelines.features.precursor_formula.rank_precursor_formulas` under [M+H]+ or
   [M-H]-), else none (the tree could not be made: the reason goes to the run's warnings);
3. latent points are drawn around the prediction, or around the parent's latent mean with ``near``
   (:mod:`.sample`), decoded inside the formula (:mod:`.constrain`), filtered by it exactly and ranked by
   latent likelihood;
4. the best ``rank_pool`` are re-ranked by the lake's annotation ranker (``rank_with='ranker'``, the
   default: the ranker study annotation uses, :func:`~speclake.serving.annotate.rankers.load_ranker`, fed
   with the scan's library hits), so proposals are ordered by the same evidence as database
   candidates: library prior, analogue hits, the trained models' scores and, when the ranker has it,
   in-silico fragmentation. ``latent_score`` keeps the latent likelihood.

Proposals go to ``denovo_candidates``; every scan without proposals (unreadable record, no peaks, none
of the formula decoded ...) to ``denovo_errors``; both committed once through the run contract (kind
``denovo``), so a failed run leaves no partial rows.
"""
from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Sequence

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunReport

from .sample import METHOD, DenovoModel, SampleSettings, load_denovo
from .tables import DENOVO_CANDIDATES, DENOVO_ERRORS

log = logging.getLogger(__name__)

DEFAULT_ADDUCT = {"positive": "[M+H]+", "negative": "[M-H]-"}


class DenovoSettings(BaseModel):
    """One ``speclake denovo`` run."""

    model_config = ConfigDict(extra="forbid")

    model_id: str | None = Field(None, description="De novo model (default: the newest of the lake).")
    sample: SampleSettings = SampleSettings()
    formula: str | None = Field(None, description="Keep only proposals of this molecular formula.")
    formula_from_tree: bool = Field(True, description="Without --formula, filter by the best fragmentation-tree formula.")
    near: str | None = Field(None, description="SMILES of a parent: sample around its latent point.")
    ionmode: str | None = Field(None, description="Ion mode of scans whose file states none.")
    torch_threads: int = Field(1, ge=1, description="torch threads (1: small batched GRU steps gain nothing from more).")
    rank_with: str = Field("ranker", pattern="^(ranker|latent)$",
                           description="ranker: the lake's annotation ranker re-ranks the proposals (library prior, "
                                       "analogue hits, model scores, in-silico fragmentation); latent: latent likelihood only.")
    rank_pool: int = Field(200, ge=1, description="Proposals (best by latent likelihood) the ranker scores per scan.")

    @field_validator("formula")
    @classmethod
    def _hill_formula(cls, v: str | None) -> str | None:
        """A formula the lake can read, in Hill spelling (ValueError naming the bad element otherwise)."""
        from speclake.pipelines.features.formula import normalize_formula

        return normalize_formula(v) if v else None


@dataclass
class DenovoReport(RunReport):
    """Counts of one denovo run."""

    model_id: str = ""
    ranker: str = ""                  # the annotation ranker that ordered the proposals ("" : latent likelihood)
    study: str = ""
    files: int = 0
    scans: int = 0
    scans_with_proposals: int = 0
    proposals: int = 0
    errors: int = 0
    formula_sources: dict[str, int] = field(default_factory=dict)


def tree_formula(query, ionmode: str) -> tuple[str | None, str | None]:
    """(best precursor formula by fragmentation tree under the mode's protonated/deprotonated adduct, why not)."""
    from speclake.pipelines.features.fragtree import Skipped
    from speclake.pipelines.features.precursor_formula import rank_precursor_formulas

    ranked = rank_precursor_formulas(float(query.precursor_mz), DEFAULT_ADDUCT[ionmode], query.mz,
                                     query.intensities, top_k=10)
    if isinstance(ranked, Skipped):
        return None, f"{ranked.reason_code}: {ranked.reason}"
    return (ranked[0][0], None) if ranked else (None, "no formula")


def proposal_candidates(query, proposals: Sequence[Any], adduct: str) -> list[Any]:
    """The proposals as annotation :class:`~speclake.serving.annotate.model.Candidate` under ``adduct``."""
    from speclake.pipelines.normalize.adduct import adduct_mz, parse_adduct
    from speclake.pipelines.normalize.masses import formula_mass
    from speclake.serving.annotate.model import Candidate

    add = parse_adduct(adduct)
    out = []
    for p in proposals:
        mass = formula_mass(p.formula) if p.formula else float("nan")
        ion = adduct_mz(mass, add)
        out.append(Candidate(inchikey=p.inchikey or "", inchikey14=p.inchikey[:14] if p.inchikey else p.smiles, smiles=p.smiles,
                             formula=p.formula or "", monoisotopic_mass=mass, adduct=adduct,
                             mass_error_ppm=(float(query.precursor_mz) - ion) / ion * 1e6, formula_rank=1))
    return out


def rank_proposals(annotator: Any, query, proposals: Sequence[Any]) -> tuple[list[Any], list[float], str]:
    """Proposals re-ranked by the lake's annotation ranker (``annotator``: a
    :class:`~speclake.serving.annotate.steps.Annotator`): (proposals best first, their scores, the ranker's name).
    The scan's library hits feed the analogue evidence as in annotation."""
    from speclake.serving.annotate.steps import ANALOGUE, IDENTITY

    if not proposals:
        return [], [], annotator.ranker.name
    identity, analogue = annotator.search([query])
    cands = proposal_candidates(query, proposals, DEFAULT_ADDUCT[query.ionmode])
    by_smiles = {p.smiles: p for p in proposals}
    ranked = annotator.ranker.rank([query], [cands], {IDENTITY: identity, ANALOGUE: analogue})[0]
    return [by_smiles[c.smiles] for c in ranked.candidates], list(ranked.scores), ranked.method


def propose_for_query(model: DenovoModel, query, settings: DenovoSettings, parent_latent=None, annotator: Any = None
                      ) -> tuple[list[dict[str, Any]], str | None, str | None, str | None]:
    """(proposal rows, target formula, its source, the reason when there are no proposals) of one scan."""
    from speclake.training.encoding import BinSettings

    from .data import spectrum_inputs

    bins = BinSettings.model_validate(model.settings.bins.model_dump())
    x = spectrum_inputs([query.mz], [query.intensities], [query.ionmode], [query.precursor_mz], bins)
    pred = model.predict(x)[0]
    spread = model.residual_sd * settings.sample.scale
    formula, source, why = settings.formula, "given" if settings.formula else None, None
    if formula is None and settings.formula_from_tree:
        formula, why = tree_formula(query, query.ionmode)
        source = "fragtree" if formula else None
    sample = settings.sample
    if annotator is not None:   # a wider pool by latent likelihood, cut to n after the ranker
        sample = sample.model_copy(update={"n": max(sample.n, settings.rank_pool)})
    if parent_latent is not None:
        found = model.propose(parent_latent, sample.radius, sample, formula=formula, target=pred,
                              target_sd=spread, exclude=[settings.near] if settings.near else ())
    else:
        found = model.propose(pred, spread, sample, formula=formula)
    scores, method = [p.score for p in found], METHOD
    if annotator is not None and found:
        found, scores, method = rank_proposals(annotator, query, found)
    rows = [{"rank": r, "smiles": p.smiles, "inchikey": p.inchikey, "inchikey14": p.inchikey[:14] if p.inchikey else None,
             "formula": p.formula, "score": sc, "latent_score": p.score, "method": method}
            for r, (p, sc) in enumerate(zip(found[:settings.sample.n], scores), 1)]
    reason = None
    if not rows:
        reason = (f"none of {settings.sample.draws} decoded structures has formula {formula} ({source})"
                  if formula else f"no structure decoded from {settings.sample.draws} latent points")
    return rows, formula, source, reason


def parent_point(model: DenovoModel, near: str):
    """The parent's latent mean (ValueError when the model's alphabet cannot spell it or RDKit cannot read it)."""
    import numpy as np

    point = model.encode([near])[0]
    if np.isnan(point).any():
        raise ValueError(f"--near {near!r}: RDKit cannot read it or model {model.model_id}'s SELFIES alphabet "
                         f"cannot spell it (at most {model.vocab.max_len} tokens)")
    return point


def denovo_study(files: Sequence[str | os.PathLike[str]], lake: str | os.PathLike[str], study: str,
                 settings: DenovoSettings = DenovoSettings(), *, progress: Progress | None = None) -> DenovoReport:
    """Propose structures for every MS2 scan of ``files``; see the module docstring."""
    from speclake.serving.annotate.queries import error_row, read_queries

    import torch

    torch.set_num_threads(settings.torch_threads)
    model = load_denovo(lake, settings.model_id)
    parent = parent_point(model, settings.near) if settings.near else None
    report = DenovoReport(model_id=model.model_id, study=study)
    annotator = None
    with Run(Lake(lake), "denovo", settings, report, progress=progress, lock=None) as run, ExitStack() as stack:
        if settings.rank_with == "ranker":
            from speclake.serving.annotate.steps import Annotator, StepSettings

            annotator = Annotator(lake, StepSettings())
            stack.callback(annotator.close)
            report.ranker = annotator.ranker.name
            report.warnings += annotator.missing
        rows: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for path in files:
            with run.stage("read"):
                qf = read_queries(path, ionmode=settings.ionmode, study=study)
            report.files += 1
            report.scans += qf.n_scans
            errors += qf.errors
            with run.stage("propose", total=len(qf.queries)):
                for q in qf.queries:
                    found, formula, source, reason = propose_for_query(model, q, settings, parent, annotator)
                    report.formula_sources[source or "none"] = report.formula_sources.get(source or "none", 0) + 1
                    if not found:
                        errors.append(error_row(qf.path, q.query_id, q.record_locator, q.scan_number, "denovo",
                                                "no_proposals", reason or "no proposals"))
                        continue
                    report.scans_with_proposals += 1
                    base = {"source_file": qf.path, "query_id": q.query_id, "record_locator": q.record_locator,
                            "precursor_mz": float(q.precursor_mz), "ionmode": q.ionmode,
                            "near_smiles": settings.near, "target_formula": formula, "formula_source": source}
                    rows += [{**base, **r} for r in found]
        report.proposals, report.errors = len(rows), len(errors)
        const = {"study": study, "run_id": run.run_id}
        run.write_part("denovo_candidates", _table(rows, DENOVO_CANDIDATES, model_id=model.model_id, **const))
        run.write_part("denovo_errors", _table(errors, DENOVO_ERRORS, **const))
        run.commit()
    log.info("denovo %s: %d scans, %d with proposals, %d proposals, %d errors", study, report.scans,
             report.scans_with_proposals, report.proposals, report.errors)
    return report


def _table(rows: list[dict[str, Any]], schema: pa.Schema, **const: Any) -> pa.Table:
    cols = {f.name: [r.get(f.name, const.get(f.name)) for r in rows] for f in schema}
    return pa.table(cols, schema=schema)


__all__ = ["DenovoReport", "DenovoSettings", "denovo_study", "parent_point", "propose_for_query", "tree_formula"]
