"""Lake tables owned by the index stage, registered with the lake schema registry."""
from __future__ import annotations

import pyarrow as pa

from speclake.lake.schema import QUARANTINE, TableSpec, register_table

#: One row per indexed structure of one index version (the DuckDB catalog's ``structures`` table).
INDEX_STRUCTURES = pa.schema(
    [
        pa.field("faiss_id", pa.int64(), nullable=False),   # shard serial << 32 | position in shard
        pa.field("shard", pa.int32(), nullable=False),      # shard serial
        pa.field("inchikey", pa.string(), nullable=False),
        pa.field("inchikey14", pa.string(), nullable=False),
        pa.field("smiles", pa.string(), nullable=False),    # standardized, as ingest
        pa.field("formula", pa.string(), nullable=False),
        pa.field("monoisotopic_mass", pa.float64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),    # pubchem_sdf | cid_smiles | smiles | lake
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("record_id", pa.string()),                 # CID, SMILES-file id, lake InChIKey
        pa.field("compound_name", pa.string()),
        pa.field("n_records", pa.int64(), nullable=False),  # input records that gave this InChIKey
    ]
)

#: The index a lake row belongs to (``<lake>/index/<index_name>``): a lake may hold several.
INDEX_NAME = pa.field("index_name", pa.string(), nullable=False)

INDEX_STRUCTURES_SPEC = TableSpec(
    "index_structures", pa.schema([INDEX_NAME, *INDEX_STRUCTURES]), key=("index_name", "inchikey"), mode="replace",
    description="Structures of the current version of every structure index: index name, FAISS id, shard, InChIKey, "
                "SMILES, formula, mass, source.",
)

INDEX_QUARANTINE_SPEC = TableSpec(
    "index_quarantine", pa.schema([INDEX_NAME, *QUARANTINE]), key=("index_name", "quarantine_id"), mode="replace",
    description="Structure records the index builds could not use, with the reason (quarantine columns + index name).",
)

register_table(INDEX_STRUCTURES_SPEC)
register_table(INDEX_QUARANTINE_SPEC)
