"""The objects passed between annotation steps: a query scan, a structure candidate, a ranked answer.

Every step takes and returns these; the tables (:mod:`.tables`) are built from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Query:
    """One cleaned MS2 scan of a study file (peaks cleaned as ingest cleans them).

    ``metadata`` keeps what the file said (reported adduct, name, SMILES ...) for display only:
    annotation never reads it as evidence.
    """

    query_id: str                      # MGF TITLE (or SPECTRUMID), else the mzML native id; verbatim
    source_file: str
    record_locator: str                # where in the file (record n / scan / native id), as ingest says it
    precursor_mz: float
    ionmode: str                       # positive | negative
    mz: np.ndarray                     # float64, sorted
    intensities: np.ndarray            # float32/64, scaled to max 1
    scan_number: int | None = None
    retention_time: float | None = None  # seconds
    charge: int | None = None
    usi: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Candidate:
    """A structure that could be the query's compound under one precursor hypothesis."""

    inchikey: str
    inchikey14: str
    smiles: str
    formula: str
    monoisotopic_mass: float
    adduct: str                        # the adduct hypothesis, e.g. [M+H]+
    mass_error_ppm: float              # precursor m/z vs this structure + adduct
    compound_name: str | None = None
    adduct_rank: int = 1               # rank of the adduct hypothesis for this query
    formula_rank: int | None = None    # rank of the formula among the query's formulas (trees), 1 = best
    formula_score: float | None = None  # fragmentation-tree score of (formula, adduct)
    source: str | None = None          # structure index source (lake, pubchem_sdf, smiles ...)
    features: dict[str, float] = field(default_factory=dict)  # evidence per scorer, filled by rankers
    faiss_id: int | None = None        # the structure's id in the structure index (None: not from the index)
    # packed Morgan bits read from a fingerprint index (uint64 words, the layout of
    # speclake.training.metrics.pack_fingerprints; radius/bits of speclake.index.embed.MorganFingerprint)
    fingerprint: np.ndarray | None = field(default=None, repr=False, compare=False)


@dataclass
class Ranked:
    """A query's answer: candidates best first, with scores, the method and the rank-1 confidence."""

    query: Query
    candidates: list[Candidate]        # best first
    scores: list[float]
    method: str
    confidence: float | None           # calibrated P(rank 1 is right at InChIKey-14), None when uncalibrated
    n_candidates: int | None = None    # candidates scored (``candidates`` may keep only the best of them)
