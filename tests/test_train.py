"""Training on the real tiny DiffRIS model and real prepared synthetic data, through the CLI.

The session fixtures write, once: a params.yaml with a tiny budget, a prepared synthetic RefSegRS
(24 train / 8 val / 8 test samples at 64 px) and the tiny-sd-1-5 backbone. Training runs are
cached per session too, so each test reads the run it needs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from diffris.training.checkpoint import CheckpointError, load_weights, read_weights_info
from diffris.training.batches import BatchLayout, derive_seed, epoch_order
from diffris.training.run_folder import mixed_precision
from diffris.training.run_log import read_log as read_run_log
from conftest import REPO, run_cli

DATASET, BACKBONE, EXPERIMENT = "refsegrs", "tiny-sd-1-5", "full"
TRAIN_BUDGET = {
    "epochs": 3,
    "batch_size": 4,
    "micro_batch_size": 2,  # one process accumulates 2 micro-batches; two processes take one each
    "lr": 3.0e-3,
    "weight_decay": 0.01,
    "poly_power": 0.9,
    "checkpoint_every_steps": 4,  # 6 steps per epoch: a mid-epoch checkpoint at 4, 8, 16
    "val_every_epochs": 1,
    "select": "best-val",
    "eval_batch_size": 8,
    "num_workers": 0,
    "mixed_precision": "auto",
    "cpu_threads": 1,
}
TIMING_KEYS = ("samples_per_s", "peak_mem_mb")
# One thread per process: on a busy 2-core machine a 2-thread team spends its time waiting.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


class Assets:
    """Paths shared by the training and evaluation tests."""

    def __init__(self, root: Path):
        self.root = root
        self.params = root / "params.yaml"
        self.data = root / "prepared" / DATASET
        self.backbone = root / "backbones" / BACKBONE

    def train_args(self, out: Path, backbone: Path | None = None) -> list[str]:
        return [
            "train", "--experiment", EXPERIMENT, "--dataset", DATASET, "--data", self.data,
            "--backbone-dir", backbone or self.backbone, "--out", out, "--params", self.params,
        ]  # fmt: skip

    def run(self, name: str) -> Path:
        """A finished run, trained once per session with the default command."""
        out = self.root / "runs" / name
        if not (out / "model.safetensors").exists():
            run_cli(*self.train_args(out), env=ENV)
        return out


def shared_assets(tmp_path_factory) -> Assets:
    """Written once per session, whichever test module asks first."""
    assets = Assets(tmp_path_factory.getbasetemp() / "train_assets")
    if not (assets.root / "ready").exists():
        write_assets(assets)
        (assets.root / "ready").touch()
    return assets


def write_assets(assets: Assets) -> None:
    assets.root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scales"]["mini"]["synthetic"]["splits"] = {"train": 24, "val": 8, "test": 8}
    params["scales"]["mini"]["train"] = TRAIN_BUDGET
    params["backbones"][BACKBONE] = params["backbones"]["tiny-random"]  # random weights: no pretraining here
    assets.params.write_text(yaml.safe_dump(params, sort_keys=False))
    raw = assets.root / "raw" / DATASET
    run_cli("fetch", "--dataset", DATASET, "--source", "synthetic", "--out", raw, "--params", assets.params)
    run_cli("prepare", "--dataset", DATASET, "--raw", raw, "--out", assets.data, "--image-size", "64")
    run_cli("fetch-weights", "--backbone", BACKBONE, "--out", assets.backbone, "--params", assets.params)


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    return shared_assets(tmp_path_factory)


def read_log(run: Path) -> list[dict]:
    return read_run_log(run / "log.jsonl")


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def state_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "state.pt", map_location="cpu", weights_only=True)["weights"]


# --- fast unit checks ------------------------------------------------------------------------


def test_global_batch_is_split_over_processes_then_accumulation():
    one = BatchLayout.plan(global_batch=8, micro_batch_size=4, world=1)
    two = BatchLayout.plan(global_batch=8, micro_batch_size=4, world=2)
    assert (one.micro, one.accum, two.micro, two.accum) == (4, 2, 4, 1)
    batch = list(range(100, 108))
    assert one.micro_batches(batch, rank=0) == [(0, [100, 101, 102, 103]), (1, [104, 105, 106, 107])]
    assert two.micro_batches(batch, rank=1) == [(1, [104, 105, 106, 107])]


@pytest.mark.parametrize("global_batch, micro, world", [(8, 4, 3), (6, 4, 1)])
def test_batch_layout_rejects_uneven_splits(global_batch, micro, world):
    from diffris.errors import ConfigError

    with pytest.raises(ConfigError, match="batch_size"):
        BatchLayout.plan(global_batch, micro, world)


def test_data_order_and_seeds_depend_only_on_their_keys():
    assert epoch_order(50, seed=0, epoch=1) == epoch_order(50, seed=0, epoch=1)
    assert epoch_order(50, seed=0, epoch=1) != epoch_order(50, seed=0, epoch=2)
    assert sorted(epoch_order(50, seed=0, epoch=1)) == list(range(50))
    assert derive_seed(0, 5, 1) == derive_seed(0, 5, 1) != derive_seed(0, 5, 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU default")
def test_cpu_trains_in_fp32():
    assert mixed_precision("auto") == "no"
    assert mixed_precision("fp32") == "no"


# --- real training runs ------------------------------------------------------------------------


def test_tiny_run_learns_and_writes_its_records(assets):
    run = assets.run("reference")
    steps = [r for r in read_log(run) if r["kind"] == "step"]
    epochs = [r for r in read_log(run) if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == list(range(1, 19))  # 3 epochs x 24 samples / batch 4
    assert set(steps[0]) == {"kind", "step", "epoch", "loss", "lr", *TIMING_KEYS}
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert steps[-1]["lr"] < steps[0]["lr"]  # poly decay

    config = json.loads((run / "config.json").read_text())
    assert {k: config["train"][k] for k in TRAIN_BUDGET} == TRAIN_BUDGET and config["experiment"] == EXPERIMENT
    backbone, info = read_weights_info(run / "model.safetensors")
    assert backbone == config["backbone"] and backbone["name"] == BACKBONE
    best = max(epochs, key=lambda r: r["val"]["oIoU"])
    assert (info["selected"], info["epoch"]) == ("best-val", best["epoch"])


def test_checkpoint_holds_trainable_parameters_only(assets):
    weights = load_file(assets.run("reference") / "model.safetensors")
    assert weights and not any(name.startswith("backbone.") for name in weights)


def test_killed_run_resumes_to_the_same_weights(assets):
    reference = assets.run("reference")
    out = assets.root / "runs" / "killed"
    cmd = [sys.executable, "-m", "diffris", *map(str, assets.train_args(out))]
    proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(proc, out / "log.jsonl", step=9)  # past the mid-epoch checkpoint at step 8
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "model.safetensors").exists()

    resumed = run_cli(*assets.train_args(out), env=ENV)
    assert "resuming from" in resumed.stdout
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    resumed_weights = state_weights(out)
    for name, tensor in state_weights(reference).items():
        assert torch.equal(resumed_weights[name], tensor), name
    assert without_timings(read_log(out)) == without_timings(read_log(reference))


def wait_for_step(proc: subprocess.Popen, log: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended (exit {proc.returncode}) before step {step}")
        if log.exists() and any(f'"step": {step}' in line for line in log.read_text().splitlines()):
            return
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no step {step} in {log} after {timeout} s")


def test_finished_run_is_not_trained_again(assets):
    run = assets.run("reference")
    before = (run / "model.safetensors").stat().st_mtime_ns
    again = run_cli(*assets.train_args(run), env=ENV)
    assert "already complete" in again.stdout
    assert (run / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.e2e
def test_two_processes_match_one_with_the_same_global_batch(assets):
    reference = assets.run("reference")
    out = assets.root / "runs" / "two-processes"
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffris",
    ]  # fmt: skip
    cmd = [*launch, *map(str, assets.train_args(out))]
    proc = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = state_weights(reference), state_weights(out)
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    losses = [r["loss"] for r in read_log(reference) if r["kind"] == "step"]
    assert [r["loss"] for r in read_log(out) if r["kind"] == "step"] == pytest.approx(losses, rel=1e-4)


def test_checkpoints_refuse_another_backbone(assets, tmp_path):
    run = assets.run("reference")
    other = {"name": BACKBONE, "revision": "tiny", "weights_sha256": "0" * 64}
    with pytest.raises(CheckpointError, match="refusing to load it onto another backbone"):
        load_weights(run / "model.safetensors", other)

    altered = altered_backbone(assets.backbone, tmp_path / BACKBONE)
    evaluation = run_cli(
        "evaluate", "--run", run, "--split", "test", "--out", tmp_path / "test.json",
        "--backbone-dir", altered, check=False, env=ENV,
    )  # fmt: skip
    assert evaluation.returncode == 2
    assert "refusing to load it onto another backbone" in evaluation.stderr
    # train, given another backbone, trains anew instead of resuming: tests/test_bad_input_train.py


def altered_backbone(source: Path, target: Path) -> Path:
    """A copy of the backbone with the same name and one UNet weight changed."""
    shutil.copytree(source, target)
    weights_file = next((target / "unet").glob("*.safetensors"))
    weights = load_file(weights_file)
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1.0
    save_file(weights, weights_file)
    return target


def test_train_refuses_data_of_another_dataset(assets, tmp_path):
    args = assets.train_args(tmp_path / "run")
    args[args.index("--dataset") + 1] = "rrsisd"
    result = run_cli(*args, check=False, env=ENV)
    assert result.returncode == 2
    assert "summary.json: holds 'refsegrs', not 'rrsisd'" in result.stderr
