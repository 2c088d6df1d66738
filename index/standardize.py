"""Standardize raw structure records by the ingest rules (``speclake.pipelines.normalize.structure``)."""
from __future__ import annotations

import logging
from typing import Any, Callable

import pyarrow as pa

from speclake.index.sources import RAW_RECORDS

log = logging.getLogger(__name__)

#: The columns standardization adds (null for a record it could not standardize).
STANDARDIZED = pa.schema(
    [
        pa.field("inchikey", pa.string()),
        pa.field("inchikey14", pa.string()),
        pa.field("smiles", pa.string()),
        pa.field("formula", pa.string()),
        pa.field("monoisotopic_mass", pa.float64()),
    ]
)

#: Why a record is not standardized (null when it is), last in every standardized record.
REASON_COLUMNS = ("reason_code", "reason", "raw_excerpt")

#: What :func:`standardize_batch` (and so :class:`StandardizeActor`) emits: the raw record columns
#: without the mol block, the :data:`STANDARDIZED` columns, then :data:`REASON_COLUMNS`.
STANDARDIZED_RECORDS = pa.schema(
    [
        *(f for f in RAW_RECORDS if f.name not in ("molblock", *REASON_COLUMNS)),
        *STANDARDIZED,
        *(RAW_RECORDS.field(name) for name in REASON_COLUMNS),
    ]
)


def _standardizer() -> tuple[Callable[..., Any], type[Exception]]:
    """The ingest's standardization function and its error type (imported lazily)."""
    from speclake.pipelines.normalize.errors import NormalizationError
    from speclake.pipelines.normalize.structure import standardize_structure

    return standardize_structure, NormalizationError


def standardize_record(smiles: str | None, inchi: str | None, molblock: str | None,
                       standardize: Callable[..., Any], error_type: type[Exception]) -> dict[str, Any]:
    """One record: the standardized fields, or ``reason_code``/``reason`` saying why not."""
    if molblock:
        from rdkit import Chem

        mol = Chem.MolFromMolBlock(molblock, sanitize=True)
        if mol is None:
            return {"reason_code": "invalid_molblock", "reason": "RDKit cannot parse or sanitize the mol block"}
        smiles, inchi = Chem.MolToSmiles(mol), None
    try:
        s = standardize(smiles, inchi)
    except error_type as exc:
        return {"reason_code": getattr(exc, "reason_code", "invalid_structure"), "reason": str(exc) or type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - nothing is lost: an unexpected failure is quarantined with its text
        log.warning("standardization failed unexpectedly for %r: %r", smiles, exc)
        return {"reason_code": "standardize_error", "reason": f"{type(exc).__name__}: {exc}"}
    return {"inchikey": s.inchikey, "inchikey14": s.inchikey14, "smiles": s.smiles, "formula": s.formula,
            "monoisotopic_mass": float(s.monoisotopic_mass)}


def standardize_batch(batch: pa.Table) -> pa.Table:
    """Ray Data UDF: :data:`~speclake.index.sources.RAW_RECORDS` in, :data:`STANDARDIZED_RECORDS` out (same rows).

    Records already marked unreadable keep their reason; others that fail get one here.
    """
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    standardize, error_type = _standardizer()
    cols = {name: [] for name in STANDARDIZED.names}
    codes = batch.column("reason_code").to_pylist()
    reasons = batch.column("reason").to_pylist()
    excerpts = batch.column("raw_excerpt").to_pylist()
    for i, (smi, inchi, block) in enumerate(zip(batch.column("smiles_in").to_pylist(),
                                                 batch.column("inchi_in").to_pylist(),
                                                 batch.column("molblock").to_pylist())):
        out: dict[str, Any] = {}
        if codes[i] is None:
            out = standardize_record(smi, inchi, block, standardize, error_type)
            codes[i] = out.get("reason_code")
            reasons[i] = out.get("reason")
            if codes[i] is not None and excerpts[i] is None:
                excerpts[i] = (block or smi or inchi or "")[:300]
        for name in STANDARDIZED.names:
            cols[name].append(out.get(name))
    result = batch.drop_columns(["molblock", *REASON_COLUMNS])
    for field in STANDARDIZED:
        result = result.append_column(field, pa.array(cols[field.name], type=field.type))
    result = result.append_column("reason_code", pa.array(codes, pa.string()))
    result = result.append_column("reason", pa.array(reasons, pa.string()))
    return result.append_column("raw_excerpt", pa.array(excerpts, pa.string()))


class StandardizeActor:
    """Ray Data actor form of :func:`standardize_batch` (its own operator, so reading is not fused into it)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        return standardize_batch(batch)
