"""Tests of normalize_record (one record -> one spectra row), the settings and the error type."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pydantic
import pytest

from speclake.lake.schema import SPECTRA
from speclake.pipelines.normalize.errors import NormalizationError, UnknownAdductError
from speclake.pipelines.normalize.spectrum import NormalizeSettings, normalize_record, normalize_records

from .conftest import SpectrumBuilder

LEAD_COLUMNS = {"inchikey", "inchikey14", "inchikey_mismatch", "precursor_ppm_error", "ingest_run_id"}


def _row(builder: SpectrumBuilder, settings: NormalizeSettings, source: str = "massbank") -> dict:
    return normalize_record(builder.build(), source=source, settings=settings)


def test_row_has_every_spectra_column_but_the_structure_ones(builder, settings):
    """The row holds every spectra column except those the ingest job adds, plus the compound facts."""
    row = _row(builder, settings)
    expected = {f.name for f in SPECTRA} - LEAD_COLUMNS
    assert expected <= set(row), f"missing columns: {expected - set(row)}"
    assert {"chemont_id", "chemont_classes", "exact_mass_reported"} <= set(row)


def test_row_converts_to_the_lake_schema(builder, settings):
    """The row (numpy peak arrays, dict metadata_extra) converts to Arrow with the SPECTRA types."""
    row = _row(builder.with_extra(**{"AC$CHROMATOGRAPHY: COLUMN_NAME": "C18"}), settings)
    row.update({c: None for c in LEAD_COLUMNS})
    row["ingest_run_id"] = "run-1"
    schema = pa.schema([f.with_nullable(True) if f.name in LEAD_COLUMNS else f for f in SPECTRA])
    table = pa.Table.from_pylist([row], schema=schema)
    assert table.num_rows == 1
    assert table.column("intensities").type == pa.list_(pa.float32())
    assert table.column("metadata_extra").to_pylist()[0] == [("AC$CHROMATOGRAPHY: COLUMN_NAME", "C18")]


def test_values_are_normalized(builder, settings):
    """Caffeine MS2: parsed level, mode, precursor, adduct, charge from adduct, CE, peaks scaled."""
    row = _row(builder.with_metadata(retention_time="5.1 min"), settings)
    assert (row["ms_level"], row["ionmode"], row["precursor_mz"], row["adduct"], row["charge"]) == \
        (2, "positive", 195.0877, "[M+H]+", 1)
    assert (row["collision_energy"], row["collision_energy_unit"], row["collision_energy_text"]) == \
        (35.0, "%", "35 % (nominal)")
    assert row["retention_time"] == pytest.approx(306.0), "minutes to seconds"
    assert row["num_peaks"] == 3 and row["intensities"].max() == 1.0
    assert row["mz"].dtype == np.float64 and row["intensities"].dtype == np.float32
    assert row["inchikey_reported"] == "RYYVLZVUVIJVGH-UHFFFAOYSA-N" and row["smiles_reported"]
    assert row["splash"].startswith("splash10-") and row["splash_match"] is None, "nothing reported"


def test_splash_match_against_reported(builder, settings):
    """A reported SPLASH is compared with ours: equal -> True, different -> False and a note."""
    ours = _row(builder, settings)["splash"]
    assert _row(builder.with_metadata(splash=ours), settings)["splash_match"] is True
    row = _row(builder.with_metadata(splash="splash10-0000-0000000000-00000000000000000000"), settings)
    assert row["splash_match"] is False and any("SPLASH differs" in n for n in row["normalization_notes"])


def test_ionmode_and_charge_derived_from_adduct(builder, settings):
    """Missing ionmode and charge come from the adduct [M-H]-, with a note."""
    row = _row(builder.with_metadata(ionmode="n/a", adduct="M-H", precursor_mz="193.0731").without("charge"), settings)
    assert (row["ionmode"], row["charge"], row["adduct"]) == ("negative", -1, "[M-H]-")
    assert "ionmode negative derived from adduct" in row["normalization_notes"]


def test_unsigned_charge_takes_the_ionmode_sign(builder, settings):
    """MGF CHARGE=1 in a negative-mode record is -1."""
    row = _row(builder.with_metadata(ionmode="negative", adduct=None, charge="1", precursor_mz="193.0731"), settings)
    assert row["charge"] == -1


def test_missing_adduct_is_fine(builder, settings):
    """No adduct text: adduct and (without a charge) charge are None, the record is kept."""
    row = _row(builder.without("adduct"), settings)
    assert row["adduct"] is None and row["charge"] is None and row["ionmode"] == "positive"


def test_unknown_adduct_raises(builder, settings):
    """Unparseable adduct text raises unknown_adduct naming it."""
    with pytest.raises(UnknownAdductError) as info:
        _row(builder.with_metadata(adduct="[X+Y]"), settings)
    assert info.value.reason_code == "unknown_adduct" and "[X+Y]" in str(info.value)


@pytest.mark.parametrize("precursor", [None, "NA", "0"])
def test_ms2_without_precursor_raises_missing_precursor(builder, settings, precursor):
    """MS2 without a usable precursor m/z is missing_precursor."""
    with pytest.raises(NormalizationError) as info:
        _row(builder.with_metadata(precursor_mz=precursor) if precursor else builder.without("precursor_mz"), settings)
    assert info.value.reason_code == "missing_precursor"


def test_ms1_without_precursor_is_fine(builder, settings):
    """An EI MS1 record needs no precursor; peaks above a (missing) precursor are kept."""
    row = _row(builder.with_metadata(ms_level="MS", adduct="[M]+*").without("precursor_mz"), settings)
    assert row["ms_level"] == 1 and row["precursor_mz"] is None and row["adduct"] == "[M]+*"


def test_ms_level_assumed_2_with_precursor_else_missing(builder, settings):
    """No MS level: 2 when a precursor is given (noted), else missing_ms_level."""
    row = _row(builder.without("ms_level"), settings)
    assert row["ms_level"] == 2 and any("2 assumed" in n for n in row["normalization_notes"])
    with pytest.raises(NormalizationError) as info:
        _row(builder.without("ms_level", "precursor_mz"), settings)
    assert info.value.reason_code == "missing_ms_level"


def test_msn_chain_gives_level_and_last_precursor(builder, settings):
    """MassBank MS3 'PRECURSOR_M/Z 764.52/690.15': chain kept, precursor is the last stage."""
    row = _row(builder.with_metadata(ms_level="MSn", precursor_mz="764.52/690.15", adduct=None)
               .with_peaks([300.0, 690.1, 700.0], [1.0, 2.0, 3.0]), settings)
    assert row["ms_level"] == 3 and row["precursor_mz_chain"] == [764.52, 690.15] and row["precursor_mz"] == 690.15
    assert row["mz"].tolist() == [300.0, 690.1], "peaks above the MS3 precursor removed"


def test_no_peaks_after_cleaning_raises(builder, settings):
    """Only peaks above the precursor: no_peaks."""
    with pytest.raises(NormalizationError) as info:
        _row(builder.with_peaks([300.0], [1.0]), settings)
    assert info.value.reason_code == "no_peaks"


def test_unreadable_optional_values_become_notes(builder, settings):
    """Unreadable collision energy / charge: value None, text kept, reason noted; the record survives."""
    row = _row(builder.with_metadata(collision_energy="3 kV", charge="abc"), settings)
    assert row["collision_energy"] is None and row["collision_energy_text"] == "3 kV"
    assert row["charge"] == 1, "charge from the adduct"
    notes = " | ".join(row["normalization_notes"])
    assert "collision energy not read" in notes and "charge not read" in notes


def test_cleaning_notes_reach_the_row(builder, settings):
    """Peak-cleaning notes (duplicates, invalid intensities) are in normalization_notes."""
    row = _row(builder.with_peaks([110.0, 110.00001, 138.0, 150.0], [1.0, 1.0, 0.0, 5.0]), settings)
    assert row["num_peaks"] == 2 and row["intensities_raw"].tolist() == [2.0, 5.0]
    assert "dropped 1 zero/negative/NaN intensities" in row["normalization_notes"]


def test_unmapped_keys_go_to_metadata_extra(builder, settings):
    """Reader extras and RAW_KEYS without a column (synonyms, date) are kept as text."""
    row = _row(builder.with_extra(COMMENT="CONFIDENCE standard").with_metadata(synonyms=["a", "b"], date="2017.07.07"),
               settings)
    assert row["metadata_extra"]["COMMENT"] == "CONFIDENCE standard"
    assert json.loads(row["metadata_extra"]["synonyms"]) == ["a", "b"] and row["metadata_extra"]["date"] == "2017.07.07"


def test_chemont_and_exact_mass_for_the_compounds_table(builder, settings):
    """ChemOnt id/classes and the reported exact mass travel with the row."""
    row = _row(builder.with_metadata(chemont=["CHEMONTID:0000007; Organic compounds; Alkaloids"],
                                     exact_mass="194.08038"), settings)
    assert (row["chemont_id"], row["chemont_classes"], row["exact_mass_reported"]) == \
        ("CHEMONTID:0000007", ["Organic compounds", "Alkaloids"], 194.08038)


def test_spectrum_id_is_stable_and_content_derived(builder, settings):
    """Same record (even re-read with float noise or from another path) -> same id; another source,
    other peaks or another precursor -> another id. 24 hex characters."""
    first = _row(builder, settings)["spectrum_id"]
    assert len(first) == 24 and int(first, 16) >= 0
    assert _row(builder, settings)["spectrum_id"] == first, "re-ingest"
    assert _row(SpectrumBuilder().with_source_file("/elsewhere/x.txt"), settings)["spectrum_id"] == first, "path"
    noisy = SpectrumBuilder().with_peaks([110.0713 + 1e-9, 138.0662, 195.0877], [200.00001, 1000.0, 500.0])
    assert _row(noisy, settings)["spectrum_id"] == first, "float noise below the rounding"
    assert _row(SpectrumBuilder(), settings, source="gnps")["spectrum_id"] != first, "source"
    assert _row(SpectrumBuilder().with_peaks([110.0713, 138.0662], [200.0, 1000.0]), settings)["spectrum_id"] != first
    assert _row(SpectrumBuilder().with_metadata(precursor_mz="195.1"), settings)["spectrum_id"] != first


def test_normalize_records_yields_rows_and_errors(settings):
    """The many-record form yields (record, row) or (record, error) in order."""
    good, bad = SpectrumBuilder().build(), SpectrumBuilder().with_metadata(adduct="??").build()
    out = list(normalize_records([good, bad], source="massbank", settings=settings))
    assert isinstance(out[0][1], dict) and isinstance(out[1][1], NormalizationError)


def test_settings_refuse_unknown_keys_and_round_trip_json():
    """NormalizeSettings: extra keys refused; to_json() reads back to equal settings."""
    with pytest.raises(pydantic.ValidationError):
        NormalizeSettings(merge_tolerance=1.0)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        NormalizeSettings(precursor_tolerance_da=-1)
    s = NormalizeSettings(precursor_tolerance_ppm=10)
    assert NormalizeSettings.model_validate_json(s.to_json()) == s
    assert json.loads(s.to_json())["merge_tolerance_da"] == 1e-4


def test_errors_pickle_with_their_code():
    """NormalizationError and subclasses survive pickling (Spark) with code and message."""
    for exc in (NormalizationError("no_peaks", "none left"), UnknownAdductError("adduct 'x' could not be parsed")):
        back = pickle.loads(pickle.dumps(exc))
        assert (type(back), back.reason_code, str(back)) == (type(exc), exc.reason_code, str(exc))
    with pytest.raises(ValueError):
        NormalizationError("made_up", "x")


def test_ei_spectrum_without_precursor_or_level_is_ms1() -> None:
    """A GC-EI record stating neither MS level nor precursor (NIST/Thermo MSP) is kept as MS1, with a note."""
    from speclake.pipelines.normalize.spectrum import NormalizeSettings, normalize_record
    from speclake.pipelines.readers.base import RawRecord

    record = RawRecord(source_file="x.msp", locator="record 1 (line 1)", fmt="msp",
                       metadata={"compound_name": "S-Carboxymethyl-L-cysteine, 3TMS", "ionization": "EI",
                                 "instrument_type": "GC Orbitrap"},
                       extra={}, mz=(52.57499, 73.04712), intensities=(1.0, 999.0))
    row = normalize_record(record, source="test", settings=NormalizeSettings())
    assert row["ms_level"] == 1, "an EI spectrum without precursor is MS1"
    assert any("EI" in n for n in row["normalization_notes"]), "the assumption is noted"


def test_esi_spectrum_without_precursor_or_level_is_quarantined() -> None:
    """An ESI record with neither MS level nor precursor cannot be placed and raises missing_ms_level."""
    import pytest

    from speclake.pipelines.normalize.errors import NormalizationError
    from speclake.pipelines.normalize.spectrum import NormalizeSettings, normalize_record
    from speclake.pipelines.readers.base import RawRecord

    record = RawRecord(source_file="x.msp", locator="record 1 (line 1)", fmt="msp",
                       metadata={"ionization": "ESI", "instrument_type": "LC-ESI-QTOF"},
                       extra={}, mz=(52.5, 73.0), intensities=(1.0, 999.0))
    with pytest.raises(NormalizationError) as err:
        normalize_record(record, source="test", settings=NormalizeSettings())
    assert err.value.reason_code == "missing_ms_level", "ESI without precursor or level is not guessed"
