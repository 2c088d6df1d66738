"""The one settings object of normalization, saved as JSON beside every lake version it produced."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class NormalizeSettings(BaseModel):
    """Tolerances and conventions of record normalization; refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    merge_tolerance_da: float = Field(1e-4, ge=0, description="peaks closer than this (Da) are merged into one")
    precursor_tolerance_da: float = Field(0.05, ge=0, description="MS2+: peaks above precursor m/z + max(this, ppm) are removed")
    precursor_tolerance_ppm: float = Field(20.0, ge=0, description="MS2+: ppm part of the precursor window")
    remove_peaks_above_precursor: bool = Field(True, description="MS2+: drop peaks above the precursor window")
    assume_ms2_with_precursor: bool = Field(
        True, description="a record without MS level but with a precursor m/z is MS2 (matchms' default)")
    retention_time_default_unit: dict[str, Literal["s", "min"]] = Field(
        default_factory=lambda: {"massbank": "min", "msp": "min"},
        description="unit of a retention time written without one, by source format; others: seconds")
    retention_time_seconds_above: float | None = Field(
        120.0, description="with a default unit of min, a unitless value above this is read as seconds")

    def to_json(self) -> str:
        """The settings as indented JSON (``NormalizeSettings.model_validate_json`` reads it back)."""
        return self.model_dump_json(indent=2)

    def rt_default_unit(self, fmt: str) -> Literal["s", "min"]:
        """Unit of a unitless retention time in records of format ``fmt``."""
        return self.retention_time_default_unit.get(fmt, "s")
