"""The Spark feature job on a small hand-made lake: tables, skips, MSn trees, rules, incrementality, CLI."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from speclake.lake import sql
from speclake.lake.catalog import Lake
from speclake.pipelines.features.cli import features_cmd, tree_cmd
from speclake.pipelines.features.descriptors import DescriptorSettings
from speclake.pipelines.features.job import FeaturesSettings, panel_of, parse_only, run_features
from speclake.pipelines.features.patterns import PatternSettings
from speclake.pipelines.features.refpanel import RefSimSettings
from speclake.pipelines.features.spec2vec import Spec2VecSettings
from tests.pipelines.features.lakes import compound_rows, compound_spectra, make_lake, small_lake, COMPOUNDS_SPEC

pytestmark = pytest.mark.spark

SETTINGS = FeaturesSettings(
    patterns=PatternSettings(min_support=0.3, min_lift=1.2, max_item_share=0.9, max_rules=5000, n_motifs=4, lda_min_df=2,
                             lda_max_iter=5),
    refsim=RefSimSettings(panel_size=5, min_panel_peaks=3),
    spec2vec=Spec2VecSettings(min_count=1, vector_size=16),
)


@pytest.fixture(scope="module")
def featured(spark, tmp_path_factory):
    """A small lake (6 compounds x 12 spectra, bad spectra, one MS3) after one full feature run."""
    root = tmp_path_factory.mktemp("features-lake")
    small_lake(root)
    report = run_features(root, SETTINGS, spark=spark)
    return root, report


def _q(root, query: str) -> list[tuple]:
    con = sql.connect(root)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_parse_only_names_allowed_values() -> None:
    """--only accepts the five feature names (patterns pulls in descriptors) and rejects others by name."""
    assert parse_only("refsim, patterns") == ["patterns", "refsim", "descriptors"]
    with pytest.raises(ValueError, match="choose from fragtrees, patterns"):
        parse_only("trees")


def test_full_run_writes_every_table_with_its_settings(featured) -> None:
    """One commit publishes all five tables; each version records the settings hash."""
    root, report = featured
    assert set(report.table_versions) == {"fragtrees", "patterns", "spectrum_features", "descriptors", "feature_skips"}
    lake = Lake(root)
    for table in report.table_versions:
        assert lake.current(table).settings["settings_hash"] == SETTINGS.settings_hash()
    assert report.computed["descriptors"] == len(COMPOUNDS_SPEC)
    n_sf = _q(root, "SELECT count(*) FROM spectrum_features")[0][0]
    assert n_sf == report.computed["refsim"] == 6 * 12 + 2, "72 good spectra + unannotated + MS3 have features"


def test_bad_spectra_are_recorded_never_crash(featured) -> None:
    """MS1, unit-resolution and one-peak spectra are in feature_skips for every feature; no crash."""
    root, _ = featured
    rows = set(_q(root, "SELECT spectrum_id, feature, reason_code FROM feature_skips WHERE feature = 'refsim'"))
    assert rows == {("bad-ms1", "refsim", "ms1_spectrum"), ("bad-lowres", "refsim", "low_resolution"),
                    ("bad-onepeak", "refsim", "too_few_peaks")}
    trees = dict(_q(root, "SELECT spectrum_id, reason_code FROM feature_skips WHERE feature = 'fragtrees'"))
    assert trees["unannotated"] == "unannotated" and trees["phe-ms3"] == "linked_into_msn_tree"


def test_msn_tree_and_vectors(featured) -> None:
    """One fragtree links the MS3 spectrum; vectors have panel / pattern / embedding lengths."""
    root, report = featured
    linked = _q(root, "SELECT max_ms_level, linked_spectrum_ids FROM fragtrees WHERE len(linked_spectrum_ids) > 0")
    assert linked == [(3, ["phe-ms3"])]
    n_panel = report.panel_sizes["positive"]
    n_patterns = report.n_rules + report.n_motifs
    lengths = set(_q(root, "SELECT len(refsim_cosine), len(refsim_entropy), len(pattern_overlap), len(spec2vec), "
                           "len(tree_features) FROM spectrum_features WHERE tree_features IS NOT NULL"))
    assert lengths == {(n_panel, n_panel, n_patterns, 16, 10)}
    panel = panel_of(root, SETTINGS)["positive"]
    self_sim = _q(root, f"SELECT refsim_cosine[1], refsim_modified_cosine[1] FROM spectrum_features "
                        f"WHERE spectrum_id = '{panel[0]}'")[0]
    assert self_sim == pytest.approx((1.0, 1.0), abs=1e-5), "a panel spectrum is identical to itself"


def test_tropylium_rule_points_to_benzyl(featured) -> None:
    """The rules include frag@91.05 -> benzyl (tropylium ion from benzyl groups) with lift > 1."""
    root, _ = featured
    rules = _q(root, "SELECT items, substructure, confidence, lift FROM patterns WHERE kind = 'rule' "
                     "AND items = ['frag@91.05'] AND substructure = 'benzyl'")
    assert rules and rules[0][3] > 1.0, rules
    assert _q(root, "SELECT count(*) FROM patterns WHERE kind = 'motif'")[0][0] == 4


def test_incremental_new_spectra_only_then_nothing(featured, spark) -> None:
    """New spectra get features with the same models; a run with nothing new writes no table version."""
    root, _ = featured
    new = compound_spectra("benzylamine", 3, seed=99)
    for k, s in enumerate(new):
        s["spectrum_id"] = f"new-{k}"
    make_lake(root, new, compound_rows(list(COMPOUNDS_SPEC)), run_id="r2")
    report = run_features(root, SETTINGS, spark=spark)
    assert report.refit == [] and report.computed["refsim"] == 3 and report.computed["fragtrees"] == 3
    assert _q(root, "SELECT count(*) FROM spectrum_features")[0][0] == 6 * 12 + 2 + 3
    again = run_features(root, SETTINGS, spark=spark, only="refsim,spec2vec")
    assert again.table_versions == {}, "nothing new: no version"


def test_settings_change_recomputes(featured, spark) -> None:
    """Another Morgan size is another settings hash: descriptors of every structure are computed again."""
    root, _ = featured
    other = SETTINGS.model_copy(update={"descriptors": DescriptorSettings(morgan_bits=1024)})
    report = run_features(root, other, spark=spark, only="descriptors")
    assert report.computed["descriptors"] == len(COMPOUNDS_SPEC)
    assert max(_q(root, f"SELECT max(list_max(morgan_on)) FROM descriptors "
                        f"WHERE settings_hash = '{other.settings_hash()}'")[0]) < 1024


def test_tree_command_prints_and_draws(featured, tmp_path) -> None:
    """`speclake tree ID` prints the indented tree; --png draws it; a skipped spectrum gives its reason."""
    root, _ = featured
    sid = _q(root, "SELECT spectrum_id FROM fragtrees WHERE len(linked_spectrum_ids) > 0")[0][0]
    png = tmp_path / "t.png"
    res = CliRunner().invoke(tree_cmd, [sid, "--lake", str(root), "--png", str(png)])
    assert res.exit_code == 0, res.output
    assert "C9H12NO2+" in res.output and "C7H7+" in res.output and png.stat().st_size > 1000
    res = CliRunner().invoke(tree_cmd, ["bad-ms1", "--lake", str(root)])
    assert res.exit_code != 0 and "ms1_spectrum" in res.output


def test_features_help_lists_features() -> None:
    """`speclake features --help` names the features and the tables."""
    res = CliRunner().invoke(features_cmd, ["--help"])
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "fragtrees, patterns, refsim, spec2vec, descriptors" in text


def test_feature_job_runs_the_jvm_with_its_full_jit() -> None:
    """The feature job's Spark settings keep C2 (Word2Vec and LDA train in the JVM; C1-only made Spec2Vec ~5x
    slower), while ingest keeps the quick C1-only JVM."""
    from speclake.infra.spark import spark_conf
    from speclake.pipelines.ingest import IngestSettings

    assert FeaturesSettings().spark.quick_jvm is False
    assert IngestSettings().spark.quick_jvm is True
    options = spark_conf(FeaturesSettings().spark).get("spark.driver.extraJavaOptions", "")
    assert "TieredStopAtLevel=1" not in options
