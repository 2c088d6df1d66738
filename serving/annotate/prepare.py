"""``speclake annotate-prepare``: make what the default annotation method needs, after a fresh ingest.

:func:`prepare_lake` is one :class:`~speclake.lake.run.Run` of kind ``annotate-prepare`` (no lock of its
own: each step takes the lock its own job takes) with five steps, each skipped when already up to date:

    features   the ``descriptors`` table (Morgan bits of library structures: the evidence's library
               fingerprints; ``--all-features`` for every feature)    up to date: every lake compound has
               a descriptors row or a recorded skip for the current settings hash
    index      the fingerprint structure index with the lake compounds and ``--structures``
               (:func:`speclake.training.candidates.ensure_index`)   up to date: every lake InChIKey-14
               is indexed and every structure file (by sha256) was added before
    library    the library index beside the lake (:class:`speclake.serving.library.LibraryIndex`)
               up to date: it covers the current ``spectra`` version
    ranker     a fused, calibrated ranker (:func:`.rankers.fit_ranker`)   up to date: the newest ranker
               was fitted with the same settings on the same lake inputs (:func:`.rankers.lake_inputs`)
    priors     the library prior of every indexed structure against the lake's library (:mod:`.priors`)
               up to date: every index shard has its file for the current library

The structure files added by this command are recorded in ``<lake>/reports/annotate-prepare.json``.
"""
from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import click
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunError, RunReport
from speclake.serving.annotate.job import file_sha256
from speclake.serving.annotate.ranker_fit import fit_ranker
from speclake.serving.annotate.rankers import FALLBACK, RankerSettings, lake_inputs, list_rankers

log = logging.getLogger(__name__)

STEPS = ("features", "index", "library", "ranker", "priors")
#: Record of the structure files this command added, per index: ``{index_name: {sha256: path}}``.
RECORD = Path("reports") / "annotate-prepare.json"
DONE, SKIPPED = "done", "skipped"


class PrepareSettings(BaseModel):
    """Settings of ``annotate-prepare`` (saved in the run record; unknown keys refused)."""

    model_config = ConfigDict(extra="forbid")

    features: list[str] | None = Field(["descriptors"], description="features to compute; None: all of them")
    skip_features: bool = False
    index_name: str = "fingerprint"
    structures: list[str] = Field(default_factory=list, description="structure files added to the index")
    ranker: RankerSettings = Field(default_factory=RankerSettings)
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray for the index build (default: all)")


@dataclass
class PrepareReport(RunReport):
    """Each step's outcome (``step``, ``status`` done|skipped, ``seconds``, ``detail``) and the ranker's figures."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    ranker_id: str = ""
    ranker_fitted: bool = False
    #: the ranker's test split: method -> {n, hit1, hit5, hit20} (fused, prior, library+prior, random)
    test: dict[str, dict[str, float]] = field(default_factory=dict)
    #: the ranker's test calibration: n, ece, above: [{threshold, n, precision, share_of_queries}]
    calibration: dict[str, Any] = field(default_factory=dict)


# -- up-to-date checks ---------------------------------------------------------------------------------
def _column(lake: Lake, table: str, columns: list[str]) -> Any:
    files = lake.files(table)
    if not files:
        return None
    import pyarrow as pa

    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def descriptors_todo(lake: Lake, settings_hash: str) -> int:
    """Lake compounds with neither a ``descriptors`` row nor a descriptors skip for ``settings_hash``."""
    compounds = _column(lake, "compounds", ["inchikey"])
    if compounds is None:
        return 0
    done: set[str] = set()
    desc = _column(lake, "descriptors", ["inchikey", "settings_hash"])
    if desc is not None:
        done |= {k for k, h in zip(*(desc.column(c).to_pylist() for c in ("inchikey", "settings_hash")))
                 if h == settings_hash}
    skips = _column(lake, "feature_skips", ["inchikey", "feature", "settings_hash"])
    if skips is not None:
        done |= {k for k, f, h in zip(*(skips.column(c).to_pylist() for c in ("inchikey", "feature", "settings_hash")))
                 if f == "descriptors" and h == settings_hash and k is not None}
    return len(set(compounds.column("inchikey").to_pylist()) - done)


def lake_inchikey14(lake: Lake) -> list[str]:
    compounds = _column(lake, "compounds", ["inchikey14"])
    return sorted({k for k in compounds.column("inchikey14").to_pylist() if k}) if compounds is not None else []


def missing_from_index(lake_dir: Path, index_name: str, keys: Sequence[str]) -> int | None:
    """How many of ``keys`` the structure index lacks (None: there is no index)."""
    from speclake.index.search import IndexNotFound, StructureIndex, index_dir

    try:
        idx = StructureIndex.open(index_dir(lake_dir, index_name))
    except IndexNotFound:
        return None
    try:
        got = set(idx.catalog.lookup(inchikeys=list(keys)).column("inchikey14").to_pylist()) if keys else set()
    finally:
        idx.close()
    return len(set(keys) - got)


def _read_record(lake_dir: Path) -> dict[str, dict[str, str]]:
    path = lake_dir / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_record(lake_dir: Path, record: dict[str, dict[str, str]]) -> None:
    path = lake_dir / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, path)


def up_to_date_ranker(lake_dir: Path, settings: RankerSettings, index_name: str) -> dict[str, Any] | None:
    """The newest fitted ranker if it was fitted with ``settings`` on the lake's current inputs, else None."""
    fitted = list_rankers(lake_dir)
    if not fitted:
        return None
    info = json.loads((Path(fitted[0]["path"]) / "settings.json").read_text())
    same = (info.get("settings") == json.loads(json.dumps(settings.model_dump(), default=float))
            and info.get("inputs") == lake_inputs(lake_dir, index_name))
    return fitted[0] if same else None


