"""``speclake export denovo``: every denovo_candidates column plus SIRIUS-style (MSNovelist) names, order, --top,
formats, a schema that grew a column, and clear errors; over real rows committed through the run contract."""
from __future__ import annotations

import csv
import dataclasses
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from speclake.lake.sql import connect
from speclake.serving.annotate.denovo_export import (PARENT_TANIMOTO, SIRIUS_COLUMNS, denovo_export_table,
                                                     export_denovo)
from speclake.training.denovo.tables import DENOVO_CANDIDATES
from tests.training.denovo.rows import error, proposals, write_denovo_run

CAFFEINE = "CN1C=NC2=C1C(=O)N(C(=O)N2C)C"
FREE = [CAFFEINE, "CC(=O)Oc1ccccc1C(=O)O", "c1ccccc1O", "CCOC(=O)c1ccccc1", "Cc1ccccc1N", "OC(=O)CCc1ccccc1",
        "CCN(CC)CC"]
NEAR = [CAFFEINE, "CN1C=NC2=C1C(=O)NC(=O)N2C", "c1ccccc1"]
EXPORTED = [f.name for f in DENOVO_CANDIDATES] + [name for name, _ in SIRIUS_COLUMNS] + [PARENT_TANIMOTO]


def sort_key(r: dict) -> tuple:
    return r["source_file"], r["query_id"], r["run_id"], r["rank"]


@pytest.fixture(scope="module")
def export_lake(sample_spectra_lake, tmp_path_factory):
    """(lake, the lake compound proposed, the --near run's id): a copy of the sample lake with study 'unknowns'
    (a free run: 3 scans in 2 files, 7 proposals each, one proposal a lake compound, one error row; a --near
    run on one of those scans) and study 'other' (one scan). Rows are written in reverse order."""
    dst = tmp_path_factory.mktemp("denovo-export") / "lake"
    shutil.copytree(sample_spectra_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    con = connect(dst)
    try:
        compound = con.sql("SELECT inchikey, smiles, compound_name FROM compounds WHERE compound_name IS NOT NULL "
                           "ORDER BY inchikey LIMIT 1").to_arrow_table().to_pylist()[0]
    finally:
        con.close()
    free = []
    for source, qid in (("/data/b.mgf", "unk 1"), ("/data/a.mgf", "unk 2"), ("/data/a.mgf", "unk 10")):
        free += proposals(source, qid, FREE, target_formula=None)
    free[2].update(smiles=compound["smiles"], inchikey=compound["inchikey"], inchikey14=compound["inchikey"][:14])
    write_denovo_run(dst, "unknowns", free[::-1], [error("/data/b.mgf", "unk 3", "no_proposals", "none decoded")])
    near_run = write_denovo_run(dst, "unknowns", proposals("/data/a.mgf", "unk 2", NEAR, near=CAFFEINE,
                                                           target_formula="C8H10N4O2", formula_source="given")[::-1])
    write_denovo_run(dst, "other", proposals("/data/c.mgf", "x", FREE[:2]))
    return dst, compound, near_run


def test_export_has_every_denovo_column_then_sirius_names(export_lake):
    """Columns: denovo_candidates' own in schema order, then the SIRIUS-style names, then tanimotoToParent; the
    SIRIUS columns repeat speclake's values (id = query id, structurePerIdRank = rank, ModelScore = score,
    InChIkey2D = first InChIKey block), name is the lake compound's name only for that structure, and the
    Tanimoto to the parent is 1 for the parent itself, below 1 for others, null for free generation."""
    lake, compound, near_run = export_lake
    table = denovo_export_table(lake, "unknowns")
    assert table.column_names == EXPORTED
    rows = table.to_pylist()
    assert len(rows) == 3 * len(FREE) + len(NEAR) and {r["study"] for r in rows} == {"unknowns"}
    for r in rows:
        assert r["id"] == r["mappingFeatureId"] == r["query_id"] and r["structurePerIdRank"] == r["rank"]
        assert r["ModelScore"] == r["score"] and r["molecularFormula"] == r["formula"]
        assert r["InChIkey2D"] == r["inchikey"][:14] and r["ionMass"] == r["precursorMz"] == r["precursor_mz"]
    named = [r for r in rows if r["name"] is not None]
    assert [(r["inchikey"], r["name"]) for r in named] == [(compound["inchikey"], compound["compound_name"])]
    near = {r["smiles"]: r[PARENT_TANIMOTO] for r in rows if r["run_id"] == near_run}
    assert near[CAFFEINE] == 1.0 and 0 <= near[NEAR[2]] < near[NEAR[1]] < 1
    assert all(r[PARENT_TANIMOTO] is None for r in rows if r["run_id"] != near_run)


def test_rows_are_ordered_by_file_query_run_and_rank(export_lake):
    """Rows written in reverse come out by source file, query id, run and rank: each run's list of a scan whole."""
    lake, _, _ = export_lake
    rows = denovo_export_table(lake, "unknowns").to_pylist()
    assert [sort_key(r) for r in rows] == sorted(sort_key(r) for r in rows)
    assert rows[0]["source_file"] == "/data/a.mgf" and rows[0]["query_id"] == "unk 10" and rows[0]["rank"] == 1


def test_top_keeps_the_best_ranks_of_every_scan(export_lake):
    """top=2: ranks 1 and 2 of each scan and run (4 lists), nothing else; top=0 is refused."""
    lake, _, _ = export_lake
    rows = denovo_export_table(lake, "unknowns", top=2).to_pylist()
    lists = {(r["source_file"], r["query_id"], r["run_id"]) for r in rows}
    assert len(lists) == 4 and len(rows) == 8 and {r["rank"] for r in rows} == {1, 2}
    with pytest.raises(ValueError, match="top must be at least 1"):
        denovo_export_table(lake, "unknowns", top=0)


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".parquet"])
def test_export_files(export_lake, tmp_path, suffix):
    """Each format holds the header of the table and every row; a SMILES survives the text formats verbatim."""
    lake, _, _ = export_lake
    path, n = export_denovo(lake, "unknowns", tmp_path / "sub" / f"unknowns{suffix}")
    assert n == 3 * len(FREE) + len(NEAR)
    if suffix == ".parquet":
        header = pq.read_schema(path).names
        assert pq.read_metadata(path).num_rows == n
        smiles = pq.read_table(path).column("smiles").to_pylist()
    else:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            header = list(reader.fieldnames or [])
            smiles = [r["smiles"] for r in reader]
    assert header == EXPORTED and len(smiles) == n
    assert smiles.count(FREE[1]) == 3, "aspirin proposed at rank 2 of the three free lists"


