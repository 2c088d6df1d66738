"""Tests of index.tables: the index's lake tables are registered with the lake schema registry."""
from __future__ import annotations

from speclake.index import tables
from speclake.lake.schema import QUARANTINE, TABLES


def test_tables_registered() -> None:
    """index_structures and index_quarantine are declared, each led by the index name; the quarantine has the
    lake's quarantine columns after it, the structures the catalog's."""
    assert TABLES["index_structures"] is tables.INDEX_STRUCTURES_SPEC
    q = TABLES["index_quarantine"].schema
    assert q.names[0] == "index_name" and q.remove(0) == QUARANTINE
    s = TABLES["index_structures"].schema
    assert s.names[0] == "index_name" and s.remove(0) == tables.INDEX_STRUCTURES and "faiss_id" in s.names
