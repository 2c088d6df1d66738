"""Fixtures and helpers for the reader tests: real files from ../shared/data, split reading."""
from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from speclake.pipelines.readers import read_split
from speclake.pipelines.readers.base import RawRecord, ReadResult, RecordError, Split
from speclake.pipelines.readers.splits import plan_file
from tests.conftest import shared_path



def formats_file(name: str) -> Path:
    """A file of ../shared/data/formats (test skipped when absent)."""
    return shared_path("formats", name)


def read_file(path: Path | str, staging: Path | str, target_bytes: int = 8 * 2**20,
              fmt: str | None = None) -> list[ReadResult]:
    """Every result of every planned split of one file, in order."""
    return [r for split in plan_file(str(path), str(staging), target_bytes, fmt) for r in read_split(split)]


def read_whole(path: Path | str, fmt: str) -> list[ReadResult]:
    """The results of one split covering the whole (uncompressed) file."""
    return list(read_split(Split(str(path), str(path), fmt)))


def records(results: list[ReadResult]) -> list[RawRecord]:
    return [r for r in results if isinstance(r, RawRecord)]


def errors(results: list[ReadResult]) -> list[RecordError]:
    return [r for r in results if isinstance(r, RecordError)]


def fingerprint(results: list[ReadResult]) -> list[tuple]:
    """What must not change when a file is split differently."""
    return [(type(r).__name__, r.locator, getattr(r, "mz", ()), getattr(r, "intensities", ()),
             getattr(r, "metadata", {}).get("accession"), getattr(r, "reason_code", "")) for r in results]


@pytest.fixture(scope="session")
def massbank_gz() -> Path:
    """A small real MassBank contributor file (33 records)."""
    return shared_path("massbank", "Agilent.txt.gz")


@pytest.fixture(scope="session")
def massbank_text(massbank_gz: Path) -> bytes:
    """The decompressed bytes of the small MassBank file."""
    return gzip.decompress(massbank_gz.read_bytes())


@pytest.fixture()
def staging(tmp_path: Path) -> Path:
    path = tmp_path / "staging"
    path.mkdir()
    return path
