"""Small chemistry helpers of the de novo stage: fingerprints, Tanimoto, formulas, InChIKeys."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)


@lru_cache(maxsize=200_000)
def _mol(smiles: str):
    return Chem.MolFromSmiles(smiles) if smiles else None


def fingerprint(smiles: str):
    """Morgan (radius 2, 2048 bits) bit vector, or None when RDKit cannot read ``smiles``."""
    mol = _mol(smiles)
    return _MORGAN.GetFingerprint(mol) if mol is not None else None


def tanimoto(a: str, b: str) -> float | None:
    """Morgan Tanimoto of two SMILES (None when either cannot be read)."""
    fa, fb = fingerprint(a), fingerprint(b)
    return DataStructs.TanimotoSimilarity(fa, fb) if fa is not None and fb is not None else None


def tanimoto_to(reference: str, smiles: Sequence[str]) -> np.ndarray:
    """Tanimoto of each of ``smiles`` to ``reference`` (NaN where unreadable)."""
    ref = fingerprint(reference)
    out = np.full(len(smiles), np.nan)
    if ref is None:
        return out
    for i, s in enumerate(smiles):
        fp = fingerprint(s)
        if fp is not None:
            out[i] = DataStructs.TanimotoSimilarity(ref, fp)
    return out


def formula_of(smiles: str) -> str | None:
    """Neutral molecular formula (Hill order, as RDKit writes it), None when unreadable."""
    mol = _mol(smiles)
    return rdMolDescriptors.CalcMolFormula(mol) if mol is not None else None


def same_formula(a: str | None, b: str | None) -> bool:
    """Whether two formula strings name the same element counts (Hill spelling normalised)."""
    from speclake.pipelines.features.formula import normalize_formula

    if not a or not b:
        return False
    try:
        return normalize_formula(a) == normalize_formula(b)
    except ValueError:
        return False


def inchikey_of(smiles: str) -> str | None:
    """Full InChIKey of a SMILES (None when RDKit cannot make one)."""
    mol = _mol(smiles)
    key = Chem.MolToInchiKey(mol) if mol is not None else None
    return key or None


__all__ = ["fingerprint", "formula_of", "inchikey_of", "same_formula", "tanimoto", "tanimoto_to"]
