"""Tests of peak cleaning."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speclake.pipelines.normalize.errors import NormalizationError
from speclake.pipelines.normalize import peaks
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


# --------------------------------------------------------------------------- the named steps

def _peaks(mz, it):
    return np.asarray(mz, dtype=np.float64), np.asarray(it, dtype=np.float64)


def test_remove_invalid_mz_drops_nan_inf_and_optionally_non_positive():
    """NaN/inf m/z always go; zero/negative m/z go unless positive=False."""
    mz, it = _peaks([np.nan, np.inf, -1.0, 0.0, 50.0], [1.0, 2.0, 3.0, 4.0, 5.0])
    assert peaks.remove_invalid_mz(mz, it)[1].tolist() == [5.0], "only 50.0 is a valid positive m/z"
    assert peaks.remove_invalid_mz(mz, it, positive=False)[1].tolist() == [3.0, 4.0, 5.0], "finite m/z kept"


def test_remove_invalid_intensities_drops_nan_inf_zero_negative():
    """Only finite positive intensities stay."""
    mz, it = _peaks([1.0, 2.0, 3.0, 4.0, 5.0], [np.nan, np.inf, 0.0, -2.0, 7.0])
    assert peaks.remove_invalid_intensities(mz, it)[0].tolist() == [5.0]


def test_sort_by_mz_is_stable_and_carries_intensities():
    """Ascending m/z; equal m/z keep their input order."""
    mz, it = peaks.sort_by_mz(*_peaks([3.0, 1.0, 3.0, 2.0], [30.0, 10.0, 31.0, 20.0]))
    assert mz.tolist() == [1.0, 2.0, 3.0, 3.0] and it.tolist() == [10.0, 20.0, 30.0, 31.0]
    assert peaks.is_sorted_by_mz(mz) and not peaks.is_sorted_by_mz(np.array([2.0, 1.0]))


def test_merge_close_peaks_sums_intensity_at_weighted_mz():
    """A run of neighbours within the tolerance becomes one peak; single and empty lists pass through."""
    mz, it = peaks.merge_close_peaks(*_peaks([100.0, 100.00005, 120.0], [1.0, 3.0, 2.0]), 1e-4)
    assert mz.tolist() == pytest.approx([100.0000375, 120.0], abs=1e-9) and it.tolist() == [4.0, 2.0]
    empty = _peaks([], [])
    assert peaks.merge_close_peaks(*empty, 1e-4)[0].size == 0, "empty list unchanged"


def test_remove_peaks_above_keeps_the_limit_itself():
    """m/z equal to the limit stays; above goes."""
    assert peaks.remove_peaks_above(*_peaks([99.0, 100.0, 100.5], [1.0, 2.0, 3.0]), 100.0)[0].tolist() == [99.0, 100.0]


def test_scale_to_max_and_select_by_intensity():
    """Base peak becomes 1.0; a 1 % threshold on scaled intensities drops the 0.5 % peak; empty stays empty."""
    mz, it = _peaks([1.0, 2.0, 3.0], [200.0, 1.0, 50.0])
    scaled = peaks.scale_to_max(it)
    assert scaled.tolist() == [1.0, 0.005, 0.25]
    assert peaks.select_by_intensity(mz, scaled, 0.01)[0].tolist() == [1.0, 3.0]
    assert peaks.scale_to_max(np.array([])).size == 0


def test_select_top_peaks_most_intense_first_only_when_trimming():
    """More than n peaks: the n most intense, most intense first (ties: earlier first); n or fewer: unchanged."""
    mz, it = _peaks([1.0, 2.0, 3.0, 4.0], [5.0, 9.0, 5.0, 1.0])
    top_mz, top_it = peaks.select_top_peaks(mz, it, 2)
    assert top_mz.tolist() == [2.0, 1.0] and top_it.tolist() == [9.0, 5.0]
    assert peaks.select_top_peaks(mz, it, 4)[0].tolist() == [1.0, 2.0, 3.0, 4.0], "nothing to trim"


def test_is_unit_resolution():
    """Peak lists with at most one decimal are nominal; 4-decimal lists and empty lists are not."""
    assert peaks.is_unit_resolution(np.array([77.0, 105.1, 182.0]), 1)
    assert not peaks.is_unit_resolution(np.array([77.0385, 105.1]), 1)
    assert not peaks.is_unit_resolution(np.array([]), 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(1.0, 1000.0), st.floats(0.001, 1e6)), min_size=1, max_size=60),
       st.floats(50.0, 1000.0))
def test_clean_peaks_output_invariants(pairs, precursor):
    """Whatever goes in: m/z ascending, >1e-4 Da apart, <= precursor window, base peak exactly 1, notes explain."""
    mz, it = [p[0] for p in pairs], [p[1] for p in pairs]
    try:
        out = clean_peaks(mz, it, precursor_mz=precursor, ms_level=2, settings=S)
    except NormalizationError as exc:
        assert exc.reason_code == "no_peaks" and min(mz) > precursor, "only all-above-precursor lists empty out"
        return
    assert np.all(np.diff(out.mz) > S.merge_tolerance_da), "sorted and merged"
    assert out.mz.max() <= precursor + max(S.precursor_tolerance_da, precursor * S.precursor_tolerance_ppm * 1e-6)
    assert out.intensities.max() == 1.0 and len(out.intensities_raw) == len(out)
    assert (len(out) == len(mz)) or out.notes, "every dropped or merged peak is noted"
