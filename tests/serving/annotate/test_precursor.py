"""Adduct hypotheses, the lake-counted adduct prior and tree-ranked formulas."""
from __future__ import annotations

import numpy as np
import pytest

from speclake.serving.annotate.model import Query
from speclake.serving.annotate.precursor import (ADDUCTS, TreeCache, adduct_counts, adduct_priors, adduct_ranks,
                                                 hypotheses, mz_window, priors_from_counts, rank_formulas)

PROTON = 1.007276
#: Neutral mass = precursor m/z - shift (hand-computed from atomic masses, electrons included).
SHIFTS = {"[M+H]+": PROTON, "[M+Na]+": 22.989221, "[M+NH4]+": 18.033826, "[M-H2O+H]+": PROTON - 18.010565,
          "[M+K]+": 38.963158, "[M-H]-": -PROTON, "[M+Cl]-": 34.969401, "[M+HCOO]-": 44.998203,
          "[M-H2O-H]-": -PROTON - 18.010565}


@pytest.mark.parametrize("ionmode", ["positive", "negative"])
def test_hypotheses_give_the_neutral_mass_of_each_adduct(ionmode):
    mz = 303.0499
    got = {a.name: m for a, m in hypotheses(mz, ionmode)}
    assert set(got) == set(ADDUCTS[ionmode]), "one hypothesis per adduct of the ion mode"
    for name, m in got.items():
        assert m == pytest.approx(mz - SHIFTS[name], abs=2e-5), f"neutral mass of {name}"


def test_issue_adducts_are_all_tried():
    assert {"[M+H]+", "[M+Na]+", "[M+NH4]+", "[M-H2O+H]+"} <= set(ADDUCTS["positive"])
    assert {"[M-H]-", "[M+Cl]-", "[M+HCOO]-"} <= set(ADDUCTS["negative"])  # [M+FA-H]- is [M+HCOO]-


def test_charge_and_unknown_ionmode():
    assert {a.name for a, _ in hypotheses(300.0, "positive", charge=2)} == {"[M+2H]2+"}
    both = {a.name for a, _ in hypotheses(300.0, None)}
    assert set(ADDUCTS["positive"]) | set(ADDUCTS["negative"]) == both, "unknown ion mode tries both modes"
    assert hypotheses(float("nan"), "positive") == [] and hypotheses(0.0, "negative") == []


def test_mz_window_is_the_ppm_tolerance_on_the_measured_mz():
    (add, m), = [h for h in hypotheses(500.0, "positive") if h[0].name == "[M+Na]+"]
    lo, hi = mz_window(add, 500.0, 10.0)
    assert lo < m < hi
    assert hi - lo == pytest.approx(2 * 500.0 * 10e-6, rel=1e-9), "window width is 2 x 10 ppm of the m/z"


def test_priors_are_smoothed_frequencies():
    p = priors_from_counts({"positive": {"[M+H]+": 97, "[M+Na]+": 1}})
    n = len(p["positive"])
    assert p["positive"]["[M+H]+"] == pytest.approx(98 / (98 + 2 + (n - 2)))
    assert sum(p["negative"].values()) == pytest.approx(1.0), "a mode without counts is uniform"
    ranks = adduct_ranks(p)
    assert ranks[("positive", "[M+H]+")] == 1 and ranks[("positive", "[M+Na]+")] == 2


@pytest.mark.spark
def test_adduct_prior_is_counted_from_the_lake(sample_spectra_lake):
    from speclake.lake import sql

    con = sql.connect(sample_spectra_lake)
    try:
        n_mh = con.execute("SELECT count(*) FROM spectra WHERE ionmode='positive' AND adduct='[M+H]+'").fetchall()[0][0]
    finally:
        con.close()
    assert adduct_counts(sample_spectra_lake)["positive"]["[M+H]+"] == n_mh
    p = adduct_priors(sample_spectra_lake)
    assert max(p["positive"], key=p["positive"].get) == "[M+H]+", "the sample is mostly protonated"


def _query(mz, inten, precursor):
    return Query("q1", "f.mgf", "1", precursor, "positive", np.asarray(mz, float), np.asarray(inten, float))


def test_rank_formulas_trees_only_consistent_pairs_and_caches():
    # caffeine [M+H]+ 195.0877 with its main fragments
    q = _query([110.0713, 138.0662, 195.0877], [0.2, 1.0, 0.5], 195.0877)
    cache = TreeCache()
    ranked = rank_formulas(q, {"[M+H]+": ["C8H10N4O2", "C9H10N2O3"], "[M+Na]+": ["C8H10N4O2"]}, cache=cache)
    rank, score = ranked[("C8H10N4O2", "[M+H]+")]
    assert rank == 1 and score is not None, "the true formula gets the best tree"
    assert ranked[("C8H10N4O2", "[M+Na]+")] == (None, None), "precursor m/z inconsistent with the pair: no tree"
    misses = cache.misses
    rank_formulas(q, {"[M+H]+": ["C8H10N4O2"]}, cache=cache)
    assert cache.misses == misses and cache.hits >= 1, "the second call reads the cache"


def test_frequent_lake_adducts_become_hypotheses():
    from speclake.serving.annotate.precursor import active_adducts, frequent_adducts

    counts = {"positive": {"[M+H]+": 900, "[M]+": 80, "[M]+*": 15, "[M+2H]2+": 5},
              "negative": {"[M-H]-": 95, "[M+CH3COO]-": 5}}
    extra = frequent_adducts(counts, 0.01)
    assert extra == {"positive": ("[M]+",), "negative": ("[M+CH3COO]-",)}, "radical and doubly charged left out"
    p = priors_from_counts(counts, min_share=0.01)
    assert "[M]+" in active_adducts(p)["positive"] and "[M+2H]2+" not in active_adducts(p)["positive"]
    names = {a.name for a, _ in hypotheses(200.0, "negative", adducts=active_adducts(p))}
    assert "[M+CH3COO]-" in names
