"""The `speclake` command line.

Every subcommand explains itself with --help; long work shows a progress bar;
errors are one short line (use -v for details).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from speclake import __version__

log = logging.getLogger("speclake")

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
DEFAULT_LAKE = "speclake-lake"


def sample_inputs() -> list[str]:
    """The sample bundled with speclake (used when `ingest` gets no SOURCE)."""
    return sorted(str(p) for p in SAMPLE_DIR.iterdir() if p.is_file() and p.name != "README.md")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "pyspark"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


#: Command groups of later stages, imported only when used (keeps `speclake --help` fast).
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "index": ("speclake.index.cli", "index_cli", "Build and query sharded FAISS structure indexes."),
    "features": ("speclake.pipelines.features.cli", "features_cmd",
                 "Precompute fragmentation trees, patterns, reference similarities, Spec2Vec, descriptors."),
    "tree": ("speclake.pipelines.features.cli", "tree_cmd", "Show the fragmentation tree of one spectrum."),
    "train": ("speclake.training.cli", "train_cmd", "Train a model (arch1-arch5) under Ray Train and register it."),
    "tune": ("speclake.training.cli", "tune_cmd", "Tune an architecture's hyperparameters with Ray Tune (Optuna + ASHA)."),
    "models": ("speclake.training.cli", "models_cmd", "List the trained models of a lake."),
    "evaluate": ("speclake.training.evaluate_cli", "evaluate_cmd",
                 "Evaluate models vs. baselines, library search, random and prior on the same candidates."),
    "explain": ("speclake.training.evaluate_cli", "explain_cmd",
                "Per-peak integrated gradients of a model's descriptor prediction."),
    "annotate": ("speclake.serving.annotate.cli", "annotate_cmd",
                 "Annotate every MS2 scan of study files with ranked structures and a confidence."),
    "export": ("speclake.serving.annotate.cli", "export_group",
               "Export a study's annotations or de novo proposals (SIRIUS/GNPS columns)."),
    "annotate-prepare": ("speclake.serving.annotate.prepare", "annotate_prepare_cmd",
                         "Prepare a lake for annotate: descriptors, structure and library indexes, a fitted ranker."),
    "rankers": ("speclake.serving.annotate.cli", "rankers_cmd", "List the fitted annotation rankers of a lake."),
    "denovo": ("speclake.training.denovo.cli", "denovo_cmd",
               "Propose new structures for study scans with the SELFIES VAE (free or --near a parent, by formula)."),
    "denovo-train": ("speclake.training.denovo.cli", "denovo_train_cmd",
                     "Train the de novo SELFIES VAE and its spectrum-to-latent mapper under Ray Train."),
    "report": ("speclake.serving.report.cli", "report_cmd",
               "Write a study's annotations as one self-contained HTML report (plots, structures, trees)."),
    "serve": ("speclake.serving.api.cli", "serve_cmd",
              "Serve the lake over HTTP: annotate, lookups, read-only SQL, study reports (OpenAPI at /docs)."),
    "flow": ("speclake.pipelines.flows.cli", "flow_group",
             "Prefect flows (full, refresh, retrain, index, annotate): run one, show or serve the schedules."),
}


class SpeclakeGroup(click.Group):
    """Lazy subcommand groups; expected failures become one clear line instead of a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            import importlib

            module, attr, _ = LAZY_COMMANDS[name]
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise click.ClickException(f"`speclake {name}` is not available: {exc}") from exc
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, self.commands[n].get_short_help_str(60)) for n in sorted(self.commands)]
        rows += [(n, help_) for n, (_, _, help_) in LAZY_COMMANDS.items() if n not in self.commands]
        with formatter.section("Commands"):
            formatter.write_dl(sorted(rows))

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (FileNotFoundError, ValueError, PermissionError) as exc:
            if ctx.obj and ctx.obj.get("verbose", 0) > 1:
                raise
            raise click.ClickException(str(exc)) from exc
        except Exception as exc:
            from speclake.lake.catalog import LakeError

            if isinstance(exc, LakeError):
                raise click.ClickException(str(exc)) from exc
            raise


