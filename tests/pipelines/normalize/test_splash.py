"""Tests of SPLASH against the reference implementation's cases and MassBank's PK$SPLASH."""
from __future__ import annotations

import logging

import pytest

from speclake.pipelines.normalize.splash import splash

from .conftest import iter_massbank, massbank_path

log = logging.getLogger(__name__)

# Test cases of the reference implementation (berlinguyinca/spectra-hash, python/tests/test_splash.py).
REFERENCE = [
    ("66.0463:2.1827 105.0698:7.9976 103.0541:4.5676 130.065:8.6025 93.0572:0.2544 79.0542:4.4657 91.0541:2.5671 "
     "131.0728:2.6844 115.0541:1.3542 65.0384:0.6554 94.0412:0.5614 116.0494:1.2008 95.049:2.1338 117.0572:100 "
     "89.0385:11.7808 77.0385:3.3802 90.0463:35.6373 132.0806:2.343 105.0446:1.771",
     "splash10-014i-4900000000-889a38f7ace2626a0435"),
    ("303.07:100 662.26:1.2111 454.91:1.2023 433.25:0.8864 432.11:2.308 592.89:3.9052 259.99:0.6406 281.14:1.2549 "
     "451.34:1.1847 499.85:1.2374 482.14:2.4133 450:23.5191 483:1.0004 285.25:1.448 253.1:46.5731 254.11:3.247 "
     "259.13:6.9241 304.14:17.2795",
     "splash10-0udi-0049200000-ef488ecacceeaaadb4a2"),
]


@pytest.mark.parametrize("peaks, expected", REFERENCE)
def test_reference_implementation_cases(peaks: str, expected: str):
    """Our SPLASH equals the reference implementation's published test values."""
    pairs = [tuple(map(float, p.split(":"))) for p in peaks.split()]
    assert splash([p[0] for p in pairs], [p[1] for p in pairs]) == expected


def test_scale_and_order_do_not_change_the_splash():
    """SPLASH is computed on relative intensities and sorted ions: scaling or shuffling changes nothing."""
    mz, it = [100.0, 150.5, 99.9, 300.25], [10.0, 50.0, 5.0, 25.0]
    reference = splash(mz, it)
    assert splash(mz[::-1], it[::-1]) == reference, "order of peaks"
    assert splash(mz, [x * 1000 for x in it]) == reference, "absolute scale"
    assert reference.startswith("splash10-"), "MS spectrum type 1, version 0"


@pytest.mark.parametrize("mz, it", [([], []), ([100.0], [0.0]), ([100.0], [-1.0]), ([1.0, 2.0], [1.0])])
def test_invalid_peak_lists_raise_value_error(mz, it):
    """Empty, all-zero, negative or mismatched peak lists raise ValueError."""
    with pytest.raises(ValueError):
        splash(mz, it)


CONTRIBUTORS = ["Eawag.txt.gz", "RIKEN.txt.gz", "LCSB.txt.gz", "BAFG.txt.gz", "Fac_Eng_Univ_Tokyo.txt.gz",
                "Keio_Univ.txt.gz", "Athens_Univ.txt.gz", "MSSJ.txt.gz", "GL_Sciences_Inc.txt.gz", "Waters.txt.gz"]


def test_massbank_pk_splash_matches_on_recorded_intensities():
    """Over 4000 MassBank records of 10 contributors (LC-MS/MS, GC-EI, MSn), our SPLASH of the
    recorded peak list (the 'int.' column) equals PK$SPLASH for >= 99 % of records."""
    massbank_path(CONTRIBUTORS[0])
    total = match_int = match_rel = 0
    mismatches: list[str] = []
    for name in CONTRIBUTORS:
        for record in iter_massbank(massbank_path(name), limit=400):
            reported = (record["tags"].get("PK$SPLASH") or [None])[0]  # type: ignore[union-attr]
            peaks = record["peaks"]
            if not reported or not peaks:
                continue
            total += 1
            mz = [p[0] for p in peaks]  # type: ignore[index]
            ours = splash(mz, [p[1] for p in peaks])  # type: ignore[index]
            match_int += ours == reported
            match_rel += splash(mz, [p[2] for p in peaks]) == reported  # type: ignore[index]
            if ours != reported:
                mismatches.append(f"{record['accession']}: {reported} vs {ours}")
    log.info("SPLASH match on int.: %d/%d; on rel.int.: %d/%d", match_int, total, match_rel, total)
    assert total >= 2000, "enough real records"
    assert match_int / total >= 0.99, f"match rate {match_int / total:.4f}; first mismatches: {mismatches[:5]}"
    assert match_rel < match_int, "MassBank hashed the int. column, not the rounded rel.int. column"
