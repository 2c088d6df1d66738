"""Settings of a library index, validated and saved in its manifest."""
from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LibrarySettings(BaseModel):
    """How library spectra (and queries) are cleaned and indexed; unknown keys are refused.

    The cleaning is Flash entropy search's ``clean_spectrum``: drop empty peaks, drop peaks above
    ``precursor_mz - precursor_removal_da``, centroid (merge peaks closer than ``min_peak_distance_da``,
    most intense first, intensity-weighted m/z), drop peaks below ``noise_threshold`` x the base peak,
    keep the ``max_peaks`` most intense, normalise intensities to sum 1. Because cleaned peaks are more
    than ``2 * max_tolerance_da`` apart, a query peak matches at most one peak of a library spectrum,
    so scores are plain sums over the index (no greedy assignment needed).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tolerance_da: float = Field(0.024, gt=0, description="Widest fragment tolerance a search may use (Da).")
    min_peak_distance_da: float = Field(0.05, gt=0, description="Peaks closer than this are merged (centroiding).")
    noise_threshold: float = Field(0.01, ge=0, lt=1, description="Peaks below this fraction of the base peak are dropped.")
    precursor_removal_da: float | None = Field(
        1.6, ge=0, description="Peaks above precursor m/z minus this are dropped (None: keep them).")
    max_peaks: int | None = Field(None, ge=1, description="Keep the most intense peaks only (None: all).")
    min_peaks: int = Field(1, ge=1, description="Spectra with fewer cleaned peaks are not indexed (reason too_few_peaks).")
    max_segments: int = Field(
        8, ge=1, description="Segments per ion mode before the smallest are merged into one (LSM-style).")

    @model_validator(mode="after")
    def _one_match_per_peak(self) -> "LibrarySettings":
        if not self.min_peak_distance_da > 2 * self.max_tolerance_da:
            raise ValueError(
                f"min_peak_distance_da ({self.min_peak_distance_da}) must exceed 2 * max_tolerance_da "
                f"({2 * self.max_tolerance_da}), else one query peak could match two peaks of a library spectrum")
        return self

    def digest(self) -> str:
        """Short hash of every setting that changes the index's content."""
        data = self.model_dump(mode="json")
        data.pop("max_segments")  # layout only
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
