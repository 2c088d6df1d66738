"""Tests of RDKit structure standardization and the structure-derived checks."""
from __future__ import annotations

import pytest

from speclake.pipelines.normalize.adduct import parse_adduct
from speclake.pipelines.normalize.errors import NormalizationError
from speclake.pipelines.normalize.structure import (
    StandardizedStructure,
    inchikey_mismatch,
    precursor_ppm_error,
    standardize_structure,
    standardize_structures,
)

CAFFEINE_SMILES = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"
CAFFEINE_KEY = "RYYVLZVUVIJVGH-UHFFFAOYSA-N"


def test_caffeine_identity_columns():
    """Caffeine: known InChIKey, formula C8H10N4O2, monoisotopic mass 194.0804."""
    st = standardize_structure(CAFFEINE_SMILES, None)
    assert isinstance(st, StandardizedStructure)
    assert st.inchikey == CAFFEINE_KEY and st.inchikey14 == CAFFEINE_KEY[:14]
    assert st.formula == "C8H10N4O2"
    assert st.monoisotopic_mass == pytest.approx(194.080376, abs=1e-5)
    assert st.inchi.startswith("InChI=1S/C8H10N4O2/")
    assert st.smiles == "Cn1c(=O)c2c(ncn2C)n(C)c1=O", "canonical SMILES"


def test_salt_is_stripped_and_carboxylate_neutralized():
    """Sodium acetate -> acetic acid (largest fragment, uncharged); caffeine HCl -> caffeine."""
    assert standardize_structure("CC(=O)[O-].[Na+]", None).smiles == "CC(=O)O"
    assert standardize_structure(CAFFEINE_SMILES + ".Cl", None).inchikey == CAFFEINE_KEY


def test_permanent_cation_mass_is_the_atom_sum():
    """Choline stays charged; its mass is the atom sum, so [M]+ gives the cation's m/z 104.1070."""
    st = standardize_structure("C[N+](C)(C)CCO", None)
    assert st.formula == "C5H14NO+"
    mz = st.monoisotopic_mass + parse_adduct("[M]+").mass_shift
    assert mz == pytest.approx(104.106990, abs=1e-5)


def test_inchi_fallback_when_smiles_missing_or_invalid():
    """An invalid or missing SMILES falls back to the InChI."""
    inchi = "InChI=1S/C8H10N4O2/c1-10-4-9-6-5(10)7(13)12(3)8(14)11(6)2/h4H,1-3H3"
    assert standardize_structure(None, inchi).inchikey == CAFFEINE_KEY
    assert standardize_structure("C1CC(", inchi).inchikey == CAFFEINE_KEY


def test_deuterated_formula_keeps_the_label():
    """A deuterated standard keeps D in its formula and its heavier mass."""
    st = standardize_structure("[2H]C([2H])([2H])C(C)OC(=O)c1ccccc1C", None)
    assert st.formula == "C11H11D3O2" and st.monoisotopic_mass == pytest.approx(181.118210, abs=1e-5)


@pytest.mark.parametrize("smiles, inchi, fragment", [
    (None, None, "neither SMILES nor InChI"),
    ("", "", "neither SMILES nor InChI"),
    ("C1CC(", None, "not valid SMILES"),
    ("c1ccccc1C(C)(C)(C)(C)C", None, "valence"),
    ("N/A", "InChI=N/A", "could not be parsed"),
])
def test_invalid_structures_raise_with_the_reason_and_no_stderr(smiles, inchi, fragment, capfd):
    """Invalid input raises invalid_structure naming RDKit's reason; RDKit prints nothing to stderr."""
    with pytest.raises(NormalizationError) as info:
        standardize_structure(smiles, inchi)
    assert info.value.reason_code == "invalid_structure"
    assert fragment.lower() in str(info.value).lower(), f"reason mentions {fragment!r}: {info.value}"
    assert capfd.readouterr().err == "", "RDKit logging is silenced"


def test_batch_form_standardizes_each_pair_once():
    """standardize_structures gives the structure or the error per distinct pair."""
    out = standardize_structures([(CAFFEINE_SMILES, None), (CAFFEINE_SMILES, None), ("C1CC(", None)])
    assert len(out) == 2
    assert out[(CAFFEINE_SMILES, None)].inchikey == CAFFEINE_KEY  # type: ignore[union-attr]
    assert isinstance(out[("C1CC(", None)], NormalizationError)


def test_inchikey_mismatch_compares_first_block():
    """Only the skeleton block counts; nothing reported gives None."""
    assert inchikey_mismatch(CAFFEINE_KEY, CAFFEINE_KEY) is False
    assert inchikey_mismatch("RYYVLZVUVIJVGH-XXXXXXXXXX-N", CAFFEINE_KEY) is False, "stereo block ignored"
    assert inchikey_mismatch("KWILGNNWGSNMPA-UHFFFAOYSA-N", CAFFEINE_KEY) is True
    assert inchikey_mismatch(None, CAFFEINE_KEY) is None and inchikey_mismatch(" ", CAFFEINE_KEY) is None


def test_precursor_ppm_error_is_hand_checkable():
    """Caffeine [M+H]+ measured at 195.0879 vs 195.087652 expected: +1.27 ppm."""
    ppm = precursor_ppm_error(194.080376, parse_adduct("[M+H]+"), 195.0879)
    assert ppm == pytest.approx((195.0879 - 195.087652) / 195.087652 * 1e6, abs=0.01)
    assert ppm == pytest.approx(1.27, abs=0.02)


#: Metals, stereo (tetrahedral and double bond), charges, N-oxides, nitro, sulfoxides, salts, explicit Hs.
CLEANUP_CASES = [
    "CN/C(=C\\[N+](=O)[O-])NCCS(=O)Cc1ccc(CN(C)C)o1", "CC(=O)C=C(C)[O][Co]([O]C(C)=CC(C)=O)[O]C(C)=CC(C)=O",
    "CN(C)C(=S)[S][Zn][S]C(=S)N(C)C", "O=C(O)[C@]1(O)C[C@@H](O)[C@H](O)[C@H](O)C1", "C/C=C/S(=O)CC(N)C(=O)O",
    "CCC/C(=N\\OCC)C1=C(O)CC(C2CCCS(=O)C2)CC1=O", "C[N+](C)(C)CC(=O)[O-]", "[Na+].CC(=O)[O-]", "[H]OC([H])([H])C",
    "c1ccc2c(c1)cc[n+]([O-])c2", "CC[N+](=O)[O-]", "N=[N+]=[N-]CC", "OC(=O)CC1(C(=O)O)CCCCC1",
]


def test_cleanup_with_reused_objects_is_rdkit_cleanup():
    """The per-process standardizer objects give exactly rdMolStandardize.Cleanup's molecule."""
    import gzip

    from rdkit import Chem
    from rdkit.Chem.MolStandardize import rdMolStandardize

    from speclake.pipelines.normalize.structure import _cleanup
    from tests.conftest import SAMPLE

    text = gzip.open(SAMPLE / "massbank_sample.txt.gz", "rt", encoding="utf-8").read()
    sample = [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("CH$SMILES:")]
    assert len(sample) > 20, "the sample has structures"
    for smiles in CLEANUP_CASES + sample:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            continue
        expected = Chem.MolToSmiles(rdMolStandardize.Cleanup(mol))
        assert Chem.MolToSmiles(_cleanup(mol)) == expected, smiles
