"""One launch command for a laptop, a GPU box and a SLURM job: `diffris launch --gpus N train ...`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import REPO, ci_snakemake

BIN = Path(sys.executable).parent
PROFILE = REPO / "workflow" / "profiles" / "slurm"


class Resources(dict):
    """A job's resources as the SLURM plugin reads them: ``.get(name)`` and ``.name``."""

    def __getattr__(self, name: str):
        return self[name]


def dry_run_jobs(*extra: str) -> list[dict]:
    """Jobs of `snakemake -n -p --forceall` as {rule, resources, cmd}."""
    proc = subprocess.run(
        [str(BIN / "snakemake"), "-n", "-p", "--forceall", *extra], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs, job = [], None
    for line in proc.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line):
            job = {"rule": m.group(1), "resources": Resources(), "cmd": None}
            jobs.append(job)
        elif job and (m := re.match(r"^\s+resources: (.*)$", line)):
            pairs = (item.split("=", 1) for item in m.group(1).split(", "))
            job["resources"] = Resources({k: int(v) if v.isdigit() else v for k, v in pairs})
        elif job and line.startswith("Shell command: "):
            job["cmd"] = line[len("Shell command: ") :]
    return jobs


def sbatch_args(job: dict) -> str:
    """The sbatch arguments snakemake-executor-plugin-slurm builds for a job (its own functions)."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    plugin_job = SimpleNamespace(resources=job["resources"], threads=1)
    params = {"run_uuid": "u", "slurm_logfile": "log", "comment_str": "c", "account": "", "partition": "", "workdir": "w"}
    return get_submit_command(plugin_job, params) + set_gres_string(plugin_job)


def first(jobs: list[dict], rule: str) -> dict:
    return next(j for j in jobs if j["rule"] == rule)


def test_slurm_profile_asks_gpus_cpus_memory_and_time_for_a_paper_training_job():
    jobs = dry_run_jobs("--workflow-profile", str(PROFILE), "--config", "scale=paper")
    train = first(jobs, "train")
    args = sbatch_args(train)
    assert "--gpus=1" in args and "--cpus-per-gpu=8" in args, args
    assert "--mem 64000" in args and "-t 1440" in args, args
    assert "--ntasks-per-gpu" not in args and "--gres" not in args, args
    assert train["cmd"].startswith("python -m diffris launch --gpus 1 train ")
    evaluate = sbatch_args(first(jobs, "evaluate"))
    assert "--gpus=1" in evaluate and "--mem 32000" in evaluate and "-t 240" in evaluate, evaluate
    prepare = sbatch_args(first(jobs, "prepare"))
    assert "--gpus" not in prepare and "--cpus-per-task=1" in prepare and "--mem 32000" in prepare, prepare


def test_a_copied_profile_can_ask_more_gpus_of_a_model_and_the_launch_follows(tmp_path):
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    profile["set-resources"]["train"].update(gpu=4, gpu_model="a100")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(profile))
    train = first(dry_run_jobs("--workflow-profile", str(tmp_path), "--config", "scale=paper"), "train")
    assert "--gpus=a100:4" in sbatch_args(train) and "--cpus-per-gpu=8" in sbatch_args(train)
    assert train["cmd"].startswith("python -m diffris launch --gpus 4 train ")


def test_locally_training_asks_no_gpu_at_ci_and_one_at_paper_within_the_global_limit():
    assert "gpu=1" in yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["resources"]
    ci = first(dry_run_jobs("--cores", "2", "--config", "scale=ci"), "train")
    assert ci["resources"]["gpu"] == 0 and ci["cmd"].startswith("python -m diffris launch --gpus 0 train ")
    paper = first(dry_run_jobs("--cores", "2", "--config", "scale=paper"), "train")
    assert paper["resources"]["gpu"] == 1


def test_two_processes_on_cpu_through_the_training_rule(ci_local_run, tmp_path):
    work = tmp_path / "workflow"
    shutil.copytree(ci_local_run, work, symlinks=True)
    target = "runs/ci/full/refsegrs/seed0/model.safetensors"
    shutil.rmtree(work / "runs/ci/full/refsegrs/seed0")
    env = dict(os.environ, DIFFRIS_CPU_PROCESSES="2")
    proc = ci_snakemake(work, "--cores", "2", target, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = (work / "logs/ci/train/full/refsegrs/seed0.log").read_text()  # the rule sends the job's output there
    assert re.search(r"diffris launch: .*--num_processes 2 .*--cpu -m diffris train", log), log[-3000:]
    one, two = (state_weights(root / "runs/ci/full/refsegrs/seed0") for root in (ci_local_run, work))
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)


def state_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "state.pt", map_location="cpu", weights_only=True)["weights"]


def test_gpu_slots_are_never_shared_and_a_busy_pool_waits(tmp_path):
    from diffris.training.launch import gpu_slots

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_TWO_SLOTS, str(tmp_path)], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True
    )
    try:
        held = holder.stdout.readline().split()
        assert len(held) == 2
        with gpu_slots(1, ["0", "1", "2"], tmp_path) as mine:
            assert mine not in ([g] for g in held) and mine[0] in ("0", "1", "2")
            waiting = subprocess.Popen(
                [sys.executable, "-c", TAKE_ONE_SLOT, str(tmp_path)], stdout=subprocess.PIPE, text=True
            )
            with pytest.raises(subprocess.TimeoutExpired):
                waiting.wait(timeout=1.5)  # all three GPUs are held
        assert waiting.stdout.readline().split() == mine  # freed by this block, taken by the waiter
        waiting.wait(timeout=10)
    finally:
        holder.kill()


HOLD_TWO_SLOTS = """
import sys
from pathlib import Path
from diffris.training.launch import gpu_slots
with gpu_slots(2, ["0", "1", "2"], Path(sys.argv[1])) as gpus:
    print(*gpus, flush=True)
    sys.stdin.read()
"""
TAKE_ONE_SLOT = """
import sys
from pathlib import Path
from diffris.training.launch import gpu_slots
with gpu_slots(1, ["0", "1", "2"], Path(sys.argv[1]), poll_s=0.1) as gpus:
    print(*gpus, flush=True)
"""


def test_asking_more_gpus_than_the_machine_offers_is_an_error(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1", DIFFRIS_GPU_LOCK_DIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "diffris", "launch", "--gpus", "3", "train", "--help"],
        cwd=REPO, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "3 GPUs asked for, but this machine offers 2 (CUDA devices: 0,1)" in proc.stderr
