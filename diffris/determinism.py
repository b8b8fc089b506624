"""The CPU kernels every diffris command computes with, and what its results depend on.

On a CPU, PyTorch, oneDNN, MKL and numpy each pick their kernels for the instruction set of the
machine (AVX2, AVX-512, AMX). Different kernels sum in different orders, so the same command gives
different bytes on different x86 CPUs. ``pin_cpu`` caps every one of them at the same level
before torch or numpy is imported, so that a result is the same bytes on any x86-64 CPU with that
level, Intel or AMD (docs/reproducibility.md):

========================  ====================  ============================================
variable                  avx2 (the default)    read by
========================  ====================  ============================================
ATEN_CPU_CAPABILITY       ``avx2``              PyTorch's vectorised ATen kernels
ONEDNN_MAX_CPU_ISA        ``AVX2``              oneDNN (convolutions); ``DNNL_MAX_CPU_ISA``,
                                                its older name, is set too
MKL_CBWR                  ``COMPATIBLE``        MKL (matmul, im2col convolutions): its one
                                                code path that is the same on Intel and AMD
NPY_DISABLE_CPU_FEATURES  the AVX-512 targets   numpy's SIMD loops (arctan2, exp, log, ...)
OPENBLAS_CORETYPE         ``Haswell``           numpy's OpenBLAS
========================  ====================  ============================================

MKL honours an instruction-set branch (``MKL_CBWR=AVX2``) on Intel CPUs only; on an AMD CPU it
silently falls back to its automatic branch, and the bytes differ (measured under an emulated
EPYC, docs/reproducibility.md). ``COMPATIBLE`` (SSE2) is the branch MKL documents for both.

``DIFFRIS_CPU_ISA`` chooses the level: ``avx2`` (default) or ``native`` (no pin: each library
uses the best the machine has). A variable already set in the environment wins over the pin, one
by one. The pin is applied by ``diffris.cli.main``, i.e. by ``python -m diffris`` and the
``diffris`` script, so by every Snakemake rule and DVC stage, and it travels in the environment
to the processes that ``diffris launch`` starts (``accelerate launch``). It only affects CPU
kernels: a GPU run keeps its CUDA kernels, and its CPU-side work runs on AVX2 kernels.

``environment_record`` describes what a set of results depends on (pin in force, versions,
thread counts) without host names, timestamps or the CPU model; ``diffris environment`` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ISA_ENV = "DIFFRIS_CPU_ISA"
DEFAULT_ISA = "avx2"
APPLIED_ENV = "DIFFRIS_CPU_PIN"  # the level pin_cpu applied (avx2), or native / none; the record reads it

# numpy >= 2.4 names its AVX-512 dispatch targets X86_V4, AVX512_ICL, AVX512_SPR; older numpy
# AVX512F, AVX512_SKX, ... numpy ignores the names it does not know.
_NUMPY_AVX512 = (
    "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL"
)

PINS: dict[str, dict[str, str]] = {
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "DNNL_MAX_CPU_ISA": "AVX2",
        "MKL_CBWR": "COMPATIBLE",
        "NPY_DISABLE_CPU_FEATURES": _NUMPY_AVX512,
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "native": {},
}

# The packages whose versions results depend on (the environment record).
PACKAGES = ("torch", "numpy", "diffusers", "transformers", "tokenizers", "accelerate", "safetensors", "pillow")

# What each level needs from the CPU (Linux /proc/cpuinfo flags).
_REQUIRED_FLAGS = {"avx2": ("avx2", "fma")}


class PinError(ValueError):
    pass


def requested_isa(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    isa = env.get(ISA_ENV, DEFAULT_ISA).strip().lower() or DEFAULT_ISA
    if isa not in PINS:
        raise PinError(f"{ISA_ENV}={isa!r}: expected one of {', '.join(sorted(PINS))}")
    return isa


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pin_cpu(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the CPU-kernel variables of ``DIFFRIS_CPU_ISA`` in ``environ`` (default ``os.environ``)
    where they are not set yet; returns the ones this call set.

    It must run before ``import torch`` / ``import numpy`` to act on this process; it always acts
    on the processes started from it. Not on x86-64, or on a CPU without the level's instructions,
    it sets nothing and warns once (the libraries then use what the machine has)."""
    env = os.environ if environ is None else environ
    isa = requested_isa(env)
    pins = PINS[isa]
    if not pins:
        env[APPLIED_ENV] = isa
        return {}
    if platform.machine().lower() not in ("x86_64", "amd64"):
        env[APPLIED_ENV] = "none"
        return {}
    flags = cpu_flags()
    missing = [f for f in _REQUIRED_FLAGS.get(isa, ()) if flags is not None and f not in flags]
    if missing:
        if not env.get(APPLIED_ENV):
            lacks = ", ".join(missing)
            print(f"diffris: {ISA_ENV}={isa}: this CPU lacks {lacks}; CPU kernels not pinned", file=sys.stderr)
        env[APPLIED_ENV] = "none"
        return {}
    applied = {k: v for k, v in pins.items() if k not in env}
    env.update(applied)
    env[APPLIED_ENV] = isa
    return applied


