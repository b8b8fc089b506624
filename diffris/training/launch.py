"""`diffris launch`: run a pipeline command under `accelerate launch`, one process per GPU of the job.

    diffris launch --gpus N train --experiment ... --out ...

The training rule and DVC stage run this one command on a laptop, a GPU machine and in a SLURM
job; N is the job's `gpu` resource (params.yaml `train_gpus`, or a profile's `set-resources`).

- N = 0: one CPU process, started directly (it is what ``accelerate launch --cpu --num_processes 1``
  would start, less the launcher's ~2 s start-up); ``DIFFRIS_CPU_PROCESSES`` asks for more CPU
  processes through ``accelerate launch --cpu`` (tests, CPU-only clusters).
- N >= 1: N processes, one per GPU. Inside a SLURM job, SLURM has already narrowed
  ``CUDA_VISIBLE_DEVICES`` to the job's GPUs. Elsewhere launch takes N free GPUs of the machine
  (those of ``CUDA_VISIBLE_DEVICES``, or all) by locking one file per GPU, and sets
  ``CUDA_VISIBLE_DEVICES`` to them: jobs that Snakemake runs side by side within its global `gpu`
  limit never share a GPU. The locks are ``flock``s, so a killed job frees its GPUs.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from diffris.errors import DiffrisError

CPU_PROCESSES_ENV = "DIFFRIS_CPU_PROCESSES"
LOCK_DIR_ENV = "DIFFRIS_GPU_LOCK_DIR"


class LaunchError(DiffrisError):
    pass


def register(sub: argparse._SubParsersAction) -> None:
    launch = sub.add_parser(
        "launch",
        help="run a diffris command under accelerate launch, one process per GPU of the job",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    launch.add_argument("--gpus", required=True, type=int, help="GPUs of the job (0: CPU)")
    launch.add_argument("command", nargs=argparse.REMAINDER, help="the diffris command and its arguments")
    launch.set_defaults(handler=run_launch)


def run_launch(args: argparse.Namespace) -> int:
    if args.gpus < 0:
        raise LaunchError(f"--gpus {args.gpus}: expected 0 (CPU) or a number of GPUs")
    if not args.command:
        raise LaunchError("no command given, e.g. `diffris launch --gpus 1 train ...`")
    if args.gpus == 0 and cpu_processes() == 1:  # what accelerate would start, without its ~2 s start-up
        return run([sys.executable, "-m", "diffris", *args.command], dict(os.environ))
    if args.gpus == 0:
        return run(accelerate_command(cpu_processes(), True, args.command), dict(os.environ))
    if "SLURM_JOB_ID" in os.environ:  # SLURM gave the job its GPUs as CUDA_VISIBLE_DEVICES
        return run(accelerate_command(args.gpus, False, args.command), dict(os.environ))
    with gpu_slots(args.gpus, gpu_pool(), lock_dir()) as gpus:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus))
        return run(accelerate_command(args.gpus, False, args.command), env)


def cpu_processes() -> int:
    value = os.environ.get(CPU_PROCESSES_ENV, "1")
    if not value.isdigit() or int(value) < 1:
        raise LaunchError(f"{CPU_PROCESSES_ENV}={value!r}: expected a number of processes >= 1")
    return int(value)


def accelerate_command(processes: int, cpu: bool, command: list[str]) -> list[str]:
    """``accelerate launch`` with every launcher setting given, so that it guesses nothing."""
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip
    if cpu:
        launch.append("--cpu")
    elif processes > 1:
        launch.append("--multi_gpu")
    return [*launch, "-m", "diffris", *command]


def run(command: list[str], env: dict[str, str]) -> int:
    """Run the launch in the foreground; a SIGTERM to this process reaches it too."""
    gpus = f"CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} " if "CUDA_VISIBLE_DEVICES" in env else ""
    print(f"diffris launch: {gpus}{' '.join(command[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.Popen(command, env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    return proc.wait()


def gpu_pool() -> list[str]:
    """The GPUs this machine lets us use: ``CUDA_VISIBLE_DEVICES`` if set, else every CUDA device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"diffris-gpu-locks-{os.getuid()}"
    return Path(os.environ.get(LOCK_DIR_ENV, default))


@contextmanager
def gpu_slots(count: int, pool: list[str], locks: Path, poll_s: float = 1.0) -> Iterator[list[str]]:
    """Hold ``count`` GPUs of ``pool`` (one lock file each) until the block ends; waits while busy."""
    if count > len(pool):
        have = ",".join(pool) or "none"
        raise LaunchError(f"{count} GPUs asked for, but this machine offers {len(pool)} (CUDA devices: {have})")
    locks.mkdir(parents=True, exist_ok=True)
    waiting = False
    while (held := _try_lock(count, pool, locks)) is None:
        if not waiting:
            print(f"diffris launch: waiting for {count} free GPU(s) of {','.join(pool)} ({locks})", file=sys.stderr)
            waiting = True
        time.sleep(poll_s)
    try:
        yield [gpu for gpu, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)


def _try_lock(count: int, pool: list[str], locks: Path) -> list[tuple[str, int]] | None:
    held: list[tuple[str, int]] = []
    for gpu in pool:
        fd = os.open(locks / f"gpu-{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((gpu, fd))
        if len(held) == count:
            return held
    for _, fd in held:
        os.close(fd)
    return None
