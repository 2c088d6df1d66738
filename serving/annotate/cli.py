"""``speclake annotate``, ``speclake export annotations`` and ``speclake export denovo``."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

log = logging.getLogger(__name__)

_LAKE = click.option("--lake", "lake_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Lake directory (made by `speclake ingest`).")


@contextmanager
def _scan_bar(desc: str) -> Iterator:
    """A tqdm bar over scans (its total grows as files are read); other stages show as its postfix."""
    from tqdm import tqdm

    with tqdm(total=0, desc=desc, unit="scan", file=sys.stderr, leave=False) as bar:
        def note(stage: str, done: int, total: int | None) -> None:
            if stage == "scans":
                bar.total = max(total or 0, done)
                bar.n = done
                bar.set_postfix_str("")
            elif stage == "priors" and total:
                bar.set_postfix_str(f"library priors of indexed structures {done:,}/{total:,}")
            elif done == 0:
                bar.set_postfix_str(stage)
            bar.refresh()
        yield note


@click.command("annotate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_LAKE
@click.option("--study", required=True, help="Study name: rows of every output carry it; a study resumes by it.")
@click.option("--structures", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Structure file (SDF, CID-SMILES, SMILES; .gz ok) added to the structure index first; repeatable.")
@click.option("--top-k", type=click.IntRange(min=1), default=20, show_default=True,
              help="Ranked structures kept per scan.")
@click.option("--method", default=None,
              help="Registered ranker to use (default: the lake's best fitted one, else library+prior; prior: the "
                   "spectrum-free baseline).")
@click.option("--ppm", type=click.FloatRange(min=0, min_open=True), default=10.0, show_default=True,
              help="Precursor m/z tolerance of structure candidates and of identity library search.")
@click.option("--ionmode", type=click.Choice(["positive", "negative"]), default=None,
              help="Ion mode of scans whose file gives no polarity (else those scans are errors).")
@click.option("--index-name", default="fingerprint", show_default=True, help="Structure index of the lake to use.")
@click.option("--ray-address", default=None,
              help="Ray cluster (e.g. ray://head:10001) for files with many scans; default: a local Ray.")
@click.option("--ray-min-scans", type=click.IntRange(min=0), default=None,
              help="Files with more scans than this go through Ray Data (default 3000; smaller ones in process).")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of a local Ray (default: all).")
def annotate_cmd(files: tuple[Path, ...], lake_dir: Path, study: str, structures: tuple[str, ...], top_k: int,
                 method: str | None, ppm: float, ionmode: str | None, index_name: str, ray_address: str | None,
                 ray_min_scans: int | None, num_cpus: int | None) -> None:
    """Annotate every MS2 scan of FILES (mzML, mzXML, MGF, MSP; folders are searched) with ranked structures.

    Each scan gets its --top-k candidate structures (rank, score, formula, adduct, mass error, library
    match, and on rank 1 the calibrated confidence that it is right) in the `annotations` table, or
    one `no_candidates` row; scans that cannot be annotated (no precursor, no peaks, NaN peaks,
    unknown polarity, unreadable records) go to `annotation_errors` with the reason. Each finished
    file is committed at once: a killed run is resumed by running the same command again (files
    already annotated for --study are skipped by content).

    \b
    speclake annotate study/*.mzML more.mgf --lake mylake --study beer
    speclake sql "SELECT * FROM annotations WHERE study='beer' AND rank=1 AND confidence >= 0.8" --lake mylake
    speclake export annotations --study beer --lake mylake --out beer.tsv
    """
    from speclake.serving.annotate.job import AnnotateSettings, annotate_study, study_files

    paths = study_files(list(files))  # a missing file is one line before any bar starts
    settings = AnnotateSettings(top_k=top_k, method=method, ppm=ppm, ionmode=ionmode, index_name=index_name,
                                structures=list(structures), ray_address=ray_address, num_cpus=num_cpus,
                                **({"ray_min_scans": ray_min_scans} if ray_min_scans is not None else {}))
    with _scan_bar(f"annotate {study}") as progress:
        report = annotate_study(paths, lake_dir, study, settings, progress=progress)
    for line in report.missing:
        click.echo(f"note: {line}", err=True)
    click.echo(f"study {study}: {report.files_annotated} file(s) annotated, {report.files_skipped} skipped "
               f"(already annotated){f', method {report.method}' if report.method else ''}")
    for f in report.files:
        if f["status"] == "skipped":
            click.echo(f"  {f['source_file']}: skipped, {f['reason']}")
        else:
            click.echo(f"  {f['source_file']}: {f['n_scans']:,} scans, {f['n_annotated']:,} annotated, "
                       f"{f['n_no_candidates']:,} no candidates, {f['n_errors']:,} errors ({f['engine']}, "
                       f"{f['seconds']:.1f} s)")
    click.echo(f"  scans       {report.n_scans:>10,}")
    click.echo(f"  annotated   {report.n_done:>10,}  ({report.n_annotated:,} with candidates, "
               f"{report.n_no_candidates:,} no_candidates)")
    click.echo(f"  errors      {report.n_errors:>10,}  (SELECT * FROM annotation_errors WHERE study='{study}')")
    click.echo(f"  rows        {report.n_rows:>10,}  in annotations;  {report.scans_per_second:,.1f} scans/s, "
               f"{report.seconds:.1f} s in all")


@click.group("export")
def export_group() -> None:
    """Export lake results in the formats other tools read."""


@export_group.command("annotations")
@click.option("--study", required=True, help="The study to export (as given to `speclake annotate --study`).")
@_LAKE
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file: NAME.tsv, NAME.csv or NAME.parquet.")
@click.option("--rank1", is_flag=True, help="Only rank-1 rows (and no_candidates rows).")
def export_annotations_cmd(study: str, lake_dir: Path, out: Path, rank1: bool) -> None:
    """Write a study's annotations with speclake's, SIRIUS-style and GNPS-style column names.

    \b
    speclake's own: every column of the annotations table (study, source_file, query_id, rank, status,
      inchikey, smiles, formula, adduct, score, method, confidence, mass_error_ppm, library_* ...).
    SIRIUS-style: id (query id), structurePerIdRank, formulaRank, molecularFormula, adduct,
      InChIkey2D (InChIKey first block), InChI, smiles, name, ConfidenceScore (rank 1),
      retentionTimeInSeconds, precursorMz, ionMass.
    GNPS-style library match (the candidate's best library spectrum): #Scan#, SpectrumFile,
      Compound_Name, SpectrumID (library accession), LibraryName, LibMZ, SpecMZ, MZErrorPPM,
      MassDiff, SharedPeaks, MQScore (cosine), EntropySimilarity, ModifiedCosine, MatchType
      (identity|analogue), LibraryAdduct, IonMode, RT_Query.
    """
    from speclake.serving.annotate.export import export_annotations

    path, n = export_annotations(lake_dir, study, out, rank1=rank1)
    click.echo(f"{n:,} rows of study {study} written to {path}")


@export_group.command("denovo")
@click.option("--study", required=True, help="The study to export (as given to `speclake denovo --study`).")
@_LAKE
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output file: NAME.tsv, NAME.csv or NAME.parquet.")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Only proposals of rank <= N of each scan.")
def export_denovo_cmd(study: str, lake_dir: Path, out: Path, top: int | None) -> None:
    """Write a study's de novo proposals with speclake's and SIRIUS-style (MSNovelist) column names.

    \b
    speclake's own: every column of the denovo_candidates table (study, source_file, query_id, rank,
      smiles, inchikey, formula, score, method, near_smiles, target_formula, formula_source, model_id ...).
    SIRIUS-style (denovo_structure_identifications.tsv): id (query id), structurePerIdRank, ModelScore,
      molecularFormula, InChIkey2D (InChIKey first block), name (the lake compound of the same InChIKey),
      precursorMz, ionMass, mappingFeatureId (query id), tanimotoToParent (to the --near parent).
    Rows by file, query id, run and rank.

    \b
    speclake export denovo --study unknowns --lake mylake --out unknowns.tsv --top 5
    """
    from speclake.serving.annotate.denovo_export import export_denovo

    path, n = export_denovo(lake_dir, study, out, top=top)
    click.echo(f"{n:,} de novo proposals of study {study} written to {path}")


@click.command("rankers")
@_LAKE
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def rankers_cmd(lake_dir: Path, as_json: bool) -> None:
    """List the fitted annotation rankers of a lake, newest first (the newest is annotate's default).

    Test hit@1 of each ranker beside the library prior on the same candidates, and the expected
    calibration error of its confidence on the test split. Fit one with `speclake annotate-prepare`.
    """
    import json

    from speclake.cli import format_table
    from speclake.serving.annotate.rankers import list_rankers

    rankers = list_rankers(lake_dir)
    if as_json:
        click.echo(json.dumps(rankers, indent=2))
        return
    if not rankers:
        click.echo(f"no fitted ranker in {lake_dir}: annotate uses library+prior (no confidence); "
                   f"fit one with `speclake annotate-prepare --lake {lake_dir}`")
        return

    def num(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    rows = [(r["ranker_id"], (r["created"] or "")[:19], (r["test"] or {}).get("n"), num((r["test"] or {}).get("hit1")),
             num((r["prior"] or {}).get("hit1")), num(r["ece"])) for r in rankers]
    click.echo(format_table(["ranker", "created", "n test", "hit@1", "prior hit@1", "ECE"], rows, len(rows),
                            width=60))


__all__ = ["annotate_cmd", "export_group", "rankers_cmd"]
