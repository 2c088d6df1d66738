"""Tests of index.cli: build and query through click, clear errors."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from speclake.index.cli import index_cli
from tests.index.conftest import read_smiles


def test_query_cli(built_index: Path, shipped_smiles: Path, tmp_path: Path) -> None:
    """'index query' prints a ranked table; --batch reads a TSV; --output writes Parquet."""
    smi, rid = read_smiles(shipped_smiles, 1)[0]
    runner = CliRunner()
    from speclake.index.search import StructureIndex

    with StructureIndex.open(built_index) as ix:
        mass = ix.catalog.sql("SELECT monoisotopic_mass FROM structures WHERE record_id = ?", [rid]).column(0)[0].as_py()
    res = runner.invoke(index_cli, ["query", "--index", str(built_index), "--smiles", smi, "--mass", f"{mass:.5f}",
                                    "--ppm", "50", "-k", "3"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().split("\n")
    assert lines[0].startswith("rank\tscore") and rid in lines[1] and len(lines) >= 2
    with StructureIndex.open(built_index) as ix:
        other = ix.catalog.sql("SELECT monoisotopic_mass FROM structures ORDER BY faiss_id LIMIT 1 OFFSET 7").column(0)[0].as_py()
        lo, hi = other * (1 - 10e-6), other * (1 + 10e-6)
        in_window = ix.catalog.sql("SELECT count(*) FROM structures WHERE monoisotopic_mass BETWEEN ? AND ?",
                                   [lo, hi]).column(0)[0].as_py()
    batch = tmp_path / "q.tsv"
    batch.write_text(f"mass\tsmiles\n\t{smi}\n{other!r}\t{smi}\n")
    res = runner.invoke(index_cli, ["query", "--index", str(built_index), "--batch", str(batch), "-k", "2",
                                    "--output", str(tmp_path / "out.parquet")])
    assert res.exit_code == 0, res.output
    expected = 2 + min(2, in_window)  # no mass: k hits; a 10 ppm window: at most the structures inside it
    assert f"{expected} hits written" in res.output, res.output
    hits = pq.read_table(tmp_path / "out.parquet")
    assert sorted(set(hits.column("query").to_pylist())) == [0, 1], "hits are numbered by input row"


def test_query_cli_errors(built_index: Path, tmp_path: Path) -> None:
    """Spectrum queries on a fingerprint index and a missing index give short errors, not tracebacks."""
    spec = tmp_path / "s.mgf"
    spec.write_text("BEGIN IONS\nPEPMASS=300\n100 1\nEND IONS\n")
    runner = CliRunner()
    res = runner.invoke(index_cli, ["query", "--index", str(built_index), "--mass", "300", "--spectrum", str(spec)])
    assert res.exit_code == 1 and "learned spectrum/structure embedding" in res.output
    res = runner.invoke(index_cli, ["query", "--index", str(tmp_path / "none"), "--smiles", "CCO"])
    assert res.exit_code == 1 and "no structure index" in res.output


def test_build_cli(ray_local, tmp_path: Path, shipped_smiles: Path) -> None:
    """'index build' accepts files listed after --structures and reports counts; an embedding without its trained model or an unknown one is refused."""
    src = tmp_path / "a.smi"
    src.write_text("".join(f"{s}\t{r}\n" for s, r in read_smiles(shipped_smiles, 30)))
    src2 = tmp_path / "b.smi"
    src2.write_text("C1CC(\tBAD\n")
    runner = CliRunner()
    res = runner.invoke(index_cli, ["build", "--structures", str(src), str(src2), "--lake", str(tmp_path / "lake"),
                                    "--shard-size", "20"])
    assert res.exit_code == 0, res.output
    assert "structures" in res.output and "invalid_structure" in res.output
    res = runner.invoke(index_cli, ["build", "--structures", str(src), "--lake", str(tmp_path / "lake"),
                                    "--embedding", "arch5"])
    assert res.exit_code == 1 and "speclake train --arch arch5" in res.output, res.output  # no trained model yet
    res = runner.invoke(index_cli, ["build", "--structures", str(src), "--lake", str(tmp_path / "lake"),
                                    "--embedding", "nope"])
    assert res.exit_code == 1 and "unknown embedding 'nope'" in res.output, res.output
    assert "--ppm" in runner.invoke(index_cli, ["query", "--help"]).output
