"""Request and response bodies of the HTTP API (pydantic; their examples show in the OpenAPI docs at /docs)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EXAMPLE_PEAKS = [[91.0542, 12.0], [119.0491, 8.5], [138.0662, 100.0], [163.0866, 3.1], [177.0659, 6.2]]


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a short error code, what was wrong, and the request id (also in X-Request-ID)."""

    error: str = Field(description="short code: invalid_json, invalid_request, not_found, too_large, ...")
    detail: Any = Field(description="what was wrong, in words (or a list of field errors)")
    request_id: str | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": "invalid_request", "detail": [{"field": "peaks.0.1", "message": "intensity must be >= 0"}],
         "request_id": "3f2a9c0d1e7b4a55"}]})


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    lake: str
    version: str
    annotator_ready: bool
    missing: list[str] = Field(default_factory=list, description="what the lake lacks for annotation, and how to make it")


class AnnotateRequest(BaseModel):
    """One MS/MS spectrum to annotate: precursor m/z, ion mode and centroided peaks ``[m/z, intensity]``.

    Peaks may come in any order: they are sorted by m/z (then cleaned as ``speclake ingest`` cleans library
    spectra). NaN/infinite values, m/z <= 0 and negative intensities are refused (422).
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"precursor_mz": 195.0877, "ionmode": "positive", "peaks": EXAMPLE_PEAKS, "top_k": 5}]})

    precursor_mz: float = Field(gt=0, allow_inf_nan=False, description="precursor m/z")
    ionmode: Literal["positive", "negative"]
    peaks: list[tuple[float, float]] = Field(min_length=1, description="[m/z, intensity] pairs")
    charge: int = Field(1, ge=1, le=10, description="precursor charge (absolute value)")
    top_k: int = Field(20, ge=1, description="ranked structures returned")
    query_id: str = Field("query", max_length=200, description="your name for the spectrum (echoed back)")

    @field_validator("peaks")
    @classmethod
    def _finite_peaks(cls, peaks: list[tuple[float, float]]) -> list[tuple[float, float]]:
        import math

        for i, (mz, inten) in enumerate(peaks):
            if not (math.isfinite(mz) and math.isfinite(inten)):
                raise ValueError(f"peak {i} [{mz}, {inten}] has a NaN or infinite value")
            if mz <= 0:
                raise ValueError(f"peak {i}: m/z must be > 0, got {mz}")
            if inten < 0:
                raise ValueError(f"peak {i}: intensity must be >= 0, got {inten}")
        return sorted(peaks)


class CandidateOut(BaseModel):
    """One ranked structure of a scan (the ``annotations`` columns)."""

    model_config = ConfigDict(extra="allow")

    rank: int | None
    status: str = Field(description="annotated | no_candidates")
    inchikey: str | None = None
    smiles: str | None = None
    compound_name: str | None = None
    formula: str | None = None
    adduct: str | None = Field(None, description="precursor hypothesis, e.g. [M+H]+")
    score: float | None = None
    confidence: float | None = Field(None, description="calibrated P(rank 1 right, InChIKey-14); rank 1 only")
    mass_error_ppm: float | None = None
    library_spectrum_id: str | None = None
    library_match: str | None = Field(None, description="identity | analogue")
    library_cosine: float | None = None


class ScanOut(BaseModel):
    query_id: str
    record_locator: str | None = None
    precursor_mz: float
    ionmode: str
    candidates: list[CandidateOut]


class ScanError(BaseModel):
    query_id: str | None = None
    record_locator: str | None = None
    stage: str
    reason_code: str = Field(description="no_peaks, nan_peaks, missing_precursor, unknown_ionmode, ...")
    reason: str


class AnnotateResponse(BaseModel):
    """Ranked candidate structures per scan (the same steps as ``speclake annotate``), and scans that failed."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "method": "library+prior", "missing": [], "scans": [{
            "query_id": "query", "record_locator": "record 1 (line 1)", "precursor_mz": 195.0877,
            "ionmode": "positive", "candidates": [{
                "rank": 1, "status": "annotated", "inchikey": "RYYVLZVUVIJVGH-UHFFFAOYSA-N",
                "smiles": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "compound_name": "Caffeine", "formula": "C8H10N4O2",
                "adduct": "[M+H]+", "score": 0.93, "confidence": 0.88, "mass_error_ppm": 0.4,
                "library_spectrum_id": "7043a04be3aef1ddc918d6e2", "library_match": "identity",
                "library_cosine": 0.97}]}],
        "errors": []}]})

    method: str
    missing: list[str]
    scans: list[ScanOut]
    errors: list[ScanError]


