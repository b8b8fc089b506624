"""Training loop: one code path for one CPU process, one GPU and several (``accelerate launch``).

What it guarantees:

- The global batch is ``train.batch_size`` whatever the number of processes: each optimiser step
  takes one global batch, split over processes and, where a process cannot hold its share at
  once (``micro_batch_size``), over gradient-accumulation micro-batches.
- The data order and every random draw are functions of (seed, epoch, step, micro-batch): the
  epoch's permutation comes from ``(seed, epoch)`` and the torch generator is re-seeded from
  ``(seed, step, micro-batch)`` before each forward. So a run resumed from any checkpoint, and a
  run split over N processes, replays exactly the draws of an uninterrupted single-process run.
- Checkpoints (``state.pt``) are written atomically at each epoch end and every
  ``checkpoint_every_steps`` steps; the same command started again resumes from the last one.
- Only trainable parameters go into the optimiser and the checkpoints; checkpoints record the
  backbone and refuse to load onto another (see ``diffris.checkpoint``).

Run folder::

    config.json        resolved run config (experiment, dataset, seed, model, train budget, backbone)
    state.pt           resume state (weights, optimiser, scheduler, RNG, counters)
    log.jsonl          one record per step (loss, lr, samples/s, peak memory) and per epoch (val)
    best.safetensors   best-on-val weights so far (only with ``select: best-val``)
    model.safetensors  the weights that evaluation uses, written when training is complete
    trained.json       written last: the run config's sha256 and the weights' info
    .diffris-out.json  the marker: this folder is train's (diffris.fileio)

Started with another config than ``config.json``'s, a run trains in ``<out>.partial`` and is
swapped in when complete, so ``out`` keeps its weights until the new ones exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from diffris.checkpoint import (
    CheckpointError,
    load_state,
    load_trainable,
    load_weights,
    read_weights_info,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
)
from diffris.errors import ConfigError, DataError
from diffris.features import model_inputs
from diffris.fileio import MARKER, OutputError, check_inputs, foreign_files, owned_by, swap_in, write_json
from diffris.models.pcmrd import AssignmentMonitor

SELECT_CHOICES = ("last", "best-val")
SELECT_METRIC = "oIoU"  # what "best on val" maximises (LAVT/RMSIN keep the best val oIoU)
CONFIG_FILE, STATE_FILE, LOG_FILE = "config.json", "state.pt", "log.jsonl"
BEST_FILE, MODEL_FILE, DONE_FILE = "best.safetensors", "model.safetensors", "trained.json"
RUN_FILES = [CONFIG_FILE, STATE_FILE, LOG_FILE, BEST_FILE, MODEL_FILE, DONE_FILE, ".*.tmp-*"]  # all train writes
PATH_KEYS = ("data", "backbone_dir", "features")  # may move (or be dropped) between a run and its resumption


@dataclass(frozen=True)
class TrainConfig:
    """The training budget of one scale (``scales.<scale>.train`` in params.yaml)."""

    epochs: int
    batch_size: int  # global: summed over processes and accumulation steps
    micro_batch_size: int  # most samples one process puts through one forward
    lr: float
    weight_decay: float
    poly_power: float
    checkpoint_every_steps: int  # 0: at epoch ends only
    val_every_epochs: int  # 0: never (then select must be "last")
    select: str  # "last" | "best-val"
    eval_batch_size: int
    num_workers: int
    mixed_precision: str  # "auto" (bf16 where the GPU supports it, else fp32) | "bf16" | "fp32"
    cpu_threads: int = 0  # torch CPU threads; 0: torch's default. Results are bit-identical only for equal counts
    # Fast paths (docs/benchmarks.md): the same maths, other kernels or memory layouts.
    channels_last: bool = False  # NHWC convolutions in the VAE and UNet (faster on GPUs with tensor cores)
    gradient_checkpointing: bool = False  # recompute UNet activations in the backward: less memory, more compute
    compile: bool = False  # torch.compile the UNet (first steps slower; needs a C++ compiler on CPU)
    prefetch_factor: int = 2  # batches each data-loader worker keeps ready (with num_workers > 0)

    def __post_init__(self) -> None:
        if self.select not in SELECT_CHOICES:
            raise ConfigError(f"train.select: {self.select!r} is not one of {SELECT_CHOICES}")
        if self.select == "best-val" and self.val_every_epochs == 0:
            raise ConfigError("train.select is best-val but train.val_every_epochs is 0")


@dataclass(frozen=True)
class RunSpec:
    """Everything that defines a training run, before the model is built."""

    experiment: str
    dataset: str
    scale: str
    seed: int
    image_size: int
    model: dict  # the experiment's model config, JSON-serialisable
    train: TrainConfig
    data: Path
    backbone_dir: Path
    features: Path | None = None  # a feature cache (diffris.features); None: frozen passes on the fly

    def to_json(self, backbone: dict) -> dict:
        record = asdict(self)
        features = None if self.features is None else str(self.features)
        record.update(data=str(self.data), backbone_dir=str(self.backbone_dir), features=features, backbone=backbone)
        return json.loads(json.dumps(record))  # as it reads back from config.json


@dataclass(frozen=True)
class BatchLayout:
    """How one global batch is split over processes and accumulation steps.

    Micro-batch ``k`` of a global batch holds its samples ``[k*micro, (k+1)*micro)``; process
    ``rank`` runs micro-batches ``a*world + rank`` for ``a`` in ``range(accum)``.
    """

    global_batch: int
    world: int
    micro: int

    @property
    def accum(self) -> int:
        return self.global_batch // (self.world * self.micro)

    @classmethod
    def plan(cls, global_batch: int, micro_batch_size: int, world: int) -> BatchLayout:
        if global_batch % world:
            raise ConfigError(f"train.batch_size {global_batch} does not split over {world} processes")
        per_process = global_batch // world
        micro = min(micro_batch_size, per_process)
        if per_process % micro:
            raise ConfigError(
                f"train.batch_size {global_batch} over {world} process(es) gives {per_process} "
                f"per process, not a multiple of train.micro_batch_size {micro_batch_size}"
            )
        return cls(global_batch, world, micro)

    def micro_batches(self, batch: list[int], rank: int) -> list[tuple[int, list[int]]]:
        """(k, sample indices) of the micro-batches that ``rank`` runs for one global batch."""
        out = []
        for a in range(self.accum):
            k = a * self.world + rank
            out.append((k, batch[k * self.micro : (k + 1) * self.micro]))
        return out


@dataclass
class Counters:
    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimiser steps done in the epoch under way
    global_step: int = 0
    best_score: float | None = None
    best_epoch: int | None = None


@dataclass
class RunLog:
    """``log.jsonl``: written by the main process only, cut back to the checkpoint on resume."""

    path: Path
    enabled: bool
    epoch_losses: list[float] = field(default_factory=list)

    def resume_from(self, counters: Counters) -> None:
        if not self.enabled:
            return
        kept = [r for r in self._records() if _record_before(r, counters)]
        self.path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        self.epoch_losses = [
            r["loss"] for r in kept if r["kind"] == "step" and r["epoch"] == counters.epoch + 1
        ]

    def _records(self) -> list[dict]:
        """The complete records; a torn tail (a process killed mid-write) is cut off with a note."""
        if not self.path.exists():
            return []
        records = []
        lines = self.path.read_bytes().decode("utf-8", errors="replace").splitlines()
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or "kind" not in record:
                tqdm.write(f"{self.path}:{lineno}: not a complete record; the log is cut back to line {lineno - 1}")
                break
            records.append(record)
        return records

    def write(self, record: dict) -> None:
        if record["kind"] == "step":
            self.epoch_losses.append(record["loss"])
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")

    def end_epoch(self) -> float:
        mean = float(np.mean(self.epoch_losses)) if self.epoch_losses else float("nan")
        self.epoch_losses = []
        return mean


def _record_before(record: dict, counters: Counters) -> bool:
    if record["kind"] == "step":
        return record["step"] <= counters.global_step
    return record["epoch"] <= counters.epoch


# --- seeds -----------------------------------------------------------------------------------


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    return np.random.default_rng([seed, epoch]).permutation(num_samples).tolist()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; make cuDNN/cuBLAS deterministic."""
    from accelerate.utils import set_seed

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


