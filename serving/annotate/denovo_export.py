"""Export a study's de novo proposals with the column names analysts already parse (``speclake export denovo``).

One row per ``denovo_candidates`` row of the study (ranks ``<= top`` when given), ordered by file, query
id, run and rank, with two groups of columns:

* speclake's own: every column of ``denovo_candidates`` (:mod:`speclake.training.denovo.tables`), read
  as ``d.*`` so that columns a later schema adds (evidence of a re-ranking, say) come along;
* SIRIUS-style, as SIRIUS 6 names its MSNovelist candidates (``denovo_structure_identifications.tsv``):
  ``id`` and ``mappingFeatureId`` (the query id), ``structurePerIdRank`` (the rank), ``ModelScore`` (the
  score), ``molecularFormula``, ``InChIkey2D`` (InChIKey first block), ``name`` (the lake compound of the
  same InChIKey: empty for a structure the lake does not hold), ``precursorMz`` and ``ionMass`` (the
  precursor m/z), and ``tanimotoToParent`` (Morgan Tanimoto of the proposal to the ``--near`` parent;
  empty for free generation). ``smiles``, ``rank`` and ``score`` are speclake's columns of the same name.

Written as ``.tsv``, ``.csv`` or ``.parquet`` (by the file name) by :func:`.export.write_export`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pyarrow as pa

log = logging.getLogger(__name__)

#: (output name, SQL expression over ``denovo_candidates d`` LEFT JOIN ``compounds c``).
SIRIUS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "d.query_id"),
    ("structurePerIdRank", "d.rank"),
    ("ModelScore", "d.score"),
    ("molecularFormula", "d.formula"),
    ("InChIkey2D", "d.inchikey14"),
    ("name", "c.compound_name"),
    ("precursorMz", "d.precursor_mz"),
    ("ionMass", "d.precursor_mz"),
    ("mappingFeatureId", "d.query_id"),
)

#: Computed in Python after the query: Morgan Tanimoto of ``smiles`` to ``near_smiles``.
PARENT_TANIMOTO = "tanimotoToParent"


def parent_tanimoto(smiles: list[str | None], parents: list[str | None]) -> pa.Array:
    """Morgan Tanimoto of each proposal to its parent (null without a parent or where RDKit reads neither)."""
    from speclake.training.denovo.chem import tanimoto

    return pa.array([tanimoto(s, p) if s and p else None for s, p in zip(smiles, parents)], pa.float64())


def denovo_export_table(lake: str | os.PathLike[str], study: str, *, top: int | None = None) -> pa.Table:
    """The de novo export table of ``study`` (ValueError naming the studies with proposals when it has none)."""
    from speclake.lake.sql import connect
    from speclake.serving.annotate.export import unknown_study

    if top is not None and top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    con = connect(lake)
    try:
        own = [row[0] for row in con.sql("DESCRIBE denovo_candidates").fetchall()]
        extra = [(name, expr) for name, expr in SIRIUS_COLUMNS if name not in own]
        select = ", ".join(f'{expr} AS "x{i}"' for i, (_, expr) in enumerate(extra))
        where = "d.study = ?" + (" AND d.rank <= ?" if top is not None else "")
        table = con.sql(f"""
            SELECT d.*, {select}
            FROM denovo_candidates d
            LEFT JOIN compounds c ON c.inchikey = d.inchikey
            WHERE {where}
            ORDER BY d.source_file, d.query_id, d.run_id, d.rank""",
                        params=[study] + ([top] if top is not None else [])).to_arrow_table()
        if table.num_rows == 0:
            raise unknown_study(con, "denovo_candidates", study, lake, "de novo proposals", "speclake denovo")
    finally:
        con.close()
    table = table.rename_columns(own + [name for name, _ in extra])
    if PARENT_TANIMOTO not in own:
        table = table.append_column(PARENT_TANIMOTO, parent_tanimoto(table.column("smiles").to_pylist(),
                                                                     table.column("near_smiles").to_pylist()))
    return table


def export_denovo(lake: str | os.PathLike[str], study: str, out: str | os.PathLike[str], *,
                  top: int | None = None) -> tuple[Path, int]:
    """Export ``study``'s de novo proposals to ``out``; returns the path and the rows written."""
    from speclake.serving.annotate.export import export_path, write_export

    export_path(out)  # a bad file name fails before the lake is read
    table = denovo_export_table(lake, study, top=top)
    path = write_export(table, out)
    log.info("exported %d de novo proposals of %s to %s", table.num_rows, study, path)
    return path, table.num_rows


__all__ = ["PARENT_TANIMOTO", "SIRIUS_COLUMNS", "denovo_export_table", "export_denovo", "parent_tanimoto"]