# -- the command's work --------------------------------------------------------------------------------
def prepare_lake(lake: str | os.PathLike[str], structures: Sequence[str | os.PathLike[str]] = (),
                 settings: PrepareSettings | None = None, progress: Progress | None = None, *,
                 spark: Any = None) -> PrepareReport:
    """Make everything the default annotation method needs (see the module doc); returns the report.

    ``structures`` are added to ``settings.structures``; ``spark``: a running Spark session for the
    features step (else one is started and stopped there)."""
    settings = settings or PrepareSettings()
    if structures:
        settings = settings.model_copy(update={"structures": [*settings.structures, *map(str, structures)]})
    for s in settings.structures:
        if not Path(s).is_file():
            raise FileNotFoundError(f"structure file not found: {s}")
    lake_obj = Lake(lake)
    root = lake_obj.root
    if lake_obj.current("spectra") is None:
        raise RunError(f"{lake} has no spectra: run `speclake ingest FILES --lake {lake}` first")
    report = PrepareReport()
    with Run(lake_obj, "annotate-prepare", settings, report, progress=progress, lock=None) as run:
        def step(name: str, status: str, t0: float, detail: str) -> None:
            report.steps.append({"step": name, "status": status, "seconds": round(time.perf_counter() - t0, 3),
                                 "detail": detail})

        with run.stage("features"):
            t0 = time.perf_counter()
            status, detail = _features(root, settings, progress, spark)
            step("features", status, t0, detail)
        with run.stage("index"):
            t0 = time.perf_counter()
            status, detail = _index(root, settings)
            step("index", status, t0, detail)
        with run.stage("library"):
            t0 = time.perf_counter()
            status, detail = _library(root, progress)
            step("library", status, t0, detail)
        with run.stage("ranker"):
            t0 = time.perf_counter()
            status, detail = _ranker(root, settings, progress, report)
            step("ranker", status, t0, detail)
        with run.stage("priors"):
            t0 = time.perf_counter()
            status, detail = _priors(root, settings, progress)
            step("priors", status, t0, detail)
    return report


def _features(root: Path, settings: PrepareSettings, progress: Progress | None, spark: Any) -> tuple[str, str]:
    from speclake.pipelines.features.job import FeaturesSettings, run_features

    if settings.skip_features:
        return SKIPPED, "--skip-features"
    fs = FeaturesSettings()
    if settings.features == ["descriptors"]:
        todo = descriptors_todo(Lake(root), fs.settings_hash())
        if todo == 0:
            return SKIPPED, "descriptors up to date"
    rep = run_features(root, fs, only=settings.features, spark=spark, progress=progress)
    computed = ", ".join(f"{k} {v:,}" for k, v in sorted(rep.computed.items())) or "nothing new"
    return DONE, f"computed: {computed}"


