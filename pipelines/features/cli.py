"""`speclake features` and `speclake tree` (registered by speclake.cli as ``features_cmd`` and ``tree_cmd``)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

log = logging.getLogger(__name__)

DEFAULT_LAKE = "speclake-lake"


def _load_settings(path: str | None, master: str | None) -> Any:
    from speclake.pipelines.features.job import FeaturesSettings

    data: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8")) if path else {}
    settings = FeaturesSettings.model_validate(data)
    if master:
        settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"master": master})})
    return settings


@click.command("features", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory (made by `speclake ingest`).")
@click.option("--only", default=None, metavar="LIST",
              help="Comma-separated subset of: fragtrees, patterns, refsim, spec2vec, descriptors "
                   "(patterns also computes descriptors). Default: all.")
@click.option("--settings", "settings_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="JSON file with FeaturesSettings (unknown keys are refused); defaults otherwise.")
@click.option("--refit", is_flag=True, help="Choose the reference panel, train Word2Vec and mine patterns again, "
                                           "and recompute every spectrum.")
@click.option("--master", default=None, help="Spark master (default: local[*] or $SPECLAKE_SPARK_MASTER).")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
def features_cmd(lake_dir: str, only: str | None, settings_path: str | None, refit: bool, master: str | None,
                 as_json: bool) -> None:
    """Compute spectral features into the lake: fragmentation trees, mined patterns
    (association rules and LDA motifs), reference-panel similarities, Spec2Vec vectors
    and structure descriptors.

    Incremental: only spectra and structures without features for the same settings
    are computed; models (reference panel, word vectors, patterns) are reused.
    Tables written: fragtrees, patterns, spectrum_features, descriptors, feature_skips
    (every left-out spectrum with the reason). Query them with `speclake sql`.
    """
    from speclake.pipelines.features.job import parse_only, run_features
    from speclake.progress import stage_bar

    settings = _load_settings(settings_path, master)
    features = parse_only(only)
    with stage_bar("features", ["spark_start", "prepare", *features, "write", "commit", "spark_stop"]) as progress:
        report = run_features(lake_dir, settings, only=features, progress=progress, refit=refit)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1, default=str))
        return
    click.echo(f"features run {report.run_id} over {report.spectra_in_lake} spectra "
               f"(settings {report.settings_hash}) in {report.seconds:.1f} s")
    for feature in report.features:
        skipped = report.skipped.get(feature, {})
        reasons = ", ".join(f"{k} {v}" for k, v in skipped.items())
        click.echo(f"  {feature:<12} {report.computed.get(feature, 0):>8} computed  "
                   f"{sum(skipped.values()):>7} skipped{'  (' + reasons + ')' if reasons else ''}")
    if report.refit:
        click.echo(f"  models fitted: {', '.join(report.refit)}")
    if report.n_rules or report.n_motifs:
        click.echo(f"  patterns: {report.n_rules} rules, {report.n_motifs} motifs")
        for r in report.top_rules[:5]:
            click.echo(f"    {r['name']}  (support {r['support']:.4f}, confidence {r['confidence']:.2f}, "
                       f"lift {r['lift']:.1f})")
    if report.table_versions:
        click.echo("  tables: " + ", ".join(f"{t} v{v}" for t, v in sorted(report.table_versions.items())))


def _dicts(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _tree_from_lake(lake_dir: str, spectrum_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """(fragtrees row, None) or (None, why there is none)."""
    from speclake.lake import sql
    from speclake.pipelines.features.tables import register_feature_tables

    register_feature_tables()
    con = sql.connect(lake_dir)
    try:
        rows = _dicts(con.execute("SELECT * FROM fragtrees WHERE spectrum_id = ? ORDER BY features_run_id DESC "
                                  "LIMIT 1", [spectrum_id]))
        if rows:
            return rows[0], None
        skip = con.execute("SELECT reason_code, reason FROM feature_skips WHERE spectrum_id = ? AND feature = "
                           "'fragtrees' ORDER BY features_run_id DESC LIMIT 1", [spectrum_id]).fetchall()
        if skip:
            return None, f"no tree for {spectrum_id}: {skip[0][0]} ({skip[0][1]})"
        found = con.execute("SELECT count(*) FROM spectra WHERE spectrum_id = ?", [spectrum_id]).fetchone()[0]
        if not found:
            return None, f"no spectrum {spectrum_id!r} in the lake"
        return None, None
    finally:
        con.close()


def compute_tree_now(lake_dir: str, spectrum_id: str) -> tuple[dict[str, Any] | None, str]:
    """Tree of one lake spectrum computed on the spot (no Spark); (row, message)."""
    from speclake.lake import sql
    from speclake.pipelines.features.fragtree import Skipped, compute_tree
    from speclake.pipelines.features.tables import TREE_FEATURE_NAMES  # noqa: F401  (tables registered)

    con = sql.connect(lake_dir)
    try:
        rows = _dicts(con.execute(
            "SELECT s.spectrum_id, s.inchikey, c.formula, s.adduct, s.mz, s.intensities, s.precursor_mz, "
            "s.instrument_type FROM spectra s LEFT JOIN compounds c USING (inchikey) WHERE s.spectrum_id = ?",
            [spectrum_id]))
    finally:
        con.close()
    if not rows:
        return None, f"no spectrum {spectrum_id!r} in the lake"
    r = rows[0]
    if not r["formula"]:
        return None, f"no tree for {spectrum_id}: unannotated (no structure, hence no precursor formula)"
    tree = compute_tree(r["formula"], r["adduct"], r["mz"], r["intensities"], precursor_mz=r["precursor_mz"],
                        instrument_type=r["instrument_type"])
    if isinstance(tree, Skipped):
        return None, f"no tree for {spectrum_id}: {tree.reason_code} ({tree.reason})"
    return tree.to_row(), "not in the fragtrees table yet: computed now with default settings"


@click.command("tree", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spectrum_id")
@click.option("--lake", "lake_dir", default=DEFAULT_LAKE, show_default=True, type=click.Path(file_okay=False),
              help="Lake directory.")
@click.option("--png", "png", default=None, type=click.Path(dir_okay=False),
              help="Also draw the tree to this image file (.png, .svg or .pdf).")
def tree_cmd(spectrum_id: str, lake_dir: str, png: str | None) -> None:
    """Show the fragmentation tree of one spectrum: formula, m/z, intensity and
    mass error of every explained peak, indented under its parent with the
    neutral loss between them. Reads the fragtrees table (run `speclake features`);
    a spectrum without a stored tree gets one computed on the spot.
    """
    from speclake.pipelines.features.treeview import draw_tree, format_tree

    row, why = _tree_from_lake(lake_dir, spectrum_id)
    if row is None and why is not None:
        raise click.ClickException(why)
    if row is None:
        row, note = compute_tree_now(lake_dir, spectrum_id)
        if row is None:
            raise click.ClickException(note)
        click.echo(f"({note})", err=True)
    click.echo(format_tree(row))
    if png:
        draw_tree(row, png, title=f"{spectrum_id}: {row.get('precursor_formula')} {row.get('adduct')}")
        click.echo(f"drawn to {png}", err=True)