# --- model, optimiser, schedule ----------------------------------------------------------------


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters only; no decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def poly_schedule(optimizer: torch.optim.Optimizer, total_steps: int, power: float):
    """lr = base * (1 - step/total)^power, stepped per optimiser step (LAVT/VPD)."""

    def factor(step: int) -> float:
        return (1.0 - min(step, total_steps) / total_steps) ** power

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def mixed_precision(choice: str) -> str:
    """accelerate's precision ("bf16" or "no") for train.mixed_precision auto | bf16 | fp32."""
    if choice == "auto":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return "bf16" if supported else "no"
    return "bf16" if choice == "bf16" else "no"


def set_cpu_threads(count: int) -> None:
    """Pin torch's CPU threads (``train.cpu_threads``) so that every tool that runs a job —
    Snakemake, DVC or a user's shell — computes with the same count and gets the same bits."""
    if count > 0:
        torch.set_num_threads(count)


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_run_model(model_config: dict, backbone_dir: Path) -> torch.nn.Module:
    """The model of a run config's ``model`` section (as written to config.json)."""
    from diffris.models import ModelConfig, build_model
    from diffris.models.config import from_dict

    if not Path(backbone_dir).is_dir():
        raise DataError(f"{backbone_dir}: no backbone folder; run `diffris fetch-weights` first")
    return build_model(from_dict(ModelConfig, model_config, "model"), backbone_dir)


