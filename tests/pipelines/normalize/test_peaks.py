"""Tests of peak cleaning."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.pipelines.normalize.errors import NormalizationError
from speclake.pipelines.normalize.peaks import clean_peaks
from speclake.pipelines.normalize.settings import NormalizeSettings

S = NormalizeSettings()


def test_clean_list_is_unchanged_and_typed():
    """A sorted, valid list keeps every peak; m/z float64, intensities float32 scaled to max 1, no notes."""
    out = clean_peaks([100.0, 150.0, 200.0], [10.0, 40.0, 20.0], precursor_mz=250.0, ms_level=2, settings=S)
    assert out.mz.dtype == np.float64 and out.intensities.dtype == np.float32 and out.intensities_raw.dtype == np.float32
    assert out.mz.tolist() == [100.0, 150.0, 200.0]
    assert out.intensities.tolist() == pytest.approx([0.25, 1.0, 0.5]), "scaled to the base peak"
    assert out.intensities_raw.tolist() == [10.0, 40.0, 20.0], "raw intensities of the kept peaks"
    assert out.notes == (), "nothing changed"


def test_unsorted_peaks_are_sorted_and_noted():
    """Peaks come back in ascending m/z with their intensities, and a note says so."""
    out = clean_peaks([200.0, 100.0], [1.0, 2.0], precursor_mz=None, ms_level=2, settings=S)
    assert out.mz.tolist() == [100.0, 200.0] and out.intensities_raw.tolist() == [2.0, 1.0]
    assert "sorted peaks by m/z" in out.notes


def test_invalid_peaks_are_dropped_with_counts():
    """NaN/inf/zero/negative intensities and non-positive m/z are dropped; the notes give the counts."""
    mz = [50.0, 60.0, 70.0, 80.0, -1.0, 90.0, 100.0]
    it = [np.nan, 0.0, -5.0, np.inf, 10.0, 3.0, 6.0]
    out = clean_peaks(mz, it, precursor_mz=None, ms_level=1, settings=S)
    assert out.mz.tolist() == [90.0, 100.0]
    assert "dropped 4 zero/negative/NaN intensities" in out.notes
    assert "dropped 1 peaks with NaN/inf/non-positive m/z" in out.notes


def test_duplicates_merge_to_weighted_mz_and_summed_intensity():
    """Peaks within 1e-4 Da merge: summed intensity, intensity-weighted m/z; 2 merged peaks are noted."""
    out = clean_peaks([100.0, 100.00005, 100.00009, 120.0], [1.0, 3.0, 0.0 + 4.0, 2.0],
                      precursor_mz=None, ms_level=2, settings=S)
    assert out.mz.size == 2
    assert out.mz[0] == pytest.approx((100.0 * 1 + 100.00005 * 3 + 100.00009 * 4) / 8, abs=1e-9)
    assert out.intensities_raw.tolist() == [8.0, 2.0]
    assert "merged 2 duplicate m/z (within 0.0001 Da)" in out.notes


def test_peaks_above_precursor_window_removed_for_ms2_only():
    """MS2: peaks above precursor + max(0.05 Da, 20 ppm) go; the precursor itself stays. MS1 keeps all."""
    mz = [100.0, 195.0877, 195.12, 196.09, 250.0]
    it = [1.0, 5.0, 1.0, 1.0, 1.0]
    out = clean_peaks(mz, it, precursor_mz=195.0877, ms_level=2, settings=S)
    assert out.mz.tolist() == [100.0, 195.0877, 195.12], "195.12 is inside the 0.05 Da window"
    assert any(n.startswith("removed 2 peaks above precursor") for n in out.notes)
    ms1 = clean_peaks(mz, it, precursor_mz=195.0877, ms_level=1, settings=S)
    assert ms1.mz.size == 5, "MS1 keeps peaks above the precursor"


def test_ppm_window_wins_at_high_mass():
    """At m/z 3000, 20 ppm (0.06 Da) is wider than 0.05 Da."""
    out = clean_peaks([2999.0, 3000.055], [1.0, 1.0], precursor_mz=3000.0, ms_level=2, settings=S)
    assert out.mz.size == 2, "3000.055 is inside 3000 + 0.06"


def test_nominal_precursor_keeps_its_own_ion():
    """A precursor written as '423' (precision 1 Da) does not remove the ion at 423.03."""
    out = clean_peaks([300.0, 423.03], [1.0, 2.0], precursor_mz=423.0, ms_level=2, settings=S, precursor_precision_da=1.0)
    assert out.mz.size == 2


def test_nothing_left_raises_no_peaks():
    """An empty or all-invalid list raises NormalizationError('no_peaks')."""
    for mz, it in (([], []), ([100.0], [0.0]), ([300.0], [1.0])):
        with pytest.raises(NormalizationError) as info:
            clean_peaks(mz, it, precursor_mz=200.0, ms_level=2, settings=S)
        assert info.value.reason_code == "no_peaks", f"peaks {mz}"


def test_length_mismatch_raises_invalid_value():
    """m/z and intensity lists of different length are invalid_value."""
    with pytest.raises(NormalizationError) as info:
        clean_peaks([1.0, 2.0], [1.0], precursor_mz=None, ms_level=2, settings=S)
    assert info.value.reason_code == "invalid_value"


def test_large_list_is_fast_and_consistent():
    """100k random peaks: output sorted, strictly more than 1e-4 Da apart, base peak exactly 1."""
    rng = np.random.default_rng(0)
    mz = rng.uniform(50, 1000, 100_000)
    it = rng.uniform(0, 100, 100_000)
    out = clean_peaks(mz, it, precursor_mz=900.0, ms_level=2, settings=S)
    assert np.all(np.diff(out.mz) > 1e-4)
    assert out.intensities.max() == 1.0 and out.mz.max() <= 900.05
