"""Annotation fixtures: small study files written by the tests (bad scans, blind MGF) and an annotated lake."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import SAMPLE

#: An MGF with one good scan and one scan of each kind that must land in annotation_errors.
BAD_MGF = """BEGIN IONS
TITLE=good scan 1
PEPMASS=183.057
CHARGE=1-
IONMODE=negative
70.0 10
100.0 50
150.0 100
END IONS
BEGIN IONS
TITLE=empty scan
PEPMASS=200.1
CHARGE=1+
IONMODE=positive
END IONS
BEGIN IONS
TITLE=nan scan
PEPMASS=200.1
CHARGE=1+
IONMODE=positive
70.0 nan
100.0 50
END IONS
BEGIN IONS
TITLE=no precursor
CHARGE=1+
IONMODE=positive
70.0 10
100.0 50
END IONS
BEGIN IONS
TITLE=no polarity
PEPMASS=200.1
70.0 10
100.0 50
END IONS
"""


def blind_mgf(source: Path, out: Path, n: int | None = None) -> Path:
    """``source`` MGF cut down to TITLE, PEPMASS, CHARGE, IONMODE and peaks (what a blind study gives)."""
    keep = ("BEGIN IONS", "END IONS", "PEPMASS=", "CHARGE=", "IONMODE=")
    lines, record = [], 0
    for line in source.read_text().splitlines():
        if line.startswith("BEGIN IONS"):
            record += 1
            if n is not None and record > n:
                break
            lines += [line, f"TITLE=blind scan {record}"]
        elif line.startswith(keep) or (line[:1].isdigit()):
            lines.append(line)
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture
def bad_mgf(tmp_path) -> Path:
    path = tmp_path / "bad_scans.mgf"
    path.write_text(BAD_MGF)
    return path


@pytest.fixture
def truncated_mzml(tmp_path) -> Path:
    """The real testdata.mzml cut inside its last spectrum (a malformed file: 9 readable scans, 1 broken)."""
    from tests.conftest import shared_path

    src = shared_path("formats", "testdata.mzml")
    path = tmp_path / "truncated.mzml"
    path.write_bytes(src.read_bytes()[:50_000])
    return path


@pytest.fixture
def pesticides_mgf() -> Path:
    return SAMPLE / "gnps_pesticides.mgf"


@pytest.fixture(scope="session")
def annotate_lake(sample_spectra_lake, tmp_path_factory) -> Path:
    """A copy of the ingested sample lake with its fingerprint structure index (lake compounds) built."""
    from speclake.training.candidates import ensure_index

    dst = tmp_path_factory.mktemp("annotate") / "lake"
    shutil.copytree(sample_spectra_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    ensure_index(dst, num_cpus=1)
    return dst


@pytest.fixture
def fresh_lake(annotate_lake, tmp_path) -> Path:
    """A per-test copy of :func:`annotate_lake` (tests that annotate change it)."""
    dst = tmp_path / "lake"
    shutil.copytree(annotate_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    return dst


def pesticide_structures(out: Path) -> Path:
    """A SMILES file of the structures the pesticide MGF reports (a study's suspect list)."""
    seen, lines = set(), []
    for line in (SAMPLE / "gnps_pesticides.mgf").read_text().splitlines():
        if line.startswith("SMILES=") and len(line) > 8 and line[7:] not in seen:
            seen.add(line[7:])
            lines.append(f"{line[7:]}\tPEST{len(lines):03d}")
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def suspect_lake(annotate_lake, tmp_path_factory) -> Path:
    """:func:`annotate_lake` with the pesticides' structures added to the index (``--structures``) and the
    pesticide MGF annotated once as study ``pest`` (the first file of a two-file study)."""
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study

    root = tmp_path_factory.mktemp("suspects")
    dst = root / "lake"
    shutil.copytree(annotate_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    smi = pesticide_structures(root / "pesticides.smi")
    report = annotate_study([SAMPLE / "gnps_pesticides.mgf"], dst, "pest",
                            AnnotateSettings(structures=[str(smi)], top_k=5, num_cpus=1))
    return dst, report
