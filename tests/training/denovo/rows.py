"""Real ``denovo_candidates`` / ``denovo_errors`` rows committed through the run contract, as ``speclake denovo``
writes them, without training a model: for the export and report tests.

:func:`proposals` makes one scan's ranked rows from SMILES (InChIKey and formula by RDKit, scores
descending); :func:`write_denovo_run` commits them and error rows as one ``denovo`` run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

MODEL_ID = "denovo-test-model"


def proposals(source_file: str | Path, query_id: str, smiles: Iterable[str], *, precursor_mz: float = 300.0,
              near: str | None = None, target_formula: str | None = None, formula_source: str | None = None,
              ) -> list[dict[str, Any]]:
    """Ranked ``denovo_candidates`` rows (without study and run id) of one scan, best first."""
    from speclake.training.denovo.chem import formula_of, inchikey_of

    rows = []
    for rank, s in enumerate(smiles, 1):
        key = inchikey_of(s)
        rows.append({"source_file": str(source_file), "query_id": query_id, "record_locator": f"{query_id}#",
                     "precursor_mz": precursor_mz, "ionmode": "positive", "rank": rank, "smiles": s,
                     "inchikey": key, "inchikey14": key[:14] if key else None, "formula": formula_of(s),
                     "score": -1.5 * rank, "method": "latent_likelihood", "near_smiles": near,
                     "target_formula": target_formula, "formula_source": formula_source, "model_id": MODEL_ID})
    return rows


def error(source_file: str | Path, query_id: str | None, reason_code: str, reason: str,
          stage: str = "denovo") -> dict[str, Any]:
    """One ``denovo_errors`` row (without study and run id)."""
    return {"source_file": str(source_file), "query_id": query_id, "record_locator": f"{query_id}#",
            "scan_number": None, "stage": stage, "reason_code": reason_code, "reason": reason}


def write_denovo_run(lake: str | Path, study: str, candidates: list[dict[str, Any]],
                     errors: Iterable[dict[str, Any]] = ()) -> str:
    """Commit ``candidates`` and ``errors`` of ``study`` as one ``denovo`` run (``Run.write_part`` +
    ``commit``, as the job does; columns the rows lack are null); returns the run id."""
    from speclake.lake.catalog import Lake
    from speclake.lake.run import Run
    from speclake.lake.schema import table_spec

    with Run(Lake(lake), "denovo", lock=None) as run:
        const = {"study": study, "run_id": run.run_id}
        for table, rows in (("denovo_candidates", candidates), ("denovo_errors", list(errors))):
            schema = table_spec(table).schema  # the declared one, whatever columns it has now
            full = [{**const, **r} for r in rows]
            run.write_part(table, pa.table({f.name: [r.get(f.name) for r in full] for f in schema}, schema=schema))
        run.commit()
    return run.run_id
