"""Train the de novo model under Ray Train and register it: the SELFIES VAE, then the spectrum mapper.

One ``TorchTrainer`` run (:func:`train_denovo`) does both phases in each worker:

1. the VAE on the structure set (:func:`~.data.structure_set`: never a validation or test InChIKey-14),
   KL weight ramped from 0 to ``beta`` over ``warmup_steps``, for ``vae_epochs`` or ``vae_seconds``;
2. the mapper (:class:`~.model.SpectrumToLatent`) on training-split library spectra, regressing the
   frozen VAE's latent mean of each spectrum's structure; early stopping on the validation-split spectra's
   MSE (``mapper_patience``), the best epoch's weights kept.

Token and spectrum arrays sit in Ray's object store; each worker shuffles the row indices per epoch
and takes its share (the arrays are small: a Ray Data pipeline cost more than the epochs themselves).
A checkpoint is reported after every epoch. The driver then measures the model (:func:`vae_figures`,
:func:`mapper_figures`) and registers it under ``<lake>/models/_denovo/<model_id>/`` (outside the
spectrum-model registry, which loads every ``models/*/``): ``model.pt``, ``vocab.json``,
``settings.json``, ``metrics.json``, ``model.json`` and ``structures.json`` (the InChIKey-14s it trained on).
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from speclake.infra.ray import RaySettings, ray_session
from speclake.lake.catalog import Lake
from speclake.lake.run import Progress, Run, RunError, RunReport
from speclake.training.encoding import BinSettings
from speclake.training.split import SplitSettings

from .data import spectrum_inputs, structure_set, training_spectra
from .model import VaeSettings
from .vocab import Vocab, encode_smiles, selfies_tokens

log = logging.getLogger(__name__)

STATE_FILE = "state.pt"
DENOVO_DIR = "_denovo"


class DenovoTrainSettings(BaseModel):
    """Everything that defines a trained de novo model; saved as settings.json beside it."""

    model_config = ConfigDict(extra="forbid")

    structures: list[str] = Field(default_factory=list,
                                  description="SMILES files (SMILES<TAB>ID, gzip ok) added to the lake's compounds.")
    structure_limit: int | None = Field(None, ge=1, description="Lines read from each structure file.")
    vae: VaeSettings = VaeSettings()
    bins: BinSettings = BinSettings()
    split: SplitSettings = SplitSettings()
    vae_epochs: int = Field(20, ge=1)
    vae_seconds: float | None = Field(None, gt=0, description="Stop the VAE phase after this many seconds.")
    mapper_epochs: int = Field(30, ge=1)
    mapper_seconds: float | None = Field(None, gt=0)
    mapper_patience: int = Field(3, ge=1, description="Stop the mapper after this many epochs without a lower "
                                 "validation MSE (validation-split spectra); the best epoch's weights are kept.")
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    beta: float = Field(0.1, ge=0, description="Final weight of the KL term.")
    warmup_steps: int = Field(1000, ge=1, description="Batches over which the KL weight ramps up from 0.")
    checkpoint_epochs: int = Field(1, ge=1, description="Checkpoint every this many epochs (and at each phase's end).")
    holdout: float = Field(0.05, ge=0, lt=0.5, description="Share of the structure set kept out to measure the VAE.")
    seed: int = 0
    num_workers: int = Field(1, ge=1)
    cpus_per_worker: float = Field(1.0, gt=0)
    torch_threads: int = Field(1, ge=1)
    spectrum_limit: int | None = Field(None, ge=1, description="Training spectra used by the mapper (all by default).")
    figure_samples: int = Field(500, ge=10, description="Molecules decoded for the validity/uniqueness/novelty figures.")


@dataclass
class DenovoTrainReport(RunReport):
    """The report of one de novo training run (in its run record)."""

    model_id: str = ""
    structures: dict[str, int] = field(default_factory=dict)   # read, held_out, too_long, train, holdout
    spectra: dict[str, int] = field(default_factory=dict)      # train, validation
    vae_epochs: int = 0
    mapper_epochs: int = 0
    figures: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainedDenovo:
    model_id: str
    path: Path
    metrics: dict[str, Any]


def denovo_root(lake_dir: str | Path) -> Path:
    return Lake(lake_dir).root / "models" / DENOVO_DIR


def new_denovo_id() -> str:
    import uuid

    return f"denovo-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


# -- the loop in each Ray Train worker ------------------------------------------------------------

def _allreduce(values: list[float]) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def _out_of_time(t0: float, budget: float | None) -> bool:
    """True on every rank once any rank has used ``budget`` seconds (keeps DDP ranks in step)."""
    late = budget is not None and time.perf_counter() - t0 > budget
    return _allreduce([float(late)])[0] > 0


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: the VAE phase, then the mapper phase; a checkpoint per epoch."""
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from .model import build_networks

    ts = DenovoTrainSettings.model_validate(config["settings"])
    torch.set_num_threads(ts.torch_threads)
    torch.manual_seed(ts.seed)
    tokens = torch.from_numpy(ray.get(config["tokens"]))
    x_spec = torch.from_numpy(ray.get(config["spectra"]))
    spec_rows = torch.from_numpy(ray.get(config["spectrum_structures"]))
    vae, mapper = build_networks(config["vocab_size"], config["n_inputs"], ts.vae)
    vae_p, mapper_p = ray.train.torch.prepare_model(vae), ray.train.torch.prepare_model(mapper)
    rank = ray.train.get_context().get_world_rank()
    history: list[dict[str, Any]] = []

    def report(metrics: dict[str, Any], last: bool) -> None:
        history.append(metrics)
        state = {"vae": vae.state_dict(), "mapper": mapper.state_dict(), "history": history}
        if rank != 0 or not (last or metrics["epoch"] % ts.checkpoint_epochs == 0):
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    world = ray.train.get_context().get_world_size()
    n_rows = {"structures": config["n_structures"], "spectra": len(x_spec)}

    def batches(name: str, epoch: int):
        """This rank's shuffled rows of one epoch; every rank gets the same number of batches (DDP lock-step)."""
        order = np.random.default_rng(ts.seed + epoch).permutation(n_rows[name])
        per_rank = len(order) // world if world > 1 else len(order)
        mine = order[rank * per_rank:(rank + 1) * per_rank] if world > 1 else order
        for start in range(0, len(mine), ts.batch_size):
            yield torch.from_numpy(mine[start:start + ts.batch_size].astype(np.int64))

    opt = torch.optim.Adam(vae.parameters(), lr=ts.lr)
    step, t0 = 0, time.perf_counter()
    for epoch in range(1, ts.vae_epochs + 1):
        vae_p.train()
        sums = [0.0, 0.0, 0.0, 0.0]   # loss, reconstruction, kl (sums over molecules), molecules
        stop = False
        for rows in batches("structures", epoch):
            ids = tokens[rows]
            beta = ts.beta * min(1.0, step / ts.warmup_steps)
            loss, parts = vae_p(ids, beta)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 5.0)
            opt.step()
            step += 1
            n = len(rows)
            sums = [sums[0] + float(loss.detach()) * n, sums[1] + parts["reconstruction"] * n,
                    sums[2] + parts["kl"] * n, sums[3] + n]
            if _out_of_time(t0, ts.vae_seconds):
                stop = True
                break
        sums = _allreduce(sums)
        n = max(sums[3], 1.0)
        report({"phase": "vae", "epoch": epoch, "loss": sums[0] / n, "reconstruction": sums[1] / n,
                "kl": sums[2] / n, "beta": beta, "molecules": int(sums[3]),
                "seconds": round(time.perf_counter() - t0, 2)}, stop or epoch == ts.vae_epochs)
        if stop:
            break
    vae.eval()
    opt = torch.optim.Adam(mapper.parameters(), lr=ts.lr, weight_decay=1e-5)
    x_val = torch.from_numpy(ray.get(config["validation_x"]))
    with torch.no_grad():   # the frozen VAE's latent means of the validation spectra's structures
        y_val = vae.encode(torch.from_numpy(ray.get(config["validation_tokens"])))[0] if len(x_val) else None
    best_val, best_state, bad = float("inf"), None, 0
    t0 = time.perf_counter()
    for epoch in range(1, ts.mapper_epochs + 1):
        if not len(x_spec):
            break
        mapper_p.train()
        sums, stop = [0.0, 0.0], False
        for rows in batches("spectra", epoch):
            with torch.no_grad():
                target, _ = vae.encode(tokens[spec_rows[rows]])
            loss = torch.nn.functional.mse_loss(mapper_p(x_spec[rows]), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sums = [sums[0] + float(loss.detach()) * len(rows), sums[1] + len(rows)]
            if _out_of_time(t0, ts.mapper_seconds):
                stop = True
                break
        sums = _allreduce(sums)
        metrics = {"phase": "mapper", "epoch": epoch, "loss": sums[0] / max(sums[1], 1.0), "spectra": int(sums[1]),
                   "seconds": round(time.perf_counter() - t0, 2)}
        if y_val is not None:   # early stopping on validation MSE (every rank sees the same arrays)
            mapper.eval()
            with torch.no_grad():
                val = float(torch.nn.functional.mse_loss(mapper(x_val), y_val))
            metrics["validation_mse"] = val
            if val < best_val - 1e-6:
                best_val, bad = val, 0
                best_state = {k: v.detach().clone() for k, v in mapper.state_dict().items()}
            else:
                bad += 1
            stop = stop or bad >= ts.mapper_patience
        last = stop or epoch == ts.mapper_epochs
        if last and best_state is not None:
            mapper.load_state_dict(best_state)   # the checkpoint holds the best epoch's mapper
        report(metrics, last)
        if stop:
            break


# -- driver ---------------------------------------------------------------------------------------

@dataclass
class Prepared:
    """The arrays of one run, made on the driver."""

    vocab: Vocab
    tokens: np.ndarray            # (n_structures, max_len + 2): training then holdout rows
    smiles: list[str]
    keys: list[str]
    n_train: int                  # first n_train rows train the VAE, the rest measure it
    spectra: np.ndarray           # (n_spectra, n_inputs) mapper inputs, training split
    spectrum_structures: np.ndarray  # row of each spectrum's structure in ``tokens``
    validation: dict[str, Any]    # validation-split spectra: inputs and token rows (own arrays)
    counts: dict[str, int]


def _spectra_rows(table, vocab: Vocab, bins: BinSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mapper inputs, token arrays and InChIKey-14s of the spectra whose structure the vocabulary can spell."""
    from .vocab import canonical_smiles

    d = table.to_pydict() if table.num_rows else {k: [] for k in table.column_names}
    smiles = [canonical_smiles(s) or "" for s in d["smiles"]]
    keep, toks = encode_smiles(smiles, vocab)
    x = spectrum_inputs([d["mz"][i] for i in keep], [d["intensities"][i] for i in keep],
                        [d["ionmode"][i] for i in keep], [d["precursor_mz"][i] for i in keep], bins)
    return x, toks, np.asarray([d["inchikey14"][i] for i in keep], dtype=object)


def prepare(lake_dir: str | Path, settings: DenovoTrainSettings) -> Prepared:
    """Structure set, vocabulary and token arrays, and the mapper's spectra (driver side)."""
    s = structure_set(lake_dir, settings.structures, settings.split, settings.structure_limit)
    token_lists = [selfies_tokens(x) for x in s.smiles]
    fits = [i for i, t in enumerate(token_lists) if t is not None and len(t) <= settings.vae.max_len]
    counts = {**{f"structures_{k}": v for k, v in s.counts.items()}, "structures_unencodable": len(s.smiles) - len(fits)}
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(fits)
    n_hold = int(round(len(order) * settings.holdout))
    order = np.concatenate([order[n_hold:], order[:n_hold]]).astype(np.int64)
    n_train = len(order) - n_hold
    vocab = Vocab.fit([token_lists[i] for i in order[:n_train]], settings.vae.max_len)
    smiles = [s.smiles[i] for i in order]
    keys = [s.inchikey14[i] for i in order]
    tokens = np.stack([vocab.encode(token_lists[i]) if vocab.encode(token_lists[i]) is not None
                       else np.zeros(settings.vae.max_len + 2, np.int64) for i in order]) \
        if len(order) else np.zeros((0, settings.vae.max_len + 2), np.int64)
    # holdout rows with a token unseen in training stay out of the measurement
    ok = np.asarray([i < n_train or tokens[i, 0] == 1 for i in range(len(order))], bool)
    tokens, smiles, keys = tokens[ok], [x for x, k in zip(smiles, ok) if k], [x for x, k in zip(keys, ok) if k]
    counts.update({"structures_train": n_train, "structures_holdout": len(smiles) - n_train})
    if n_train < 2:
        raise RunError(f"the VAE needs structures: only {n_train} usable in {settings.structures or 'the lake'}")
    key_row = {k: i for i, k in enumerate(keys[:n_train])}
    x, toks, spec_keys = _spectra_rows(training_spectra(lake_dir, settings.split, "train", settings.spectrum_limit),
                                       vocab, settings.bins)
    rows = np.asarray([key_row.get(k, -1) for k in spec_keys], np.int64)
    # a spectrum's structure not among the VAE rows (e.g. a holdout row): append its tokens as an extra row
    missing = np.nonzero(rows < 0)[0]
    if len(missing):
        extra = np.arange(len(tokens), len(tokens) + len(missing))
        tokens = np.concatenate([tokens, toks[missing]])
        rows[missing] = extra
    vx, vtoks, _ = _spectra_rows(training_spectra(lake_dir, settings.split, "validation"), vocab, settings.bins)
    counts.update({"spectra_train": len(x), "spectra_validation": len(vx)})
    return Prepared(vocab, tokens, smiles, keys, n_train, x.astype(np.float32), rows,
                    {"x": vx.astype(np.float32), "tokens": vtoks}, counts)


def _fit(prep: Prepared, settings: DenovoTrainSettings, storage: Path, model_id: str) -> dict[str, Any]:
    """The Ray Train run (Ray is running); returns the final checkpoint's state."""
    import ray
    import ray.train
    import torch
    from ray.train.torch import TorchTrainer

    config = {"settings": settings.model_dump(mode="json"), "vocab_size": len(prep.vocab),
              "n_inputs": int(prep.spectra.shape[1]) if prep.spectra.ndim == 2 else settings.bins.n_bins + 2,
              "tokens": ray.put(prep.tokens), "spectra": ray.put(prep.spectra),
              "spectrum_structures": ray.put(prep.spectrum_structures), "n_structures": prep.n_train,
              "validation_x": ray.put(np.asarray(prep.validation["x"], np.float32)),
              "validation_tokens": ray.put(np.asarray(prep.validation["tokens"], np.int64))}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=settings.num_workers,
                                               resources_per_worker={"CPU": settings.cpus_per_worker}),
        run_config=ray.train.RunConfig(name=model_id, storage_path=str(storage),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
                                       failure_config=ray.train.FailureConfig(max_failures=0)))
    log.info("training %s: %d structures, %d spectra, %d worker(s)", model_id, prep.n_train, len(prep.spectra),
             settings.num_workers)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"run {model_id} ended without a checkpoint")
    with result.checkpoint.as_directory() as d:
        return torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=False)


