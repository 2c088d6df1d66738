"""A readable SMARTS dictionary of substructures (functional groups and ring systems).

Used as the substructure-key descriptor (:mod:`.descriptors`) and as the
consequents of the mined association rules (:mod:`.patterns`). Names are
stable: a descriptor's index is its position in :data:`SUBSTRUCTURES`, so only
ever append.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

#: (readable name, SMARTS); index = position. Append only.
SUBSTRUCTURES: tuple[tuple[str, str], ...] = (
    ("benzene ring", "c1ccccc1"),
    ("benzyl", "[CX4;H2,H1;!R]-c1ccccc1"),
    ("phenyl (monosubstituted)", "[cH]1[cH][cH][cH][cH]c1-[!#1]"),
    ("toluene-like methylarene", "[CH3]-c1ccccc1"),
    ("phenol", "[OX2H]-c"),
    ("aryl methyl ether", "[CH3]-[OX2]-c"),
    ("catechol", "c([OX2H])c[OX2H]"),
    ("aniline", "[NX3;H2,H1;!$(NC=O)]-c"),
    ("pyridine", "n1ccccc1"),
    ("pyrimidine", "n1cnccc1"),
    ("imidazole", "c1ncc[nH]1"),
    ("indole", "c1ccc2[nH]ccc2c1"),
    ("furan", "o1cccc1"),
    ("thiophene", "s1cccc1"),
    ("naphthalene", "c1ccc2ccccc2c1"),
    ("purine", "c1ncc2nc[nH]c2n1"),
    ("coumarin", "O=c1ccc2ccccc2o1"),
    ("flavone backbone", "O=c1cc(-c2ccccc2)oc2ccccc12"),
    ("steroid core", "C1CCC2C(C1)CCC1C2CCC2CCCC12"),
    ("carboxylic acid", "[CX3](=O)[OX2H1]"),
    ("carboxylate ester", "[#6][CX3](=O)[OX2][#6]"),
    ("lactone", "[#6;R][CX3;R](=O)[OX2;R][#6;R]"),
    ("amide", "[NX3][CX3](=[OX1])[#6]"),
    ("lactam", "[NX3;R][CX3;R](=[OX1])"),
    ("urea", "[NX3][CX3](=[OX1])[NX3]"),
    ("carbamate", "[NX3][CX3](=[OX1])[OX2]"),
    ("aldehyde", "[CX3H1](=O)[#6]"),
    ("ketone", "[#6][CX3](=O)[#6]"),
    ("primary alcohol", "[CH2][OX2H]"),
    ("secondary alcohol", "[CH1]([#6])([#6])[OX2H]"),
    ("tertiary alcohol", "[CX4]([#6])([#6])([#6])[OX2H]"),
    ("dialkyl ether", "[CX4][OX2][CX4]"),
    ("primary amine", "[NX3;H2][CX4]"),
    ("secondary amine", "[NX3;H1]([CX4])[CX4]"),
    ("tertiary amine", "[NX3;H0;!$(NC=O)]([CX4])([CX4])[CX4]"),
    ("quaternary ammonium", "[NX4+]"),
    ("N-methyl", "[CH3][NX3,NX4+]"),
    ("nitrile", "[CX2]#[NX1]"),
    ("nitro", "[$([NX3](=O)=O),$([NX3+](=O)[O-])]"),
    ("azo", "[#6][NX2]=[NX2][#6]"),
    ("sulfonamide", "[SX4](=[OX1])(=[OX1])[NX3]"),
    ("sulfonic acid / sulfate", "[SX4](=[OX1])(=[OX1])[OX2H,OX1-]"),
    ("thioether", "[#6][SX2][#6]"),
    ("thiol", "[SX2H]"),
    ("phosphate", "[PX4](=[OX1])([OX2])([OX2])"),
    ("fluoro", "[F]"),
    ("trifluoromethyl", "C(F)(F)F"),
    ("chloro", "[Cl]"),
    ("aryl chloride", "c[Cl]"),
    ("bromo", "[Br]"),
    ("iodo", "[I]"),
    ("alkene", "[CX3]=[CX3]"),
    ("alkyne", "[CX2]#[CX2]"),
    ("isopropyl", "[CH3][CH1]([CH3])[#6]"),
    ("tert-butyl", "[CH3]C([CH3])([CH3])[#6]"),
    ("long alkyl chain (C6)", "[CH2][CH2][CH2][CH2][CH2][CH2]"),
    ("glycoside (hexose)", "[OX2;R]1[CX4;R][CX4;R]([OX2])[CX4;R]([OX2])[CX4;R]([OX2])[CX4;R]1"),
    ("pyranose ring", "C1CCOCC1"),
    ("piperidine", "C1CCNCC1"),
    ("piperazine", "C1CNCCN1"),
    ("morpholine", "C1COCCN1"),
    ("pyrrolidine", "C1CCNC1"),
    ("cyclohexane", "C1CCCCC1"),
    ("epoxide", "C1OC1"),
    ("alpha-amino acid", "[NX3][CX4][CX3](=O)[OX2H,OX1-]"),
    ("choline phosphate", "C[N+](C)(C)CCOP(=O)"),
    ("fatty acyl ester", "[CH2][CH2][CX3](=O)[OX2][CX4]"),
    ("phenylpropanoid (cinnamoyl)", "c1ccccc1[CH]=[CH]C(=O)"),
    ("methylenedioxy", "c1cc2OCOc2cc1"),
    ("hydroxamic / oxime", "[NX3,NX2][OX2H]"),
    ("guanidine", "[NX3][CX3](=[NX2])[NX3]"),
    ("triazine", "c1ncncn1"),
    ("organophosphorus thioate", "[PX4](=S)"),
)


@lru_cache(maxsize=1)
def compiled_substructures() -> tuple[Any, ...]:
    """RDKit query molecules of :data:`SUBSTRUCTURES` (compiled once per process)."""
    from rdkit import Chem

    out = []
    for name, smarts in SUBSTRUCTURES:
        query = Chem.MolFromSmarts(smarts)
        if query is None:
            raise ValueError(f"invalid SMARTS for substructure {name!r}: {smarts}")
        out.append(query)
    return tuple(out)


def substructure_indices(mol: Any) -> list[int]:
    """Indices (into :data:`SUBSTRUCTURES`) of the substructures present in an RDKit molecule."""
    return [i for i, q in enumerate(compiled_substructures()) if mol.HasSubstructMatch(q)]


def substructure_names(indices: list[int]) -> list[str]:
    """Readable names of substructure indices."""
    return [SUBSTRUCTURES[i][0] for i in indices]
