"""Tests of formulas, adducts, ion masses and instrument tolerances."""
import numpy as np
import pytest

from speclake.pipelines.features.formula import (
    ELECTRON_MASS,
    format_formula,
    ion_mz,
    max_decimals_at_most,
    normalize_formula,
    parse_adduct,
    parse_formula,
    rdbe,
    tolerance_for_instrument,
)


def test_parse_and_format_roundtrip_hill_order():
    """Hill order (C, H, then alphabetical), explicit 1s dropped, charge sign kept, brackets stripped."""
    assert normalize_formula("C9H9O1+") == "C9H9O+"
    assert normalize_formula("[C9H14N]+") == "C9H14N+"
    assert normalize_formula("H2O") == "H2O"
    assert normalize_formula("ClH") == "ClH"  # no carbon: alphabetical
    assert normalize_formula("C6H12O6Na+") == "C6H12NaO6+"
    assert normalize_formula("C5H8N3+") == "C5H8N3+"  # trailing count is not a charge
    assert parse_formula("[C2H4]2+")[1] == 2 and parse_formula("C7H7+*")[1] == 1
    assert parse_formula("C6H5O-")[1] == -1 and parse_formula("C8H10N4O2")[1] == 0


def test_parse_formula_rejects_unknown_element_and_garbage():
    """Unknown elements and unparsable text raise ValueError naming the problem."""
    with pytest.raises(ValueError, match="unsupported element"):
        parse_formula("C5H5Xe")
    with pytest.raises(ValueError, match="cannot parse"):
        parse_formula("c5h5")


def test_protonated_caffeine_mz_includes_electron_mass():
    """[M+H]+ of caffeine C8H10N4O2 has m/z 195.0877 (atoms minus one electron)."""
    add = parse_adduct("[M+H]+")
    ion = add.ion_counts(parse_formula("C8H10N4O2")[0])
    assert format_formula(ion, add.charge) == "C8H11N4O2+"
    assert float(ion_mz(ion, 1)) == pytest.approx(195.08765, abs=2e-5)
    assert float(ion_mz(ion, -1)) - float(ion_mz(ion, 1)) == pytest.approx(2 * ELECTRON_MASS)


@pytest.mark.parametrize("text,delta,charge", [
    ("[M+H]+", "H", 1), ("[M-H]-", "-H", -1), ("[M+Na]+", "Na", 1), ("[M+NH4]+", "NH4", 1),
    ("[M]+", "", 1), ("[M+HCOO]-", "CHO2", -1), ("[M-H2O+H]+", "-HO", 1),
])
def test_parse_adduct_deltas(text, delta, charge):
    """Each supported adduct adds (or removes) the expected atoms and has charge +-1."""
    add = parse_adduct(text)
    assert add.charge == charge
    expected = np.zeros(len(add.delta), dtype=int)
    if delta:
        sign = -1 if delta.startswith("-") else 1
        expected = sign * parse_formula(delta.lstrip("-"))[0]
    assert tuple(expected) == add.delta
    assert add.intrinsic == (text == "[M]+")


def test_parse_adduct_rejects_multiply_charged_and_dimers():
    """[M+2H]2+ and [2M+H]+ are refused with a ValueError."""
    with pytest.raises(ValueError, match="singly charged"):
        parse_adduct("[M+2H]2+")
    with pytest.raises(ValueError, match="monomers"):
        parse_adduct("[2M+H]+")


def test_neutral_mass_of_sodium_adduct():
    """Neutral mass from an [M+Na]+ m/z: glucose 180.0634 from 203.0526."""
    assert parse_adduct("[M+Na]+").neutral_mass(203.05261) == pytest.approx(180.06339, abs=1e-4)


def test_rdbe_parity_even_electron_ions_half_integer():
    """C6H5+ (phenyl cation) has RDBE 4.5, caffeine 6, quaternary choline C5H14NO+ -0.5."""
    assert float(rdbe(parse_formula("C6H5")[0])) == 4.5
    assert float(rdbe(parse_formula("C8H10N4O2")[0])) == 6.0
    assert float(rdbe(parse_formula("C5H14NO")[0])) == -0.5


def test_instrument_tolerances():
    """FT and TOF instruments get ppm tolerances (FT tighter); unit-resolution analysers get None."""
    ft, tof = tolerance_for_instrument("LC-ESI-QFT"), tolerance_for_instrument("LC-ESI-QTOF")
    assert ft.ppm < tof.ppm
    assert tolerance_for_instrument("LC-ESI-ITFT").ppm == ft.ppm
    assert tolerance_for_instrument("LC-ESI-IT") is None
    assert tolerance_for_instrument("LC-ESI-QQ") is None
    assert tolerance_for_instrument("EI-B") is None
    assert float(ft.da(100.0)) == pytest.approx(max(100 * ft.ppm * 1e-6, ft.min_da))


def test_low_resolution_detection():
    """Peak lists with at most one decimal are flagged; 4-decimal lists are not."""
    assert max_decimals_at_most(np.array([77.0, 105.1, 182.0]))
    assert not max_decimals_at_most(np.array([77.0385, 105.1]))
