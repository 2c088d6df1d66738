"""Settings of one evaluation run (:func:`speclake.training.evaluate.evaluate`)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .baselines import BASELINES, BaselineSettings
from .encoding import BinSettings, DescriptorSettings
from .split import SplitSettings


class EvaluationSettings(BaseModel):
    """Settings of one evaluation run; saved with the ``model_metrics`` version and the run record."""

    model_config = ConfigDict(extra="forbid")

    split: SplitSettings = Field(default_factory=SplitSettings)
    ms_level: int = Field(2, ge=2)
    bins: BinSettings = Field(default_factory=BinSettings, description="Inputs of the classical baselines.")
    descriptors: DescriptorSettings = Field(
        default_factory=lambda: DescriptorSettings(families=("morgan", "maccs", "substructure")),
        description="Descriptors the classical baselines predict (chosen on training structures).")
    baselines: tuple[Literal["logreg", "random_forest"], ...] = BASELINES
    baseline: BaselineSettings = Field(default_factory=BaselineSettings)
    library: tuple[Literal["modified_cosine", "cosine", "entropy"], ...] = Field(
        ("modified_cosine",), description="Library searches to evaluate (analogue scheme): modified_cosine "
                                          "(method library_cosine), cosine (library_plain_cosine), entropy "
                                          "(library_entropy).")
    candidate_modes: tuple[Literal["formula", "mass"], ...] = ("formula",)
    ppm: float = Field(10.0, gt=0, description="Mass window of the 'mass' candidate mode.")
    index_name: str = "fingerprint"
    max_test: int | None = Field(None, ge=1, description="Cap on test spectra (a fixed hash-ordered subset).")
    max_validation: int | None = Field(500, ge=1, description="Cap on validation spectra (lambda, reliability).")
    max_baseline_train: int | None = Field(
        None, ge=1, description="Cap on training spectra the classical baselines are fitted on (a fixed hash-ordered "
                                "subset; None: all). Per-descriptor models over ~1,000 descriptors are slow at library scale.")
    clip: float = Field(1e-3, gt=0, lt=0.5, description="Predicted probabilities clipped to [clip, 1-clip].")
    reliability_weighting: bool = Field(True, description="Weight descriptors by 2*AUC-1 on validation.")
    library_top_k: int = Field(5, ge=1, description="Library hits whose structures score candidates (analogues).")
    library_tolerance: float = Field(0.1, gt=0, description="Peak matching tolerance (Da) of (modified) cosine.")
    entropy_tolerance: float = Field(0.02, gt=0, description="Peak matching tolerance (Da) of entropy similarity.")
    bootstrap: int = Field(1000, ge=0, description="Resamples (of test structures) for hit@1 intervals; 0: none.")
    lambda_grid: tuple[float, ...] = Field((0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0), min_length=1,
                                           description="Prior weights tried on validation (1.0 without one).")
    seed: int = 0
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray of an index update.")
    prefilter_structures: bool = Field(
        True, description="Index only the lines of SMILES files that can be a candidate of the test/validation "
                          "spectra (same formula, or in a mass window): the same candidate lists as indexing the "
                          "whole file, at a fraction of the cost (training.prefilter).")


__all__ = ["EvaluationSettings"]