def train_denovo(lake_dir: str | Path, settings: DenovoTrainSettings, *, ray_address: str | None = None,
                 num_cpus: int | None = None, progress: Progress | None = None) -> TrainedDenovo:
    """Train and register a de novo model (see the module docstring); run record of kind ``training``."""
    from .figures import mapper_figures, vae_figures
    from .sample import DenovoModel

    report = DenovoTrainReport()
    with Run(Lake(lake_dir), "training", settings, report, progress=progress, lock=None) as run:
        with run.stage("structures"):
            prep = prepare(lake_dir, settings)
            report.structures = {k: v for k, v in prep.counts.items() if k.startswith("structures_")}
            report.spectra = {k: v for k, v in prep.counts.items() if k.startswith("spectra_")}
        report.model_id = model_id = new_denovo_id()
        storage = denovo_root(lake_dir) / "_ray"
        storage.mkdir(parents=True, exist_ok=True)
        with run.stage("training"), ray_session(RaySettings(), address=ray_address, num_cpus=num_cpus):
            state = _fit(prep, settings, storage, model_id)
        history = state["history"]
        report.vae_epochs = sum(1 for h in history if h["phase"] == "vae")
        report.mapper_epochs = sum(1 for h in history if h["phase"] == "mapper")
        if not any(h["phase"] == "vae" and h["molecules"] for h in history):
            raise RunError(f"run {model_id} trained on no structure: not registered")
        import torch

        torch.set_num_threads(settings.torch_threads)
        model = DenovoModel.from_state(model_id, prep.vocab, settings, state, n_inputs=prep.spectra.shape[1])
        with run.stage("figures"):
            figures = vae_figures(model, prep.smiles[prep.n_train:], set(prep.smiles[:prep.n_train]),
                                  settings.figure_samples, settings.seed)
            mapper = mapper_figures(model, prep.validation["x"], prep.validation["tokens"],
                                    prep.spectra, prep.tokens[prep.spectrum_structures])
            figures.update(mapper.pop("figures"))
            model.residual_sd = mapper["residual_sd"]
            report.figures = figures
        metrics = {"history": history, "figures": figures, "counts": prep.counts}
        with run.stage("register"):
            path = save_denovo(lake_dir, model, settings, metrics, prep.keys[:prep.n_train])
        shutil.rmtree(storage / model_id, ignore_errors=True)
    return TrainedDenovo(model_id, path, metrics)


