"""Fixtures of the normalization tests: a fluent RawRecord builder and a tiny MassBank record reader."""
from __future__ import annotations

import functools
import gzip
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from speclake.pipelines.normalize.settings import NormalizeSettings
from speclake.pipelines.readers.base import RawRecord


class SpectrumBuilder:
    """Builds a :class:`RawRecord` step by step: ``SpectrumBuilder().with_mz([...]).build()``.

    Defaults: a positive-mode MS2 record of caffeine [M+H]+ with three peaks.
    """

    def __init__(self) -> None:
        self._mz: tuple[float, ...] = (110.0713, 138.0662, 195.0877)
        self._intensities: tuple[float, ...] = (200.0, 1000.0, 500.0)
        self._metadata: dict[str, object] = {
            "compound_name": "Caffeine",
            "smiles": "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
            "inchikey": "RYYVLZVUVIJVGH-UHFFFAOYSA-N",
            "precursor_mz": "195.0877",
            "adduct": "[M+H]+",
            "ionmode": "POSITIVE",
            "ms_level": "MS2",
            "collision_energy": "35 % (nominal)",
            "accession": "TEST-000001",
        }
        self._extra: dict[str, str] = {}
        self._fmt = "massbank"
        self._source_file = "test.txt"
        self._locator = "record 1 (line 1)"

    def with_mz(self, mz: list[float]) -> "SpectrumBuilder":
        self._mz = tuple(mz)
        return self

    def with_intensities(self, intensities: list[float]) -> "SpectrumBuilder":
        self._intensities = tuple(intensities)
        return self

    def with_peaks(self, mz: list[float], intensities: list[float]) -> "SpectrumBuilder":
        return self.with_mz(mz).with_intensities(intensities)

    def with_metadata(self, **values: object) -> "SpectrumBuilder":
        """Set (or, with None, remove) metadata keys."""
        for key, value in values.items():
            if value is None:
                self._metadata.pop(key, None)
            else:
                self._metadata[key] = value
        return self

    def without(self, *keys: str) -> "SpectrumBuilder":
        for key in keys:
            self._metadata.pop(key, None)
        return self

    def with_extra(self, **values: str) -> "SpectrumBuilder":
        self._extra.update(values)
        return self

    def with_format(self, fmt: str) -> "SpectrumBuilder":
        self._fmt = fmt
        return self

    def with_source_file(self, path: str) -> "SpectrumBuilder":
        self._source_file = path
        return self

    def build(self) -> RawRecord:
        return RawRecord(source_file=self._source_file, locator=self._locator, fmt=self._fmt,
                         metadata=dict(self._metadata), extra=dict(self._extra),
                         mz=self._mz, intensities=self._intensities)


@pytest.fixture
def builder() -> SpectrumBuilder:
    """A fresh SpectrumBuilder."""
    return SpectrumBuilder()


@pytest.fixture
def settings() -> NormalizeSettings:
    """Default normalization settings."""
    return NormalizeSettings()


def massbank_path(name: str) -> Path:
    """A file of ../shared/data/massbank, skipping the test when the shared data is absent."""
    from tests.conftest import shared_path

    return shared_path("massbank", name)


def iter_massbank(path: Path, limit: int | None = None) -> Iterator[dict[str, object]]:
    """Minimal MassBank record reader for tests: accession, tag lines and the PK$PEAK rows.

    Yields {"accession": str, "tags": {tag: [values]}, "peaks": [(mz, int, relint)]}.
    """
    count = 0
    tags: dict[str, list[str]] = {}
    peaks: list[tuple[float, float, float]] = []
    in_peaks = False
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("//"):
                yield {"accession": (tags.get("ACCESSION") or [""])[0], "tags": tags, "peaks": peaks}
                count += 1
                if limit is not None and count >= limit:
                    return
                tags, peaks, in_peaks = {}, [], False
                continue
            if line.startswith("  "):
                if in_peaks:
                    mz, intensity, rel = line.split()[:3]
                    peaks.append((float(mz), float(intensity), float(rel)))
                continue
            in_peaks = line.startswith("PK$PEAK:")
            tag, _, value = line.rstrip("\n").partition(": ")
            tags.setdefault(tag, []).append(value)


#: MassBank "TAG SUBTAG" pairs whose value distributions the tests check.
MASSBANK_TAGS = ("AC$MASS_SPECTROMETRY COLLISION_ENERGY", "AC$CHROMATOGRAPHY RETENTION_TIME",
                 "MS$FOCUSED_ION PRECURSOR_M/Z", "MS$FOCUSED_ION PRECURSOR_TYPE", "MS$FOCUSED_ION ION_TYPE")


def massbank_tag_values(tag: str) -> "Counter[str]":
    """Value distribution of one of :data:`MASSBANK_TAGS` over the whole shared release (one cached pass)."""
    massbank_path("RIKEN.txt.gz")  # skip when the shared data is absent
    return _all_massbank_tag_values()[tag]


@functools.lru_cache(maxsize=1)
def _all_massbank_tag_values() -> dict[str, "Counter[str]"]:
    from tests.conftest import SHARED_DATA

    values: dict[str, Counter[str]] = {t: Counter() for t in MASSBANK_TAGS}
    split = [(t, *t.split(" ", 1)) for t in MASSBANK_TAGS]
    for path in sorted((SHARED_DATA / "massbank").glob("*.txt.gz")):
        for record in iter_massbank(path):
            tags = record["tags"]
            for key, tag, sub in split:
                for value in tags.get(tag, []):  # type: ignore[union-attr]
                    if value.startswith(sub + " "):
                        values[key][value[len(sub) + 1:].strip()] += 1
    return values
