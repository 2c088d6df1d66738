"""Structure-disjoint data splits: every spectrum of a 2D skeleton (InChIKey first block) on one side.

The split of a structure is a pure function of its InChIKey-14 and the split settings, so it is
fixed across runs and machines, needs no stored assignment table, and is recorded (as settings
plus counts) with every model.
"""
from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")


class SplitSettings(BaseModel):
    """Fractions of structures (InChIKey-14 blocks) per split and the salt of the hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float = Field(0.8, gt=0, lt=1)
    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)
    seed: int = Field(0, description="Salt of the hash: another seed gives another, equally fixed split.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> "SplitSettings":
        if abs(self.train + self.validation + self.test - 1.0) > 1e-9:
            raise ValueError(f"split fractions must sum to 1, got {self.train + self.validation + self.test}")
        return self


def split_position(inchikey14: str, seed: int = 0) -> float:
    """Position of a structure in [0, 1), uniform over InChIKey-14 blocks (sha256 of seed and key)."""
    digest = hashlib.sha256(f"{seed}:{inchikey14}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(inchikey14: str, settings: SplitSettings = SplitSettings()) -> SplitName:
    """train, validation or test for one InChIKey first block (ValueError for an empty key)."""
    if not inchikey14 or len(inchikey14) != 14:
        raise ValueError(f"not an InChIKey first block: {inchikey14!r}")
    pos = split_position(inchikey14, settings.seed)
    if pos < settings.train:
        return "train"
    if pos < settings.train + settings.validation:
        return "validation"
    return "test"
