"""The DuckDB catalog of an index version: table ``structures`` (see :data:`speclake.index.tables.INDEX_STRUCTURES`).

Used for formula and SQL filters before a FAISS search, and for id-to-structure lookups.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.duckdb"
STRUCTURE_COLUMNS = (
    "faiss_id", "shard", "inchikey", "inchikey14", "smiles", "formula", "monoisotopic_mass",
    "source", "source_file", "record_id", "compound_name", "n_records",
)


class Catalog:
    """Read-only DuckDB catalog of one index version."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"index catalog {self.path} is missing")
        self.con = duckdb.connect(str(self.path), read_only=True)

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def sql(self, query: str, params: Sequence[object] | None = None) -> pa.Table:
        """Run SQL against the catalog (table ``structures``) and return Arrow."""
        return self.con.sql(query, params=list(params) if params else None).to_arrow_table()

    def filter_ids(self, *, formula: str | None = None, mass_lo: float | None = None,
                   mass_hi: float | None = None, where: str | None = None) -> np.ndarray:
        """FAISS ids of structures matching the filters (formula exact, mass inclusive, extra SQL)."""
        clauses, params = [], []
        if formula is not None:
            clauses.append("formula = ?")
            params.append(formula)
        if mass_lo is not None:
            clauses.append("monoisotopic_mass >= ?")
            params.append(mass_lo)
        if mass_hi is not None:
            clauses.append("monoisotopic_mass <= ?")
            params.append(mass_hi)
        if where:
            clauses.append(f"({where})")
        sql = "SELECT faiss_id FROM structures" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        result = self.con.execute(sql + " ORDER BY faiss_id", params).fetchnumpy()["faiss_id"]
        return np.asarray(result, dtype=np.int64)

    def lookup(self, *, faiss_ids: Sequence[int] | None = None, inchikeys: Sequence[str] | None = None) -> pa.Table:
        """Catalog rows for FAISS ids or InChIKeys (full keys, or 14-character skeletons)."""
        if (faiss_ids is None) == (inchikeys is None):
            raise ValueError("lookup needs exactly one of faiss_ids or inchikeys")
        cols = ", ".join(STRUCTURE_COLUMNS)
        if faiss_ids is not None:
            keys = pa.table({"faiss_id": pa.array(list(faiss_ids), pa.int64())})
            self.con.register("_keys", keys)
            try:
                return self.con.sql(f"SELECT {cols} FROM structures JOIN _keys USING (faiss_id) ORDER BY faiss_id"
                                    ).to_arrow_table()
            finally:
                self.con.unregister("_keys")
        keys = pa.table({"k": pa.array(list(inchikeys or []), pa.string())})
        self.con.register("_keys", keys)
        try:
            return self.con.sql(
                f"SELECT {cols} FROM structures JOIN _keys ON inchikey = k OR inchikey14 = k ORDER BY faiss_id"
            ).to_arrow_table()
        finally:
            self.con.unregister("_keys")
