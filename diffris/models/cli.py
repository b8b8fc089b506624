"""Sub-commands: ``fetch-weights`` (the only Hub access for models) and ``describe-model``."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from diffris.errors import ConfigError, DiffrisError


def register(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch-weights",
        help="write a backbone folder: a Hub snapshot at its pinned revision, or a generated tiny one",
    )
    fetch.add_argument("--backbone", required=True, help="a key of params.yaml `backbones`")
    fetch.add_argument("--out", required=True, type=Path, help="folder to write (diffusers layout)")
    fetch.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    fetch.add_argument("--revision", help="40-hex commit, for a Hub backbone without a pinned one")
    fetch.set_defaults(handler=run_fetch_weights, needs_network=_downloads)

    describe = sub.add_parser("describe-model", help="trainable and frozen parameter counts per component")
    describe.add_argument("--experiment", required=True, help="a key of params.yaml `experiments`")
    describe.add_argument("--scale", help="default: params.yaml's `scale`")
    describe.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    describe.add_argument("--backbone-dir", type=Path, help="take the architecture from this backbone folder")
    describe.set_defaults(handler=run_describe)


def _downloads(args: argparse.Namespace) -> bool:
    """Only a Hub backbone needs the network; a broken params.yaml is reported by the handler."""
    from diffris.config import load_params
    from diffris.models.config import backbone_spec

    try:
        return "tiny" not in backbone_spec(load_params(args.params), args.backbone)
    except DiffrisError:
        return False


def run_fetch_weights(args: argparse.Namespace) -> int:
    from diffris.config import load_params
    from diffris.models.backbone import fetch_hub_backbone, write_tiny_backbone
    from diffris.models.config import backbone_spec

    entry = backbone_spec(load_params(args.params), args.backbone)
    if args.revision and not re.fullmatch(r"[0-9a-f]{40}", args.revision):
        raise ConfigError(f"--revision: expected a 40-hex commit, got {args.revision!r}")
    if "tiny" in entry:
        out = write_tiny_backbone(args.backbone, entry, args.out)
    else:
        out = fetch_hub_backbone(args.backbone, entry, args.out, args.revision)
    print(f"fetch-weights: {args.backbone} -> {out}")
    return 0


def run_describe(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from diffris.config import load_params
    from diffris.models.config import config_from_params

    params = load_params(args.params)
    config = config_from_params(params, args.experiment, args.scale)
    counts = count_parameters(params, config, args.backbone_dir)
    rows = [(name, f"{t:,}", f"{f:,}") for name, (t, f) in counts.items()]
    rows.append(("total", f"{sum(t for t, _ in counts.values()):,}", f"{sum(f for _, f in counts.values()):,}"))
    print(f"experiment {args.experiment}: backbone {config.backbone}, decoder {config.decoder}")
    print(tabulate(rows, headers=("component", "trainable", "frozen"), colalign=("left", "right", "right")))
    return 0


def count_parameters(params: dict, config, backbone_dir: Path | None) -> dict[str, tuple[int, int]]:
    """Counts per component of the model built on the meta device (no weights, no memory)."""
    import torch

    from diffris.models.backbone import Architecture, FrozenBackbone, architecture_of
    from diffris.models.config import backbone_spec
    from diffris.models.model import DiffRIS

    if backbone_dir is not None:
        arch = Architecture.from_folder(backbone_dir)
    else:
        arch = architecture_of(backbone_spec(params, config.backbone), config.backbone)
    with torch.device("meta"):
        model = DiffRIS(config, FrozenBackbone.from_architecture(arch, config.backbone))
    return model.parameter_counts()
