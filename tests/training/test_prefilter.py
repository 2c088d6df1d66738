"""The evaluation's structure prefilter: candidate lists from the filtered file equal those from the whole file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from speclake.training.candidates import candidate_sets
from speclake.training.prefilter import candidate_windows, in_windows, judge_smiles, prefilter_structure_files
from tests.conftest import REPO

SHIPPED = REPO / "tests" / "data" / "zinc_moses_400.smi"
PROTON = 1.007276

#: Lines whose standardized formula differs from the parsed one: they must survive the filter unjudged.
ODD_LINES = [
    "CC(=O)[O-].[Na+]\todd_sodium_acetate",      # salt: largest fragment + uncharge -> acetic acid C2H4O2
    "C[N+](C)(C)CC(=O)[O-]\todd_betaine",         # zwitterion
    "[13CH3]C(=O)O\todd_labelled_acetic_acid",    # isotope label
    "CC(=O)O\todd_acetic_acid",
    "not_a_smiles\todd_garbage",
]


def test_windows_merge_and_membership() -> None:
    """Overlapping windows merge; membership is inclusive at both ends and false outside."""
    q = pa.table({"formula": ["C2H4O2", None, "C6H6"], "monoisotopic_mass": [60.02, 100.0, 100.00001],
                  "precursor_mz": [None, None, None], "adduct": [None, None, None], "ionmode": [None] * 3})
    formulas, lo, hi = candidate_windows([q], ppm=10)
    assert formulas == {"C2H4O2", "C6H6"} and len(lo) == 2  # the two windows near 100 merged
    assert in_windows(np.array([60.02, 100.0 - 100e-5, 100.00001 + 100.00001e-5, 99.99, 200.0]), lo, hi).tolist() == [
        True, True, True, False, False]


def test_odd_structures_are_not_judged() -> None:
    """Salts, charges, isotopes and unparsable SMILES are kept for the standardizer to judge."""
    judged, formulas, masses = judge_smiles([line.split("\t")[0] for line in ODD_LINES])
    assert judged.tolist() == [False, False, False, True, False]
    assert formulas[3] == "C2H4O2" and masses[3] == pytest.approx(60.02113, abs=1e-5)


@pytest.mark.ray
def test_candidate_lists_equal_those_of_the_whole_file(ray_session, tmp_path: Path) -> None:
    """Indexes over the whole file and over the prefiltered file give identical candidate lists in both modes,
    while the filtered file is much smaller."""
    from speclake.index.build import build_index
    from speclake.index.search import StructureIndex, index_dir
    from speclake.index.settings import IndexSettings

    whole = tmp_path / "structures.smi"
    whole.write_text(SHIPPED.read_text() + "\n".join(ODD_LINES) + "\n")
    settings = IndexSettings(num_cpus=2)
    build_index([whole], tmp_path / "full", settings=settings)
    with StructureIndex.open(index_dir(tmp_path / "full", "fingerprint")) as ix:
        rows = ix.catalog.con.sql("SELECT inchikey14, inchikey, smiles, formula, monoisotopic_mass FROM structures "
                                  "ORDER BY inchikey").to_arrow_table()
    pick = rows.take(pa.array(list(range(0, rows.num_rows, 17))))
    acetic = rows.filter(pa.compute.equal(rows.column("formula"), "C2H4O2"))
    queries = pa.concat_tables([pick, acetic.slice(0, 1)])
    mz = [m + PROTON + (0.0005 if i % 2 else 0.0) for i, m in enumerate(queries.column("monoisotopic_mass").to_pylist())]
    queries = queries.append_column("precursor_mz", pa.array(mz)).append_column(
        "adduct", pa.array(["[M+H]+"] * queries.num_rows)).append_column("ionmode", pa.array(["positive"] * queries.num_rows))

    [filtered] = prefilter_structure_files([whole], [queries], 10.0, tmp_path / "cache")
    n_whole = sum(1 for _ in open(whole))
    n_filtered = sum(1 for _ in open(filtered))
    assert n_filtered < n_whole / 3
    assert all(name in filtered.read_text() for name in ("odd_sodium_acetate", "odd_betaine", "odd_garbage"))
    build_index([filtered], tmp_path / "filtered", settings=settings)

    def lists(lake: Path, mode: str) -> set[tuple[int, str]]:
        with StructureIndex.open(index_dir(lake, "fingerprint")) as ix:
            sets = candidate_sets(ix.catalog, queries, mode, ppm=10.0)
        t = sets.table
        return set(zip(t.column("query").to_pylist(), t.column("inchikey14").to_pylist()))

    for mode in ("formula", "mass"):
        full, cut = lists(tmp_path / "full", mode), lists(tmp_path / "filtered", mode)
        assert full == cut, f"{mode}: candidate lists differ"
        assert len(full) >= queries.num_rows  # every list holds at least its true structure
    again = prefilter_structure_files([whole], [queries], 10.0, tmp_path / "cache")
    assert again == [filtered]  # cached
