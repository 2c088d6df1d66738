"""Ray Train driver for every neural architecture.

:func:`train_model` builds the examples (Ray Data, streamed from the lake), fits the descriptor
space and arch-specific context on training structures, runs a ``TorchTrainer`` (DDP over
``num_workers`` workers, CPU or GPU) with a checkpoint each epoch under ``<lake>/models/_ray/<id>``,
stops early on validation (loss or hit@1), and registers the best weights in ``<lake>/models/<id>/``.
An interrupted run resumes from its latest checkpoint when started again with ``resume=True``.

Every epoch's learning curve point (``history`` in the model's metrics.json, the log line, the Ray
Train / Tune reports) holds train_loss, val_loss and ``val_hit1`` / ``val_hit5``: the share of a fixed
validation ranking set (:mod:`speclake.training.ranking`, built once by the driver) whose true
structure the model ranks first / within five among same-formula lake compounds, scored as ``speclake
evaluate`` scores the architecture (null without validation spectra or with ``rank_queries=0``). Early stopping
and the registered weights (``best_epoch``) follow ``TrainSettings.select``: validation loss (default) or
validation hit@1, which keeps training while the ranking still improves after the loss has turned; the
lowest loss and the best hit@1 with its epoch are recorded either way.

A run is refused before it starts when no training spectrum has the inputs its architecture needs
(:data:`~speclake.training.models.ARCH_INPUTS`, :func:`~speclake.training.data.require_inputs`), and
a model whose run trained on no example is never registered.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from speclake.infra.ray import RaySettings, cluster_cpus, ray_session
from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunError, RunReport
from speclake.training.data import Examples, load_examples, negative_pool, require_inputs
from speclake.training.encoding import BinSettings, DescriptorSettings
from speclake.training.loop_io import STATE_FILE, LoopIO
from speclake.training.models import ARCH_KIND, ModelContext, arch_settings, check_arch
from speclake.training.split import SplitSettings

log = logging.getLogger(__name__)



class TrainSettings(BaseModel):
    """Optimisation and scaling of one training run."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=1, description="Maximum epochs.")
    batch_size: int = Field(64, ge=2, description="Spectra per batch and worker.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(0.0, ge=0)
    patience: int = Field(5, ge=1, description="Stop after this many epochs without a better ``select`` metric.")
    select: Literal["val_loss", "val_hit1"] = Field(
        "val_loss", description="What picks the registered weights and drives early stopping: the lowest validation "
        "loss, or the highest validation hit@1 (the ranking set; falls back to the loss when ranking is off).")
    seed: int = 0
    num_workers: int = Field(1, ge=1, description="Ray Train workers (DDP processes).")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs reserved per worker.")
    pos_weight_max: float = Field(10.0, ge=1, description="Cap of the per-descriptor BCE positive weight (n_neg/n_pos).")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per worker.")
    rank_queries: int = Field(256, ge=0, description="Validation spectra ranked among candidates after every epoch "
                                                     "for val_hit1/val_hit5 (0: off).")
    rank_candidates: int = Field(100, ge=2, description="Cap on each ranked list (truth included): lake compounds "
                                                        "of the true formula.")
    rank_min_candidates: int = Field(10, ge=1, description="Lists with fewer same-formula compounds are topped up "
                                                           "with the lake compounds nearest in mass.")
    rank_library: int = Field(2048, ge=1, description="arch4: training spectra searched for the analogues whose "
                                                      "structures score the candidates.")
    time_budget_s: float | None = Field(
        None, gt=0, description="Stop after the epoch that brings the run's training + validation wall time to this "
        "budget (a stated CPU budget; early stopping may end it sooner). None: no budget.")
    fail_after_epoch: int | None = Field(
        None, ge=1, description="Testing aid: raise after checkpointing this epoch, as an interruption would.")


class RunSettings(BaseModel):
    """Everything that defines a trained model; saved as settings.json beside it."""

    model_config = ConfigDict(extra="forbid")

    arch: str
    model: dict[str, Any] = Field(default_factory=dict, description="Settings of the architecture (see its Settings class).")
    train: TrainSettings = TrainSettings()
    split: SplitSettings = SplitSettings()
    descriptors: DescriptorSettings = DescriptorSettings()
    bins: BinSettings = BinSettings()
    ms_level: int = Field(2, ge=2)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        return check_arch(v)

    @model_validator(mode="after")
    def _model_settings_valid(self) -> "RunSettings":
        arch_settings(self.arch, self.model)  # unknown or invalid architecture settings raise here
        return self

    def validated_model(self) -> dict[str, Any]:
        """The architecture settings with defaults filled in (unknown keys raise)."""
        return arch_settings(self.arch, self.model).model_dump(mode="json")


@dataclass
class TrainResult:
    """What a finished run produced."""

    model_id: str
    path: Path
    metrics: dict[str, Any]


# -- driver-side preparation -------------------------------------------------------------------

def build_context(examples: Examples, settings: RunSettings) -> ModelContext:
    """Model context fitted on training structures only: descriptors, arch2 groups, BCE positive weights."""
    from speclake.training.data import fit_descriptor_space, train_structure_rows
    from speclake.training.encoding import DescriptorSpace
    from speclake.training.models.arch2 import descriptor_groups

    model = settings.validated_model()
    ctx = ModelContext(arch=settings.arch, model=model, bins=settings.bins.model_dump(),
                       block_dims=dict(examples.block_dims))
    if ARCH_KIND[settings.arch] == "descriptors":
        space: DescriptorSpace = fit_descriptor_space(examples, settings.descriptors)
        rows = train_structure_rows(examples)
        y = space.targets(rows, settings.descriptors.families)
        ctx.descriptors = space.names
        pos = y.sum(0).astype(np.float64)
        ctx.pos_weight = np.clip((len(y) - pos) / np.maximum(pos, 1), 1.0, settings.train.pos_weight_max).tolist()
        if settings.arch == "arch2":
            ctx.groups = descriptor_groups(y, model["n_groups"])
    return ctx


# -- the training loop (runs in each Ray Train worker, or in a Ray Tune trial) --------------------

def _batches(source, batch_size: int, shuffle: bool, seed: int) -> Iterator[dict]:
    kwargs = {"local_shuffle_buffer_size": 4 * batch_size, "local_shuffle_seed": seed} if shuffle else {}
    yield from source.iter_batches(batch_size=batch_size, batch_format="numpy", **kwargs)


def _allreduce_sum(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _run_epoch(model, optimizer, batches: Iterable[dict], state, device, train: bool) -> tuple[float, int]:
    import torch

    from speclake.training.tasks import step_loss

    model.train(train)
    total, n_total = 0.0, 0
    for batch in batches:
        with torch.set_grad_enabled(train):
            loss, n = step_loss(model, batch, state, device)
            if n == 0 or not loss.requires_grad:  # keep every DDP rank's backward identical
                loss = loss + sum((p * 0).sum() for p in model.parameters())
        if train:
            optimizer.zero_grad()
            loss.backward()  # every rank steps every batch, so DDP's all-reduce stays in lock-step
            optimizer.step()
        total += float(loss.detach()) * n
        n_total += n
    return total, n_total


def improvement(select: str, val_loss: float, best_loss: float, val_hit1: float | None,
                best_hit1: float | None) -> tuple[bool, bool]:
    """(whether this epoch beats the best so far on ``select``, whether its hit@1 is a new best). The loss must
    drop by more than 1e-6; hit@1 must rise (a tie keeps the earlier weights); ``val_hit1`` None (no ranking)
    falls back to the loss."""
    loss_better = val_loss < best_loss - 1e-6
    hit_better = val_hit1 is not None and (best_hit1 is None or val_hit1 > best_hit1 + 1e-9)
    return (hit_better if select == "val_hit1" and val_hit1 is not None else loss_better), hit_better


def train_loop(config: dict[str, Any], io: "LoopIO") -> None:
    """Epochs of training with validation, checkpoint each epoch, early stopping; resumes from ``io``'s checkpoint."""
    import torch

    from speclake.training.models import build_model
    from speclake.training.ranking import RankingSet, ValidationRanker
    from speclake.training.tasks import StepState

    ts = TrainSettings.model_validate(config["train"])
    torch.set_num_threads(ts.torch_threads)
    torch.manual_seed(ts.seed)
    ctx = ModelContext.from_dict(config["ctx"])
    model = build_model(ctx)
    optimizer = torch.optim.Adam(model.parameters(), lr=ts.lr, weight_decay=ts.weight_decay)
    start, best_val, best_epoch, bad, history, best_state = 1, float("inf"), 0, 0, [], None
    best_hit1, best_hit1_epoch, spent = None, 0, 0.0
    saved = io.load_state()
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start, best_val, best_epoch = saved["epoch"] + 1, saved["best_val"], saved["best_epoch"]
        bad, history, best_state = saved["bad_epochs"], saved["history"], saved["best_model"]
        best_hit1, best_hit1_epoch = saved.get("best_hit1"), saved.get("best_hit1_epoch", 0)
        spent = saved.get("spent_s", 0.0)
        log.info("resuming at epoch %d (best validation loss %.4f at epoch %d)", start, best_val, best_epoch)
    device = io.device()
    model = io.prepare(model)
    state = StepState(ctx, seed=ts.seed + 1000 * io.rank(), pool=config.get("pool") or {})
    ranking = config.get("ranking") if config.get("has_validation", True) else None
    ranker = ValidationRanker(RankingSet.from_config(ranking), ctx) if ranking and io.rank() == 0 else None
    if bad >= ts.patience or start > ts.epochs:
        io.report({"epoch": start - 1, "done": True}, None)
        return
    for epoch in range(start, ts.epochs + 1):
        state.rng = np.random.default_rng(ts.seed + 1000 * io.rank() + epoch)
        t0 = time.perf_counter()
        tr_sum, tr_n = _run_epoch(model, optimizer, _batches(io.data("train"), ts.batch_size, True, ts.seed + epoch),
                                  state, device, True)
        seconds = time.perf_counter() - t0
        va_sum, va_n = (0.0, 0)
        if config.get("has_validation", True):
            va_sum, va_n = _run_epoch(model, None, _batches(io.data("validation"), ts.batch_size, False, 0),
                                      state, device, False)
        hit1, hit5, n_ranked = 0, 0, 0
        if ranker is not None:  # rank 0 only; the others add zeros below, so every rank records the same
            ranks = ranker.ranks(_unwrap(model), device)
            hit1, hit5, n_ranked = int((ranks <= 1).sum()), int((ranks <= 5).sum()), len(ranks)
        tr_sum, tr_n, va_sum, va_n, seconds, hit1, hit5, n_ranked, wall = _allreduce_sum(
            [tr_sum, tr_n, va_sum, va_n, seconds, hit1, hit5, n_ranked, time.perf_counter() - t0])
        train_loss = tr_sum / max(tr_n, 1)
        val_loss = va_sum / va_n if va_n else train_loss
        val_hit1 = hit1 / n_ranked if n_ranked else None
        workers = io.world_size()
        spent += wall / workers
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "val_hit1": val_hit1,
                   "val_hit5": hit5 / n_ranked if n_ranked else None,
                   "spectra_per_s": tr_n / max(seconds / workers, 1e-9), "n_train": int(tr_n), "n_val": int(va_n),
                   "n_ranked": int(n_ranked)}
        improved, hit_better = improvement(ts.select, val_loss, best_val, val_hit1, best_hit1)
        best_val = min(best_val, val_loss)
        if hit_better:
            best_hit1, best_hit1_epoch = val_hit1, epoch
        if improved:
            best_epoch, bad = epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
        else:
            bad += 1
        history.append(metrics)
        metrics = {**metrics, "best_val_loss": best_val, "best_epoch": best_epoch, "best_val_hit1": best_hit1,
                   "best_val_hit1_epoch": best_hit1_epoch}
        log.info("epoch %d: train loss %.4f, validation loss %.4f, validation hit@1 %s, %.0f spectra/s", epoch,
                 train_loss, val_loss, "-" if val_hit1 is None else f"{val_hit1:.3f}", metrics["spectra_per_s"])
        done = bad >= ts.patience or epoch == ts.epochs or spent >= (ts.time_budget_s or float("inf"))
        io.report({**metrics, "done": done}, {
            "model": _unwrap(model).state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
            "best_val": best_val, "best_epoch": best_epoch, "bad_epochs": bad, "history": history, "spent_s": spent,
            "best_model": best_state, "best_hit1": best_hit1, "best_hit1_epoch": best_hit1_epoch, "done": done})
        if ts.fail_after_epoch is not None and epoch >= ts.fail_after_epoch and not done:
            raise RuntimeError(f"simulated interruption after epoch {epoch}")
        if done:
            break


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point of every worker."""
    train_loop(config, LoopIO("train", resume_path=config.get("resume_path")))


# -- driver ---------------------------------------------------------------------------------------

@dataclass
class TrainingReport(RunReport):
    """The report of one training run (saved in its run record, ``_catalog/runs/<run>.json``)."""

    model_id: str = ""
    arch: str = ""
    resumed: bool = False
    examples: dict[str, int] = field(default_factory=dict)   # spectra per split
    usable_train: int = 0                                    # training spectra with every input of the arch
    epochs: int = 0
    best_epoch: int = 0
    best_val_loss: float | None = None
    best_val_hit1: float | None = None
    spectra_per_s: float | None = None
    num_workers: int = 0
    use_gpu: bool = False

    def add_metrics(self, metrics: dict[str, Any]) -> None:
        """Take the summary of a finished run (:func:`trained_metrics`)."""
        self.epochs, self.best_epoch = int(metrics["epochs"]), int(metrics["best_epoch"])
        self.best_val_loss, self.spectra_per_s = metrics["best_val_loss"], metrics["spectra_per_s"]
        self.best_val_hit1 = metrics.get("best_val_hit1")
        self.num_workers, self.use_gpu = metrics["num_workers"], metrics["use_gpu"]


def ray_storage(lake_dir: str | Path) -> Path:
    path = Lake(lake_dir).root / "models" / "_ray"
    path.mkdir(parents=True, exist_ok=True)
    return path


def latest_checkpoint_dir(run_dir: Path) -> Path | None:
    """The newest checkpoint folder holding a state file under a Ray Train run directory."""
    found = [p.parent for p in run_dir.glob(f"**/{STATE_FILE}")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def unfinished_run(lake_dir: str | Path, arch: str) -> str | None:
    """Id of the newest run of ``arch`` with checkpoints but no registered model (what --resume continues)."""
    from speclake.training.registry import model_dir

    runs = [p for p in ray_storage(lake_dir).glob(f"{arch}-*") if p.is_dir()
            and latest_checkpoint_dir(p) is not None and not (model_dir(lake_dir, p.name) / "model.json").exists()]
    return max(runs, key=lambda p: p.stat().st_mtime).name if runs else None


def train_model(lake_dir: str | Path, settings: RunSettings, *, resume: bool = False, model_id: str | None = None,
                ray_address: str | None = None, num_cpus: int | None = None,
                progress: Progress | None = None) -> TrainResult:
    """Train one model under Ray Train and register it; see the module docstring.

    Refused (:class:`~speclake.training.data.MissingInputError`) when no training spectrum has the
    inputs of ``settings.arch``; a run that saw no training example is not registered. ``progress``
    hears of each stage and each finished epoch (``("epoch", epoch, epochs)``); the epochs' losses
    and validation hit@1/hit@5 are in the result's ``metrics["history"]``. The run record (kind
    ``training``) holds a :class:`TrainingReport`; the lake lock is not held while training.
    """
    from speclake.training.registry import new_model_id, save_model

    report = TrainingReport(arch=settings.arch, resumed=resume)
    with Run(Lake(lake_dir), "training", settings, report, progress=progress, lock=None) as run:
        with run.stage("examples"):
            examples = load_examples(lake_dir, settings.split, settings.ms_level)
            report.examples = dict(examples.counts)
            if examples.counts["train"] == 0:
                raise ValueError(f"no training spectra in {lake_dir}")
            report.usable_train = require_inputs(lake_dir, examples, settings.arch)
        if resume and model_id is None:
            model_id = unfinished_run(lake_dir, settings.arch)
            if model_id is None:
                raise ValueError(f"nothing to resume: no unfinished {settings.arch} run under {ray_storage(lake_dir)}")
        report.model_id = model_id = model_id or new_model_id(settings.arch)
        with run.stage("training"), ray_session(RaySettings(), address=ray_address, num_cpus=num_cpus):
            ctx, run.settings, state, ts, ranking = _fit(lake_dir, examples, settings, model_id, resume)
        metrics = trained_metrics(model_id, state, ts, ranking)
        report.add_metrics(metrics)
        for h in metrics["history"]:
            run.note("epoch", int(h["epoch"]), int(metrics["epochs"]))
        with run.stage("register"):
            path = save_model(lake_dir, model_id, ctx, state["best_model"] or state["model"],
                              run.settings.model_dump(mode="json"), examples.split_record(), metrics)
    return TrainResult(model_id, path, metrics)


def _fit(lake_dir: str | Path, examples: Examples, settings: RunSettings, model_id: str, resume: bool
         ) -> tuple[ModelContext, RunSettings, dict[str, Any], TrainSettings, dict[str, Any] | None]:
    """The Ray Train run itself (Ray is running): context, trainer, the final checkpoint's state, the
    validation ranking set's summary."""
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    from speclake.training.ranking import ranking_set

    storage = ray_storage(lake_dir)
    run_dir = storage / model_id
    ctx_path = run_dir / "context.json"
    if resume and ctx_path.exists():
        saved = json.loads(ctx_path.read_text())
        ctx, settings = ModelContext.from_dict(saved["ctx"]), RunSettings.model_validate(
            {**saved["settings"], "train": {**saved["settings"]["train"], **_resumable(settings.train)}})
    else:
        ctx = build_context(examples, settings)
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx_path.write_text(json.dumps({"ctx": ctx.to_dict(), "settings": settings.model_dump(mode="json")}))
    pool = negative_pool(examples, lake_dir, ctx.settings.hard_negatives * 2) if settings.arch == "arch5" else {}
    ranking = ranking_set(lake_dir, examples, settings.arch, settings.train)
    resume_ckpt = latest_checkpoint_dir(run_dir) if resume else None
    config = {"ctx": ctx.to_dict(), "train": settings.train.model_dump(), "pool": pool,
              "has_validation": bool(examples.counts["validation"]),
              "ranking": ranking.to_config() if ranking is not None else None,
              "resume_path": str(resume_ckpt) if resume_ckpt else None}
    datasets = {"train": examples.dataset("train")}
    if examples.counts["validation"]:
        datasets["validation"] = examples.dataset("validation")
    ts = fit_workers(settings.train, cluster_cpus())
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=config, datasets=datasets,
        scaling_config=ray.train.ScalingConfig(num_workers=ts.num_workers, use_gpu=ts.use_gpu,
                                               resources_per_worker={"CPU": ts.cpus_per_worker}),
        run_config=ray.train.RunConfig(name=model_id, storage_path=str(storage),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    log.info("training %s (%s) on %d worker(s), %s spectra per split", model_id, settings.arch, ts.num_workers,
             examples.counts)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"run {model_id} ended without a checkpoint")
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)
    return ctx, settings, state, ts, ranking.summary() if ranking is not None else None


