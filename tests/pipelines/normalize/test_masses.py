"""Tests of the chemistry home: formula group masses and counts, charge suffixes, ppm windows."""
from __future__ import annotations

import pytest

from speclake.pipelines.normalize.adduct import parse_adduct
from speclake.pipelines.normalize.errors import InvalidValueError
from speclake.pipelines.normalize.masses import (
    ELEMENT_MASSES,
    ELEMENT_SYMBOLS,
    group_counts,
    group_mass,
    parse_charge_suffix,
    ppm_window,
)


def test_ppm_window_is_symmetric_and_inclusive_bounds():
    """10 ppm of 500 Da is 5 mDa either side; 0 ppm is the mass itself; a negative ppm is refused."""
    lo, hi = ppm_window(500.0, 10.0)
    assert (lo, hi) == pytest.approx((499.995, 500.005), abs=1e-12), "500 +- 0.005"
    assert ppm_window(180.0634, 0.0) == (180.0634, 180.0634), "zero width"
    with pytest.raises(ValueError, match="ppm must be >= 0"):
        ppm_window(100.0, -1.0)


def test_group_counts_and_mass_agree_with_parentheses():
    """(CH3)2CO is C3H6O: counts by element, mass the sum of the element masses."""
    counts = dict(zip(ELEMENT_SYMBOLS, group_counts("(CH3)2CO").tolist()))
    assert {e: n for e, n in counts.items() if n} == {"C": 3, "H": 6, "O": 1}, "acetone atoms"
    expected = 3 * ELEMENT_MASSES["C"] + 6 * ELEMENT_MASSES["H"] + ELEMENT_MASSES["O"]
    assert group_mass("(CH3)2CO") == pytest.approx(expected, abs=1e-9), "acetone mass"
    with pytest.raises(InvalidValueError, match="unbalanced"):
        group_counts("(CH3")


@pytest.mark.parametrize("text,charge", [("+", 1), ("2-", -2), ("++", 2), ("+2", 2), ("1+", 1), ("", None)])
def test_parse_charge_suffix(text, charge):
    """Every written charge form gives its signed charge; empty gives None."""
    assert parse_charge_suffix(text) == charge, f"charge of {text!r}"


def test_adduct_composition_and_neutral_mass_invert_adduct_mz():
    """[M-H2O+H]+ adds H-1 O-1; neutral_mass undoes adduct_mz; [M]+ is intrinsic, [M+H]+ is not."""
    a = parse_adduct("[M+H-H2O]+")
    assert dict(a.composition) == {"H": -1, "O": -1}, "loses OH overall"
    assert a.neutral_mass(181.0495) == pytest.approx(181.0495 - a.mass_shift, abs=1e-12)
    assert parse_adduct("[M]+").intrinsic and not parse_adduct("[M+H]+").intrinsic