def _index(root: Path, settings: PrepareSettings) -> tuple[str, str]:
    from speclake.index.search import index_dir, read_manifest
    from speclake.training.candidates import ensure_index

    record = _read_record(root)
    added = record.get(settings.index_name, {})
    files = {file_sha256(s): str(s) for s in settings.structures}
    new_files = [p for sha, p in files.items() if sha not in added]
    keys = lake_inchikey14(Lake(root))
    missing = missing_from_index(root, settings.index_name, keys)
    if missing == 0 and not new_files:
        count = read_manifest(index_dir(root, settings.index_name)).get("count", 0)
        return SKIPPED, f"{settings.index_name}: {count:,} structures, every lake compound indexed"
    ensure_index(root, new_files, index_name=settings.index_name, required_inchikeys=keys, num_cpus=settings.num_cpus)
    record[settings.index_name] = {**added, **{sha: p for sha, p in files.items() if p in new_files}}
    _write_record(root, record)
    count = read_manifest(index_dir(root, settings.index_name)).get("count", 0)
    why = "built" if missing is None else f"{missing:,} lake compounds added" if missing else "updated"
    return DONE, f"{settings.index_name}: {why}, {len(new_files)} structure file(s) added; {count:,} structures"


def _library(root: Path, progress: Progress | None) -> tuple[str, str]:
    from speclake.lake.catalog import LakeError
    from speclake.serving.library.index import LibraryIndex

    version = Lake(root).current("spectra").version
    try:
        index = LibraryIndex.load(root)
        if index.spectra_version == version:
            return SKIPPED, f"{index.n_spectra:,} spectra indexed (spectra v{version})"
    except (LakeError, FileNotFoundError):
        pass
    rep = LibraryIndex.update(root, progress=progress)
    index = LibraryIndex.load(root)
    skipped = sum(rep.skipped.values())
    return DONE, f"{rep.spectra_indexed:,} spectra indexed ({index.n_spectra:,} in all; {skipped:,} left out)"


def _ranker(root: Path, settings: PrepareSettings, progress: Progress | None,
            report: PrepareReport) -> tuple[str, str]:
    current = up_to_date_ranker(root, settings.ranker, settings.index_name)
    if current is not None:
        ranker_id = current["ranker_id"]
        metrics = json.loads((Path(current["path"]) / "metrics.json").read_text())
        status = SKIPPED
    else:
        ranker_id, metrics = fit_ranker(root, settings.ranker, progress)
        status = DONE
    report.ranker_id, report.ranker_fitted = ranker_id, status == DONE
    methods = metrics["test"]["methods"]
    report.test = {m: methods[m]["all"] for m in ("fused", "prior", FALLBACK, "random") if m in methods}
    cal = metrics["test"]["calibration"]
    report.calibration = {"n": cal["n"], "ece": cal["ece"], "above": cal["above"]}
    n = metrics["test"]["n_queries"]
    return status, f"{ranker_id} ({'fitted' if status == DONE else 'up to date'}; {n:,} test queries)"


def _priors(root: Path, settings: PrepareSettings, progress: Progress | None) -> tuple[str, str]:
    from speclake.serving.annotate.steps import Annotator, StepSettings

    annotator = Annotator(root, StepSettings(index_name=settings.index_name))
    try:
        note = (lambda done, total: progress("priors", done, total)) if progress is not None else None
        stats = annotator.ensure_priors(note)
    finally:
        annotator.close()
    if stats is None:
        return SKIPPED, f"no Morgan fingerprint index {settings.index_name!r}: priors are computed per candidate"
    if not stats["computed"]:
        return SKIPPED, f"{stats['reused']:,} structures' priors up to date"
    return DONE, f"{stats['computed']:,} structures' priors computed ({stats['reused']:,} up to date)"


# -- the command ---------------------------------------------------------------------------------------
@contextmanager
def _bar() -> Iterator[Progress]:
    from speclake.progress import stage_bar

    with stage_bar("annotate-prepare", list(STEPS)) as progress:
        yield progress


