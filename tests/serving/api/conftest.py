"""A real uvicorn server over a small annotated lake: the ingested sample with the pesticide MGF annotated as study ``pest``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

API_KEY = "test-key-123"
STUDY = "pest"


def blind_study_mgf(lake: Path, out: Path, n: int = 40) -> Path:
    """``n`` library spectra of ``lake`` (with a structure and a precursor) as a blind MGF: TITLE, PEPMASS, CHARGE,
    IONMODE and the recorded peaks only, as a study would give them."""
    from speclake.lake.sql import query

    rows = query(lake, "SELECT spectrum_id, precursor_mz, ionmode, mz, intensities_raw FROM spectra "
                       "WHERE inchikey14 IS NOT NULL AND precursor_mz IS NOT NULL AND ms_level = 2 "
                       f"AND ionmode IN ('positive', 'negative') AND num_peaks >= 3 ORDER BY spectrum_id LIMIT {n}"
                 ).to_pylist()
    lines = []
    for r in rows:
        sign = "+" if r["ionmode"] == "positive" else "-"
        lines += ["BEGIN IONS", f"TITLE=blind {r['spectrum_id']}", f"PEPMASS={r['precursor_mz']}", f"CHARGE=1{sign}",
                  f"IONMODE={r['ionmode']}", *(f"{m} {i}" for m, i in zip(r["mz"], r["intensities_raw"])), "END IONS"]
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.fixture(scope="session")
def api_lake(sample_spectra_lake, tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the ingested sample lake with a blind MGF of 40 of its own spectra annotated as study ``pest``
    (library index built on the way; no structure index: candidates are the structures of library hits).
    Returns (lake, study MGF)."""
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study

    root = tmp_path_factory.mktemp("api")
    dst = root / "lake"
    shutil.copytree(sample_spectra_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    mgf = blind_study_mgf(dst, root / "blind_study.mgf")
    report = annotate_study([mgf], dst, STUDY, AnnotateSettings(top_k=5, num_cpus=1))
    if report.n_annotated < 30:
        raise RuntimeError(f"the fixture study annotated too little: {report}")
    return dst, mgf


@pytest.fixture(scope="module")
def server(api_lake):
    """The API on a free loopback port (API key required; small limits so the tests can pass them)."""
    from speclake.lake.sql_guard import SqlGuardSettings
    from speclake.serving.api import ApiSettings, create_app
    from speclake.serving.api.client import BackgroundServer

    settings = ApiSettings(api_key=API_KEY, max_upload_bytes=512 * 1024, max_scans=100,
                           sql=SqlGuardSettings(timeout_s=1.0, max_rows=500, max_bytes=4 * 2**20, connections=2))
    with BackgroundServer(create_app(api_lake[0], settings)) as srv:
        yield srv


@pytest.fixture
def client(server):
    """A client that sends the API key."""
    from speclake.serving.api.client import ApiClient

    c = ApiClient(server.url, api_key=API_KEY)
    yield c
    c.close()
