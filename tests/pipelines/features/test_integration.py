"""Integration: ingest the bundled MassBank sample (~290 real spectra) with real Spark, then all features."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from speclake.lake import sql
from speclake.pipelines.features.job import panel_of
from speclake.pipelines.features.similarity import Peaks
from tests.conftest import sample_feature_settings

SETTINGS = sample_feature_settings()

pytestmark = pytest.mark.spark

@pytest.fixture(scope="module")
def sample_lake(sample_feature_lake):
    """The bundled MassBank sample ingested and featurized (tests/conftest.py)."""
    return sample_feature_lake


def _q(root: Path, query: str, params: list | None = None) -> list[tuple]:
    con = sql.connect(root)
    try:
        return con.execute(query, params or []).fetchall()
    finally:
        con.close()


def test_every_spectrum_has_features_or_a_reason(sample_lake) -> None:
    """Each lake spectrum is in spectrum_features or has a refsim skip reason; nothing is lost."""
    root, report = sample_lake
    n_spectra = _q(root, "SELECT count(*) FROM spectra")[0][0]
    n_feat = _q(root, "SELECT count(*) FROM spectrum_features WHERE refsim_cosine IS NOT NULL")[0][0]
    n_skip = _q(root, "SELECT count(DISTINCT spectrum_id) FROM feature_skips WHERE feature = 'refsim'")[0][0]
    assert n_feat + n_skip == n_spectra and n_feat > 0.5 * n_spectra, (n_feat, n_skip, n_spectra)
    assert report.n_trees > 0.5 * report.computed["refsim"], "most usable spectra (nearly all annotated) get a tree"


def test_trees_explain_real_spectra(sample_lake) -> None:
    """Real trees: root is the precursor ion formula, most trees explain a good share of intensity."""
    root, _ = sample_lake
    rows = _q(root, "SELECT nodes[1].formula, ion_formula, explained_intensity, len(nodes) FROM fragtrees")
    assert all(r[0] == r[1] for r in rows), "node 0 is the precursor ion"
    assert np.median([r[2] for r in rows]) > 0.5, "median explained intensity above 50%"


def test_patterns_and_vectors_are_sane(sample_lake) -> None:
    """Rules and motifs are mined; similarities lie in [0, 1]; Spec2Vec vectors are finite."""
    root, report = sample_lake
    assert report.n_rules > 0 and report.n_motifs == 8
    lo, hi = _q(root, "SELECT min(list_min(refsim_modified_cosine)), max(list_max(refsim_entropy)) "
                      "FROM spectrum_features")[0]
    assert 0.0 <= lo and hi <= 1.0 + 1e-6
    vec = _q(root, "SELECT spec2vec FROM spectrum_features WHERE spec2vec IS NOT NULL LIMIT 20")
    assert vec and all(np.isfinite(v[0]).all() and len(v[0]) == 32 for v in vec)


def test_refsim_agrees_with_matchms_on_lake_spectra(sample_lake) -> None:
    """Stored cosine / modified cosine to the panel equal matchms on the cleaned peaks (1e-5, float32)."""
    from matchms import Spectrum
    from matchms.similarity import CosineGreedy, ModifiedCosineGreedy

    from speclake.pipelines.features.prepare import check_spectrum

    root, _ = sample_lake
    panel = panel_of(root, SETTINGS)

    def cleaned(sid: str) -> Spectrum:
        lvl, prec, mz, it = _q(root, "SELECT ms_level, precursor_mz, mz, intensities FROM spectra "
                                     "WHERE spectrum_id = ?", [sid])[0]
        mz_c, it_c = check_spectrum(lvl, prec, mz, it, SETTINGS.peaks)
        return Spectrum(mz=mz_c, intensities=it_c, metadata={"precursor_mz": prec})

    mode = sorted(panel)[0]
    refs = [cleaned(s) for s in panel[mode][:5]]
    queries = _q(root, "SELECT spectrum_id, refsim_cosine, refsim_modified_cosine FROM spectrum_features "
                       "WHERE ionmode = ? AND refsim_cosine IS NOT NULL ORDER BY spectrum_id LIMIT 10", [mode])
    cos, mod = CosineGreedy(tolerance=0.02), ModifiedCosineGreedy(tolerance=0.02)
    for sid, c, m in queries:
        q = cleaned(sid)
        np.testing.assert_allclose(c[:5], [float(cos.pair(r, q)["score"]) for r in refs], atol=1e-5)
        np.testing.assert_allclose(m[:5], [float(mod.pair(r, q)["score"]) for r in refs], atol=1e-5)