def _fmt(v: Any) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def echo_report(report: PrepareReport) -> None:
    """The summary table (each step's status and wall time) and the ranker's test figures."""
    from speclake.cli import format_table

    rows = [(s["step"], s["status"], f"{s['seconds']:.1f}", s["detail"]) for s in report.steps]
    rows.append(("total", "", f"{report.seconds:.1f}", ""))
    click.echo(format_table(["step", "status", "wall s", "detail"], rows, len(rows), width=90))
    if not report.test:
        return
    click.echo(f"\nranker {report.ranker_id}, test split (structures never seen in fitting):")
    rows = [(m, int(v["n"]), _fmt(v["hit1"]), _fmt(v["hit5"]), _fmt(v["hit20"])) for m, v in report.test.items()]
    click.echo(format_table(["method", "n", "hit@1", "hit@5", "hit@20"], rows, len(rows)))
    cal = report.calibration
    above = "; ".join(f"conf >= {a['threshold']:g}: {a['n']:,} hits, precision {_fmt(a['precision'])}"
                      for a in cal["above"])
    click.echo(f"calibration on {cal['n']:,} test queries: ECE {_fmt(cal['ece'])}; {above}")


@click.command("annotate-prepare")
@click.option("--lake", "lake_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Lake directory (made by `speclake ingest`).")
@click.option("--structures", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Structure file (SDF, CID-SMILES, SMILES; .gz ok) added to the structure index; repeatable.")
@click.option("--skip-features", is_flag=True, help="Do not compute features (the evidence then fingerprints "
              "library structures itself, which is slower).")
@click.option("--all-features", is_flag=True, help="Compute every feature (trees, patterns, refsim, Spec2Vec, "
              "descriptors), not only the descriptors the evidence reads.")
@click.option("--validation", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Validation-split spectra the ranker is fitted and calibrated on (at most).")
@click.option("--test", "n_test", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Test-split spectra the ranker is evaluated on (at most).")
@click.option("--fragmenter-top", type=click.IntRange(min=0),
              default=RankerSettings.model_fields["fragmenter_top"].default, show_default=True,
              help="Re-rank the ranker's top N with MetFrag-style in-silico fragmentation (more right answers at "
                   "rank 1 and in the top 20; ~1.5 ms per candidate and scan, ~75 ms per scan at 50); 0: off, "
                   "faster annotation (an estimated 3x on 2 cores).")
@click.option("--fusion", type=click.Choice(["auto", "linear", "net"]), default="auto", show_default=True,
              help="How the ranker fuses evidence: a linear listwise score, a small listwise network that weighs "
                   "evidence by the scan's context, or whichever has the lower out-of-fold loss (auto).")
@click.option("--index-name", default="fingerprint", show_default=True, help="Structure index of the lake.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of a local Ray (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def annotate_prepare_cmd(lake_dir: Path, structures: tuple[str, ...], skip_features: bool, all_features: bool,
                         validation: int, n_test: int, fragmenter_top: int, fusion: str, index_name: str,
                         num_cpus: int | None, as_json: bool) -> None:
    """Prepare a freshly ingested lake for `speclake annotate` (each step skipped when up to date).

    \b
    1. features  the descriptors table: Morgan bits of the library structures, which the
                 library evidence compares with candidates (--all-features: every feature;
                 --skip-features: none)
    2. index     the fingerprint structure index: lake compounds + --structures files
                 (where annotation's candidates come from)
    3. library   the inverted fragment index of the lake's spectra (identity and analogue
                 library search), beside the lake in _library/
    4. ranker    fits the fused ranker on validation-split spectra (library evidence, prior,
                 trained models), calibrates its rank-1 confidence, and prints its test
                 hit@1/5/20 beside the library prior and random ranking, with the
                 calibration (ECE, precision of hits with confidence >= 0.5 / 0.8 / 0.9)

    \b
    speclake annotate-prepare --lake mylake --structures zinc_moses_1.9M.smi.gz
    speclake rankers --lake mylake
    """
    from dataclasses import asdict

    settings = PrepareSettings(features=None if all_features else ["descriptors"], skip_features=skip_features,
                               index_name=index_name, structures=list(structures), num_cpus=num_cpus,
                               ranker=RankerSettings(index_name=index_name, max_validation=validation,
                                                     max_test=n_test, fragmenter_top=fragmenter_top,
                                                     fusion=fusion))
    with _bar() as progress:
        report = prepare_lake(lake_dir, settings=settings, progress=progress)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2, default=str))
        return
    echo_report(report)


__all__ = ["PrepareReport", "PrepareSettings", "annotate_prepare_cmd", "descriptors_todo", "prepare_lake"]
