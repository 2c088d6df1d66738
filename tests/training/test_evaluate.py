"""End-to-end evaluation on the sample feature lake: baselines, library, references, model_metrics, plot, CLI."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from speclake.training.encoding import DescriptorSettings, DescriptorSpace
from speclake.training.evaluate import EvaluationSettings, evaluate, structure_rows
from speclake.training.split import SplitSettings

from .eval_lakes import indexed_lake

pytestmark = pytest.mark.spark

SPLIT = SplitSettings(train=0.6, validation=0.2, test=0.2)


def small_settings(**kw) -> EvaluationSettings:
    base = dict(split=SPLIT, candidate_modes=("formula", "mass"), max_validation=30,
                library=("modified_cosine", "entropy"),
                baseline={"rf_trees": 20}, num_cpus=2)
    return EvaluationSettings.model_validate({**base, **kw})


class OracleDescriptors:
    """A descriptor 'model' that reads the true structure's descriptors (an upper bound)."""

    model_id, arch = "oracle", "arch1"

    def __init__(self, names: list[str]) -> None:
        self.descriptor_names = names
        self.space = DescriptorSpace(names)

    def predict_descriptors(self, examples: pa.Table) -> np.ndarray:
        rows = examples.select(["morgan_on", "maccs_on", "substructure_on", "chemont_classes"]).to_pylist()
        return np.where(self.space.targets(rows) == 1, 0.95, 0.05)


class FingerprintJoint:
    """An arch5-like 'model' whose spectrum embedding is its structure's Morgan fingerprint."""

    model_id, arch = "fp-joint", "arch5"

    @staticmethod
    def _dense(on_bits: list) -> np.ndarray:
        out = np.zeros((len(on_bits), 2048), np.float32)
        for i, b in enumerate(on_bits):
            out[i, list(b or [])] = 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def embed_spectra(self, examples: pa.Table) -> np.ndarray:
        return self._dense(examples.column("morgan_on").to_pylist())

    def embed_structures(self, smiles: list[str]) -> np.ndarray:
        from speclake.pipelines.features.descriptors import DescriptorSettings as FP

        return self._dense([r["morgan_on"] for r in structure_rows(smiles, FP())])


@pytest.fixture(scope="module")
def lake(sample_feature_lake, tmp_path_factory):
    return indexed_lake(sample_feature_lake, tmp_path_factory)


@pytest.fixture(scope="module")
def run(lake):
    from speclake.lake import sql

    con = sql.connect(lake)
    rows = con.sql("SELECT DISTINCT morgan_on, maccs_on, substructure_on, chemont_classes FROM descriptors"
                   ).to_arrow_table().to_pylist()
    con.close()
    names = DescriptorSpace.fit(rows, DescriptorSettings(families=("morgan", "maccs", "substructure"),
                                                         min_positives=2)).names
    table = evaluate(lake, settings=small_settings(), extra_models=[OracleDescriptors(names), FingerprintJoint()])
    return table


def _overall(table: pa.Table, mode: str) -> dict[str, dict]:
    return {(r["model_id"], r["method"]): r for r in table.to_pylist()
            if r["candidate_mode"] == mode and r["stratum_kind"] == "all"}


def test_every_method_on_the_same_spectra_and_candidates(run):
    for mode in ("formula", "mass"):
        rows = _overall(run, mode)
        methods = {m for _, m in rows}
        assert {"logreg", "logreg+prior", "random_forest", "random_forest+prior", "library_cosine",
                "library_cosine+prior", "library_entropy", "random", "random_expected", "prior", "model", "model+prior"} <= methods
        assert len({r["n_spectra"] for r in rows.values()}) == 1
        assert len({r["mean_candidates"] for r in rows.values()}) == 1
        for r in rows.values():
            assert 0 <= r["hit1"] <= r["hit5"] <= r["hit20"] <= 1
        assert rows[("classical:logreg", "logreg")]["train_seconds"] > 0
        assert rows[("classical:logreg", "logreg")]["train_spectra_per_s"] > 0
        assert rows[("classical:logreg", "logreg+prior")]["prior_lambda"] is not None


def test_oracle_and_fingerprint_joint_model_find_the_truth(run):
    rows = _overall(run, "formula")
    oracle = rows[("oracle", "model")]
    assert oracle["descriptor_auc"] == pytest.approx(1.0)
    assert oracle["hit1"] >= 0.9 and oracle["hit1"] >= rows[("reference:prior", "prior")]["hit1"]
    assert rows[("fp-joint", "model")]["hit1"] >= 0.9
    assert rows[("fp-joint", "model")]["top1_tanimoto"] >= 0.95
    assert rows[("classical:logreg", "logreg")]["descriptor_auc"] is not None


def test_strata_partition_the_test_spectra(run):
    rows = [r for r in run.to_pylist() if r["candidate_mode"] == "formula" and r["method"] == "prior"]
    total = next(r["n_spectra"] for r in rows if r["stratum_kind"] == "all")
    for kind in ("ionmode", "novelty"):
        assert sum(r["n_spectra"] for r in rows if r["stratum_kind"] == kind) == total
    assert {r["stratum"] for r in rows if r["stratum_kind"] == "novelty"} <= {"<0.5", "0.5-0.7", "0.7-0.9", ">=0.9"}


