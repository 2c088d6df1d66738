"""Tests of formulas, adducts, ion masses and instrument tolerances."""
import numpy as np
import pytest

from speclake.pipelines.features import formula as features_formula
from speclake.pipelines.features.formula import (
    ELEMENTS,
    MONO_MASS,
    adduct_delta,
    format_formula,
    ion_counts,
    ion_mz,
    normalize_formula,
    parse_formula,
    rdbe,
    singly_charged_adduct,
    tolerance_for_instrument,
)
from speclake.pipelines.normalize import adduct as normalize_adduct
from speclake.pipelines.normalize import masses
from speclake.pipelines.normalize import peaks as normalize_peaks
from speclake.pipelines.normalize.masses import ELECTRON_MASS, ELEMENT_MASSES


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
    add = singly_charged_adduct("[M+H]+")
    ion = ion_counts(add, parse_formula("C8H10N4O2")[0])
    assert format_formula(ion, add.charge) == "C8H11N4O2+"
    assert float(ion_mz(ion, 1)) == pytest.approx(195.08765, abs=2e-5)
    assert float(ion_mz(ion, -1)) - float(ion_mz(ion, 1)) == pytest.approx(2 * ELECTRON_MASS)


@pytest.mark.parametrize("text,delta,charge", [
    ("[M+H]+", "H", 1), ("[M-H]-", "-H", -1), ("[M+Na]+", "Na", 1), ("[M+NH4]+", "NH4", 1),
    ("[M]+", "", 1), ("[M+HCOO]-", "CHO2", -1), ("[M-H2O+H]+", "-HO", 1),
])
def test_adduct_deltas(text, delta, charge):
    """Each supported adduct adds (or removes) the expected atoms and has charge +-1."""
    add = singly_charged_adduct(text)
    assert add.charge == charge, f"charge of {text}"
    expected = np.zeros(len(ELEMENTS), dtype=int)
    if delta:
        sign = -1 if delta.startswith("-") else 1
        expected = sign * parse_formula(delta.lstrip("-"))[0]
    assert adduct_delta(add).tolist() == expected.tolist(), f"atoms {text} adds"
    assert add.intrinsic == (text == "[M]+"), f"{text} carries its own charge only when nothing is added"


def test_singly_charged_adduct_rejects_multiply_charged_dimers_and_foreign_elements():
    """[M+2H]2+, [2M+H]+, [M+Li]+ (no Li column) and garbage are refused with a ValueError naming why."""
    with pytest.raises(ValueError, match="singly charged"):
        singly_charged_adduct("[M+2H]2+")
    with pytest.raises(ValueError, match="monomers"):
        singly_charged_adduct("[2M+H]+")
    with pytest.raises(ValueError, match="unsupported element 'Li'"):
        singly_charged_adduct("[M+Li]+")
    with pytest.raises(ValueError, match="could not be parsed"):
        singly_charged_adduct("[X+H]+")


def test_ion_counts_refuses_to_remove_absent_atoms():
    """[M-H2O+H]+ of a molecule without oxygen is impossible."""
    with pytest.raises(ValueError, match="removes atoms"):
        ion_counts(singly_charged_adduct("[M-H2O+H]+"), parse_formula("C6H6")[0])


def test_neutral_mass_of_sodium_adduct():
    """Neutral mass from an [M+Na]+ m/z: glucose 180.0634 from 203.0526."""
    assert singly_charged_adduct("[M+Na]+").neutral_mass(203.05261) == pytest.approx(180.06339, abs=1e-4)


def test_masses_come_from_the_one_chemistry_home():
    """MONO_MASS is ELEMENT_MASSES laid out in ELEMENTS order, bit for bit."""
    assert MONO_MASS.tolist() == [ELEMENT_MASSES[e] for e in ELEMENTS], "element masses of normalize.masses"


def test_formula_module_keeps_no_copy_of_shared_chemistry():
    """features.formula defines no name that normalize.adduct/masses/peaks define; what it shares is their object."""
    homes = (normalize_adduct, masses, normalize_peaks)
    shared = {name for m in homes for name, v in vars(m).items()
              if not name.startswith("_") and getattr(v, "__module__", m.__name__) == m.__name__}
    own = {name for name, v in vars(features_formula).items()
           if callable(v) and getattr(v, "__module__", None) == features_formula.__name__}
    assert not own & shared, f"features.formula redefines {sorted(own & shared)}"
    for name in ("formula_mass", "PROTON_MASS", "max_decimals_at_most", "ppm_window"):
        assert not hasattr(features_formula, name), f"features.formula.{name} is a second copy"
    assert features_formula.ELECTRON_MASS is masses.ELECTRON_MASS, "one electron mass"
    assert features_formula.Adduct is normalize_adduct.Adduct, "one Adduct"


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