def torch_cpu_record() -> dict:
    """What torch itself reports about its CPU kernels in this process (imports torch)."""
    import torch

    config = torch.__config__.show()
    mkl = next((line.strip(" -") for line in config.splitlines() if "Math Kernel Library" in line), None)
    onednn = next((line.strip(" -") for line in config.splitlines() if "MKL-DNN" in line or "oneDNN" in line), None)
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "mkl": mkl.split(" for ")[0] if mkl else None,
        "mkldnn": onednn,
        "mkldnn_enabled": torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment_record(cpu_threads: int | None = None, environ: dict[str, str] | None = None) -> dict:
    """What results computed in this environment depend on: a small JSON-able dict.

    ``cpu_threads`` is the jobs' torch thread count (params ``train.cpu_threads``; it changes the
    bytes), recorded as given because the process that writes the record is not the one that
    trained. No host name, no timestamp, no CPU model: two machines that should give the same
    bytes give the same record."""
    env = os.environ if environ is None else environ
    isa = requested_isa(env)
    pin_vars = sorted(set().union(*(p.keys() for p in PINS.values())))
    record: dict = {
        "cpu_isa": {
            ISA_ENV: isa,
            "pinned": env.get(APPLIED_ENV, "not applied"),
            "variables": {k: env.get(k) for k in pin_vars},
        },
        "machine": platform.machine(),
        "system": platform.system(),
        "python": ".".join(platform.python_version_tuple()[:2]),
        "packages": {name: _version(name) for name in PACKAGES},
        # the jobs' count; where it is 0 (torch's default) these variables or the cores decide
        "threads": {"train.cpu_threads": cpu_threads},
    }
    if not cpu_threads:
        record["threads"].update({k: env.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    record["torch"] = torch_cpu_record()
    return record


def register(sub: argparse._SubParsersAction) -> None:
    cmd = sub.add_parser(
        "environment",
        help="write what results depend on (CPU kernel pin, versions, threads) as JSON; no host names or times",
    )
    cmd.add_argument("--out", type=Path, help="JSON file to write (default: stdout)")
    cmd.add_argument("--scale", help="take train.cpu_threads from this scale (default: params.yaml's `scale`)")
    cmd.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    cmd.set_defaults(handler=run_environment)


def run_environment(args: argparse.Namespace) -> int:
    from diffris.config import load_params, scale_params

    threads = scale_params(load_params(args.params), args.scale).get("train", {}).get("cpu_threads")
    record = environment_record(cpu_threads=threads)
    if args.out is None:
        sys.stdout.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return 0
    from diffris.fileio import write_json

    write_json(args.out, record)
    print(f"environment: -> {args.out}", file=sys.stderr)
    return 0


def set_cpu_threads(count: int) -> None:
    """Pin torch's CPU threads (``train.cpu_threads``) so that every tool that runs a job —
    Snakemake, DVC or a user's shell — computes with the same count and gets the same bits."""
    if count > 0:
        import torch

        torch.set_num_threads(count)
