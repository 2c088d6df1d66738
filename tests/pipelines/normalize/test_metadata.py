"""Tests of the metadata parsers: ionmode, MS level, charge, precursor, collision energy, RT, ChemOnt."""
from __future__ import annotations

import pytest

from speclake.pipelines.normalize.adduct import parse_adduct
from speclake.pipelines.normalize.errors import NormalizationError
from speclake.pipelines.normalize.metadata import (
    derive_ms_level,
    harmonize_ionmode,
    parse_charge,
    parse_chemont,
    parse_collision_energy,
    parse_ms_level,
    parse_precursor_mz,
    parse_precursor_mz_chain,
    parse_retention_time,
    precursor_precision,
)

from .conftest import massbank_tag_values


@pytest.mark.parametrize("text, expected", [
    ("POSITIVE", "positive"), ("Positive", "positive"), ("P", "positive"), ("+", "positive"),
    ("NEGATIVE", "negative"), ("neg", "negative"), ("N", "negative"), ("-", "negative"),
    ("n/a", "unknown"), (None, "unknown"), ("", "unknown"), ("both", "unknown"),
])
def test_harmonize_ionmode_spellings(text, expected):
    """Each spelling maps to positive/negative; missing or unreadable text stays unknown."""
    assert harmonize_ionmode(text) == expected, f"ionmode {text!r}"


def test_ionmode_derived_from_adduct_then_charge():
    """Missing ionmode comes from the adduct's charge sign, else from the charge."""
    assert harmonize_ionmode("n/a", adduct=parse_adduct("[M-H]-")) == "negative"
    assert harmonize_ionmode(None, charge=2) == "positive"
    assert harmonize_ionmode("positive", adduct=parse_adduct("[M-H]-")) == "positive", "stated mode kept"


@pytest.mark.parametrize("text, expected", [
    ("MS2", 2), ("2", 2), ("ms3", 3), ("MS", 1), ("MS1", 1), ("MSn", None), (None, None), ("", None),
])
def test_parse_ms_level(text, expected):
    """MS2 -> 2, 2 -> 2, MS -> 1; MSn and missing are unknown (None)."""
    assert parse_ms_level(text) == expected, f"MS level {text!r}"


def test_ms_level_from_precursor_chain_and_garbage():
    """An unknown level is one more than the chain length; garbage raises invalid_value."""
    assert derive_ms_level(None, [764.52, 690.15]) == 3
    assert derive_ms_level(2, [764.52, 690.15]) == 2, "a stated level wins"
    with pytest.raises(NormalizationError) as info:
        parse_ms_level("tandem")
    assert info.value.reason_code == "invalid_value"


@pytest.mark.parametrize("text, expected", [
    ("1", 1), ("2-", -2), ("-1", -1), ("+2", 2), ("2+", 2), ("0", None), (None, None), ("2+ and 3+", 2),
])
def test_parse_charge(text, expected):
    """Signed integer charge; 0 means unknown (None)."""
    assert parse_charge(text) == expected, f"charge {text!r}"


@pytest.mark.parametrize("text, expected", [
    ("195.0877", 195.0877), ("183.057 1234", 183.057), ("NA", None), ("0", None), (None, None),
    ("764.52/690.15", 690.15), ("457.374817 ", 457.374817),
])
def test_parse_precursor_mz(text, expected):
    """First token of MGF PEPMASS; NA/0 -> None; an MSn chain gives the last (this spectrum's) precursor."""
    assert parse_precursor_mz(text) == expected, f"precursor {text!r}"


def test_precursor_chain_precision_and_bad_values():
    """The chain keeps every stage; precision is the last written digit; negatives raise."""
    assert parse_precursor_mz_chain("764.52/690.15") == [764.52, 690.15]
    assert (precursor_precision("423"), precursor_precision("423.0"), precursor_precision("195.0877")) == (1.0, 0.1, 1e-4)
    with pytest.raises(NormalizationError):
        parse_precursor_mz("-5")
    with pytest.raises(NormalizationError):
        parse_precursor_mz("abc")


