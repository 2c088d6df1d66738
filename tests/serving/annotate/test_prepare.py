"""annotate-prepare on the ingested sample lake: descriptors, structure index, library index, a ranker;
a second run skips every step; annotate then uses the ranker; `speclake rankers` lists it."""
from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.spark


@pytest.fixture
def lake(sample_spectra_lake, tmp_path):
    """A copy of the freshly ingested sample lake (no features, no indexes, no ranker)."""
    dst = tmp_path / "lake"
    shutil.copytree(sample_spectra_lake, dst, ignore=shutil.ignore_patterns("_staging"))
    return dst


def test_prepare_makes_what_annotate_needs_then_skips_it(lake, spark):
    from speclake.cli import main
    from speclake.index.search import read_manifest
    from speclake.lake.catalog import Lake
    from speclake.pipelines.features.job import FeaturesSettings
    from speclake.serving.annotate.prepare import PrepareSettings, descriptors_todo, prepare_lake
    from speclake.serving.annotate.rankers import RankerSettings, list_rankers, load_ranker
    from speclake.serving.annotate.steps import Annotator, StepSettings
    from speclake.serving.library.index import LibraryIndex

    before = Annotator(lake, StepSettings())
    before.close()
    assert any("speclake annotate-prepare --lake" in m for m in before.missing), \
        f"an unprepared lake names the command that prepares it: {before.missing}"

    settings = PrepareSettings(num_cpus=1, ranker=RankerSettings(max_formulas=2))
    first = prepare_lake(lake, settings=settings, spark=spark)
    assert [s["step"] for s in first.steps] == ["features", "index", "library", "ranker", "priors"]
    assert [s["status"] for s in first.steps] == ["done"] * 5, first.steps
    assert list((lake / "index").rglob("priors-*.npy")), "every index shard gets its library priors"
    assert descriptors_todo(Lake(lake), FeaturesSettings().settings_hash()) == 0, "every compound has descriptors"
    assert read_manifest(lake / "index" / "fingerprint")["count"] > 0
    assert LibraryIndex.load(lake).spectra_version == Lake(lake).current("spectra").version
    assert first.ranker_fitted and list_rankers(lake)[0]["ranker_id"] == first.ranker_id
    assert set(first.test) >= {"fused", "prior", "random"}
    assert 0.0 <= first.test["fused"]["hit1"] <= 1.0 and 0.0 <= first.calibration["ece"] <= 1.0
    assert set(first.stage_seconds) >= {"features", "index", "library", "ranker"}

    second = prepare_lake(lake, settings=settings, spark=spark)
    assert [s["status"] for s in second.steps] == ["skipped"] * 5, second.steps
    assert second.ranker_id == first.ranker_id and not second.ranker_fitted
    assert len(list_rankers(lake)) == 1, "an up-to-date ranker is not fitted again"

    ranker = load_ranker(lake)
    assert ranker.name == first.ranker_id and ranker.calibrated

    out = CliRunner().invoke(main, ["rankers", "--lake", str(lake)])
    assert out.exit_code == 0, out.output
    assert first.ranker_id in out.output and "prior hit@1" in out.output and "ECE" in out.output

    out = CliRunner().invoke(main, ["annotate-prepare", "--lake", str(lake), "--num-cpus", "1", "--validation", "5000",
                                    "--test", "5000"])
    assert out.exit_code == 0, out.output
    lines = {line.split()[0]: line for line in out.output.splitlines() if line.split()}
    for step in ("features", "index", "library", "priors"):
        assert "skipped" in lines[step], f"the command skips the up-to-date {step} step: {out.output}"
    assert "hit@1" in out.output and "ECE" in out.output and "random" in lines, out.output
