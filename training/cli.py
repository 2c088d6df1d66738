"""``speclake train``, ``speclake tune``, ``speclake models``."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import click

from speclake.training.models import ARCHS

log = logging.getLogger(__name__)

_ARCH = click.Choice(list(ARCHS))


def _base_settings(arch: str, settings_file: Path | None, train_overrides: dict[str, Any]):
    from speclake.training.trainer import RunSettings

    base: dict[str, Any] = json.loads(settings_file.read_text()) if settings_file else {}
    if base.get("arch") not in (None, arch):
        raise click.UsageError(f"--settings is for {base['arch']}, not --arch {arch}")
    base["arch"] = arch
    base["train"] = {**base.get("train", {}), **{k: v for k, v in train_overrides.items() if v is not None}}
    return RunSettings.model_validate(base)


def _settings_option(f):
    return click.option(
        "--settings", "settings_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help='JSON of RunSettings: {"model": {...arch settings...}, "train": {...}, "split": {...}, '
             '"descriptors": {...}, "bins": {...}}; command-line options override it.')(f)


@click.command("train")
@click.option("--arch", required=True, type=_ARCH, help="Architecture to train (see DESIGN.md).")
@click.option("--lake", "lake_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Lake directory with spectra, compounds and computed features.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Ray Train workers (DDP processes). Default 1.")
@click.option("--gpu", is_flag=True, default=None, help="One GPU per worker.")
@click.option("--cpus-per-worker", type=float, default=None,
              help="Ray CPUs per worker (default 1; lowered automatically so the data pipeline keeps 1 CPU).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Maximum epochs (early stopping may end sooner). Default 30.")
@click.option("--batch-size", type=click.IntRange(min=2), default=None, help="Spectra per batch and worker. Default 64.")
@click.option("--lr", type=float, default=None, help="Adam learning rate. Default 1e-3.")
@click.option("--patience", type=click.IntRange(min=1), default=None, help="Epochs without a better --select metric before stopping. Default 5.")
@click.option("--select", type=click.Choice(["val_loss", "val_hit1"]), default=None,
              help="What picks the registered weights and stops early: lowest validation loss (default) or highest "
                   "validation hit@1 among same-formula candidates.")
@click.option("--time-budget", "time_budget_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop after the epoch that brings training + validation wall time to this many seconds.")
@click.option("--resume", is_flag=True, help="Continue the newest unfinished run of --arch from its latest checkpoint.")
@click.option("--model-id", default=None, help="Id of the new model (or of the run to resume). Default: <arch>-<time>-<hex>.")
@click.option("--ray-address", default=None, help="Run on this Ray cluster (e.g. ray://head:10001) instead of a local Ray.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray (default: all).")
@_settings_option
def train_cmd(arch: str, lake_dir: Path, workers: int | None, gpu: bool | None, cpus_per_worker: float | None,
              epochs: int | None,
              batch_size: int | None, lr: float | None, patience: int | None, select: str | None,
              time_budget_s: float | None, resume: bool, model_id: str | None, ray_address: str | None, num_cpus: int | None,
              settings_file: Path | None) -> None:
    """Train one model under Ray Train and register it in <lake>/models/.

    \b
    speclake train --arch arch1 --lake mylake --workers 2 --epochs 20
    speclake train --arch arch5 --lake mylake --gpu --resume
    """
    from speclake.progress import stage_bar
    from speclake.training.trainer import train_model

    settings = _base_settings(arch, settings_file, {"num_workers": workers, "use_gpu": gpu, "epochs": epochs,
                                                    "cpus_per_worker": cpus_per_worker,
                                                    "batch_size": batch_size, "lr": lr, "patience": patience,
                                                    "select": select, "time_budget_s": time_budget_s})

    with stage_bar(f"train {arch}", ["examples", "training", "epoch", "register"]) as progress:
        result = train_model(lake_dir, settings, resume=resume, model_id=model_id, ray_address=ray_address,
                             num_cpus=num_cpus, progress=progress)
    m = result.metrics
    for h in m["history"]:
        click.echo(f"  epoch {h['epoch']:>3}  train loss {h['train_loss']:.4f}  val loss {h['val_loss']:.4f}  "
                   f"val hit@1 {_share(h.get('val_hit1'))}  {h['spectra_per_s']:.0f} spectra/s", err=True)
    hit = (f", best validation hit@1 {_share(m['best_val_hit1'])} (epoch {m['best_val_hit1_epoch']})"
           if m.get("best_val_hit1") is not None else "")
    click.echo(f"model {result.model_id}: {m['epochs']} epochs, best validation loss {m['best_val_loss']:.4f} "
               f"(epoch {m['best_epoch']}){hit}, {m['spectra_per_s']:.0f} spectra/s -> {result.path}")


def _share(value: float | None) -> str:
    """A hit rate for the learning-curve lines ('-' when there was none)."""
    return "-" if value is None else f"{value:.3f}"


@click.command("tune")
@click.option("--arch", required=True, type=_ARCH, help="Architecture to tune.")
@click.option("--lake", "lake_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Lake directory.")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True, help="Configurations to try (Optuna).")
@click.option("--max-epochs", type=click.IntRange(min=1), default=10, show_default=True,
              help="Epochs of a trial that ASHA never stops.")
@click.option("--cpus-per-trial", type=float, default=1.0, show_default=True, help="Ray CPUs per trial.")
@click.option("--gpu", is_flag=True, default=None, help="One GPU per trial.")
@click.option("--ray-address", default=None, help="Run on this Ray cluster instead of a local Ray.")
@click.option("--num-cpus", type=click.IntRange(min=1), default=None, help="CPUs of the local Ray (default: all).")
@click.option("--select", type=click.Choice(["val_loss", "val_hit1"]), default=None,
              help="The metric ASHA cuts trials on and the best trial is chosen by (and each trial's weights): "
                   "validation loss (default) or validation hit@1.")
@_settings_option
def tune_cmd(arch: str, lake_dir: Path, trials: int, max_epochs: int, cpus_per_trial: float, gpu: bool | None,
             ray_address: str | None, num_cpus: int | None, select: str | None, settings_file: Path | None) -> None:
    """Search hyperparameters of one architecture (Optuna + ASHA) and register the best model.

    \b
    speclake tune --arch arch2 --lake mylake --trials 20 --max-epochs 10
    """
    from speclake.training.tune import tune_model

    base = _base_settings(arch, settings_file, {"use_gpu": gpu, "select": select})
    result, summary = tune_model(lake_dir, base, trials=trials, max_epochs=max_epochs, ray_address=ray_address,
                                 num_cpus=num_cpus, cpus_per_trial=cpus_per_trial)
    hit = result.metrics.get("best_val_hit1")
    click.echo(f"best of {len(summary['trials'])} trials by {summary['metric']}: model {result.model_id}, validation "
               f"loss {result.metrics['best_val_loss']:.4f}, hit@1 {_share(hit)}, "
               f"config {json.dumps(summary['best_config'])}")


@click.command("models")
@click.option("--lake", "lake_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Lake directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the model summaries as JSON.")
def models_cmd(lake_dir: Path, as_json: bool) -> None:
    """List the trained models of a lake."""
    from speclake.cli import format_table
    from speclake.training.registry import list_models

    models = list_models(lake_dir)
    if as_json:
        click.echo(json.dumps(models, indent=2))
        return
    rows = []
    for m in models:
        sp = m.get("spectra", {})
        loss = m.get("best_val_loss")
        rows.append((m["model_id"], m["arch"], m.get("created", ""), m.get("epochs"),
                     None if loss is None else round(float(loss), 4), sp.get("train", 0), sp.get("validation", 0),
                     sp.get("test", 0)))
    click.echo(format_table(["model", "arch", "created", "epochs", "val loss", "n train", "n val", "n test"],
                            rows, max(len(rows), 1), width=60))
