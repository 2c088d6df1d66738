"""Library search on in-memory indexes: scores equal by-hand references, bad queries are refused."""
from __future__ import annotations

import math

import numpy as np
import pytest

from speclake.pipelines.features import similarity as sim
from speclake.serving.library import LibrarySettings, Query
from speclake.serving.library.clean import FlatSpectra, clean_spectra, validate_query

from tests.serving.library_helpers import cleaned, index_of, random_library, reference_entropy, reference_hybrid

TOL = 0.02


@pytest.fixture(scope="module")
def library():
    mzs, its, prec = random_library(400, seed=1)
    return mzs, its, prec, index_of(mzs, its, prec, segments=3)


def _noisy_queries(mzs, its, prec, rows, seed=2):
    rng = np.random.default_rng(seed)
    return [Query(mzs[r] + rng.normal(0, 0.004, len(mzs[r])), its[r] * rng.uniform(0.7, 1.3, len(its[r])),
                  float(prec[r]) + 0.001, "positive") for r in rows]


@pytest.mark.parametrize("mz, it, prec, problem", [
    ([100.0, float("nan")], [1.0, 1.0], 200.0, "m/z contain NaN"),
    ([100.0, 120.0], [1.0, float("inf")], 200.0, "intensities contain NaN or infinite"),
    ([100.0, -5.0], [1.0, 1.0], 200.0, "m/z contain negative"),
    ([100.0, 120.0], [1.0, -0.5], 200.0, "intensities contain negative"),
    ([], [], 200.0, "no peaks"),
    ([100.0, 120.0], [1.0], 200.0, "differ in length"),
    ([100.0, 120.0], [0.0, 0.0], 200.0, "every intensity is zero"),
    ([100.0, 120.0], [1.0, 1.0], float("nan"), "precursor m/z must be a positive finite number"),
])
def test_bad_query_peaks_raise_a_value_error_naming_the_problem(library, mz, it, prec, problem) -> None:
    index = library[3]
    with pytest.raises(ValueError, match=problem):
        index.search(mz, it, prec, "positive")
    with pytest.raises(ValueError, match=f"query 1: .*{problem}"):
        index.search_batch([Query([100.0], [1.0], 200.0), Query(mz, it, prec)], ionmode="positive")


def test_bad_search_settings_raise(library) -> None:
    index = library[3]
    with pytest.raises(ValueError, match="mode must be one of identity, analogue"):
        index.search([100.0], [1.0], 200.0, "positive", mode="open")
    with pytest.raises(ValueError, match="tolerance_da must be in"):
        index.search([100.0], [1.0], 200.0, "positive", tolerance_da=0.05)
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        index.search([100.0], [1.0], 200.0, "positive", top_k=0)


def test_identity_scores_equal_the_reference_for_every_spectrum_in_the_window(library) -> None:
    """Every library spectrum within the precursor window that shares a peak is found, with the reference
    entropy, greedy cosine and modified cosine (similarity.py) and shared-peak count, best first."""
    mzs, its, prec, index = library
    queries = _noisy_queries(mzs, its, prec, range(0, 400, 7))
    results = index.search_batch(queries, precursor_tolerance_da=3.0, top_k=400, tolerance_da=TOL)
    checked = 0
    for q, hits in zip(queries, results):
        qc = cleaned(np.asarray(q.mz), np.asarray(q.intensities), q.precursor_mz)
        expected = {}
        for r in np.flatnonzero(np.abs(prec - q.precursor_mz) <= 3.0):
            lib = cleaned(mzs[r], its[r], float(prec[r]))
            e = reference_entropy(lib, qc, TOL)
            if e > 0:
                expected[f"s{r}"] = (e, lib)
        assert {h.spectrum_id for h in hits} == set(expected), "the hits are the spectra sharing a peak"
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True), "hits best first"
        for h in hits:
            e, lib = expected[h.spectrum_id]
            assert h.score == pytest.approx(e, abs=1e-6) and h.entropy == pytest.approx(e, abs=1e-6)
            assert h.cosine == pytest.approx(sim.cosine(lib, qc, TOL), abs=1e-9)
            assert h.modified_cosine == pytest.approx(sim.modified_cosine(lib, qc, TOL), abs=1e-9)
            assert h.entropy == pytest.approx(sim.entropy_similarity(lib, qc, TOL), abs=1e-6)
            assert h.shared_peaks == sum(1 for m in lib.mz for n in qc.mz if m - TOL <= n <= m + TOL)
            assert h.precursor_mz_difference == pytest.approx(lib.precursor_mz - q.precursor_mz)
            checked += 1
    assert checked > 200, f"only {checked} hits compared"


def test_identity_window_excludes_other_precursors(library) -> None:
    mzs, its, prec, index = library
    q = _noisy_queries(mzs, its, prec, [5])[0]
    hits = index.search_batch([q], precursor_ppm=10, top_k=50)[0]
    assert hits and all(abs(h.precursor_mz_difference) <= q.precursor_mz * 10e-6 for h in hits)
    assert hits[0].spectrum_id == "s5"


