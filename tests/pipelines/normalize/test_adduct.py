"""Tests of adduct parsing, adduct m/z and formula masses."""
from __future__ import annotations

from collections import Counter

import pytest

from speclake.pipelines.normalize.adduct import Adduct, adduct_mz, parse_adduct
from speclake.pipelines.normalize.errors import InvalidValueError, NormalizationError, UnknownAdductError
from speclake.pipelines.normalize.masses import ELECTRON_MASS, formula_mass

from .conftest import massbank_tag_values

CAFFEINE = 194.080376  # C8H10N4O2, monoisotopic


def test_formula_mass_of_caffeine_is_hand_checkable():
    """C8H10N4O2 = 8*12 + 10*1.007825 + 4*14.003074 + 2*15.994915 = 194.080376 Da."""
    assert formula_mass("C8H10N4O2") == pytest.approx(CAFFEINE, abs=1e-6), "caffeine monoisotopic mass"


@pytest.mark.parametrize("formula, expected", [
    ("H2O", 18.010565),
    ("(CH3)2CO", 58.041865),
    ("C2H4O2.2H2O", 60.021129 + 2 * 18.010565),
    ("C9H9O2+", 149.059706),          # MassBank annotation: one electron less than C9H9O2
    ("[C9H9O2]+", 149.059706),
    ("CH2Cl2", 83.953355),
    ("C11H11D3O2", 181.118210),
])
def test_formula_mass_handles_groups_hydrates_and_charges(formula: str, expected: float):
    """Parentheses, '.'-joined parts with multipliers and trailing charges (minus electron masses)."""
    assert formula_mass(formula) == pytest.approx(expected, abs=2e-6), f"mass of {formula}"


@pytest.mark.parametrize("formula", ["", "Xx2", "C6H(12", "C6)H12"])
def test_formula_mass_rejects_unknown_elements_and_bad_parentheses(formula: str):
    """Unknown elements and unbalanced parentheses raise InvalidValueError, never a wrong mass."""
    with pytest.raises(InvalidValueError):
        formula_mass(formula)


def test_caffeine_protonated_and_deprotonated_mz():
    """[M+H]+ of caffeine is 195.0877, [M-H]- 193.0731, [M+Na]+ 217.0696, [M+2H]2+ 98.0475."""
    assert adduct_mz(CAFFEINE, parse_adduct("[M+H]+")) == pytest.approx(195.087652, abs=1e-5)
    assert adduct_mz(CAFFEINE, parse_adduct("[M-H]-")) == pytest.approx(193.073100, abs=1e-5)
    assert adduct_mz(CAFFEINE, parse_adduct("[M+Na]+")) == pytest.approx(217.069597, abs=1e-5)
    assert adduct_mz(CAFFEINE, parse_adduct("[M+2H]2+")) == pytest.approx(98.047464, abs=1e-5)
    assert adduct_mz(CAFFEINE, parse_adduct("[2M+H]+")) == pytest.approx(389.168028, abs=1e-5)


def test_radical_cation_loses_one_electron_mass():
    """[M]+* (EI) weighs M minus one electron; it is flagged radical."""
    adduct = parse_adduct("[M]+*")
    assert adduct == Adduct("[M]+*", 1, -ELECTRON_MASS, 1, True), "EI molecular ion"


@pytest.mark.parametrize("text, name, charge", [
    ("M+H", "[M+H]+", 1),
    ("[M+H]", "[M+H]+", 1),
    ("[M+H]1+", "[M+H]+", 1),
    ("[M+H]+1", "[M+H]+", 1),
    ("M+H]", "[M+H]+", 1),
    ("[M+2H]++", "[M+2H]2+", 2),
    ("[M+2H]2+", "[M+2H]2+", 2),
    ("[M-2H]--", "[M-2H]2-", -2),
    ("[M-2H]2-", "[M-2H]2-", -2),
    ("[M-2H]-", "[M-2H]-", -1),       # MassBank: singly charged, stated charge wins
    ("M-H", "[M-H]-", -1),
    ("[M+CH3COO]-/[M-CH3]-", "[M+CH3COO]-", -1),
    ("[M+H-NH3]+", "[M-NH3+H]+", 1),
    ("[M-H-C6H10O5]-", "[M-C6H10O5-H]-", -1),
    ("[M+H+O]+", "[M+O+H]+", 1),
    ("[M-H+Na]+*", "[M-H+Na]+*", 1),
    ("[M+Li]+*", "[M+Li]+*", 1),
    ("[M+HCOOH-H]-", "[M+HCOO]-", -1),
    ("[M+HCO2]-", "[M+HCOO]-", -1),
    ("M+FA-H", "[M+HCOO]-", -1),
    ("M+ACN+H", "[M+CH3CN+H]+", 1),
    ("[M]+", "[M]+", 1),
    ("[M]-", "[M]-", -1),
    ("M+", "[M]+", 1),
    ("Cat", "[M]+", 1),
    ("M-e", "[M]+*", 1),
    ("[M-H2O+H]+", "[M-H2O+H]+", 1),
    ("[M+H-H2O]+", "[M-H2O+H]+", 1),
    ("[M-3]+,[M-H2O+H]+", "[M-H2O+H]+", 1),  # first alternative unreadable: the next one
    (" [M+NH4]+ ", "[M+NH4]+", 1),
])
def test_real_spellings_parse_to_canonical_names(text: str, name: str, charge: int):
    """Every spelling seen in MassBank/GNPS gives the canonical name and signed charge."""
    adduct = parse_adduct(text)
    assert (adduct.name, adduct.charge) == (name, charge), f"{text!r} -> {adduct}"


def test_same_ion_spelled_differently_has_the_same_mass_shift():
    """[M+HCOO]- and [M+HCOOH-H]- are one ion: same name, same mass shift."""
    a, b = parse_adduct("[M+HCOO]-"), parse_adduct("[M-H+HCOOH]-")
    assert a == b, "formate adduct spellings"


def test_ionmode_decides_the_sign_only_when_the_text_has_none():
    """'[M]' needs the ionmode; '[M+H]+' ignores it."""
    assert parse_adduct("[M]", "positive").name == "[M]+"
    assert parse_adduct("M", "negative").name == "[M]-"
    assert parse_adduct("[M+H]+", "negative").charge == 1, "stated charge wins over ionmode"
    with pytest.raises(UnknownAdductError):
        parse_adduct("[M]")


@pytest.mark.parametrize("text", ["", "garbage", "[X+H]+", "[M+Qq]+", "[M+H]+-", "M+H-99"])
def test_unparseable_adduct_raises_unknown_adduct_naming_the_text(text: str):
    """Unreadable text raises NormalizationError('unknown_adduct') whose message names it."""
    with pytest.raises(NormalizationError) as info:
        parse_adduct(text)
    assert info.value.reason_code == "unknown_adduct"
    assert text.strip() == "" or repr(text) in str(info.value), "message names the text"


def test_every_massbank_precursor_type_parses():
    """Every PRECURSOR_TYPE / ION_TYPE in the shared MassBank release parses, and [M+H]+ is the commonest."""
    counts: Counter[str] = massbank_tag_values("MS$FOCUSED_ION PRECURSOR_TYPE") + \
        massbank_tag_values("MS$FOCUSED_ION ION_TYPE")
    failures = {}
    for text in counts:
        try:
            parse_adduct(text)
        except NormalizationError as exc:
            failures[text] = str(exc)
    assert len(counts) > 50, "the release has many distinct precursor types"
    assert failures == {}, "every MassBank precursor type parses"
    assert parse_adduct(counts.most_common(1)[0][0]).name == "[M+H]+"