def test_model_metrics_in_the_lake_and_plot(run, lake):
    from speclake.lake import sql

    run_id = run.column("evaluation_run_id")[0].as_py()
    con = sql.connect(lake)
    try:
        n, = con.execute("SELECT count(*) FROM model_metrics WHERE evaluation_run_id = ?", [run_id]).fetchone()
        methods = {m for (m,) in con.execute("SELECT DISTINCT method FROM model_metrics").fetchall()}
    finally:
        con.close()
    assert n == run.num_rows
    assert "prior" in methods
    png = lake / "reports" / f"evaluation-{run_id}.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_run_record_holds_the_evaluation_report(run, lake):
    """The run (kind evaluation) saved its report: candidate counts, methods, plot, the model_metrics version."""
    from speclake.lake.catalog import Lake
    from speclake.training.evaluate import run_record

    run_id = run.column("evaluation_run_id")[0].as_py()
    record = run_record(lake, run_id)
    report = record["report"]
    assert record["kind"] == "evaluation" and record["status"] == "ok"
    assert record["settings"]["candidate_modes"] == ["formula", "mass"]
    assert report["run_id"] == run_id and report["rows"] == run.num_rows
    assert {"formula:test", "mass:test", "formula:validation"} <= set(report["candidates"])
    assert {"reference:prior", "classical:logreg", "oracle", "fp-joint"} <= set(report["methods"])
    assert report["plot"].endswith(f"evaluation-{run_id}.png")
    version = Lake(lake).versions("model_metrics")[report["model_metrics_version"] - 1]
    assert version.run_id == run_id and version.settings["candidates"] == report["candidates"]
    assert {"examples", "methods", "queries", "scoring", "write"} <= set(report["stage_seconds"])


def test_cli_evaluate_without_neural_models(run, lake, tmp_path):
    """No models registered in this lake: evaluate still compares baselines and references (and via the CLI)."""
    import json

    from click.testing import CliRunner

    from speclake.cli import main

    settings = tmp_path / "eval.json"
    settings.write_text(json.dumps({"split": SPLIT.model_dump(), "max_validation": 10}))
    out_png = tmp_path / "cmp.png"
    res = CliRunner().invoke(main, ["evaluate", "--lake", str(lake), "--settings", str(settings), "--baselines", "none",
                                    "--library", "none", "--max-test", "5", "--plot", str(out_png)])
    assert res.exit_code == 0, res.output
    assert "reference:prior" in res.output and "random_expected" in res.output and "model+prior" not in res.output
    assert out_png.exists()
    from speclake.lake.catalog import Lake

    assert Lake(lake).current("model_metrics").version == 2
    res = CliRunner().invoke(main, ["evaluate", "--lake", str(lake), "--models", "no-such-model"])
    assert res.exit_code != 0


def test_cli_help_and_bad_settings():
    from click.testing import CliRunner

    from speclake.cli import main

    for cmd in ("evaluate", "explain"):
        res = CliRunner().invoke(main, [cmd, "--help"])
        assert res.exit_code == 0 and "--lake" in res.output
    with pytest.raises(ValueError):
        EvaluationSettings(nonsense=1)
    with pytest.raises(ValueError, match="formula"):
        EvaluationSettings(candidate_modes=("smiles",))
    with pytest.raises(ValueError, match="logreg"):
        EvaluationSettings(baselines=("svm",))


def test_evaluate_and_explain_a_registered_model(lake, trained, tmp_path):
    """A real (tiny) arch1 model from the registry: scored with the others, then explained via the CLI."""
    import shutil

    from click.testing import CliRunner

    from speclake.cli import main
    from speclake.training.registry import load_model, model_dir

    result = trained("arch1")
    shutil.copytree(result.path, model_dir(lake, result.model_id), dirs_exist_ok=True)
    model = load_model(lake, result.model_id)
    table = evaluate(lake, [result.model_id],
                     settings=EvaluationSettings(split=model.split, baselines=(), library=(), max_validation=20))
    rows = _overall(table, "formula")
    row = rows[(result.model_id, "model")]
    assert row["arch"] == "arch1" and row["descriptor_auc"] is not None and row["train_spectra_per_s"] > 0
    assert (result.model_id, "model+prior") in rows and ("reference:prior", "prior") in rows

    from speclake.lake import sql

    sid = sql.query(lake, "SELECT spectrum_id FROM spectra WHERE ms_level = 2 ORDER BY spectrum_id LIMIT 1"
                    ).column(0)[0].as_py()
    png = tmp_path / "attr.png"
    res = CliRunner().invoke(main, ["explain", sid, "--lake", str(lake), "--model", result.model_id,
                                    "--descriptor", model.descriptor_names[0], "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "completeness delta" in res.output and png.read_bytes()[:4] == b"\x89PNG"


def test_structure_rows_in_a_pool_equal_the_serial_rows(monkeypatch) -> None:
    """Long candidate lists are described in worker processes; the rows (and their order) are the serial ones."""
    from speclake.pipelines.features.descriptors import DescriptorSettings
    from speclake.training import eval_data
    from tests.conftest import REPO

    smiles = [line.split()[0] for line in open(REPO / "tests" / "data" / "zinc_moses_400.smi")][:60] + ["not a smiles"]
    serial = structure_rows(smiles, DescriptorSettings(), processes=1)
    monkeypatch.setattr(eval_data, "PARALLEL_STRUCTURES", 10)
    pooled = structure_rows(smiles, DescriptorSettings(), processes=2)
    assert pooled == serial and serial[-1] == {"morgan_on": [], "maccs_on": [], "substructure_on": []}
    assert all(r["morgan_on"] for r in serial[:-1])
