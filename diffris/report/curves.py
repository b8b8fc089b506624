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
import json
from pathlib import Path

from diffris.errors import DataError
from diffris.fileio import atomic_write

STEP_COLUMNS = ("step", "epoch", "loss", "lr")
EPOCH_COLUMNS = ("epoch", "step", "train_loss", "val_oIoU", "val_mIoU")
VAL_METRICS = ("oIoU", "mIoU")


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


def write_curves(params: dict, scale: str, runs_dir: Path, out: Path) -> list[Path]:
    """The curves of every run and seed of ``scale`` (params.yaml); returns the files written."""
    from diffris import pipeline

    written = []
    for run in pipeline.runs(params):
        for seed in pipeline.seeds(params, scale, run.experiment):
            log = runs_dir / run.experiment / run.dataset / f"seed{seed}" / "log.jsonl"
            texts = curves(log)
            for name, text in zip(pipeline.run_curves(str(out), run.experiment, run.dataset, seed), texts):
                path = Path(name)
                atomic_write(path, lambda tmp, text=text: tmp.write_text(text))
                written.append(path)
    return written