def test_a_column_added_to_the_schema_is_exported(export_lake, tmp_path, monkeypatch):
    """A later schema with an evidence column (frag_score): the export carries it among speclake's own columns,
    before the SIRIUS-style names, without a change to the export."""
    from speclake.lake.schema import TABLES

    lake = tmp_path / "lake"
    shutil.copytree(export_lake[0], lake)
    spec = TABLES["denovo_candidates"]
    grown = spec.schema.append(pa.field("frag_score", pa.float64()))
    monkeypatch.setitem(TABLES, "denovo_candidates", dataclasses.replace(spec, schema=grown))
    rows = [{**r, "frag_score": 0.25 * r["rank"]} for r in proposals("/data/d.mgf", "frag 1", FREE[:3])]
    write_denovo_run(lake, "scored", rows)
    table = denovo_export_table(lake, "scored")
    assert table.column_names == grown.names + EXPORTED[len(DENOVO_CANDIDATES):]
    assert table.column("frag_score").to_pylist() == [0.25, 0.5, 0.75]


def test_unknown_study_and_bad_file_name_are_clear_errors(export_lake, sample_spectra_lake, tmp_path):
    """A study without proposals names the studies that have some (or says none has); a file name of another
    format names the allowed ones before the lake is read."""
    lake, _, _ = export_lake
    with pytest.raises(ValueError, match=r"no de novo proposals of study 'nope'.*studies there: other, unknowns"):
        denovo_export_table(lake, "nope")
    with pytest.raises(ValueError, match=r"none \(run `speclake denovo` first\)"):
        denovo_export_table(sample_spectra_lake, "unknowns")
    with pytest.raises(ValueError, match=r"\.tsv, \.csv, \.parquet"):
        export_denovo(lake, "nope", tmp_path / "out.xlsx")


def test_cli_export_denovo(export_lake, tmp_path):
    """`speclake export denovo --study S --lake L --out F --top 1` writes one row per scan list and says so; an
    unknown study exits 1 with the one-line error and writes nothing."""
    from speclake.cli import main

    lake, _, _ = export_lake
    out = tmp_path / "top1.tsv"
    result = CliRunner().invoke(main, ["export", "denovo", "--study", "unknowns", "--lake", str(lake),
                                       "--out", str(out), "--top", "1"])
    assert result.exit_code == 0, result.output
    assert f"4 de novo proposals of study unknowns written to {out}" in result.output
    with open(out, newline="") as fh:
        assert [r["structurePerIdRank"] for r in csv.DictReader(fh, delimiter="\t")] == ["1"] * 4
    missing = tmp_path / "nope.tsv"
    result = CliRunner().invoke(main, ["export", "denovo", "--study", "nope", "--lake", str(lake),
                                       "--out", str(missing)])
    assert result.exit_code == 1 and "no de novo proposals of study 'nope'" in result.output
    assert not missing.exists()
