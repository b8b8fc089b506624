"""Command line: one sub-command per pipeline step, each with explicit input and output paths.

Sub-commands live next to the code they drive; each module listed in ``COMMAND_MODULES`` has a
``register(subparsers)`` function. Handlers import heavy libraries (torch, diffusers) lazily so
that ``diffris --help`` stays fast.

Hugging Face offline mode is decided here, before anything imports ``huggingface_hub``: only a
sub-command registered with ``needs_network=True`` (a real download) may reach the Hub.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from diffris.errors import DiffrisError

COMMAND_MODULES = (
    "diffris.data.cli",
    "diffris.models.cli",
    "diffris.train_cli",
    "diffris.launch",
    "diffris.pipeline",
    "diffris.report.cli",
    "diffris.features",
    "diffris.plan",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffris", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def set_hub_mode(online: bool) -> None:
    """Fix Hugging Face offline mode; huggingface_hub reads it once, at import."""
    os.environ["HF_HUB_OFFLINE"] = "0" if online else "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    needs_network = getattr(args, "needs_network", False)
    set_hub_mode(needs_network(args) if callable(needs_network) else bool(needs_network))
    try:
        return args.handler(args) or 0
    except DiffrisError as err:
        print(f"diffris {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffris {args.command}: interrupted", file=sys.stderr)
        return 130
