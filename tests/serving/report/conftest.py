"""Report fixtures: the bundled MassBank sample lake with an annotated study of real library spectra.

``report_lake`` (once per session): a copy of ``sample_spectra_lake`` (no structure index is built, which
takes Ray and ~40 s: annotate ranks the structures of the library hits with the prior), and
* study ``mb``: an MGF of 12 real positive MS2 spectra of the lake (identity library hits, so the mirror
  plots have matched peaks; the first TITLE is markup, which the report must show as text), the bad
  scans of :data:`tests.serving.annotate.conftest.BAD_MGF` (error rows), and a one-scan file moved to
  another folder after annotation (not found at its recorded path);
* study ``broken``: only bad scans (every scan an error row);
* study ``scored``: the 12 MassBank scans ranked by a ranker that uses a registered descriptor model as
  evidence (:func:`register_model_and_ranker`), so rows have a calibrated confidence and per-peak
  attributions.
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


#: The registered model and the ranker that uses it (study ``scored``).
MODEL_ID = "arch1-report-test"
RANKER_ID = "report-test-ranker"


def register_model_and_ranker(lake: Path) -> None:
    """A real arch1 descriptor model (MACCS keys, seeded initial weights: not trained, which would need Ray)
    registered in the lake, and a ranker using it as evidence beside the standard features, with
    hand-set fusion weights and an isotonic calibration fitted on a fixed score/correct series."""
    import json

    import numpy as np
    import torch

    from speclake.serving.annotate.calibration import IsotonicCalibrator
    from speclake.serving.annotate.evidence import FEATURES
    from speclake.serving.annotate.fusion import LinearFusion
    from speclake.serving.annotate.rankers import rankers_root
    from speclake.training.models import ModelContext, build_model
    from speclake.training.registry import save_model
    from speclake.training.split import SplitSettings

    torch.manual_seed(0)
    ctx = ModelContext(arch="arch1", model={"hidden": [16, 8], "dropout": 0.0},
                       bins={"bin_width": 1.0, "max_mz": 1000.0}, descriptors=[f"maccs:{i}" for i in range(1, 167)])
    save_model(lake, MODEL_ID, ctx, build_model(ctx).state_dict(), settings={"arch": "arch1"},
               split={"settings": SplitSettings().model_dump()}, metrics={})
    features = FEATURES + (f"model:{MODEL_ID}",)
    weights = np.array([1.0 if f in ("prior", "identity", "identity_top") else 0.0 for f in FEATURES] + [0.05])
    fusion = LinearFusion(features, np.zeros(len(features)), np.ones(len(features)), weights)
    calibration = IsotonicCalibrator.fit(np.linspace(0.05, 1.0, 20), [i % 3 != 0 or i > 12 for i in range(20)])
    folder = rankers_root(lake) / RANKER_ID
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"created": "2026-12-05T00:00:00+00:00",
                                                      "models": [MODEL_ID]}))
    (folder / "weights.json").write_text(json.dumps(fusion.to_dict()))
    (folder / "calibration.json").write_text(json.dumps(calibration.to_dict()))


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
    register_model_and_ranker(lake)
    annotate_study([mb], lake, "scored", AnnotateSettings(top_k=3, num_cpus=1, method=RANKER_ID))
    return ReportLake(root=lake, study_files=(mb, bad), moved_file=moved, moved_from=root / moved.name)
