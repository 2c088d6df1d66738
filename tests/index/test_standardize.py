"""Tests of index.standardize: ingest rules applied to raw records, failures kept with reasons."""
from __future__ import annotations

import pyarrow as pa
from rdkit import Chem

from speclake.index.sources import RAW_RECORDS
from speclake.index.standardize import STANDARDIZED_RECORDS, standardize_batch
from speclake.pipelines.normalize.structure import standardize_structure


def raw(**cols: list) -> pa.Table:
    n = len(next(iter(cols.values())))
    base = {name: [None] * n for name in RAW_RECORDS.names}
    base.update(file_no=[0] * n, record_no=list(range(n)), source=["smiles"] * n, source_file=["f"] * n,
                record_locator=[f"line:{i + 1}" for i in range(n)])
    base.update(cols)
    return pa.Table.from_pydict(base, schema=RAW_RECORDS)


def test_same_rules_as_ingest() -> None:
    """A good SMILES gets exactly the ingest's InChIKey, SMILES, formula and mass."""
    smi = "CC(C)(C)C(=O)C(Oc1ccc(Cl)cc1)n1ccnc1"
    out = standardize_batch(raw(smiles_in=[smi])).to_pylist()[0]
    ref = standardize_structure(smi, None)
    assert (out["inchikey"], out["smiles"], out["formula"]) == (ref.inchikey, ref.smiles, ref.formula)
    assert out["monoisotopic_mass"] == ref.monoisotopic_mass
    assert out["reason_code"] is None


def test_invalid_smiles_quarantined_with_reason() -> None:
    """Unparseable SMILES get reason_code invalid_structure, a reason naming the SMILES, and an excerpt."""
    out = standardize_batch(raw(smiles_in=["C1CC(", "c1ccccc1"])).to_pylist()
    assert out[0]["reason_code"] == "invalid_structure"
    assert "C1CC(" in out[0]["reason"] and out[0]["raw_excerpt"] == "C1CC("
    assert out[1]["reason_code"] is None and out[1]["inchikey"] == "UHOVQNZJYSORNB-UHFFFAOYSA-N"


def test_molblock_used_and_bad_molblock_quarantined() -> None:
    """A mol block is the structure of an SDF record; one RDKit cannot read is invalid_molblock."""
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    out = standardize_batch(raw(molblock=[good, "garbage\n\n\n  1  0  0\nM  END\n"])).to_pylist()
    assert out[0]["inchikey"] == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert out[1]["reason_code"] == "invalid_molblock"


def test_unreadable_record_keeps_read_reason() -> None:
    """A record already marked by the reader keeps its reason and is not standardized."""
    out = standardize_batch(raw(reason_code=["missing_smiles"], reason=["no SMILES"])).to_pylist()[0]
    assert (out["reason_code"], out["reason"], out["inchikey"]) == ("missing_smiles", "no SMILES", None)


def test_output_schema_is_declared() -> None:
    """standardize_batch emits exactly STANDARDIZED_RECORDS (the schema the index build reads), good rows and bad."""
    out = standardize_batch(raw(smiles_in=["CCO", "C1CC("]))
    assert out.schema.equals(STANDARDIZED_RECORDS), out.schema