def save_denovo(lake_dir: str | Path, model, settings: DenovoTrainSettings, metrics: dict[str, Any],
                train_keys: Sequence[str]) -> Path:
    """Write the model folder atomically (a temporary folder renamed in); returns its path."""
    import torch

    final = denovo_root(lake_dir) / model.model_id
    tmp = final.with_name(f".{model.model_id}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"vae": model.vae.state_dict(), "mapper": model.mapper.state_dict(),
                "residual_sd": torch.as_tensor(model.residual_sd, dtype=torch.float32)}, tmp / "model.pt")
    summary = {"model_id": model.model_id, "kind": "denovo",
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "n_inputs": model.n_inputs, "figures": metrics["figures"], "counts": metrics["counts"]}
    files = {"model.json": summary, "settings.json": settings.model_dump(mode="json"),
             "vocab.json": {"tokens": model.vocab.tokens, "max_len": model.vocab.max_len},
             "metrics.json": metrics, "structures.json": sorted(train_keys)}
    for name, obj in files.items():
        (tmp / name).write_text(json.dumps(obj, indent=1, default=str))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


def list_denovo(lake_dir: str | Path) -> list[dict[str, Any]]:
    """Summaries of the lake's de novo models, oldest first."""
    root = denovo_root(lake_dir)
    found = [json.loads(p.read_text()) for p in root.glob("*/model.json") if not p.parent.name.startswith((".", "_"))]
    return sorted(found, key=lambda m: (m["created"], m["model_id"]))


__all__ = ["DenovoTrainReport", "DenovoTrainSettings", "TrainedDenovo", "denovo_root", "list_denovo", "prepare",
           "save_denovo", "train_denovo", "train_loop_per_worker"]
