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
  backbone and refuse to load onto another (see ``diffris.training.checkpoint``).

The run folder it writes (``config.json``, ``state.pt``, ``log.jsonl``, ``model.safetensors``,
``trained.json`` ...) is described in ``diffris.training.run_folder``. Started with another config than
``config.json``'s, a run trains in ``<out>.partial`` and is swapped in when complete, so ``out``
keeps its weights until the new ones exist.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from diffris.training.batches import BatchLayout, derive_seed, epoch_order
from diffris.training.checkpoint import (
    load_state,
    load_trainable,
    load_weights,
    read_weights_info,
    rng_state,
    save_state,
    save_weights,
    set_rng_state,
)
from diffris.errors import ConfigError
from diffris.training.validation import evaluate_model
from diffris.features.datasets import model_inputs, open_split
from diffris.fileio import MARKER, check_inputs, swap_in, write_json
from diffris.models.pcmrd import AssignmentMonitor
from diffris.training.run_folder import (
    BEST_FILE,
    CONFIG_FILE,
    DONE_FILE,
    LOG_FILE,
    MODEL_FILE,
    RUN_FILES,
    STATE_FILE,
    build_run_model,
    check_prepared,
    check_run_folder,
    config_identity,
    config_sha256,
    first_difference,
    mixed_precision,
    read_run_config,
)
from diffris.training.run_log import Counters, RunLog, peak_memory_mb
from diffris.training.run_spec import RunSpec

SELECT_METRIC = "oIoU"  # what "best on val" maximises (LAVT/RMSIN keep the best val oIoU)


# --- seeds, optimiser, schedule -----------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; make cuDNN/cuBLAS deterministic."""
    from accelerate.utils import set_seed

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    set_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


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
            f"{self.out}: made with another config ({first_difference(stored, self.config) or 'no config.json'}); "
            f"training anew in {partial}, which replaces it when complete"
        )
        return partial

    def _same_config(self, folder: Path) -> bool:
        path = folder / CONFIG_FILE
        return path.exists() and config_identity(read_run_config(folder)) == config_identity(self.config)

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
            write_json(self.out / DONE_FILE, {"config_sha256": config_sha256(self.config), "weights": info})
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

