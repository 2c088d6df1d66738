"""The platform config (infra/config.py): validation, path resolution, round trip, the shipped local.yaml."""
from __future__ import annotations

from pathlib import Path

import pytest

from speclake.infra.config import (SAMPLE_STUDY_DIR, ConfigError, PlatformConfig, dump_config, load_config,
                                   parse_config)
from tests.conftest import REPO


def test_local_yaml_loads_with_paths_against_its_folder():
    """infra/local.yaml validates; its relative lake (../speclake-lake) resolves against infra/, not the cwd."""
    cfg = load_config(REPO / "infra" / "local.yaml")
    assert cfg.lake == str(REPO / "speclake-lake")
    assert cfg.engines.spark_master == "local[2]"
    assert cfg.schedules.refresh == "0 2 * * *" and cfg.schedules.annotate is None
    assert cfg.study_files() == [str(SAMPLE_STUDY_DIR)]
    assert sorted(Path(p).name for p in cfg.library_sources()) == ["gnps_pesticides.mgf", "massbank_sample.txt.gz"]


def test_unknown_key_refused_with_its_dotted_name(tmp_path):
    """A misspelt nested key fails with the file and the dotted key in the message."""
    path = tmp_path / "bad.yaml"
    path.write_text("lake: l\nengines:\n  spark_mastr: local[4]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: engines\.spark_mastr: Extra inputs are not permitted"):
        load_config(path)


@pytest.mark.parametrize("data, key", [
    ({"schedules": {"refresh": "0 25 * * *"}}, "schedules.refresh"),
    ({"schedules": {"retrain": "weekly"}}, "schedules.retrain"),
    ({"architectures": ["arch9"]}, "architectures"),
    ({"features": {"only": ["peaks"]}}, "features.only"),
    ({"train": {"epochs": 0}}, "train.epochs"),
])
def test_invalid_values_named(data, key):
    """Bad cron expressions, architectures, features and numbers are refused naming their key."""
    with pytest.raises(ConfigError, match=rf"^config: {key}: "):
        parse_config(data, "/tmp")


def test_paths_resolved_and_round_trip(tmp_path):
    """Relative lake/sources/structures/study/report paths resolve against the config's folder (globs kept
    as patterns and expanded by study_files); the dumped YAML loads back to an equal object."""
    (tmp_path / "runs").mkdir()
    for name in ("b.mzML", "a.mzML"):
        (tmp_path / "runs" / name).write_text("x")
    path = tmp_path / "cfg.yaml"
    path.write_text("lake: data/lake\nsources: [libs/massbank]\nstructures: [s.smi]\n"
                    "study: {name: S1, files: ['runs/*.mzML']}\nreport: {out: out/r.html}\n")
    cfg = load_config(path)
    assert cfg.lake == str(tmp_path / "data" / "lake")
    assert cfg.sources == [str(tmp_path / "libs" / "massbank")]
    assert cfg.structures == [str(tmp_path / "s.smi")]
    assert cfg.study_files() == [str(tmp_path / "runs" / "a.mzML"), str(tmp_path / "runs" / "b.mzML")]
    assert cfg.report_path() == tmp_path / "out" / "r.html"
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg
    assert PlatformConfig.model_validate(cfg.model_dump()) == cfg


def test_engines_map_onto_spark_and_ray_settings():
    """The engines section becomes the SparkSettings and RaySettings the stages take."""
    cfg = parse_config({"engines": {"spark_master": "spark://head:7077", "spark_conf": {"spark.executor.memory": "8g"},
                                    "ray_address": "ray://head:10001"}}, "/tmp")
    spark = cfg.engines.spark()
    assert (spark.master, spark.conf) == ("spark://head:7077", {"spark.executor.memory": "8g"})
    ray = cfg.engines.ray()
    assert (ray.address, ray.num_cpus) == ("ray://head:10001", None)


def test_empty_file_is_the_defaults(tmp_path):
    """An empty YAML file gives the defaults, the lake beside the file."""
    path = tmp_path / "empty.yaml"
    path.write_text("")
    cfg = load_config(path)
    assert cfg.lake == str(tmp_path / "speclake-lake") and cfg.architectures == [] and cfg.retry.retries == 2
    assert cfg.retry.delays() == [10.0, 20.0]


def test_environment_references_expanded(tmp_path):
    """``${VAR:-default}`` takes the environment's value or the default; an unset ``${VAR}`` without
    default is refused naming the variable."""
    path = tmp_path / "site.yaml"
    path.write_text("lake: ${SITE_LAKE:-/data/lake}\nengines: {spark_master: '${SITE_MASTER:-local[2]}'}\n")
    cfg = load_config(path, env={"SITE_MASTER": "spark://head:7077"})
    assert (cfg.lake, cfg.engines.spark_master) == ("/data/lake", "spark://head:7077")
    path.write_text("lake: ${SITE_LAKE}\n")
    with pytest.raises(ConfigError, match="SITE_LAKE is not set"):
        load_config(path, env={})


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "infra").glob("*.yaml")))
def test_shipped_configs_load(name):
    """Every config shipped in infra/ (local, cluster, Kubernetes) validates with its defaults."""
    cfg = load_config(REPO / "infra" / name, env={})
    assert Path(cfg.lake).is_absolute() and cfg.engines.spark_master
