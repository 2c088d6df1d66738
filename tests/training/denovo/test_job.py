"""``speclake denovo``: proposals committed to denovo_candidates, every other scan in denovo_errors, CLI."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from speclake.lake import sql
from speclake.training.denovo.job import DenovoSettings, denovo_study
from speclake.training.denovo.sample import SampleSettings
from tests.conftest import SAMPLE
from tests.serving.annotate.conftest import BAD_MGF, blind_mgf

pytestmark = pytest.mark.ray


@pytest.fixture
def lake(denovo_lake, tmp_path):
    """A per-test copy of the lake with the trained model (runs add tables to it)."""
    dst = tmp_path / "lake"
    shutil.copytree(denovo_lake[0], dst)
    return dst


@pytest.fixture
def study(tmp_path):
    """Three blind pesticide scans and one file of bad scans (one good, four unusable)."""
    good = blind_mgf(SAMPLE / "gnps_pesticides.mgf", tmp_path / "blind.mgf", n=3)
    bad = tmp_path / "bad.mgf"
    bad.write_text(BAD_MGF)
    return [good, bad]


def test_denovo_writes_ranked_rows_and_accounts_for_every_scan(lake, study):
    """Each usable scan gets proposals ranked by the lake's annotation ranker in denovo_candidates (SQL-readable),
    their latent likelihood kept; each unusable scan a denovo_errors row with its reason; scans = scans with
    proposals + error rows."""
    settings = DenovoSettings(formula_from_tree=False, sample=SampleSettings(n=5, draws=40))
    report = denovo_study(study, lake, "unknowns", settings)
    rows = sql.query(lake, "SELECT * FROM denovo_candidates ORDER BY source_file, query_id, rank").to_pylist()
    errors = sql.query(lake, "SELECT * FROM denovo_errors").to_pylist()
    assert report.scans == 8 and report.scans_with_proposals == 4 and len(errors) == 4 == report.errors
    assert {e["reason_code"] for e in errors} == {"no_peaks", "peak_parse_error", "missing_ms_level", "unknown_ionmode"}
    assert all(e["reason"] and e["study"] == "unknowns" and e["run_id"] == report.run_id for e in errors)
    per_scan: dict = {}
    for r in rows:
        per_scan.setdefault((r["source_file"], r["query_id"]), []).append(r)
    assert len(per_scan) == 4 and len(rows) == report.proposals
    for found in per_scan.values():
        assert [r["rank"] for r in found] == list(range(1, len(found) + 1)) and len(found) <= 5
        assert [r["score"] for r in found] == sorted((r["score"] for r in found), reverse=True)
    r = rows[0]
    assert r["method"] == report.ranker != "" and r["model_id"] == report.model_id and r["run_id"] == report.run_id
    assert all(r["latent_score"] is not None for r in rows)
    assert r["inchikey14"] == r["inchikey"][:14] and r["near_smiles"] is None and r["formula_source"] is None


def test_cli_near_a_parent_with_a_formula(lake, study):
    """`speclake denovo --near P --formula F` keeps only F, never P itself, and records the parent; a SMILES the
    model cannot read is one clear error line."""
    from speclake.cli import main
    from speclake.training.denovo.chem import formula_of
    from speclake.training.denovo.vocab import canonical_smiles

    parent = "CC(C)Cc1ccc(C(C)C(=O)O)cc1"
    runner = CliRunner()
    probe = runner.invoke(main, ["denovo", str(study[0]), "--lake", str(lake), "--near", parent, "--no-formula",
                                 "--draws", "60", "-n", "20", "--study", "probe"])
    assert probe.exit_code == 0, probe.output
    seen = sql.query(lake, "SELECT formula, count(*) n FROM denovo_candidates GROUP BY 1 ORDER BY 2 DESC, 1")
    formula = seen.column("formula")[0].as_py()
    res = runner.invoke(main, ["denovo", str(study[0]), "--lake", str(lake), "--near", parent, "--formula", formula,
                               "--draws", "60", "-n", "20", "--study", "near"])
    assert res.exit_code == 0, res.output
    assert "3 scans in 1 file(s)" in res.output
    rows = sql.query(lake, "SELECT * FROM denovo_candidates WHERE study = 'near'").to_pylist()
    assert rows and all(formula_of(r["smiles"]) == formula == r["target_formula"] for r in rows)
    assert all(r["near_smiles"] == parent and r["formula_source"] == "given" for r in rows)
    assert all(r["smiles"] != canonical_smiles(parent) for r in rows), "the parent itself is never proposed"
    bad = runner.invoke(main, ["denovo", str(study[0]), "--lake", str(lake), "--near", "not a smiles"])
    assert bad.exit_code != 0 and "--near 'not a smiles'" in bad.output and "Traceback" not in bad.output
    odd = runner.invoke(main, ["denovo", str(study[0]), "--lake", str(lake), "--formula", "C6Q2"])
    assert odd.exit_code != 0 and "unsupported element 'Q'" in odd.output and "Traceback" not in odd.output


def test_latent_ranking_orders_by_latent_likelihood(lake, study):
    """--rank-with latent: the method is latent_likelihood and the score is the latent likelihood, best first."""
    settings = DenovoSettings(formula_from_tree=False, rank_with="latent", sample=SampleSettings(n=5, draws=40))
    report = denovo_study(study[:1], lake, "latent", settings)
    rows = sql.query(lake, "SELECT * FROM denovo_candidates WHERE study = 'latent' ORDER BY query_id, rank").to_pylist()
    assert rows and report.ranker == ""
    assert all(r["method"] == "latent_likelihood" and r["score"] == r["latent_score"] for r in rows)
