"""``speclake report``: one self-contained HTML report of an annotated study."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.option("--study", required=True, help="The study to report (as given to `speclake annotate --study`).")
@click.option("--lake", "lake_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Lake directory (made by `speclake ingest`, annotated by `speclake annotate`).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output HTML file (default: STUDY.html in the current folder).")
@click.option("--details", default=200, show_default=True, type=click.IntRange(0),
              help="Rank-1 annotations drawn in detail (mirror plot, structure, tree), most confident first; "
                   "the table lists them all.")
@click.option("--tolerance", "tolerance_da", default=0.02, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Fragment m/z tolerance (Da) of the peaks highlighted as matched in the mirror plots.")
@click.option("--attributions", default=20, show_default=True, type=click.IntRange(0),
              help="Annotations (most confident first) given per-peak attributions when their ranker used a "
                   "descriptor model (each costs a model's gradients; 0: none).")
@click.option("--study-dir", "study_dirs", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Folder to look in (by file name) for study files moved since annotation; repeatable.")
def report_cmd(study: str, lake_dir: Path, out: Path | None, details: int, tolerance_da: float,
               attributions: int, study_dirs: tuple[str, ...]) -> None:
    """Write a study's annotations as one self-contained HTML page (opens offline in any browser).

    \b
    Summary: files, scans, annotated at confidence >= 0.5 / 0.8 / 0.9, rows by method, errors by reason.
    Table: rank-1 annotations; click a header to sort, type to filter, set a minimum confidence.
    Details: per annotation a mirror plot (query up, best library spectrum of the structure down,
      matched peaks coloured), the structure drawing and the fragmentation tree of its formula/adduct.
    De novo (when `speclake denovo` ran on the study): the top 5 proposals of each scan, drawn.
    """
    from speclake.serving.report.data import ReportSettings, StudyNotFound
    from speclake.serving.report.page import write_study_report

    path = out if out is not None else Path(f"{study}.html")
    try:
        written = write_study_report(lake_dir, study, path, limit=details,
                                     settings=ReportSettings(tolerance_da=tolerance_da, attributions=attributions,
                                                             study_dirs=tuple(study_dirs)))
    except StudyNotFound as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"report of study {study} written to {written} ({written.stat().st_size / 1e6:.1f} MB)")


__all__ = ["report_cmd"]