@click.group(cls=SpeclakeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="speclake")
@click.option("-v", "--verbose", count=True, help="More logging: -v for progress details, -vv for debug and tracebacks.")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """speclake: MS/MS spectral libraries into a Parquet lake, models, structure indexes, SQL.

    Typical session:

    \b
      speclake ingest MassBank-data/ gnps.mgf --lake mylake
      speclake sql "SELECT ionmode, count(*) FROM spectra GROUP BY 1" --lake mylake
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose)


@main.command()
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=str))
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory (created if missing).")
@click.option("--source", "source_name", default=None,
              help="Library label stored with every spectrum (e.g. massbank, gnps, mona, inhouse). "
                   "Default: massbank / gnps by format, else the file name.")
@click.option("--master", default=None, help="Spark master, e.g. local[4], spark://host:7077, yarn, k8s://... "
                                              "Default: local[*] (or $SPECLAKE_SPARK_MASTER).")
@click.option("--split-mb", default=8, show_default=True, type=click.IntRange(1, 1024),
              help="Target size of one Spark task's share of an input file, in MB.")
@click.option("--driver-memory", default="4g", show_default=True, help="Spark driver memory.")
def ingest(sources: tuple[str, ...], lake_dir: str, source_name: str | None, master: str | None, split_mb: int,
           driver_memory: str) -> None:
    """Ingest spectral libraries into the lake.

    SOURCES are files or directories, in any mix of formats: MassBank records
    (single .txt, a MassBank-data checkout, concatenated or .gz files), MGF
    (GNPS and other dialects), MSP (NIST, MoNA, MassBank, RIKEN), GNPS library
    JSON, mzML / mzXML. With no SOURCES, the sample bundled with speclake is
    ingested.

    Every record ends in table `spectra` (normalized, matchms names, SPLASH,
    licence) or in table `quarantine` with the reason; structures go to
    `compounds` (one row per InChIKey). Re-ingesting the same input adds
    nothing.
    """
    from speclake.infra.spark import SparkSettings
    from speclake.pipelines.ingest import IngestSettings, run_ingest
    from speclake.progress import stage_bar

    inputs = list(sources) or sample_inputs()
    if not sources:
        click.echo(f"No SOURCES given: ingesting the bundled sample ({len(inputs)} files from {SAMPLE_DIR}).", err=True)
    spark = SparkSettings(driver_memory=driver_memory, **({"master": master} if master else {}))
    settings = IngestSettings(source=source_name, split_bytes=split_mb * 2**20, spark=spark)
    stages = ["plan", "spark_start", "parse", "structures", "join", "write", "commit", "spark_stop"]
    with stage_bar("ingest", stages) as note:
        report = run_ingest(inputs, lake_dir, settings, progress=note)
    _print_report(report)


def _print_report(report) -> None:  # IngestReport
    click.echo(f"run {report.run_id}: {report.records_read} records read in {report.seconds:.1f} s "
               f"({report.records_per_second:.0f} records/s) into {report.lake}")
    rows = [
        ("spectra (accepted)", report.spectra_accepted),
        ("  new in lake", report.spectra_new),
        ("  already in lake", report.spectra_already_in_lake),
        ("quarantine", report.quarantined),
        ("  new in lake", report.quarantine_new),
        ("compounds (total)", report.compounds_total),
        ("  new", report.compounds_new),
    ]
    for label, n in rows:
        click.echo(f"  {label:<22}{n:>10}")
    if report.quarantine_reasons:
        click.echo("  quarantine by reason:")
        for reason, n in report.quarantine_reasons.items():
            click.echo(f"    {reason:<28}{n:>8}")
    stages = [(k, v) for k, v in report.stage_seconds.items() if "." not in k]
    if stages:
        click.echo("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stages))


@main.command()
@click.argument("query")
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the result to a .csv or .parquet file instead of printing it.")
@click.option("--max-rows", default=40, show_default=True, help="Rows to print (ignored with --out).")
@click.option("--read-only", is_flag=True, default=False,
              help="Only one read-only SELECT over the lake's views: no writes, COPY, ATTACH, INSTALL/LOAD, "
                   "file readers or settings (the guard the HTTP API uses), with a row limit and a timeout.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds a --read-only query may run.")
def sql(query: str, lake_dir: str, out: str | None, max_rows: int, read_only: bool, timeout: float) -> None:
    """Run SQL (DuckDB) over the lake; every table is a view.

    \b
    Tables: spectra, compounds, quarantine (and those of later stages).
    Example:
      speclake sql "SELECT reason_code, count(*) FROM quarantine GROUP BY 1"
      speclake sql --read-only "SELECT * FROM annotations_top1 WHERE confidence >= 0.8"
    """
    from speclake.lake.sql import connect, export

    if read_only:
        from speclake.lake.sql_guard import read_only_cli

        click.echo(read_only_cli(lake_dir, query, out=out, max_rows=max_rows, timeout_s=timeout))
        return

    con = connect(lake_dir)
    try:
        rel = con.sql(query)
        if rel is None:  # a statement without a result (e.g. SET)
            return
        if out:
            path = export(rel, out)
            click.echo(f"wrote {path}", err=True)
        else:
            click.echo(format_table(rel.columns, rel.limit(max_rows + 1).fetchall(), max_rows))
    except Exception as exc:
        import duckdb

        if isinstance(exc, duckdb.Error):
            raise click.ClickException(f"SQL error: {exc}") from exc
        raise
    finally:
        con.close()


def format_table(columns: list[str], rows: list[tuple], max_rows: int, width: int = 48) -> str:
    """Plain-text table of query results, long cells cut to ``width``."""
    def cell(v: object) -> str:
        s = "NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)
        return s if len(s) <= width else s[: width - 1] + "…"

    shown = [[cell(v) for v in r] for r in rows[:max_rows]]
    widths = [max([len(c)] + [len(r[i]) for r in shown]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in shown]
    if len(rows) > max_rows:
        out.append(f"... (more rows; use --max-rows or --out)")
    out.append(f"({len(shown)} row{'s' if len(shown) != 1 else ''} shown)")
    return "\n".join(out)


@main.command()
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory.")
def tables(lake_dir: str) -> None:
    """List the lake's tables: current version, rows, parts, schema version."""
    from speclake.lake.catalog import Lake
    from speclake.lake.schema import TABLES

    lake = Lake(lake_dir)  # declares every stage's tables
    current = lake.tables()
    rows = []
    for name in sorted(set(TABLES) | set(current)):
        tv = current.get(name)
        desc = TABLES[name].description if name in TABLES else ""
        rows.append((name, tv.version if tv else 0, tv.row_count if tv else 0, len(tv.parts) if tv else 0, desc))
    click.echo(format_table(["table", "version", "rows", "parts", "description"], rows, len(rows), width=90))


@main.command()
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory.")
def vacuum(lake_dir: str) -> None:
    """Delete parts left by interrupted runs (never part of a committed version)."""
    from speclake.lake.catalog import Lake

    lake = Lake(lake_dir)
    with lake.lock():
        removed = lake.vacuum()
    click.echo(f"removed {len(removed)} orphaned part(s)")


if __name__ == "__main__":  # pragma: no cover
    main()
