"""`speclake evaluate` and `speclake explain`."""
from __future__ import annotations

import logging

import click

log = logging.getLogger(__name__)


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@click.command("evaluate")
@click.option("--lake", "lake_dir", default="speclake-lake", show_default=True, type=click.Path(file_okay=False),
              help="Lake directory (models, spectra, structure index, model_metrics).")
@click.option("--structures", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Structure files (SMILES / SDF / CID-SMILES) added to the lake's structure index first, "
                   "e.g. ../shared/data/structures/massbank_isomers.smi.gz. Repeatable.")
@click.option("--models", "models", default=None,
              help="Comma-separated model ids (default: every registered model; none is fine).")
@click.option("--candidates", "candidates", type=click.Choice(["formula", "mass", "both"]), default="formula",
              show_default=True, help="Candidate lists: same formula as the truth, neutral mass within --ppm, or both.")
@click.option("--ppm", default=10.0, show_default=True, help="Mass window of --candidates mass.")
@click.option("--max-test", type=click.IntRange(1), default=None, help="Cap on test spectra (a fixed subset).")
@click.option("--baselines", default="logreg,random_forest", show_default=True,
              help="Classical baselines fitted in the run (comma-separated; 'none' for none).")
@click.option("--library", "library", default="modified_cosine", show_default=True,
              help="Library searches to compare (comma-separated: modified_cosine, cosine, entropy; 'none').")
@click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None,
              help="PNG path of the comparison plot (default: <lake>/reports/evaluation-<run>.png).")
@click.option("--split-seed", default=0, show_default=True, help="Seed of the structure-disjoint split.")
@click.option("--settings", "settings_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file of EvaluationSettings (options given here override it).")
@click.option("--num-cpus", type=click.IntRange(1), default=None, help="CPUs for an index update (Ray).")
@click.option("--prefilter/--no-prefilter", default=True, show_default=True,
              help="Index only the --structures lines that can be a candidate of the evaluated spectra (same lists, "
                   "much faster); --no-prefilter indexes every line.")
def evaluate_cmd(lake_dir: str, structures: tuple[str, ...], models: str | None, candidates: str, ppm: float,
                 max_test: int | None, baselines: str, library: str, plot: str | None, split_seed: int,
                 settings_file: str | None, num_cpus: int | None, prefilter: bool) -> None:
    """Evaluate every model against baselines and references on the same test spectra and candidates.

    Test spectra are those of structures (InChIKey-14) in the test split, never seen in
    training. Candidates come from the lake's structure index (lake compounds plus any
    --structures). Every registered model, the classical baselines (logistic regression,
    random forest; fitted here), modified-cosine library search, a random ranking and the
    library prior (candidate's highest Tanimoto to training structures) are scored;
    model-like methods also as +prior with lambda chosen on validation. Results go to the
    lake table model_metrics (query with `speclake sql`), a table here and a PNG plot.
    """
    import json

    from speclake.progress import stage_bar
    from speclake.training.evaluate import EvaluationSettings, evaluate, format_comparison, run_plot_path
    from speclake.training.split import SplitSettings

    base = json.loads(open(settings_file).read()) if settings_file else {}
    over = {
        "candidate_modes": ["formula", "mass"] if candidates == "both" else [candidates],
        "ppm": ppm,
        "baselines": [] if baselines.strip().lower() == "none" else _csv(baselines) or [],
        "library": [] if library.strip().lower() == "none" else _csv(library) or [],
        "num_cpus": num_cpus,
        "prefilter_structures": prefilter,
    }
    if max_test is not None:
        over["max_test"] = max_test
    if split_seed or "split" not in base:
        over["split"] = {**base.get("split", SplitSettings().model_dump()), "seed": split_seed}
    settings = EvaluationSettings.model_validate({**base, **over})
    click.echo(f"evaluating {lake_dir} ({', '.join(settings.candidate_modes)} candidates) ...", err=True)
    with stage_bar("evaluate", ["examples", "structure index", "methods", "queries", "scoring", "write", "plot"]
                   ) as progress:
        table = evaluate(lake_dir, _csv(models), structures, settings, plot_path=plot, progress=progress)
    run_id = table.column("evaluation_run_id")[0].as_py()
    click.echo(format_comparison(table))
    click.echo(f"\nrun {run_id}: {table.num_rows} rows appended to model_metrics; plot "
               f"{plot or run_plot_path(lake_dir, run_id)}")


@click.command("explain")
@click.argument("spectrum_id")
@click.option("--lake", "lake_dir", default="speclake-lake", show_default=True, type=click.Path(file_okay=False),
              help="Lake directory.")
@click.option("--model", "model_id", required=True, help="Registered descriptor model id (arch1, arch2, arch3).")
@click.option("--descriptor", required=True, help="Descriptor name, e.g. morgan:1380, maccs:160, substructure:12.")
@click.option("--png", type=click.Path(dir_okay=False), default=None, help="Draw the attributed spectrum here.")
@click.option("--steps", default=64, show_default=True, type=click.IntRange(1), help="Integration steps.")
@click.option("--top", default=10, show_default=True, help="Peaks to list.")
def explain_cmd(spectrum_id: str, lake_dir: str, model_id: str, descriptor: str, png: str | None, steps: int,
                top: int) -> None:
    """Which peaks make a model predict a descriptor: integrated gradients per peak.

    Explains the descriptor's logit for SPECTRUM_ID against the empty spectrum; the
    attributions of all peaks sum to logit(spectrum) - logit(empty) (delta shown).
    """
    from speclake.training.attribution import explain, plot_attribution

    expl = explain(lake_dir, spectrum_id, model_id, descriptor, steps=steps)
    click.echo(f"{spectrum_id}  {descriptor}: p = {expl.probability:.3f} (logit {expl.logit:.3f}, "
               f"empty spectrum {expl.baseline_logit:.3f}, completeness delta {expl.delta:.2e})")
    click.echo(f"  {'m/z':>10} {'intensity':>10} {'attribution':>12}")
    for mz, inten, a in expl.top_peaks(top):
        click.echo(f"  {mz:>10.4f} {inten:>10.3f} {a:>12.4f}")
    if png:
        click.echo(f"wrote {plot_attribution(expl, png)}", err=True)
