"""``speclake denovo`` (proposals for study scans) and ``speclake denovo-train`` (the VAE and its mapper)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import click

log = logging.getLogger(__name__)

_LAKE = click.option("--lake", "lake_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Lake directory (made by `speclake ingest`).")


@click.command("denovo")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@_LAKE
@click.option("--study", default="denovo", show_default=True, help="Study name carried by every output row.")
@click.option("-n", "n", type=click.IntRange(min=1), default=50, show_default=True, help="Proposals kept per scan.")
@click.option("--near", default=None, help="SMILES of a parent: propose structures around it (impurities, metabolites).")
@click.option("--formula", default=None,
              help="Keep only this molecular formula (default: the best fragmentation-tree formula of the scan).")
@click.option("--no-formula", is_flag=True, help="No formula filter at all.")
@click.option("--draws", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Latent points decoded per scan (raise it when a formula leaves few proposals).")
@click.option("--radius", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="--near: SD of the latent noise around the parent (smaller: closer analogues).")
@click.option("--model", "model_id", default=None, help="De novo model id (default: the lake's newest).")
@click.option("--ionmode", type=click.Choice(["positive", "negative"]), default=None,
              help="Ion mode of scans whose file gives no polarity.")
@click.option("--rank-with", type=click.Choice(["ranker", "latent"]), default="ranker", show_default=True,
              help="ranker: order proposals by the lake's annotation ranker (library prior, analogue hits, model "
                   "scores, fragmentation); latent: by latent likelihood only.")
def denovo_cmd(files: tuple[Path, ...], lake_dir: Path, study: str, n: int, near: str | None, formula: str | None,
               no_formula: bool, draws: int, radius: float, model_id: str | None, ionmode: str | None,
               rank_with: str) -> None:
    """Propose new structures for every MS2 scan of FILES with the lake's SELFIES VAE.

    The spectrum's latent point is predicted, latent points around it (or around the --near parent)
    are decoded inside the molecular formula, filtered by it exactly, and ranked by the lake's
    annotation ranker (or by latent likelihood with --rank-with latent). Rows go to the
    `denovo_candidates` table; scans without proposals to `denovo_errors` with the reason.

    \b
    speclake denovo-train --lake mylake --structures zinc_moses_1.9M.smi.gz --limit 50000
    speclake denovo unknowns.mgf --lake mylake --near 'CN1CCC23C4C1CC5=C2C(=C(C=C5)O)OC3C(C=C4)O'
    speclake sql "SELECT query_id, rank, smiles, score FROM denovo_candidates WHERE rank <= 5" --lake mylake
    """
    from speclake.serving.annotate.job import study_files

    from .job import DenovoSettings, denovo_study
    from .sample import SampleSettings

    if no_formula and formula:
        raise click.UsageError("--formula and --no-formula exclude each other")
    paths = study_files(list(files))
    settings = DenovoSettings(model_id=model_id, formula=formula, formula_from_tree=not no_formula, near=near,
                              ionmode=ionmode, sample=SampleSettings(n=n, draws=draws, radius=radius),
                              rank_with=rank_with)
    report = denovo_study(paths, lake_dir, study, settings)
    click.echo(f"{report.scans} scans in {report.files} file(s): {report.scans_with_proposals} with proposals "
               f"({report.proposals} rows in denovo_candidates), {report.errors} in denovo_errors "
               f"(model {report.model_id}, run {report.run_id})")


@click.command("denovo-train")
@_LAKE
@click.option("--structures", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="SMILES file (SMILES<TAB>ID, .gz ok) added to the lake's compounds; repeatable.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Lines read from each structure file.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Most VAE epochs.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget of the VAE phase (the mapper gets a fifth of it).")
@click.option("--mapper-epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Ray Train workers.")
@click.option("--settings", "settings_json", default=None, help="JSON of DenovoTrainSettings fields (e.g. model sizes).")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of a local Ray (default: all).")
def denovo_train_cmd(lake_dir: Path, structures: tuple[str, ...], limit: int | None, epochs: int,
                     minutes: float | None, mapper_epochs: int, workers: int, settings_json: str | None,
                     num_cpus: int | None) -> None:
    """Train the de novo SELFIES VAE and its spectrum mapper under Ray Train and register them in the lake.

    Structures of the lake's validation and test split never enter the VAE; the mapper learns from
    training-split library spectra. Prints the reconstruction, validity, uniqueness, novelty,
    smoothness and mapper figures.
    """
    from .train import DenovoTrainSettings, train_denovo

    extra = json.loads(settings_json) if settings_json else {}
    settings = DenovoTrainSettings.model_validate({
        "structures": list(structures), "structure_limit": limit, "vae_epochs": epochs, "mapper_epochs": mapper_epochs,
        "num_workers": workers, **({"vae_seconds": minutes * 60, "mapper_seconds": minutes * 12} if minutes else {}),
        **extra})
    result = train_denovo(lake_dir, settings, num_cpus=num_cpus)
    click.echo(f"registered {result.model_id} at {result.path}")
    for name, value in result.metrics["figures"].items():
        click.echo(f"  {name:30s} {value:.3f}" if isinstance(value, float) else f"  {name:30s} {value}")


__all__ = ["denovo_cmd", "denovo_train_cmd"]
