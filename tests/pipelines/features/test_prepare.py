"""Spectrum checks, peak cleaning, words and items of the feature jobs' first step."""
from __future__ import annotations

import numpy as np

from speclake.pipelines.features.prepare import (
    PeakSettings,
    Skip,
    WordSettings,
    bin_label,
    check_spectrum,
    prepare_row,
    spectrum_items,
    spectrum_words,
)
from tests.pipelines.features.lakes import bad_spectra


def test_bad_spectra_are_skipped_with_reasons() -> None:
    """MS1, unit-resolution and one-peak spectra each get their own skip code, never an exception."""
    got = {r["spectrum_id"]: prepare_row(r, PeakSettings(), WordSettings())["skip_code"] for r in bad_spectra()}
    assert got == {"bad-ms1": "ms1_spectrum", "bad-lowres": "low_resolution", "bad-onepeak": "too_few_peaks",
                   "unannotated": None}, f"unexpected skip codes {got}"


def test_missing_precursor_and_mismatched_peaks_are_skipped() -> None:
    """No precursor m/z, and m/z/intensity lists of different length, are skip reasons."""
    s = PeakSettings()
    assert isinstance(check_spectrum(2, None, [100.1, 200.2], [1, 1], s), Skip)
    assert check_spectrum(2, 300.0, [100.1, 200.2], [1.0], s).code == "invalid_peaks"


def test_clean_drops_noise_above_precursor_and_keeps_top_peaks() -> None:
    """Peaks above precursor + 1 Da and below the relative threshold go; top-N by intensity stay, m/z sorted."""
    s = PeakSettings(max_peaks=2, min_relative_intensity=0.01)
    mz, it = check_spectrum(2, 150.0, [50.01, 80.02, 120.03, 160.04, 100.05], [0.5, 1.0, 0.8, 1.0, 0.001], s)
    np.testing.assert_allclose(mz, [80.02, 120.03])
    np.testing.assert_allclose(it, [1.0, 0.8])


def test_words_and_items_hand_checked() -> None:
    """Spec2Vec words (2 decimals) and pattern items (0.01 bins) of a 3-peak spectrum with precursor 136.1121."""
    mz = np.array([65.0386, 91.0542, 119.0855])
    it = np.array([0.1, 1.0, 0.6])
    words, weights = spectrum_words(mz, it, 136.1121, WordSettings())
    assert words == ["peak@65.04", "peak@91.05", "peak@119.09", "loss@71.07", "loss@45.06", "loss@17.03"]
    assert weights == [0.1, 1.0, 0.6, 0.1, 1.0, 0.6]
    items = spectrum_items(mz, it, 136.1121, WordSettings(item_top_peaks=2))
    assert items == ["frag@91.05", "frag@119.09", "loss@45.06", "loss@17.03"], "top-2 peaks by intensity only"
    assert bin_label("loss", 18.0106, 0.01) == "loss@18.01"
    assert bin_label("frag", 91.0542, 0.1) == "frag@91.1"
