"""The platform configuration: one YAML file names the lake, the sources, the study, the models to
train, the engines (Spark, Ray) and the schedules of the flows (:mod:`speclake.pipelines.flows`).

>>> cfg = load_config("infra/local.yaml")     # relative paths resolved against the file's folder
>>> cfg.engines.spark_master, cfg.schedules.refresh
('local[2]', '0 2 * * *')

Unknown keys are refused with their dotted name (``engines.spark_mastr: extra inputs are not
permitted``); every path is resolved against the folder of the config file, so one file works from
any working directory and on any node that mounts the same paths. Empty ``sources`` mean the sample
bundled with speclake, empty ``study.files`` the bundled LC-MS/MS study.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "speclake"
SAMPLE_DIR = PACKAGE_DIR / "sample"
SAMPLE_STUDY_DIR = SAMPLE_DIR / "study"


class ConfigError(ValueError):
    """A config file that cannot be read or does not validate (the message names the file and key)."""


def _check_cron(expr: str | None) -> str | None:
    """A five-field cron expression (ValueError naming it otherwise); None stays None (no schedule)."""
    if expr is None:
        return None
    from cronsim import CronSim, CronSimError

    if len(expr.split()) != 5:
        raise ValueError(f"cron expression {expr!r} must have 5 fields (minute hour day month weekday)")
    try:
        CronSim(expr, datetime.now(timezone.utc))
    except CronSimError as exc:
        raise ValueError(f"invalid cron expression {expr!r}: {exc}") from exc
    return expr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudyConfig(_Strict):
    """The LC-MS/MS study the ``annotate`` flow annotates."""

    name: str = Field("demo", min_length=1, description="study name in the annotation tables")
    files: list[str] = Field(default_factory=list, description="files, folders or globs; [] -> the bundled study")
    top_k: int = Field(20, ge=1, description="ranked structures kept per scan")
    ionmode: str | None = Field(None, description="ion mode of scans whose file gives none (positive|negative)")


class FeaturesConfig(_Strict):
    """The feature stage: which features, with which settings (a ``FeaturesSettings`` dict)."""

    only: list[str] | None = Field(["descriptors"], description="features to compute; None -> all of them")
    settings: dict[str, Any] = Field(default_factory=dict, description="FeaturesSettings (unknown keys refused)")

    @field_validator("settings")
    @classmethod
    def _valid_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        from speclake.pipelines.features.job import FeaturesSettings

        FeaturesSettings.model_validate(v)
        return v

    @field_validator("only")
    @classmethod
    def _known_features(cls, v: list[str] | None) -> list[str] | None:
        from speclake.pipelines.features.job import parse_only

        if v is not None:
            parse_only(v)
        return v


class TrainConfig(_Strict):
    """Training of each architecture in ``architectures`` (small defaults: a demo run)."""

    epochs: int = Field(2, ge=1)
    batch_size: int = Field(32, ge=2)
    patience: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    num_workers: int = Field(1, ge=1, description="Ray Train workers")
    cpus_per_worker: float = Field(1.0, gt=0)
    use_gpu: bool = False
    model: dict[str, dict[str, Any]] = Field(default_factory=dict, description="architecture settings, per arch")


class EnginesConfig(_Strict):
    """Where the engines run: a local Spark and Ray by default, clusters by address."""

    spark_master: str = Field("local[2]", description="local[N], spark://host:7077, k8s://..., yarn")
    spark_driver_memory: str = "2g"
    spark_conf: dict[str, str] = Field(default_factory=dict, description="any other spark.* setting")
    ray_address: str | None = Field(None, description="Ray cluster (auto, ray://head:10001); None: a local Ray")
    num_cpus: int | None = Field(2, ge=1, description="CPUs of a local Ray (ignored with ray_address)")

    def spark(self, *, quick_jvm: bool = True) -> Any:
        """The :class:`~speclake.infra.spark.SparkSettings` of these engines."""
        from speclake.infra.spark import SparkSettings

        return SparkSettings(master=self.spark_master, driver_memory=self.spark_driver_memory,
                             conf=dict(self.spark_conf), quick_jvm=quick_jvm)

    def ray(self) -> Any:
        """The :class:`~speclake.infra.ray.RaySettings` of these engines."""
        from speclake.infra.ray import RaySettings

        return RaySettings(address=self.ray_address, num_cpus=None if self.ray_address else self.num_cpus)


class SchedulesConfig(_Strict):
    """Cron schedules of the deployments (``speclake flow serve``); None: no schedule (run on demand)."""

    refresh: str | None = Field("0 2 * * *", description="nightly: ingest the sources, features, library index")
    retrain: str | None = Field("0 3 * * 0", description="weekly: train every architecture")
    index: str | None = Field("0 4 * * *", description="rebuild the structure index when the structures change")
    annotate: str | None = Field(None, description="annotate the study (new files only)")
    timezone: str = "UTC"

    @field_validator("refresh", "retrain", "index", "annotate")
    @classmethod
    def _valid_cron(cls, v: str | None) -> str | None:
        return _check_cron(v)


class RetryConfig(_Strict):
    """Retries of every flow task: ``retries`` more tries, delays doubling from ``delay_seconds``."""

    retries: int = Field(2, ge=0)
    delay_seconds: float = Field(10.0, ge=0)

    def delays(self) -> list[float]:
        """Exponential backoff: delay, 2 x delay, 4 x delay, ..."""
        return [self.delay_seconds * 2**i for i in range(self.retries)]


class ReportConfig(_Strict):
    """Where the study report goes; None: ``<lake>/reports/<study>.html``."""

    out: str | None = None


class PlatformConfig(_Strict):
    """Everything a flow needs; see the module docstring. Paths are absolute after :func:`load_config`."""

    lake: str = "speclake-lake"
    sources: list[str] = Field(default_factory=list, description="library files/folders; [] -> the bundled sample")
    structures: list[str] = Field(default_factory=list, description="structure files added to the index")
    study: StudyConfig = Field(default_factory=StudyConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    architectures: list[str] = Field(default_factory=list, description="models to train; [] -> no training")
    train: TrainConfig = Field(default_factory=TrainConfig)
    ranker: bool = Field(True, description="fit the annotation ranker (annotate-prepare) after the index")
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    schedules: SchedulesConfig = Field(default_factory=SchedulesConfig)
    retry: RetryConfig = Field(default_factory=RetryConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    @field_validator("architectures")
    @classmethod
    def _known_archs(cls, v: list[str]) -> list[str]:
        from speclake.training.models import check_arch

        for arch in v:
            check_arch(arch)
        return v

    # -- paths -----------------------------------------------------------------------------------
    def resolved(self, base: str | os.PathLike[str]) -> "PlatformConfig":
        """A copy with every relative path made absolute against ``base`` (globs kept as patterns)."""
        def fix(p: str) -> str:
            path = Path(os.path.expanduser(p))
            return str(path if path.is_absolute() else (Path(base) / path).resolve())

        update: dict[str, Any] = {"lake": fix(self.lake), "sources": [fix(s) for s in self.sources],
                                  "structures": [fix(s) for s in self.structures],
                                  "study": self.study.model_copy(update={"files": [fix(f) for f in self.study.files]})}
        if self.report.out:
            update["report"] = ReportConfig(out=fix(self.report.out))
        return self.model_copy(update=update)

    def library_sources(self) -> list[str]:
        """The library inputs of the ingest: ``sources``, or the bundled sample's files."""
        if self.sources:
            return list(self.sources)
        return sorted(str(p) for p in SAMPLE_DIR.iterdir() if p.is_file() and p.name != "README.md")

    def study_files(self) -> list[str]:
        """The study's files: globs expanded (sorted), folders kept; [] -> the bundled study folder.

        A pattern that matches nothing is kept as given, so the annotate stage names it as not found."""
        if not self.study.files:
            return [str(SAMPLE_STUDY_DIR)]
        out: list[str] = []
        for item in self.study.files:
            matches = sorted(glob.glob(item)) if glob.has_magic(item) else []
            out += matches or [item]
        return out

    def report_path(self) -> Path:
        """Where the study report is written."""
        return Path(self.report.out) if self.report.out else Path(self.lake) / "reports" / f"{self.study.name}.html"

    def settings_hash(self, *parts: str) -> str:
        """Hash of the named top-level sections (all when none): what a stage's fingerprint includes."""
        data = self.model_dump(mode="json", include=set(parts) or None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _dotted(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"]) or "(top level)"


def config_errors(exc: ValidationError) -> str:
    """One line per problem, each naming its dotted key: ``engines.spark_mastr: Extra inputs ...``."""
    return "; ".join(f"{_dotted(e)}: {e['msg']}" for e in exc.errors())


def parse_config(data: Any, base: str | os.PathLike[str], *, origin: str = "config") -> PlatformConfig:
    """Validate a config mapping (None: all defaults) and resolve its paths against ``base``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings at the top level, got {type(data).__name__}")
    try:
        cfg = PlatformConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{origin}: {config_errors(exc)}") from None
    return cfg.resolved(base)


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, env: Mapping[str, str] | None = None) -> str:
    """``${VAR}`` and ``${VAR:-default}`` replaced by the environment's value (or the default); a
    ``${VAR}`` without default whose variable is unset raises ConfigError naming it."""
    env = os.environ if env is None else env

    def one(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if env.get(name):
            return env[name]
        if default is None:
            raise ConfigError(f"environment variable {name} is not set and ${{{name}}} has no default")
        return default

    return _ENV_REF.sub(one, text)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> PlatformConfig:
    """The config in YAML file ``path`` (None: the defaults, paths against the working directory).

    ``${VAR:-default}`` references are expanded from ``env`` (default: the environment) first, so one
    file (``infra/cluster.yaml``) takes its cluster addresses from each site's environment."""
    import yaml

    if path is None:
        return parse_config({}, Path.cwd(), origin="defaults")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(expand_env(path.read_text(encoding="utf-8"), env))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, path.resolve().parent, origin=str(path))


def dump_config(cfg: PlatformConfig) -> str:
    """The config as YAML (what :func:`load_config` reads back to an equal object)."""
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


__all__ = ["ConfigError", "PlatformConfig", "SAMPLE_DIR", "SAMPLE_STUDY_DIR", "config_errors", "dump_config",
           "expand_env", "load_config", "parse_config"]
