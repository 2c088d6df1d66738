"""Structure descriptors: Morgan/MACCS on-bits equal RDKit's, readable substructure keys, bad SMILES skipped."""
from __future__ import annotations

from speclake.pipelines.features.descriptors import DescriptorSettings, compute_descriptors, descriptor_row
from speclake.pipelines.features.prepare import Skip
from speclake.pipelines.features.substructures import SUBSTRUCTURES, compiled_substructures


def test_every_smarts_compiles_and_names_are_unique() -> None:
    """The substructure dictionary compiles in RDKit and no name is used twice."""
    assert len(compiled_substructures()) == len(SUBSTRUCTURES)
    names = [n for n, _ in SUBSTRUCTURES]
    assert len(set(names)) == len(names)


def test_morgan_and_maccs_bits_match_rdkit() -> None:
    """On-bits are exactly RDKit's Morgan (radius 2, 2048) and MACCS on-bits of phenylalanine."""
    from rdkit import Chem
    from rdkit.Chem import MACCSkeys, rdFingerprintGenerator

    smiles = "N[C@@H](Cc1ccccc1)C(=O)O"
    mol = Chem.MolFromSmiles(smiles)
    d = compute_descriptors(smiles, DescriptorSettings())
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    assert d.morgan_on == sorted(gen.GetFingerprint(mol).GetOnBits())
    assert d.maccs_on == sorted(MACCSkeys.GenMACCSKeys(mol).GetOnBits())


def test_substructure_keys_hand_checked() -> None:
    """Phenylalanine has benzyl, carboxylic acid and alpha-amino acid; caffeine has none of them."""
    phe = compute_descriptors("N[C@@H](Cc1ccccc1)C(=O)O", DescriptorSettings()).substructures
    assert {"benzyl", "benzene ring", "carboxylic acid", "alpha-amino acid"} <= set(phe)
    caffeine = compute_descriptors("Cn1c(=O)c2c(ncn2C)n(C)c1=O", DescriptorSettings()).substructures
    assert not {"benzyl", "carboxylic acid", "alpha-amino acid"} & set(caffeine)


def test_bad_smiles_become_skip_rows() -> None:
    """Missing or unparsable SMILES give a skip with a reason code, never an exception."""
    assert isinstance(compute_descriptors(None, DescriptorSettings()), Skip)
    row = descriptor_row({"inchikey": "X", "smiles": "C1CC(("}, DescriptorSettings())
    assert row["kind"] == "skip" and row["skip_code"] == "invalid_smiles"
