"""Training curves as CSV, for `dvc plots` (which cannot read JSON lines) and for reviewers.

From a run's ``log.jsonl`` (``diffris train``) two files per run and seed::

    <out>/<experiment>/<dataset>/seed<k>-steps.csv    step, epoch, loss, lr            (one row per optimiser step)
    <out>/<experiment>/<dataset>/seed<k>.csv          epoch, step, train_loss, val_oIoU, val_mIoU
                                                      (one row per epoch; val_* empty where it did not validate)

Only deterministic fields are kept (no samples/s, no peak memory), in a fixed float format, so
on a CPU the files have the same bytes on every machine, like the rest of ``results/<scale>/``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from diffris.config import runs, seeds
from diffris.errors import DataError
from diffris.fileio import atomic_write
from diffris.training.run_log import read_log

STEP_COLUMNS = ("step", "epoch", "loss", "lr")
EPOCH_COLUMNS = ("epoch", "step", "train_loss", "val_oIoU", "val_mIoU")
VAL_METRICS = ("oIoU", "mIoU")


def _number(value: float | None, path: Path, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (int, float)):
        raise DataError(f"{path}: field {field!r} is {value!r}, expected a number")
    return f"{value:.6g}"


def _csv(columns: tuple[str, ...], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def curves(path: Path) -> tuple[str, str]:
    """(per-step CSV, per-epoch CSV) of one ``log.jsonl``."""
    records = read_log(path)
    try:
        steps = [
            [r["step"], r["epoch"], _number(r["loss"], path, "loss"), _number(r["lr"], path, "lr")]
            for r in records
            if r["kind"] == "step"
        ]
        epochs = [
            [r["epoch"], r["step"], _number(r["train_loss"], path, "train_loss")]
            + [_number(r.get("val", {}).get(key), path, f"val.{key}") for key in VAL_METRICS]
            for r in records
            if r["kind"] == "epoch"
        ]
    except KeyError as err:
        raise DataError(f"{path}: a record lacks the field {err.args[0]!r}") from None
    return _csv(STEP_COLUMNS, steps), _csv(EPOCH_COLUMNS, epochs)


def curve_paths(folder: str, experiment: str, dataset: str, seed: int) -> tuple[str, str]:
    """(per-step CSV, per-epoch CSV) of one run and seed under ``folder`` (``report-curves``)."""
    base = f"{folder}/{experiment}/{dataset}/seed{seed}"
    return f"{base}-steps.csv", f"{base}.csv"


def write_curves(params: dict, scale: str, runs_dir: Path, out: Path) -> list[Path]:
    """The curves of every run and seed of ``scale`` (params.yaml); returns the files written."""
    written = []
    for run in runs(params):
        for seed in seeds(params, scale, run.experiment):
            log = runs_dir / run.experiment / run.dataset / f"seed{seed}" / "log.jsonl"
            texts = curves(log)
            for name, text in zip(curve_paths(str(out), run.experiment, run.dataset, seed), texts):
                path = Path(name)
                atomic_write(path, lambda tmp, text=text: tmp.write_text(text))
                written.append(path)
    return written
