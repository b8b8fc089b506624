"""The CPU kernel pin (diffris.determinism, docs/reproducibility.md): it takes effect in every
`python -m diffris` process, a user's own variable wins, `native` turns it off, the environment
record holds no host name or time, and the pinned bytes match an emulated CPU without AVX-512."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffris import determinism as det

REPO = Path(__file__).resolve().parent.parent
PIN_VARS = sorted(set().union(*(p.keys() for p in det.PINS.values())))
PROBE = REPO / "scripts" / "isa_probe.py"

x86_avx2 = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64") or not {"avx2", "fma"} <= (det.cpu_flags() or set()),
    reason="the avx2 pin applies to x86-64 CPUs with AVX2 and FMA only",
)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any pin variable (conftest pins the test process itself)."""
    env = {k: v for k, v in os.environ.items() if k not in PIN_VARS and k not in (det.ISA_ENV, det.APPLIED_ENV)}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def diffris_environment(env: dict[str, str], *args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "diffris", *args, "environment"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout[proc.stdout.index("{") :])


def machine_capability() -> str:
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=clean_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return proc.stdout.strip()


def test_pin_sets_what_is_unset_and_keeps_what_is_set():
    env = {"MKL_CBWR": "AVX2"}
    applied = det.pin_cpu(env)
    if platform.machine().lower() not in ("x86_64", "amd64") or not {"avx2", "fma"} <= (det.cpu_flags() or set()):
        assert applied == {}
        return
    assert env["MKL_CBWR"] == "AVX2" and "MKL_CBWR" not in applied
    assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == env["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert env[det.APPLIED_ENV] == "avx2"
    assert det.pin_cpu(env) == {}  # idempotent: a child process finds everything set


def test_native_sets_nothing_and_a_bad_level_is_refused():
    env = {det.ISA_ENV: "native"}
    assert det.pin_cpu(env) == {} and env == {det.ISA_ENV: "native", det.APPLIED_ENV: "native"}
    with pytest.raises(det.PinError, match="avx2"):
        det.pin_cpu({det.ISA_ENV: "avx3"})
    proc = subprocess.run(
        [sys.executable, "-m", "diffris", "environment"], cwd=REPO, env=clean_env(DIFFRIS_CPU_ISA="avx3"),
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2 and "DIFFRIS_CPU_ISA='avx3'" in proc.stderr


@x86_avx2
def test_the_test_process_is_pinned_too():
    """conftest pins before any test imports torch, so in-process results match the CLI's."""
    import numpy as np
    import torch

    assert torch.backends.cpu.get_cpu_capability() == "AVX2"
    assert not np._core._multiarray_umath.__cpu_features__.get("X86_V4")  # numpy >= 2.4's AVX-512 target is off


@x86_avx2
def test_pin_takes_effect_in_a_diffris_process():
    record = diffris_environment(clean_env())
    assert record["torch"]["capability"] == "AVX2"
    assert record["cpu_isa"]["pinned"] == "avx2"
    assert record["cpu_isa"]["variables"]["MKL_CBWR"] == "COMPATIBLE"


@x86_avx2
def test_an_explicit_variable_wins_and_native_turns_the_pin_off():
    record = diffris_environment(clean_env(ATEN_CPU_CAPABILITY="default"))
    assert record["torch"]["capability"] == "DEFAULT"
    assert record["cpu_isa"]["variables"]["ONEDNN_MAX_CPU_ISA"] == "AVX2"  # the others stay pinned
    native = diffris_environment(clean_env(DIFFRIS_CPU_ISA="native"))
    assert native["torch"]["capability"] == machine_capability()
    assert all(v is None for v in native["cpu_isa"]["variables"].values())
    assert native["cpu_isa"]["pinned"] == "native"


@x86_avx2
def test_launch_passes_the_pin_to_its_processes():
    """`diffris launch` starts its processes (directly, or through accelerate) with the pinned environment."""
    for extra in ({}, {"DIFFRIS_CPU_PROCESSES": "2"}):
        proc = subprocess.run(
            [sys.executable, "-m", "diffris", "launch", "--gpus", "0", "environment"],
            cwd=REPO, env=clean_env(**extra), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        records = [json.loads(m) for m in re.findall(r"^\{.*?^\}", proc.stdout, flags=re.M | re.S)]
        assert records  # accelerate 1.15 starts one process for `--cpu --num_processes 2` (no WORLD_SIZE)
        assert all(r["torch"]["capability"] == "AVX2" and r["cpu_isa"]["pinned"] == "avx2" for r in records)


def test_environment_record_names_no_host_time_or_cpu_model():
    record = det.environment_record(cpu_threads=1)
    text = json.dumps(record, sort_keys=True)
    assert json.dumps(det.environment_record(cpu_threads=1), sort_keys=True) == text  # nothing varies per call
    assert socket.gethostname() not in text and platform.node() not in text
    today = time.gmtime()
    for stamp in (time.strftime("%Y-%m-%d", today), time.strftime("%Y%m%d", today), time.strftime("%H:%M", today)):
        assert stamp not in text
    cpuinfo = Path("/proc/cpuinfo")
    models = set(re.findall(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)) if cpuinfo.exists() else set()
    assert not any(m.strip() in text for m in models)
    assert record["threads"] == {"train.cpu_threads": 1}
    assert record["packages"]["torch"] and record["torch"]["capability"]


QEMU = shutil.which("qemu-x86_64")


@x86_avx2
@pytest.mark.skipif(QEMU is None, reason="qemu-user is not installed (apt-get install qemu-user)")
@pytest.mark.parametrize("cpu", ["Haswell", "EPYC-Rome"])
def test_pinned_bytes_match_an_emulated_cpu_without_avx512(cpu):
    """The probe's numpy maths, torch generator and conv/linear/GroupNorm/softmax forward and backward
    give the same sha256 here (pinned, whatever this CPU has) and on an emulated Intel Haswell and
    AMD EPYC-Rome (qemu-user: AVX2, no AVX-512; MKL sees an AMD CPU on the second). About 25 s
    each, most of it importing torch under emulation."""
    args = [str(PROBE), "--only", "numpy", "--only", "randn", "--only", "ops"]
    env = clean_env()
    native = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True)
    emulated = subprocess.run(
        [QEMU, "-cpu", cpu, sys.executable, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    here, there = json.loads(native.stdout), json.loads(emulated.stdout)
    assert there["cpu_avx512f"] is False and there["capability"] == here["capability"] == "AVX2"
    assert {k: here[k] for k in ("numpy", "randn", "ops")} == {k: there[k] for k in ("numpy", "randn", "ops")}
