"""Vectorised cosine, modified cosine and entropy similarity against matchms and hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pytest

from speclake.pipelines.features.similarity import (
    Peaks,
    build_panel,
    cosine,
    cosine_to_panel,
    entropy_similarity,
    entropy_to_panel,
    modified_cosine,
    modified_cosine_to_panel,
)
from tests.conftest import shared_path


def _real_spectra(n: int = 40) -> list:
    from matchms.importing import load_from_mgf

    path = shared_path("formats", "pesticides.mgf")
    spectra = [s for s in load_from_mgf(str(path)) if s.get("precursor_mz")][:n]
    if len(spectra) < 10:
        pytest.skip("too few spectra with precursor m/z in pesticides.mgf")
    return spectra


def _peaks(s) -> Peaks:
    return Peaks.of(s.peaks.mz, s.peaks.intensities, s.get("precursor_mz"))


@pytest.mark.parametrize("tolerance", [0.1, 0.02])
def test_cosine_matches_matchms_cosine_greedy(tolerance: float) -> None:
    """Cosine of every real spectrum to a panel of the others equals matchms CosineGreedy to 1e-6."""
    from matchms.similarity import CosineGreedy

    spectra = _real_spectra()
    panel = build_panel([str(i) for i in range(len(spectra))], [_peaks(s) for s in spectra])
    scorer = CosineGreedy(tolerance=tolerance)
    for q in spectra:
        ours = cosine_to_panel(panel, _peaks(q), tolerance)
        theirs = np.array([float(scorer.pair(r, q)["score"]) for r in spectra])
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg="cosine differs from matchms CosineGreedy")


@pytest.mark.parametrize("tolerance", [0.1, 0.02])
def test_modified_cosine_matches_matchms(tolerance: float) -> None:
    """Modified cosine to a panel equals matchms ModifiedCosineGreedy to 1e-6 on real spectra."""
    from matchms.similarity import ModifiedCosineGreedy

    spectra = _real_spectra()
    panel = build_panel([str(i) for i in range(len(spectra))], [_peaks(s) for s in spectra])
    scorer = ModifiedCosineGreedy(tolerance=tolerance)
    for q in spectra:
        ours = modified_cosine_to_panel(panel, _peaks(q), tolerance)
        theirs = np.array([float(scorer.pair(r, q)["score"]) for r in spectra])
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg="modified cosine differs from matchms")


def test_greedy_cosine_with_competing_peaks_hand_checked() -> None:
    """Two query peaks within tolerance of one reference peak: the larger product wins, the other stays unmatched."""
    ref = Peaks.of([100.0, 200.0], [1.0, 0.5], 300.0)
    query = Peaks.of([100.05, 100.08, 200.0], [0.2, 1.0, 0.5], 300.0)
    expected = (1.0 * 1.0 + 0.5 * 0.5) / (math.sqrt(1.25) * math.sqrt(0.04 + 1.0 + 0.25))
    assert cosine(ref, query, 0.1) == pytest.approx(expected, abs=1e-12), "greedy must pick 100.08 (product 1.0)"


def test_modified_cosine_matches_shifted_peaks_hand_checked() -> None:
    """A spectrum and its copy shifted by +14 Da (precursor too) score 1 by modified cosine, 0.5 by cosine."""
    a = Peaks.of([50.0, 150.0], [1.0, 1.0], 200.0)
    b = Peaks.of([50.0, 164.0], [1.0, 1.0], 214.0)
    assert modified_cosine(a, b, 0.02) == pytest.approx(1.0), "shifted peak 164 must match 150 (+14)"
    assert cosine(a, b, 0.02) == pytest.approx(0.5), "only m/z 50 matches without shift"


def test_entropy_similarity_hand_checked() -> None:
    """Entropy similarity: identical spectra 1, disjoint 0, a half-overlap case equal to the closed form."""
    a = Peaks.of([100.0, 200.0], [1.0, 1.0])
    assert entropy_similarity(a, a, weighted=False) == pytest.approx(1.0)
    assert entropy_similarity(a, Peaks.of([300.0], [1.0]), weighted=False) == pytest.approx(0.0)
    # a = {100: .5, 200: .5}, b = {100: 1}; matched pair (.5, 1): (1.5 ln 1.5 - .5 ln .5 - 0) / ln 4
    b = Peaks.of([100.0], [1.0])
    expected = (1.5 * math.log(1.5) - 0.5 * math.log(0.5)) / math.log(4)
    assert entropy_similarity(a, b, weighted=False) == pytest.approx(expected, abs=1e-12)


def test_weighted_entropy_reweights_low_entropy_spectra_hand_checked() -> None:
    """Weighted entropy raises intensities to 0.25 + 0.25 S (S < 3) before matching (Li et al. 2021)."""
    a = Peaks.of([100.0, 200.0], [0.9, 0.1])
    b = Peaks.of([100.0], [1.0])
    p = np.array([0.9, 0.1])
    s = -(p * np.log(p)).sum()
    w = p ** (0.25 + 0.25 * s)
    w = w / w.sum()
    expected = ((w[0] + 1) * math.log(w[0] + 1) - w[0] * math.log(w[0])) / math.log(4)
    assert entropy_similarity(a, b, weighted=True) == pytest.approx(expected, abs=1e-12)
    assert entropy_similarity(a, b, weighted=True) != pytest.approx(entropy_similarity(a, b, weighted=False))


def test_entropy_to_panel_equals_pairwise() -> None:
    """The vectorised panel form gives the same entropy similarity as one pair at a time, on real spectra."""
    spectra = [_peaks(s) for s in _real_spectra(15)]
    panel = build_panel([str(i) for i in range(len(spectra))], spectra)
    for q in spectra:
        ours = entropy_to_panel(panel, q, 0.02)
        pairwise = [entropy_similarity(r, q, 0.02) for r in spectra]
        np.testing.assert_allclose(ours, pairwise, atol=1e-12)
        assert np.all((ours >= 0) & (ours <= 1)), "entropy similarity lies in [0, 1]"