def check_prepared(data: Path, dataset: str, image_size: int, split: str) -> None:
    """The prepared folder holds ``split`` of ``dataset`` at ``image_size`` (its summary.json)."""
    summary = Path(data) / "summary.json"
    if not summary.exists():
        raise DataError(f"{summary}: missing; run `diffris prepare` first")
    prepared = json.loads(summary.read_text())
    if prepared.get("dataset") != dataset:
        raise DataError(f"{summary}: holds {prepared.get('dataset')!r}, not {dataset!r}")
    if split not in prepared.get("splits", {}):
        raise DataError(f"{summary}: no split {split!r}")
    if prepared.get("image_size") != image_size:
        raise DataError(f"{summary}: prepared at {prepared.get('image_size')}px, the run uses {image_size}px")


def run_spec_from_params(
    params: dict,
    scale: str | None,
    experiment: str,
    dataset: str,
    data: Path,
    backbone_dir: Path,
    features: Path | None = None,
) -> RunSpec:
    """The run of ``experiment`` on ``dataset`` with the budget of ``scale`` (default: params')."""
    from diffris.config import scale_params
    from diffris.models import config_from_params

    scale = scale or params["scale"]
    settings = scale_params(params, scale)
    return RunSpec(
        experiment=experiment,
        dataset=dataset,
        scale=scale,
        seed=params["seed"],
        image_size=settings["image_size"],
        model=asdict(config_from_params(params, experiment, scale)),
        train=TrainConfig(**settings["train"]),
        data=Path(data),
        backbone_dir=Path(backbone_dir),
        features=None if features is None else Path(features),
    )


# --- the run ---------------------------------------------------------------------------------


