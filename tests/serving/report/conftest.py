"""Report fixtures: the bundled MassBank sample lake with an annotated study of real library spectra.

``report_lake`` (once per session): a copy of ``sample_spectra_lake`` (no structure index is built, which
takes Ray and ~40 s: annotate ranks the structures of the library hits with the prior), and
* study ``mb``: an MGF of 12 real positive MS2 spectra of the lake (identity library hits, so the mirror
  plots have matched peaks; the first TITLE is markup, which the report must show as text), the bad
  scans of :data:`tests.serving.annotate.conftest.BAD_MGF` (error rows), and a one-scan file moved to
  another folder after annotation (not found at its recorded path);
* study ``broken``: only bad scans (every scan an error row).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving.annotate.conftest import BAD_MGF

#: A query id that is markup: the report must escape it.
MARKUP_TITLE = "<b id='injected'>scan & 1</b>"


@dataclass(frozen=True)
class ReportLake:
    """The annotated lake and what the tests compare the report with."""

    root: Path
    study_files: tuple[Path, ...]
    moved_file: Path           # where the moved study file is now
    moved_from: Path           # where annotate read it


def library_mgf(lake: Path, out: Path, n: int = 12) -> Path:
    """``n`` positive MS2 spectra of the lake as a blind MGF (TITLE, PEPMASS, CHARGE, IONMODE, peaks)."""
    from speclake.lake.sql import connect

    con = connect(lake)
    try:
        rows = con.sql("""SELECT precursor_mz, mz, intensities_raw FROM spectra
                          WHERE ms_level = 2 AND ionmode = 'positive' AND precursor_mz IS NOT NULL AND num_peaks >= 5
                          ORDER BY spectrum_id LIMIT ?""", params=[n]).fetchall()
    finally:
        con.close()
    lines = []
    for i, (precursor, mz, intensities) in enumerate(rows):
        title = MARKUP_TITLE if i == 0 else f"mb scan {i + 1}"
        lines += ["BEGIN IONS", f"TITLE={title}", f"PEPMASS={precursor}", "CHARGE=1+", "IONMODE=positive"]
        lines += [f"{m} {v}" for m, v in zip(mz, intensities)]
        lines.append("END IONS")
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def report_lake(sample_spectra_lake, tmp_path_factory) -> ReportLake:
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study

    root = tmp_path_factory.mktemp("report")
    lake = root / "lake"
    shutil.copytree(sample_spectra_lake, lake, ignore=shutil.ignore_patterns("_staging"))
    mb = library_mgf(lake, root / "mb.mgf")
    bad = root / "bad_scans.mgf"
    bad.write_text(BAD_MGF)
    moved = root / "moved.mgf"
    second = "BEGIN IONS" + mb.read_text().split("BEGIN IONS")[2]  # the second record, whole
    moved.write_text(second.replace("TITLE=mb scan 2", "TITLE=moved scan"))
    settings = AnnotateSettings(top_k=3, num_cpus=1)
    annotate_study([mb, bad, moved], lake, "mb", settings)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    moved = moved.rename(elsewhere / moved.name)
    only_bad = root / "only_bad.mgf"
    only_bad.write_text(BAD_MGF.split("END IONS", 1)[1].lstrip())
    annotate_study([only_bad], lake, "broken", settings)
    return ReportLake(root=lake, study_files=(mb, bad), moved_file=moved, moved_from=root / moved.name)
