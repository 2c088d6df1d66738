"""Structure standardization with RDKit: one call per unique reported structure, never per spectrum.

SMILES first (InChI as fall-back) -> MolStandardize cleanup -> largest fragment
-> uncharge -> canonical isomeric SMILES, InChI, InChIKey, formula and
monoisotopic mass. RDKit's own log output is blocked; the reason a structure
fails is read from RDKit (``DetectChemistryProblems``) and raised as
:class:`InvalidStructureError`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from rdkit import Chem, rdBase
from rdkit.Chem import rdMolDescriptors
from rdkit.Chem.MolStandardize import rdMolStandardize

from speclake.pipelines.normalize.adduct import Adduct, adduct_mz
from speclake.pipelines.normalize.errors import InvalidStructureError, NormalizationError
from speclake.pipelines.normalize.masses import ELECTRON_MASS

log = logging.getLogger(__name__)

_CHARGED_ATOM = Chem.MolFromSmarts("[!+0]")  # any atom with a non-zero formal charge (9x faster than a Python loop)


@dataclass(frozen=True)
class StandardizedStructure:
    """A standardized molecule: the identity columns of the ``compounds`` table.

    ``monoisotopic_mass`` is the sum of the monoisotopic masses of the atoms; for a molecule that
    stays charged after uncharging (quaternary ammonium) it is *not* corrected for the missing
    electron, so ``adduct_mz(monoisotopic_mass, [M]+)`` is the ion's m/z.
    """

    inchikey: str
    inchikey14: str
    smiles: str
    inchi: str
    formula: str
    monoisotopic_mass: float


def _parse(smiles: str | None, inchi: str | None) -> Chem.Mol:
    """Parse SMILES (else InChI) into a sanitized molecule or raise with RDKit's reason."""
    reasons: list[str] = []
    smiles = (smiles or "").strip()
    inchi = (inchi or "").strip()
    if smiles:
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
        if mol is None:
            reasons.append(f"SMILES {smiles!r} is not valid SMILES syntax")
        else:
            problems = Chem.DetectChemistryProblems(mol)
            if problems:
                reasons.append(f"SMILES {smiles!r}: {problems[0].Message()}")
            else:
                try:
                    Chem.SanitizeMol(mol)
                    return mol
                except Exception as exc:  # RDKit raises its own sanitize exception types
                    reasons.append(f"SMILES {smiles!r}: {exc}")
    if inchi:
        if not inchi.startswith("InChI="):
            inchi = "InChI=" + inchi
        mol = Chem.MolFromInchi(inchi, sanitize=True, removeHs=True)
        if mol is not None and mol.GetNumAtoms() > 0:
            if reasons:
                log.debug("structure: %s; used the InChI instead", reasons[0])
            return mol
        reasons.append(f"InChI {inchi[:80]!r} could not be parsed")
    if not reasons:
        raise InvalidStructureError("record has neither SMILES nor InChI")
    raise InvalidStructureError("; ".join(reasons))


@dataclass(frozen=True)
class _Standardizers:
    metal_disconnector: Any
    normalizer: Any
    reionizer: Any
    fragment_chooser: Any
    uncharger: Any


@lru_cache(maxsize=1)
def _standardizers() -> _Standardizers:
    """RDKit's standardizer objects, built once per process (building the Normalizer parses its
    transforms: 40 % of what ``rdMolStandardize.Cleanup`` costs per molecule)."""
    return _Standardizers(rdMolStandardize.MetalDisconnector(), rdMolStandardize.Normalizer(),
                          rdMolStandardize.Reionizer(), rdMolStandardize.LargestFragmentChooser(preferOrganic=True),
                          rdMolStandardize.Uncharger())


def _cleanup(mol: Chem.Mol) -> Chem.Mol:
    """``rdMolStandardize.Cleanup`` with reused objects: the same steps as RDKit's ``cleanupInPlace``
    (remove Hs, disconnect metals, normalize, reionize, stereo perception with cleanIt and force);
    a test checks it gives Cleanup's molecule."""
    std = _standardizers()
    out = Chem.RWMol(Chem.RemoveHs(mol))
    std.metal_disconnector.DisconnectInPlace(out)
    std.normalizer.normalizeInPlace(out)
    std.reionizer.reionizeInPlace(out)
    Chem.AssignStereochemistry(out, cleanIt=True, force=True)
    return out


def standardize_structure(smiles: str | None, inchi: str | None) -> StandardizedStructure:
    """Standardize a reported structure (SMILES, else InChI) and compute its identity columns.

    Raises :class:`InvalidStructureError` (reason_code ``invalid_structure``) for missing, unparseable
    or chemically invalid input, naming RDKit's reason.
    """
    with rdBase.BlockLogs():
        mol = _parse(smiles, inchi)
        try:
            mol = _cleanup(mol)
            if len(Chem.GetMolFrags(mol)) > 1:  # one fragment: the chooser would return it unchanged
                mol = _standardizers().fragment_chooser.choose(mol)
            if mol.HasSubstructMatch(_CHARGED_ATOM):  # nothing to neutralize otherwise
                mol = _standardizers().uncharger.uncharge(mol)
            Chem.SanitizeMol(mol)
        except Exception as exc:  # RDKit raises its own exception types
            raise InvalidStructureError(f"standardization of {(smiles or inchi or '')[:80]!r} failed: {exc}") from None
        if mol.GetNumAtoms() == 0:
            raise InvalidStructureError(f"structure {(smiles or inchi or '')[:80]!r} has no atoms")
        canonical = Chem.MolToSmiles(mol, isomericSmiles=True)
        std_inchi = Chem.MolToInchi(mol)
        if not std_inchi:
            raise InvalidStructureError(f"no InChI could be computed for {canonical!r}")
        key = Chem.InchiToInchiKey(std_inchi)
        if not key:
            raise InvalidStructureError(f"no InChIKey could be computed for {canonical!r}")
    formula = rdMolDescriptors.CalcMolFormula(mol, separateIsotopes=True, abbreviateHIsotopes=True)  # C11H11D3O2
    charge = Chem.GetFormalCharge(mol)
    mass = rdMolDescriptors.CalcExactMolWt(mol) + charge * ELECTRON_MASS  # RDKit subtracts electrons; undo
    return StandardizedStructure(key, key[:14], canonical, std_inchi, formula, mass)


def standardize_structures(pairs: Iterable[tuple[str | None, str | None]]) -> dict[tuple[str | None, str | None],
                                                                                    StandardizedStructure | NormalizationError]:
    """Standardize each distinct (smiles, inchi) pair once: the result or the error, by pair."""
    out: dict[tuple[str | None, str | None], StandardizedStructure | NormalizationError] = {}
    for pair in pairs:
        if pair in out:
            continue
        try:
            out[pair] = standardize_structure(*pair)
        except NormalizationError as exc:
            out[pair] = exc
    return out


def inchikey_mismatch(reported: str | None, computed: str) -> bool | None:
    """Whether a reported InChIKey disagrees with the computed one in the first (skeleton) block;
    None when nothing is reported."""
    text = (reported or "").strip().upper()
    if not text:
        return None
    return text.split("-")[0] != computed.strip().upper().split("-")[0]


def precursor_ppm_error(neutral_mass: float, adduct: Adduct, precursor_mz: float) -> float:
    """Mass error (ppm) of a measured precursor m/z against ``adduct`` of a molecule of ``neutral_mass``."""
    expected = adduct_mz(neutral_mass, adduct)
    return (precursor_mz - expected) / expected * 1e6
