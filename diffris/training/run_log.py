"""The bookkeeping of a training run: its counters, ``log.jsonl`` and the peak memory it logs."""

from __future__ import annotations

import json
import resource
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from diffris.errors import DataError


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


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_log(path: Path) -> list[dict]:
    """The records of a complete ``log.jsonl``; a missing file or a broken line is a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: no training log (is the run trained? `diffris train` writes it)")
    records = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not a JSON record ({err.msg})") from None
        if not isinstance(record, dict) or record.get("kind") not in ("step", "epoch"):
            raise DataError(f"{path}:{lineno}: expected a record with kind 'step' or 'epoch'")
        records.append(record)
    return records