class Trainer:
    """One training run; ``run()`` starts it or resumes it from ``state.pt``."""

    def __init__(self, spec: RunSpec, out: Path):
        from accelerate import Accelerator

        self.spec, self.out, self.tc = spec, Path(out), spec.train
        check_inputs(self.out, [spec.data, spec.backbone_dir, spec.features])
        check_prepared(spec.data, spec.dataset, spec.image_size, "train")
        self.accelerator = Accelerator(mixed_precision=mixed_precision(self.tc.mixed_precision))
        seed_everything(spec.seed)
        self.model = build_run_model(spec.model, spec.backbone_dir)
        self.model.backbone.use_fast_paths(self.tc.channels_last, self.tc.gradient_checkpointing, self.tc.compile)
        self.memory_format = torch.channels_last if self.tc.channels_last else torch.preserve_format
        self.backbone = self.model.backbone_info()
        self.config = spec.to_json(self.backbone)
        self.counters = Counters()
        self.folder = self._choose_folder()
        self.log = RunLog(self.folder / LOG_FILE, self.is_main)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def run(self) -> Path:
        """Train to the end of the budget (or find it done) and return ``model.safetensors``."""
        if (self.folder / MODEL_FILE).exists():
            self._print(f"{self.out / MODEL_FILE}: training already complete")
            return self._swap_in()
        from diffris.features import open_split

        self.train_set = open_split(self.spec.data, "train", self.model, self.spec.features)
        self.layout = BatchLayout.plan(
            self.tc.batch_size, self.tc.micro_batch_size, self.accelerator.num_processes
        )
        self.steps_per_epoch = len(self.train_set) // self.tc.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"train.batch_size {self.tc.batch_size} exceeds the {len(self.train_set)} "
                f"training samples in {self.spec.data}"
            )
        self._setup_optimisation()
        self.assignment = AssignmentMonitor(self.net)
        self._start()
        self._resume()
        self._train_epochs()
        return self._finish()

    def _print(self, message: str) -> None:
        if self.is_main:
            tqdm.write(message)

    def _choose_folder(self) -> Path:
        """Where this run trains: ``out`` when it is new or holds this config (then it resumes),
        else ``<out>.partial``, moved over ``out`` once complete, so that the weights of the
        config ``out`` was made with are kept until the new ones exist."""
        check_run_folder(self.out)
        if not self.out.exists() or not any(self.out.iterdir()) or self._same_config(self.out):
            return self.out
        partial = self.out.with_name(self.out.name + ".partial")
        check_run_folder(partial)
        stale = partial.exists() and not self._same_config(partial)
        self.accelerator.wait_for_everyone()
        if stale and self.is_main:
            shutil.rmtree(partial)  # an unfinished run of yet another config
        self.accelerator.wait_for_everyone()
        stored = read_run_config(self.out) if (self.out / CONFIG_FILE).exists() else {}
        self._print(
            f"{self.out}: made with another config ({_first_difference(stored, self.config) or 'no config.json'}); "
            f"training anew in {partial}, which replaces it when complete"
        )
        return partial

    def _same_config(self, folder: Path) -> bool:
        path = folder / CONFIG_FILE
        return path.exists() and _identity(read_run_config(folder)) == _identity(self.config)

    def _start(self) -> None:
        """Claim the folder and write config.json: only now that the run has started, so a start
        that fails (a batch larger than the data, say) leaves nothing behind."""
        if self.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json(self.folder / MARKER, {"command": "train", "files": RUN_FILES})
            write_json(self.folder / CONFIG_FILE, self.config)
        self.accelerator.wait_for_everyone()

    def _swap_in(self) -> Path:
        """Put a run trained in ``<out>.partial`` in place of ``out``, then write ``trained.json``
        (last: a pipeline that sees it knows the weights are this config's); returns the weights."""
        if self.folder != self.out and self.is_main:
            swap_in(self.folder, self.out)
        self.accelerator.wait_for_everyone()
        self.folder = self.out
        if self.is_main:
            _, info = read_weights_info(self.out / MODEL_FILE)
            write_json(self.out / DONE_FILE, {"config_sha256": _config_sha256(self.config), "weights": info})
        self.accelerator.wait_for_everyone()
        return self.out / MODEL_FILE

    def _setup_optimisation(self) -> None:
        total = self.tc.epochs * self.steps_per_epoch
        optimizer = torch.optim.AdamW(param_groups(self.model, self.tc.weight_decay), lr=self.tc.lr)
        self.scheduler = poly_schedule(optimizer, total, self.tc.poly_power)
        self.model, self.optimizer = self.accelerator.prepare(self.model, optimizer)
        self.net = self.accelerator.unwrap_model(self.model)

    def _resume(self) -> None:
        path = self.folder / STATE_FILE
        if path.exists():
            state = load_state(path, self.backbone)
            load_trainable(self.net, state["weights"], path)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self.counters = Counters(**state["counters"])
            if "assignment" in state:
                self.assignment.load_state_dict(state["assignment"])
            self._print(
                f"resuming from {path}: epoch {self.counters.epoch}, step {self.counters.global_step}"
            )
        self.log.resume_from(self.counters)

    def _save_state(self) -> None:
        if self.is_main:
            state = {
                "backbone": self.backbone,
                "weights": self.net.trainable_state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "counters": asdict(self.counters),
                "assignment": self.assignment.state_dict(),  # this epoch's diagnostics so far
            }
            save_state(self.folder / STATE_FILE, state)
        self.accelerator.wait_for_everyone()

    def _train_epochs(self) -> None:
        total = self.tc.epochs * self.steps_per_epoch
        bar = tqdm(
            total=total,
            initial=self.counters.global_step,
            disable=not self.is_main,
            desc=f"train {self.spec.experiment}/{self.spec.dataset}",
            unit="step",
            dynamic_ncols=True,
        )
        with bar:
            while self.counters.epoch < self.tc.epochs:
                self._train_epoch(bar)
                self._end_epoch()

    def _train_epoch(self, bar: tqdm) -> None:
        self.model.train()
        last = time.perf_counter()
        for micro_batches in self._epoch_batches():
            loss = self._step(micro_batches)
            now = time.perf_counter()
            rate, last = self.tc.batch_size / (now - last), now
            self.counters.step_in_epoch += 1
            self.counters.global_step += 1
            self._log_step(loss, rate)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}")
            every = self.tc.checkpoint_every_steps
            if every and self.counters.global_step % every == 0:
                self._save_state()

    def _epoch_batches(self):
        """Per step, this process's (k, batch dict) micro-batches, from the resume point on."""
        order = epoch_order(len(self.train_set), self.spec.seed, self.counters.epoch)
        size = self.tc.batch_size
        plan = []
        for step in range(self.counters.step_in_epoch, self.steps_per_epoch):
            batch = order[step * size : (step + 1) * size]
            plan.extend(self.layout.micro_batches(batch, self.accelerator.process_index))
        loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_sampler=[indices for _, indices in plan],
            num_workers=self.tc.num_workers,
            pin_memory=torch.cuda.is_available(),
            prefetch_factor=self.tc.prefetch_factor if self.tc.num_workers else None,
        )
        keys = iter([k for k, _ in plan])
        step_items: list[tuple[int, dict]] = []
        for batch in loader:
            step_items.append((next(keys), batch))
            if len(step_items) == self.layout.accum:
                yield step_items
                step_items = []

    def _step(self, micro_batches: list[tuple[int, dict]]) -> float:
        """One optimiser step over one global batch; returns the batch's mean loss."""
        device, accum = self.accelerator.device, self.layout.accum
        total = torch.zeros((), device=device)
        for a, (k, batch) in enumerate(micro_batches):
            torch.manual_seed(derive_seed(self.spec.seed, self.counters.global_step, k))
            sync = contextlib.nullcontext() if a == accum - 1 else self.accelerator.no_sync(self.model)
            with sync:
                logits = self.model(**model_inputs(self.net, batch, device, self.memory_format))
                loss = self.net.loss(logits, batch["mask"].to(device))
                self.accelerator.backward(loss / accum)
            self.assignment.update()
            total += loss.detach().float() / accum
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return self.accelerator.reduce(total, "mean").item()

    def _log_step(self, loss: float, rate: float) -> None:
        self.log.write(
            {
                "kind": "step",
                "step": self.counters.global_step,
                "epoch": self.counters.epoch + 1,
                "loss": loss,
                "lr": self.scheduler.get_last_lr()[0],
                "samples_per_s": round(rate, 2),
                "peak_mem_mb": round(peak_memory_mb(), 1),
            }
        )

    def _end_epoch(self) -> None:
        self.counters.epoch += 1
        self.counters.step_in_epoch = 0
        record = {"kind": "epoch", "epoch": self.counters.epoch, "step": self.counters.global_step}
        record["train_loss"] = self.log.end_epoch()
        if self.assignment.layers:
            record["assignment"] = self.assignment.read()  # PCMRD diagnostics (docs/model.md)
        every = self.tc.val_every_epochs
        if every and (self.counters.epoch % every == 0 or self.counters.epoch == self.tc.epochs):
            record["val"] = self._validate()
        self.log.write(record)
        self._save_state()

    def _validate(self) -> dict:
        """Val metrics (main process); keeps the best weights when selecting on val."""
        from diffris.evaluate import evaluate_model
        from diffris.features import open_split

        metrics = {}
        if self.is_main:
            val_set = open_split(self.spec.data, "val", self.net, self.spec.features)
            result = evaluate_model(
                self.net, val_set, self.tc.eval_batch_size, self.accelerator.device, memory_format=self.memory_format
            )
            metrics = result.rounded_metrics()
            self._keep_if_best(metrics[SELECT_METRIC])
        self.model.train()
        self.accelerator.wait_for_everyone()
        return metrics

    def _keep_if_best(self, score: float) -> None:
        if self.tc.select != "best-val":
            return
        best = self.counters.best_score
        if best is None or score > best:
            self.counters.best_score, self.counters.best_epoch = score, self.counters.epoch
            info = self._weights_info("best-val", self.counters.epoch)
            save_weights(self.folder / BEST_FILE, self.net.trainable_state_dict(), self.backbone, info)

    def _weights_info(self, selected: str, epoch: int) -> dict:
        info = {
            "experiment": self.spec.experiment,
            "dataset": self.spec.dataset,
            "selected": selected,
            "epoch": epoch,
            "global_step": self.counters.global_step,
        }
        if selected == "best-val":
            info[f"val_{SELECT_METRIC}"] = self.counters.best_score
        return info

    def _finish(self) -> Path:
        path = self.folder / MODEL_FILE
        if self.is_main:
            if self.tc.select == "best-val":
                weights, _ = load_weights(self.folder / BEST_FILE, self.backbone)
                info = self._weights_info("best-val", self.counters.best_epoch)
            else:
                weights = self.net.trainable_state_dict()
                info = self._weights_info("last", self.counters.epoch)
            save_weights(path, weights, self.backbone, info)
            tqdm.write(f"{self.out / MODEL_FILE}: {info['selected']} weights of epoch {info['epoch']}")
        self.accelerator.wait_for_everyone()
        return self._swap_in()


