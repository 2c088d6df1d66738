"""Tests of index.tables: the index's lake tables are registered with the lake schema registry."""
from __future__ import annotations

from speclake.index import tables
from speclake.lake.schema import QUARANTINE, TABLES


def test_tables_registered() -> None:
    """index_structures and index_quarantine are declared; the quarantine has the lake's quarantine columns."""
    assert TABLES["index_structures"] is tables.INDEX_STRUCTURES_SPEC
    assert TABLES["index_quarantine"].schema == QUARANTINE
    assert "faiss_id" in TABLES["index_structures"].schema.names
