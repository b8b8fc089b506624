"""`diffris report-curves`: each run's log.jsonl as per-step and per-epoch CSV, for `dvc plots`."""

from __future__ import annotations

import json
from pathlib import Path

from diffris.cli import main
from diffris.report.curves import curves

STEPS = [
    {"kind": "step", "step": 1, "epoch": 1, "loss": 0.91234567, "lr": 0.002, "samples_per_s": 3.1, "peak_mem_mb": 812.4},
    {"kind": "step", "step": 2, "epoch": 1, "loss": 0.8, "lr": 0.001, "samples_per_s": 2.9, "peak_mem_mb": 815.0},
]
EPOCHS = [
    {"kind": "epoch", "epoch": 1, "step": 2, "train_loss": 0.85617, "val": {"oIoU": 12.5, "mIoU": 10.25, "Pr@0.5": 0.0}},
    {"kind": "epoch", "epoch": 2, "step": 4, "train_loss": 0.7},  # no validation this epoch
]


def write_log(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_curves_keep_the_deterministic_fields_only(tmp_path):
    steps, epochs = curves(write_log(tmp_path / "log.jsonl", [STEPS[0], STEPS[1], EPOCHS[0], EPOCHS[1]]))
    assert steps == "step,epoch,loss,lr\n1,1,0.912346,0.002\n2,1,0.8,0.001\n"
    assert epochs == "epoch,step,train_loss,val_oIoU,val_mIoU\n1,2,0.85617,12.5,10.25\n2,4,0.7,,\n"


def test_the_command_writes_every_run_and_seed_of_the_scale(tmp_path):
    from diffris.pipeline import jobs
    from diffris.config import load_params

    params = load_params()
    for run in jobs.runs(params):
        write_log(tmp_path / "runs" / run.experiment / run.dataset / "seed0" / "log.jsonl", [*STEPS, EPOCHS[0]])
    out = tmp_path / "curves"
    assert main(["report-curves", "--runs", str(tmp_path / "runs"), "--scale", "ci", "--out", str(out)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in out.rglob("*.csv"))
    assert written == sorted(f.replace("results/ci/", "") for f in jobs.curve_files(params, "ci"))


def test_a_missing_or_broken_log_is_one_line_naming_it(tmp_path, capsys):
    args = ["report-curves", "--runs", str(tmp_path / "runs"), "--scale", "ci", "--out", str(tmp_path / "curves")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "log.jsonl: no training log" in err
    from diffris.pipeline import jobs
    from diffris.config import load_params

    run = jobs.runs(load_params())[0]
    log = write_log(tmp_path / "runs" / run.experiment / run.dataset / "seed0" / "log.jsonl", STEPS)
    log.write_text(log.read_text() + "{not json\n")
    assert main(args) == 2
    assert f"{log}:3: not a JSON record" in capsys.readouterr().err
