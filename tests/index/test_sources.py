"""Tests of index.sources: format detection and the SDF / SMILES / CID-SMILES / lake readers."""
from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rdkit import Chem

from speclake.index.sources import (
    RAW_RECORDS,
    SourceError,
    detect_format,
    iter_source,
    read_lake_compounds,
)
from tests.index.conftest import read_smiles


def write_sdf(path: Path, smiles_ids: list[tuple[str, str]], corrupt: dict[int, str] | None = None) -> Path:
    """An SD file in PubChem's layout from real records; ``corrupt`` maps record index -> kind of damage."""
    corrupt = corrupt or {}
    blocks = []
    for i, (smi, rid) in enumerate(smiles_ids):
        block = Chem.MolToMolBlock(Chem.MolFromSmiles(smi))
        if corrupt.get(i) == "no_m_end":
            block = block.replace("M  END\n", "")
        elif corrupt.get(i) == "bad_atoms":
            lines = block.split("\n")
            lines[4] = lines[4][:31] + "Xx" + lines[4][33:]  # unknown element symbol
            lines[3] = lines[3][:3] + "999" + lines[3][6:]  # claims far more bonds than there are
            block = "\n".join(lines)
        blocks.append(f"{block}> <PUBCHEM_COMPOUND_CID>\n{rid}\n\n> <PUBCHEM_IUPAC_NAME>\nname of {rid}\n\n$$$$\n")
    text = "".join(blocks)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def collect(path: Path, fmt: str | None = None) -> pa.Table:
    return pa.concat_tables(list(iter_source(path, 0, batch_size=7, fmt=fmt)))


def test_detect_format(tmp_path: Path, shipped_smiles: Path) -> None:
    """File names map to formats; a .tsv whose first field is a number is CID-SMILES."""
    assert detect_format(tmp_path / "Compound_000000001_000500000.sdf.gz") == "pubchem_sdf"
    assert detect_format(tmp_path / "CID-SMILES.gz") == "cid_smiles"
    assert detect_format(shipped_smiles) == "smiles"
    tsv = tmp_path / "x.tsv"
    tsv.write_text("2244\tCC(=O)Oc1ccccc1C(=O)O\n")
    assert detect_format(tsv) == "cid_smiles"
    with pytest.raises(SourceError, match="cannot tell the format"):
        detect_format(tmp_path / "x.xlsx")


def test_smiles_file_records(shipped_smiles: Path) -> None:
    """Every line of a SMILES file becomes one record with its id and a line locator, in order."""
    table = collect(shipped_smiles)
    assert table.schema == RAW_RECORDS
    assert table.num_rows == 400
    first = read_smiles(shipped_smiles, 1)[0]
    assert table.column("smiles_in")[0].as_py() == first[0]
    assert table.column("record_id")[0].as_py() == first[1]
    assert table.column("record_locator")[0].as_py() == "line:1"
    assert table.column("record_no").to_pylist() == list(range(400))


def test_smiles_file_missing_field(tmp_path: Path) -> None:
    """A CID-SMILES line without SMILES is marked unreadable with reason code missing_smiles."""
    p = tmp_path / "CID-SMILES"
    p.write_text("1\tCCO\n2\t\n3\tc1ccccc1\n")
    table = collect(p)
    assert table.column("source").to_pylist() == ["cid_smiles"] * 3
    assert table.column("reason_code").to_pylist() == [None, "missing_smiles", None]
    assert table.column("record_id").to_pylist() == ["1", "2", "3"]


def test_sdf_records_and_corruption(tmp_path: Path, shipped_smiles: Path) -> None:
    """SDF records keep CID and name; a record without 'M  END' is marked malformed with its locator."""
    recs = read_smiles(shipped_smiles, 5)
    path = write_sdf(tmp_path / "Compound_1.sdf.gz", recs, corrupt={2: "no_m_end"})
    table = collect(path)
    assert table.num_rows == 5
    assert table.column("record_id").to_pylist() == [r[1] for r in recs]
    assert table.column("compound_name")[0].as_py() == f"name of {recs[0][1]}"
    assert table.column("reason_code").to_pylist() == [None, None, "malformed_sdf_record", None, None]
    assert table.column("record_locator")[2].as_py().startswith("record:3,line:")
    assert "M  END" in table.column("molblock")[0].as_py()


def test_sdf_truncated_file(tmp_path: Path, shipped_smiles: Path) -> None:
    """A gzip SDF cut mid-record yields the complete records plus one truncated_record."""
    path = write_sdf(tmp_path / "whole.sdf.gz", read_smiles(shipped_smiles, 4))
    data = path.read_bytes()
    cut = tmp_path / "cut.sdf.gz"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    table = collect(cut)
    codes = table.column("reason_code").to_pylist()
    assert codes[-1] == "truncated_record"
    assert all(c is None for c in codes[:-1]) and len(codes) >= 2


def test_lake_compounds(tmp_path: Path) -> None:
    """read_lake_compounds reads the Parquet parts under <lake>/compounds/ and skips scratch parts."""
    part = tmp_path / "compounds" / "part-1"
    part.mkdir(parents=True)
    pq.write_table(pa.table({"inchikey": ["LFQSCWFLJHTTHZ-UHFFFAOYSA-N"], "smiles": ["CCO"],
                             "compound_name": ["ethanol"], "inchi": [None]}), part / "a.parquet")
    scratch = tmp_path / "compounds" / "_tmp"
    scratch.mkdir()
    pq.write_table(pa.table({"inchikey": ["X"], "smiles": ["C"]}), scratch / "b.parquet")
    assert read_lake_compounds(tmp_path).num_rows == 1
    table = collect(tmp_path)
    assert detect_format(tmp_path) == "lake"
    assert table.column("source").to_pylist() == ["lake"]
    assert table.column("compound_name").to_pylist() == ["ethanol"]


def test_missing_source(tmp_path: Path) -> None:
    """A missing file is a SourceError naming it."""
    with pytest.raises(SourceError, match="does not exist"):
        list(iter_source(tmp_path / "nope.smi", 0))
