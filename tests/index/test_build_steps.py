"""Tests of index.build_steps helpers: SQL select lists from declared Arrow schemas."""
from __future__ import annotations

import duckdb
import pytest

from speclake.index.build_steps import select_list
from speclake.index.standardize import STANDARDIZED_RECORDS
from speclake.index.tables import INDEX_STRUCTURES


def test_empty_relation_has_declared_columns_and_types() -> None:
    """A NULL select list of a schema gives an empty relation with exactly its column names and types."""
    empty = duckdb.sql(f"SELECT {select_list(STANDARDIZED_RECORDS, default='NULL')} WHERE false").to_arrow_table()
    assert empty.num_rows == 0
    assert empty.schema.equals(STANDARDIZED_RECORDS), empty.schema


def test_expressions_in_schema_order_and_unknown_names_refused() -> None:
    """Expressions fill named columns (others are taken by name), in the schema's order; a name the schema
    lacks is a ValueError naming the columns."""
    sql = select_list(INDEX_STRUCTURES, {"faiss_id": "1", "shard": "2"})
    assert sql.startswith("(1)::BIGINT AS faiss_id, (2)::INTEGER AS shard, (inchikey)::VARCHAR AS inchikey")
    assert sql.endswith("(n_records)::BIGINT AS n_records")
    with pytest.raises(ValueError, match="not columns of the schema"):
        select_list(INDEX_STRUCTURES, {"faiss": "1"})