@pytest.mark.parametrize("text, expected", [
    ("35 % (nominal)", (35.0, "%")),
    ("30%", (30.0, "%")),
    ("30(NCE)", (30.0, "%")),
    ("40.0 NCE", (40.0, "%")),
    ("20 eV", (20.0, "eV")),
    ("20eV", (20.0, "eV")),
    ("20 V", (20.0, "eV")),
    ("HCD 30", (30.0, None)),
    ("CE60", (60.0, None)),
    ("10-40 eV ramp", (25.0, "eV")),
    ("Ramp 5-60 V", (32.5, "eV")),
    ("Ramp 20%-70% (nominal)", (45.0, "%")),
    ("Ramp 22,9-34.3 eV", (28.6, "eV")),
    ("30 (nominal)", (30.0, None)),
    ("35.0", (35.0, None)),
    ("-20", (20.0, None)),
    ("25,60,100% (stepped)", (61.666667, "%")),
    ("42% (nominal) with stepped collision energies 30% and 55%", (42.0, "%")),
    ("0.65/0.60", (0.6, None)),
    ("1 keV", (1000.0, "eV")),
    ("n.d.", (None, None)),
    (None, (None, None)),
])
def test_parse_collision_energy_massbank_forms(text, expected):
    """Value and unit of every common MassBank collision-energy form (ramps: the mean)."""
    value, unit = parse_collision_energy(text)
    expected_value, expected_unit = expected
    assert unit == expected_unit, f"unit of {text!r}"
    assert value == (pytest.approx(expected_value, abs=1e-5) if expected_value is not None else None), \
        f"value of {text!r}"


@pytest.mark.parametrize("text", ["3 kV", "15, 30, 45, 60, 70 or 90 (nominal)", "scaled 80 (m/z=200) to 110 (m/z=120)", "SORI CID"])
def test_ambiguous_collision_energy_raises_invalid_value(text):
    """Text that is not one collision energy raises invalid_value (the record keeps the text)."""
    with pytest.raises(NormalizationError) as info:
        parse_collision_energy(text)
    assert info.value.reason_code == "invalid_value"


@pytest.mark.parametrize("text, default, expected", [
    ("5.1 min", "s", 306.0), ("302.1 sec", "s", 302.1), ("302.1", "s", 302.1), ("0.85 min", "s", 51.0),
    ("456.174 s", "min", 456.174), ("12.3 min.", "s", 738.0), ("3.44", "min", 206.4),
    ("5.1, 5.3 min", "s", 306.0), ("3.28 min (in paper: 3.30(3.33) min)", "s", 196.8),
    ("N/A min", "s", None), (None, "s", None),
])
def test_parse_retention_time_to_seconds(text, default, expected):
    """Seconds from minutes/seconds text; unitless values in the format's default unit."""
    value = parse_retention_time(text, default_unit=default)
    assert value == (pytest.approx(expected) if expected is not None else None), f"RT {text!r}"


def test_unitless_minutes_above_threshold_read_as_seconds():
    """With default minutes, a unitless 294.78 (GL Sciences GC) is seconds when above the threshold."""
    assert parse_retention_time("294.78", default_unit="min", seconds_above=120.0) == pytest.approx(294.78)
    assert parse_retention_time("3.44", default_unit="min", seconds_above=120.0) == pytest.approx(206.4)


def test_parse_chemont():
    """ChemOnt id and the class path from kingdom to the most specific class."""
    entry = "CHEMONTID:0004107; Organic compounds; Organoheterocyclic compounds; Triazines; 1,2,4-triazines"
    assert parse_chemont(entry) == ("CHEMONTID:0004107", ["Organic compounds", "Organoheterocyclic compounds",
                                                          "Triazines", "1,2,4-triazines"])
    assert parse_chemont([entry]) == parse_chemont(entry), "list form"
    assert parse_chemont(None) == (None, []) and parse_chemont([]) == (None, [])


def test_real_massbank_collision_energies_mostly_readable():
    """>= 99 % of real MassBank collision energies (by record) give a value."""
    values = massbank_tag_values("AC$MASS_SPECTROMETRY COLLISION_ENERGY")
    readable = 0
    for text, n in values.items():
        try:
            if parse_collision_energy(text)[0] is not None:
                readable += n
        except NormalizationError:
            pass
    assert sum(values.values()) > 50000, "the whole release's values"
    assert readable / sum(values.values()) >= 0.99, f"readable share {readable / sum(values.values()):.4f}"


def test_real_massbank_retention_times_and_precursors_all_readable():
    """Every real MassBank retention time and precursor m/z parses (N/A gives None, not an error)."""
    for text in massbank_tag_values("AC$CHROMATOGRAPHY RETENTION_TIME"):
        parse_retention_time(text, default_unit="min", seconds_above=120.0)
    precursors = massbank_tag_values("MS$FOCUSED_ION PRECURSOR_M/Z")
    assert precursors, "real precursor values"
    for text in precursors:
        parse_precursor_mz(text)
