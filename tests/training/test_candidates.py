"""Candidate lists from a real structure index: formula mode, mass mode, truth always present."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from speclake.pipelines.normalize.adduct import adduct_mz, parse_adduct
from speclake.pipelines.normalize.masses import ppm_window
from speclake.training.candidates import candidate_sets, neutral_mass, open_catalog, query_table

from .eval_lakes import indexed_lake

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def lake(sample_feature_lake, tmp_path_factory):
    return indexed_lake(sample_feature_lake, tmp_path_factory)


@pytest.fixture(scope="module")
def queries(lake):
    from speclake.lake import sql

    con = sql.connect(lake)
    try:
        return con.sql(
            "SELECT s.spectrum_id, s.inchikey, s.inchikey14, c.smiles, c.formula, c.monoisotopic_mass, s.ionmode, "
            "s.precursor_mz, s.adduct FROM spectra s JOIN compounds c USING (inchikey) "
            "WHERE s.ms_level = 2 AND s.precursor_mz IS NOT NULL ORDER BY s.spectrum_id LIMIT 60").to_arrow_table()
    finally:
        con.close()


def test_neutral_mass_inverts_adduct_mz():
    for text in ("[M+H]+", "[M-H]-", "[M+Na]+", "[M+2H]2+", "[2M+H]+"):
        a = parse_adduct(text)
        assert neutral_mass(adduct_mz(180.0634, a), text) == pytest.approx(180.0634, abs=1e-9)
    assert neutral_mass(181.07, None) is None
    assert neutral_mass(None, "[M+H]+") is None
    assert neutral_mass(181.07, "not an adduct") is None


def test_formula_mode_only_same_formula_and_truth_present(lake, queries):
    catalog = open_catalog(lake)
    try:
        cs = candidate_sets(catalog, queries, "formula")
        all_formulas = catalog.sql("SELECT formula, count(DISTINCT inchikey14) AS n FROM structures GROUP BY 1")
    finally:
        catalog.close()
    t = cs.table
    q = t.column("query").to_numpy()
    formulas = queries.column("formula").to_pylist()
    assert all(f == formulas[i] for i, f in zip(q, t.column("formula").to_pylist()))
    assert cs.n_truth_added == 0  # lake compounds are indexed
    truth = cs.truth_index()
    keys = t.column("inchikey14").to_pylist()
    for i in range(queries.num_rows):
        lo, hi = cs.offsets[i], cs.offsets[i + 1]
        assert keys[lo + truth[i]] == queries.column("inchikey14")[i].as_py()
        assert len(set(keys[lo:hi])) == hi - lo  # deduplicated by InChIKey-14
    n_by_formula = dict(zip(all_formulas.column("formula").to_pylist(), all_formulas.column("n").to_pylist()))
    assert [int(c) for c in cs.counts] == [n_by_formula[f] for f in formulas]
    assert cs.counts.max() > 1  # the decoy file shares formulas with some lake compounds


def test_mass_mode_window_is_exact(lake, queries):
    catalog = open_catalog(lake)
    try:
        cs = candidate_sets(catalog, queries, "mass", ppm=10.0)
        masses = catalog.sql("SELECT DISTINCT inchikey14, monoisotopic_mass FROM structures")
    finally:
        catalog.close()
    all_mass = np.asarray(masses.column("monoisotopic_mass").to_pylist())
    all_keys = masses.column("inchikey14").to_pylist()
    t = cs.table
    for i, row in enumerate(queries.to_pylist()):
        m = neutral_mass(row["precursor_mz"], row["adduct"], row["ionmode"])
        if m is None or abs(m - row["monoisotopic_mass"]) > row["monoisotopic_mass"] * 10e-6:
            m = row["monoisotopic_mass"]  # precursor m/z off: window centred on the true mass
        lo, hi = ppm_window(m, 10.0)
        got = t.slice(cs.offsets[i], cs.offsets[i + 1] - cs.offsets[i])
        expected = {k for k, x in zip(all_keys, all_mass) if lo <= x <= hi}
        found = set(got.column("inchikey14").to_pylist())
        truth = row["inchikey14"]
        assert found - {truth} == expected - {truth}
        assert truth in found
        inside = [x for k, x in zip(got.column("inchikey14").to_pylist(), got.column("monoisotopic_mass").to_pylist())
                  if k != truth]
        assert all(lo <= x <= hi for x in inside)
    assert cs.n_no_mass == 0
    assert cs.n_truth_added == 0


def test_mass_window_recentred_when_precursor_is_off():
    q = pa.table({"formula": ["C9H8O4"] * 3, "monoisotopic_mass": [180.0423] * 3, "ionmode": ["positive"] * 3,
                  "precursor_mz": [181.0496, 181.0, 181.0496], "adduct": ["[M+H]+", "[M+H]+", None]})
    table, n_no_mass, n_recentred = query_table(q, "mass", 10.0)
    assert (n_no_mass, n_recentred) == (1, 2)
    lo, hi = table.column("lo").to_numpy(), table.column("hi").to_numpy()
    m0 = neutral_mass(181.0496, "[M+H]+")
    assert (lo[0], hi[0]) == pytest.approx(ppm_window(m0, 10.0))      # precursor within 10 ppm: used
    assert (lo[1], hi[1]) == pytest.approx(ppm_window(180.0423, 10.0))  # nominal precursor: true mass
    assert (lo[2], hi[2]) == pytest.approx(ppm_window(180.0423, 10.0))  # no adduct: true mass


def test_unknown_mode_is_refused(lake, queries):
    catalog = open_catalog(lake)
    try:
        with pytest.raises(ValueError, match="formula, mass"):
            candidate_sets(catalog, queries, "smiles")
    finally:
        catalog.close()
