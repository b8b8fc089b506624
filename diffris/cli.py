"""Command line: one sub-command per pipeline step, each with explicit input and output paths.

Sub-commands live next to the code they drive; each module listed in ``COMMAND_MODULES`` has a
``register(subparsers)`` function. Handlers import heavy libraries (torch, diffusers) lazily so
that ``diffris --help`` stays fast.

Hugging Face offline mode is decided here, before anything imports ``huggingface_hub``: only a
sub-command registered with ``needs_network=True`` (a real download) may reach the Hub.

The CPU kernels are pinned here too, before anything imports torch or numpy
(``diffris.determinism``, ``DIFFRIS_CPU_ISA``; docs/reproducibility.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from diffris.determinism import PinError, pin_cpu
from diffris.errors import DiffrisError

COMMAND_MODULES = (
    "diffris.data.cli",
    "diffris.pretraining.backbones",
    "diffris.pretraining.cli",
    "diffris.training.cli",
    "diffris.evaluation.cli",
    "diffris.evaluation.predict",
    "diffris.training.launch",
    "diffris.pipeline.dvc_stages",
    "diffris.report.cli",
    "diffris.pipeline.costs",
    "diffris.features.cli",
    "diffris.pipeline.plan",
    "diffris.determinism",
    "diffris.studies.variants",
    "diffris.studies.touching",
    "diffris.studies.touching_report",
    "diffris.studies.attention",
    "diffris.studies.corruption_cli",
    "diffris.studies.cost",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffris", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def set_hub_mode(online: bool) -> None:
    """Fix Hugging Face offline mode; huggingface_hub reads it once, at import. A command that
    downloads stays offline where the user set ``HF_HUB_OFFLINE=1``: it then reads the local
    Hugging Face cache."""
    user_offline = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    os.environ["HF_HUB_OFFLINE"] = "0" if online and not user_offline else "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main(argv: list[str] | None = None) -> int:
    try:
        pin_cpu()  # before build_parser: command modules may import numpy, handlers import torch
    except PinError as err:
        print(f"diffris: error: {err}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    needs_network = getattr(args, "needs_network", False)
    set_hub_mode(needs_network(args) if callable(needs_network) else bool(needs_network))
    try:
        return args.handler(args) or 0
    except DiffrisError as err:
        print(f"diffris {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a read-only folder, a full disk, ...: one line naming the file
        print(f"diffris {args.command}: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffris {args.command}: interrupted", file=sys.stderr)
        return 130


def describe_os_error(err: OSError) -> str:
    """``<file>: <reason>`` for an operating-system error, e.g. a full disk or no permission."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"
