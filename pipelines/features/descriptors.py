"""Structure descriptors per compound: Morgan/ECFP on-bits, MACCS keys, substructure keys, ChemOnt classes.

:func:`compute_descriptors` works on one SMILES; :func:`descriptor_batches` is the
mapInArrow form over ``compounds`` rows. Fingerprints are stored as sorted on-bit
indices (``list<int16>``), see :mod:`.tables`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from .prepare import Skip, rows_to_batches
from .substructures import substructure_indices, substructure_names

log = logging.getLogger(__name__)


class DescriptorSettings(BaseModel):
    """Fingerprint settings."""

    model_config = ConfigDict(extra="forbid")

    morgan_radius: int = 2
    morgan_bits: int = 2048


@dataclass(frozen=True)
class Descriptors:
    """On-bits of one structure."""

    morgan_on: list[int]
    maccs_on: list[int]
    substructure_on: list[int]

    @property
    def substructures(self) -> list[str]:
        return substructure_names(self.substructure_on)


def morgan_on_bits(mol: Any, radius: int, n_bits: int) -> list[int]:
    """Sorted on-bits of the Morgan (ECFP-like) fingerprint."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    return sorted(int(b) for b in gen.GetFingerprint(mol).GetOnBits())


def maccs_on_bits(mol: Any) -> list[int]:
    """Sorted on-bits of RDKit's MACCS keys (167 bits, bit 0 unused)."""
    from rdkit.Chem import MACCSkeys

    return sorted(int(b) for b in MACCSkeys.GenMACCSKeys(mol).GetOnBits())


def compute_descriptors(smiles: str | None, settings: DescriptorSettings) -> Descriptors | Skip:
    """Descriptors of one structure, or a :class:`Skip` when the SMILES is missing or unparsable."""
    from rdkit import Chem, RDLogger

    if not smiles:
        return Skip("missing_smiles", "the compound has no SMILES")
    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return Skip("invalid_smiles", f"RDKit cannot parse SMILES {smiles[:200]!r}")
    return Descriptors(morgan_on_bits(mol, settings.morgan_radius, settings.morgan_bits), maccs_on_bits(mol),
                       substructure_indices(mol))


#: Output of :func:`descriptor_batches`: descriptor rows (kind ``row``) and skips (kind ``skip``).
DESCRIPTOR_OUT = pa.schema([
    pa.field("kind", pa.string()),
    pa.field("inchikey", pa.string()),
    pa.field("inchikey14", pa.string()),
    pa.field("morgan_on", pa.list_(pa.int16())),
    pa.field("maccs_on", pa.list_(pa.int16())),
    pa.field("substructure_on", pa.list_(pa.int16())),
    pa.field("substructures", pa.list_(pa.string())),
    pa.field("chemont_id", pa.string()),
    pa.field("chemont_classes", pa.list_(pa.string())),
    pa.field("skip_code", pa.string()),
    pa.field("skip_reason", pa.string()),
])


def descriptor_row(row: dict[str, Any], settings: DescriptorSettings) -> dict[str, Any]:
    """One ``compounds`` row in, one :data:`DESCRIPTOR_OUT` row out (never raises for bad data)."""
    base = {"inchikey": row["inchikey"], "inchikey14": row.get("inchikey14"), "chemont_id": row.get("chemont_id"),
            "chemont_classes": row.get("chemont_classes")}
    try:
        d = compute_descriptors(row.get("smiles"), settings)
    except Exception as exc:  # RDKit can fail in unexpected ways on odd input
        log.exception("descriptors failed for %s", row["inchikey"])
        d = Skip("internal_error", f"{type(exc).__name__}: {exc}")
    if isinstance(d, Skip):
        return {**base, "kind": "skip", "skip_code": d.code, "skip_reason": d.reason}
    return {**base, "kind": "row", "morgan_on": d.morgan_on, "maccs_on": d.maccs_on,
            "substructure_on": d.substructure_on, "substructures": d.substructures}


def descriptor_batches(batches: Iterator[pa.RecordBatch], *, settings_json: str) -> Iterator[pa.RecordBatch]:
    """mapInArrow body: ``compounds`` rows in, :data:`DESCRIPTOR_OUT` rows out."""
    settings = DescriptorSettings.model_validate_json(settings_json)

    def rows() -> Iterator[dict[str, Any]]:
        for batch in batches:
            for row in batch.to_pylist():
                yield descriptor_row(row, settings)

    yield from rows_to_batches(rows(), DESCRIPTOR_OUT, batch_rows=512)
