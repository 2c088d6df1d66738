"""Ray Tune per architecture: Optuna search, ASHA early stopping of poor trials, best model registered.

Each trial runs the same training loop as Ray Train (one process per trial, Ray Data input) and
reports validation loss and validation hit@1/hit@5 (one ranking set, built once for every trial,
:mod:`speclake.training.ranking`) every epoch; ASHA stops weak trials early on validation loss.
The best trial's best weights are registered as a model, with ``tune.json`` (search space, best
config, every trial's result, each trial's best validation hit@1) beside them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from speclake.infra.ray import RaySettings, cluster_cpus, ray_session
from speclake.training.data import load_examples, negative_pool, require_inputs
from speclake.training.loop_io import STATE_FILE, LoopIO
from speclake.training.models import check_arch
from speclake.training.ranking import ranking_set
from speclake.training.trainer import (RunSettings, TrainResult, build_context, train_loop,
                                       trained_metrics)

log = logging.getLogger(__name__)

#: CPUs left free of trials so the trials' Ray Data reads can be scheduled.
DATA_CPUS = 1.0


def search_space(arch: str) -> dict[str, Any]:
    """Tune search space of ``arch``: ``train`` (lr, batch size) and ``model`` (flat sizes, mapped by :func:`model_values`)."""
    from ray import tune

    check_arch(arch)
    width = tune.choice([128, 256, 512, 1024])   # the full MassBank lake wants the wide end (arch2-flat: 1024)
    model: dict[str, Any] = {
        "arch1": {"width": tune.choice([16, 32, 64]), "dropout": tune.uniform(0.0, 0.4)},
        "arch2": {"width": width, "group_hidden": tune.choice([16, 32, 64]), "n_groups": tune.randint(2, 12)},
        "arch2-flat": {"width": width, "dropout": tune.uniform(0.0, 0.4)},
        "arch3": {"width": width, "block_hidden": tune.choice([8, 16, 32, 64])},
        "arch4": {"width": width, "embedding_dim": tune.choice([32, 64, 128])},
        "arch5": {"width": width, "graph_hidden": tune.choice([32, 64, 128]), "mp_layers": tune.randint(2, 5),
                  "margin": tune.uniform(0.05, 0.5)},
    }[arch]
    return {"train": {"lr": tune.loguniform(1e-4, 1e-2), "batch_size": tune.choice([64, 128, 256])}, "model": model}


def model_values(arch: str, params: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Architecture settings from one trial's flat sampled values (``width`` sets the hidden sizes)."""
    out = dict(base or {})
    p = dict(params)
    w = p.pop("width", None)
    if w is not None:
        key = {"arch1": "hidden", "arch2": "trunk", "arch2-flat": "trunk", "arch3": "hidden", "arch4": "hidden",
               "arch5": "spectrum_hidden"}[arch]
        out[key] = (int(w), max(int(w) // 2, 2)) if arch in ("arch1", "arch2", "arch2-flat", "arch4") else (int(w),)
    out.update(p)
    return out


def _trainable(config: dict[str, Any], base: dict[str, Any], examples, pool: dict, datasets: dict,
               ranking: dict | None = None) -> None:
    """One trial: settings from the sampled config, context fitted on training structures, the training loop
    (``ranking``: the validation ranking set, as :meth:`~speclake.training.ranking.RankingSet.to_config`)."""
    settings = RunSettings.model_validate({
        **base, "model": model_values(base["arch"], config["model"], base.get("model")),
        "train": {**base["train"], **config["train"], "num_workers": 1}})
    ctx = build_context(examples, settings)
    loop_config = {"ctx": ctx.to_dict(), "train": settings.train.model_dump(), "pool": pool,
                   "has_validation": "validation" in datasets, "ranking": ranking}
    train_loop(loop_config, LoopIO("tune", datasets=datasets, use_gpu=settings.train.use_gpu))


def tune_metric(select: str, ranking: bool) -> tuple[str, str]:
    """The trial metric ASHA cuts on and the best trial is chosen by: ``select`` (validation loss, or hit@1 when
    there is a validation ranking set) and its direction."""
    return ("val_hit1", "max") if select == "val_hit1" and ranking else ("val_loss", "min")


def tune_model(lake_dir: str | Path, base: RunSettings, *, trials: int = 20, max_epochs: int = 10,
               ray_address: str | None = None, num_cpus: int | None = None, cpus_per_trial: float = 1.0,
               seed: int = 0) -> tuple[TrainResult, dict[str, Any]]:
    """Search ``trials`` configurations of ``base.arch``; register and return the best model and a summary."""
    import torch
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from speclake.training.registry import models_root, new_model_id, save_model

    if trials < 1:
        raise ValueError("trials must be at least 1")
    examples = load_examples(lake_dir, base.split, base.ms_level)
    require_inputs(lake_dir, examples, base.arch)
    base = base.model_copy(update={"train": base.train.model_copy(update={"epochs": max_epochs})})
    base_dict = base.model_dump(mode="json")
    with ray_session(RaySettings(), address=ray_address, num_cpus=num_cpus):
        pool = negative_pool(examples, lake_dir) if base.arch == "arch5" else {}
        ranking = ranking_set(lake_dir, examples, base.arch, base.train)
        datasets = {"train": examples.dataset("train")}
        if examples.counts["validation"]:
            datasets["validation"] = examples.dataset("validation")
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, base=base_dict, examples=examples, pool=pool, datasets=datasets,
                                 ranking=ranking.to_config() if ranking is not None else None),
            {"cpu": cpus_per_trial, "gpu": 1 if base.train.use_gpu else 0})
        name = new_model_id(base.arch)
        metric, mode = tune_metric(base.train.select, ranking is not None)
        free = cluster_cpus() - DATA_CPUS  # Ray Data reads need CPUs beyond the trials'
        concurrent = max(1, int(free // cpus_per_trial))
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(base.arch),
            tune_config=tune.TuneConfig(
                metric=metric, mode=mode, num_samples=trials, max_concurrent_trials=concurrent,
                search_alg=OptunaSearch(seed=seed),
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs,
                                        grace_period=1, reduction_factor=2)),
            run_config=tune.RunConfig(name=name, storage_path=str(models_root(lake_dir) / "_tune"),
                                      verbose=0),
        )
        grid = tuner.fit()
        best = grid.get_best_result(metric=f"best_{metric}", mode=mode)
        if best.checkpoint is None:
            raise RuntimeError(f"tuning run {name} produced no checkpoint")
        with best.checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
        trials_out = [{"config": r.config, "best_val_loss": (r.metrics or {}).get("best_val_loss"),
                       "best_val_hit1": (r.metrics or {}).get("best_val_hit1"),
                       "epochs": (r.metrics or {}).get("epoch"), "error": str(r.error) if r.error else None}
                      for r in grid]
    best_settings = RunSettings.model_validate({
        **base_dict, "model": model_values(base.arch, best.config["model"], base_dict.get("model")),
        "train": {**base_dict["train"], **best.config["train"], "num_workers": 1}})
    ctx = build_context(examples, best_settings)
    metrics = trained_metrics(name, state, best_settings.train, ranking.summary() if ranking is not None else None)
    summary = {"tune_run": name, "metric": metric, "trials": trials_out, "best_config": best.config,
               "max_epochs": max_epochs,
               "scheduler": "ASHA", "search": "Optuna"}
    path = save_model(lake_dir, name, ctx, state["best_model"] or state["model"],
                      best_settings.model_dump(mode="json"), examples.split_record(), metrics,
                      extra={"tune.json": summary})
    log.info("tuning %s on %s: best validation loss %.4f, hit@1 %s with %s", name, metric, state["best_val"],
             state.get("best_hit1"), best.config)
    return TrainResult(name, path, metrics), summary