class SqlRequest(BaseModel):
    """One read-only statement (SELECT/WITH/DESCRIBE/SHOW/SUMMARIZE/EXPLAIN) over the lake's tables and views."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"query": "SELECT ionmode, count(*) AS n FROM spectra GROUP BY 1", "max_rows": 100}]})

    query: str = Field(min_length=1, max_length=100_000)
    max_rows: int | None = Field(None, ge=1, description="fewer rows than the server's limit")


class SqlResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"columns": ["ionmode", "n"], "types": ["string", "int64"], "rows": [["negative", 137], ["positive", 225]],
         "row_count": 2, "truncated": False, "max_rows": 100, "seconds": 0.004}]})

    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    row_count: int
    truncated: bool = Field(description="more rows than max_rows: the rest were cut")
    max_rows: int
    seconds: float


class SpectrumOut(BaseModel):
    """A library spectrum: its metadata (the ``spectra`` columns) and peaks ``[m/z, intensity scaled to 1]``."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "spectrum_id": "7043a04be3aef1ddc918d6e2", "accession": "MSBNK-Eawag-EQ300801", "usi": None,
        "compound_name": "Caffeine", "inchikey": "RYYVLZVUVIJVGH-UHFFFAOYSA-N", "precursor_mz": 195.0877,
        "adduct": "[M+H]+", "ionmode": "positive", "num_peaks": 2, "peaks": [[138.0662, 1.0], [110.0713, 0.12]]}]})

    spectrum_id: str
    accession: str | None = None
    usi: str | None = None
    compound_name: str | None = None
    inchikey: str | None = None
    precursor_mz: float | None = None
    adduct: str | None = None
    ionmode: str
    num_peaks: int
    peaks: list[list[float]]


class CompoundsOut(BaseModel):
    """The compounds of an InChIKey (full key: one; first block: every stereo/charge variant) and their spectra."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "inchikey": "RYYVLZVUVIJVGH", "compounds": [{
            "inchikey": "RYYVLZVUVIJVGH-UHFFFAOYSA-N", "inchikey14": "RYYVLZVUVIJVGH",
            "smiles": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C", "formula": "C8H10N4O2", "monoisotopic_mass": 194.0804,
            "compound_name": "Caffeine", "n_spectra": 4}],
        "spectrum_ids": ["7043a04be3aef1ddc918d6e2"]}]})

    inchikey: str
    compounds: list[dict[str, Any]]
    spectrum_ids: list[str] = Field(description="library spectra of these compounds (first 100)")


class StudyOut(BaseModel):
    study: str
    files: int
    scans: int
    annotated: int
    no_candidates: int
    errors: int
    last_finished_at: str | None = None


class AnnotationsPage(BaseModel):
    """One page of a study's ``annotations`` rows (ordered by file, scan id, rank)."""

    study: str
    total: int = Field(description="rows matching the filters")
    offset: int
    limit: int
    rows: list[dict[str, Any]]


__all__ = ["AnnotateRequest", "AnnotateResponse", "AnnotationsPage", "CandidateOut", "CompoundsOut", "ErrorBody",
           "Health", "ScanError", "ScanOut", "SpectrumOut", "SqlRequest", "SqlResponse", "StudyOut"]