def check_run_folder(folder: Path) -> None:
    """Refuse a ``--out`` that train may not resume or replace: not a folder, or one that train
    did not make (no marker), or that holds other files. A run folder from before the marker
    (a config.json and only run files) is accepted."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--out {folder}: exists and is not a folder")
    legacy = (folder / CONFIG_FILE).exists() and not (folder / MARKER).exists()
    if legacy and next(foreign_files(folder, RUN_FILES), None) is None:
        return
    if folder.exists():
        owned_by(folder, "train")


def _config_sha256(config: dict) -> str:
    return hashlib.sha256(json.dumps(_identity(config), sort_keys=True).encode()).hexdigest()


def _identity(config: dict) -> dict:
    """The part of a run config that must not change between a run and its resumption."""
    return {k: v for k, v in config.items() if k not in PATH_KEYS}


def _first_difference(old: dict, new: dict, prefix: str = "") -> str:
    for key in sorted(set(old) | set(new)):
        if key in PATH_KEYS and not prefix:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: {a!r} there, {b!r} now"
    return ""


def load_run_config(run: Path) -> dict:
    path = Path(run) / CONFIG_FILE
    if not path.exists():
        raise CheckpointError(f"{path}: missing; is {run} a training run folder?")
    return read_run_config(run)


def read_run_config(run: Path) -> dict:
    """A run folder's config.json; a torn or foreign one is named, not a traceback."""
    path = Path(run) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"{path}: not valid JSON ({err}); expected the run config `diffris train` writes: "
            "delete the run folder to train it anew"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object (the run config), found {type(config).__name__}")
    return config