def test_analogue_scores_equal_the_hybrid_reference(library) -> None:
    """Analogue search ranks every library spectrum (any precursor) by the hybrid entropy similarity."""
    mzs, its, prec, index = library
    queries = _noisy_queries(mzs, its, prec, range(3, 400, 37))
    results = index.search_batch(queries, mode="analogue", top_k=15)
    for q, hits in zip(queries, results):
        qc = cleaned(np.asarray(q.mz), np.asarray(q.intensities), q.precursor_mz)
        ref = {f"s{r}": reference_hybrid(cleaned(mzs[r], its[r], float(prec[r])), qc, TOL) for r in range(len(prec))}
        best = sorted(ref.values(), reverse=True)[:15]
        assert [h.score for h in hits] == pytest.approx(best, abs=1e-6), "top scores equal the reference's"
        for h in hits:
            r = int(h.spectrum_id[1:])
            lib = cleaned(mzs[r], its[r], float(prec[r]))
            assert h.score == pytest.approx(ref[h.spectrum_id], abs=1e-6)
            assert h.entropy == pytest.approx(reference_entropy(lib, qc, TOL), abs=1e-6)
            assert h.modified_cosine == pytest.approx(sim.modified_cosine(lib, qc, TOL), abs=1e-9)


def test_analogue_finds_a_methylated_analogue() -> None:
    """A spectrum whose precursor and the fragments holding the modification moved by +CH2 is found by
    analogue search at rank 1 (through neutral losses), not by identity search."""
    mzs, its, prec = random_library(300, seed=3)
    index = index_of(mzs, its, prec)
    r = int(np.argmax([len(m) for m in mzs]))
    shifted = mzs[r].copy()
    shifted[len(shifted) // 2:] += 14.01565
    q = Query(shifted, its[r], float(prec[r]) + 14.01565, "positive")
    assert all(h.spectrum_id != f"s{r}" for h in index.search_batch([q], precursor_ppm=10)[0])
    hit = index.search_batch([q], mode="analogue", top_k=5)[0][0]
    assert hit.spectrum_id == f"s{r}" and hit.matched_losses > 0 and hit.shared_peaks > 0
    assert hit.precursor_mz_difference == pytest.approx(-14.01565)
    assert hit.modified_cosine > hit.cosine


def test_ppm_tolerance_is_capped_at_the_index_tolerance(library) -> None:
    mzs, its, prec, index = library
    q = _noisy_queries(mzs, its, prec, [11])[0]
    wide = index.search_batch([q], tolerance_ppm=1e6, top_k=5)[0]
    capped = index.search_batch([q], tolerance_da=index.settings.max_tolerance_da, top_k=5)[0]
    assert [h.score for h in wide] == pytest.approx([h.score for h in capped])


def test_queries_without_peaks_after_cleaning_get_no_hits(library) -> None:
    index = library[3]
    assert index.search([199.5], [1.0], 200.0, "positive") == [], "the only peak is within 1.6 Da of the precursor"
    assert index.search([100.0], [1.0], 200.0, "negative") == [], "no negative-mode segment"


def test_settings_refuse_a_tolerance_that_breaks_one_match_per_peak() -> None:
    with pytest.raises(ValueError, match="must exceed 2 \\* max_tolerance_da"):
        LibrarySettings(max_tolerance_da=0.03, min_peak_distance_da=0.05)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        LibrarySettings(tolerance=0.1)


def test_validate_query_returns_float_arrays() -> None:
    mz, it, prec = validate_query([100, 120], [1, 2], 300)
    assert mz.dtype == np.float64 and it.dtype == np.float64 and prec == 300.0


def test_cleaning_matches_flash_entropy_clean_spectrum() -> None:
    """The vectorised cleaning gives Flash entropy search's clean_spectrum result (when ms_entropy is installed)."""
    ms_entropy = pytest.importorskip("ms_entropy")
    rng = np.random.default_rng(5)
    settings = LibrarySettings()
    specs = []
    for _ in range(200):
        k = int(rng.integers(1, 40))
        mz = np.sort(rng.uniform(50, 500, k))
        mz[1::3] = mz[0::3][: len(mz[1::3])] + rng.uniform(0, 0.08, len(mz[1::3]))  # close peaks to centroid
        specs.append((np.sort(mz), rng.uniform(0, 1, k) ** 3, float(rng.uniform(200, 520))))
    flat = FlatSpectra(np.concatenate([[0], np.cumsum([len(s[0]) for s in specs])]),
                       np.concatenate([s[0] for s in specs]), np.concatenate([s[1] for s in specs]))
    ours, _ = clean_spectra(flat, np.array([s[2] for s in specs]), settings)
    for i, (mz, it, p) in enumerate(specs):
        theirs = ms_entropy.clean_spectrum(np.column_stack([mz, it]).astype(np.float32), max_mz=p - 1.6,
                                           noise_threshold=0.01, min_ms2_difference_in_da=0.05)
        a, b = ours.offsets[i], ours.offsets[i + 1]
        assert b - a == len(theirs), f"spectrum {i}: peak counts differ"
        np.testing.assert_allclose(ours.mz[a:b], theirs[:, 0], rtol=1e-6)
        np.testing.assert_allclose(ours.intensities[a:b], theirs[:, 1], rtol=1e-4, atol=1e-6)
        assert not math.isnan(float(ours.intensities[a:b].sum() if b > a else 0))