def trained_metrics(model_id: str, state: dict[str, Any], train: TrainSettings,
                    ranking: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a model records of its run, from the final checkpoint's state (and ``ranking``, the summary of
    its validation ranking set). A run with an epoch that trained on no example raises
    :class:`~speclake.lake.run.RunError`: such a model is never registered."""
    history = state["history"]
    empty = [h["epoch"] for h in history if not h.get("n_train")]
    if not history or empty:
        raise RunError(f"run {model_id} trained on no example (epochs {empty or 'none'}): not registered")
    return {"history": history, "epochs": state["epoch"], "best_epoch": state["best_epoch"],
            "best_val_loss": state["best_val"], "final_train_loss": history[-1]["train_loss"],
            "best_val_hit1": state.get("best_hit1"), "best_val_hit1_epoch": state.get("best_hit1_epoch") or None,
            "final_val_hit1": history[-1].get("val_hit1"), "val_ranking": ranking,
            "spectra_per_s": float(np.mean([h["spectra_per_s"] for h in history])),
            "num_workers": train.num_workers, "use_gpu": train.use_gpu}


#: Ray CPUs kept free of training workers so their Ray Data reads can be scheduled.
DATA_CPUS = 1.0


def fit_workers(train: TrainSettings, cluster_cpus: float) -> TrainSettings:
    """Shrink the CPUs per worker so ``DATA_CPUS`` stay free for Ray Data (else the input pipeline starves)."""
    need = train.num_workers * train.cpus_per_worker + DATA_CPUS
    if cluster_cpus <= 0 or need <= cluster_cpus:
        return train
    per = (cluster_cpus - DATA_CPUS) / train.num_workers
    if per < 0.05:
        raise ValueError(f"{train.num_workers} workers do not fit on {cluster_cpus:g} Ray CPUs; use fewer --workers")
    log.warning("%d workers x %g CPUs leave no CPU for the data pipeline on %g CPUs: using %.2f CPUs per worker",
                train.num_workers, train.cpus_per_worker, cluster_cpus, per)
    return train.model_copy(update={"cpus_per_worker": per})


def _resumable(train: TrainSettings) -> dict[str, Any]:
    """Settings a resumed run may change (scaling, epochs, the failure aid); the rest stays as first saved."""
    return {k: getattr(train, k) for k in ("epochs", "num_workers", "use_gpu", "cpus_per_worker", "fail_after_epoch",
                                           "time_budget_s", "torch_threads")}
