"""The backbones params.yaml names: the architecture an entry stands for, and the sub-commands
``fetch-weights`` (the only Hub access for models) and ``describe-model``.

It lives in ``diffris.pretraining`` and builds on ``diffris.models``: the architecture of a
``pretrained`` backbone is that of its pretraining run's starting point.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING

from diffris.errors import ConfigError, DiffrisError

if TYPE_CHECKING:
    from diffris.models.architecture import Architecture

REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")  # a commit, branch or tag name


def register(sub: argparse._SubParsersAction) -> None:
    fetch = sub.add_parser(
        "fetch-weights",
        help="write a backbone folder: a Hub snapshot at its pinned revision, a zoo checkpoint (checksummed), "
        "a generated one or a pretraining checkpoint",
    )
    fetch.add_argument("--backbone", required=True, help="a key of params.yaml `backbones`")
    fetch.add_argument("--out", required=True, type=Path, help="folder to write (diffusers layout)")
    fetch.add_argument("--params", type=Path, help="params.yaml (default: the repository's)")
    fetch.add_argument(
        "--revision",
        help="for a Hub backbone: a 40-hex commit, or a branch (e.g. main) resolved once to a commit, which is "
        "recorded in backbone.json and printed as the params.yaml line that pins it",
    )
    fetch.add_argument("--pretrained", type=Path, help="for a `pretrained` backbone: the pretrain-backbone output folder")
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
        return "repo_id" in backbone_spec(load_params(args.params), args.backbone)
    except DiffrisError:
        return False


def run_fetch_weights(args: argparse.Namespace) -> int:
    from diffris.config import DEFAULT_PARAMS, load_params
    from diffris.models.config import backbone_spec
    from diffris.models.weights import read_info

    entry = backbone_spec(load_params(args.params), args.backbone)
    if args.revision and not REVISION.fullmatch(args.revision):
        raise ConfigError(f"--revision: expected a 40-hex commit or a branch or tag name, got {args.revision!r}")
    root = Path(args.params or DEFAULT_PARAMS).resolve().parent  # zoo files are relative to params.yaml
    out = write_backbone(args.backbone, entry, args.out, args.revision, args.pretrained, root)
    print(f"fetch-weights: {args.backbone} -> {out}")
    commit = read_info(out)["revision"]
    if "repo_id" in entry and commit != entry.get("revision"):
        print(f"fetch-weights: params.yaml does not pin commit {commit}; to pin it, set in `backbones`:")
        print(pin_line(args.backbone, entry["repo_id"], commit))
    return 0


def write_backbone(
    name: str, entry: dict, out: Path, revision: str | None, pretrained: Path | None, root: Path
) -> Path:
    """The backbone folder of a params.yaml entry: unpacked from the zoo, copied, generated or
    downloaded; ``root`` is the folder zoo files are relative to."""
    from diffris.models import weights

    if "zoo" in entry:
        from diffris.pretraining.zoo import write_zoo_backbone

        return write_zoo_backbone(name, entry, root, out)
    if "pretrained" in entry:
        if pretrained is None:
            raise ConfigError(
                f"fetch-weights --backbone {name}: a checkpoint of pretraining run {entry['pretrained']!r};"
                f" pass --pretrained DIR (the output of `diffris pretrain-backbone --run {entry['pretrained']}`)"
            )
        return weights.copy_pretrained_backbone(name, entry, pretrained, out)
    if "tiny" in entry:
        return weights.write_tiny_backbone(name, entry, out)
    if "sd1_random" in entry:
        return weights.write_sd1_random_backbone(name, entry, out)
    return weights.fetch_hub_backbone(name, entry, out, revision)


def pin_line(name: str, repo_id: str, commit: str) -> str:
    """The params.yaml ``backbones`` line that pins ``name`` to ``commit``."""
    return f"  {name}: {{repo_id: {repo_id}, revision: {commit}}}"


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

    from diffris.models.architecture import Architecture
    from diffris.models.backbone import FrozenBackbone
    from diffris.models.config import backbone_spec
    from diffris.models.model import DiffRIS

    if backbone_dir is not None:
        arch = Architecture.from_folder(backbone_dir)
    else:
        arch = architecture_of(backbone_spec(params, config.backbone), config.backbone, params)
    with torch.device("meta"):
        model = DiffRIS(config, FrozenBackbone.from_architecture(arch, config.backbone))
    return model.parameter_counts()



def architecture_of(entry: dict, name: str, params: dict | None = None) -> Architecture:
    """The architecture a params.yaml backbone entry stands for (no weights needed); a
    ``pretrained`` entry needs ``backbones`` and ``pretraining`` (i.e. params) to find its sizes."""
    from diffris.models.architecture import sd1_architecture, sd1_random_architecture, tiny_architecture, tiny_spec

    if "tiny" in entry:
        return tiny_architecture(tiny_spec(entry, name))
    if "sd1_random" in entry:
        return sd1_random_architecture()
    if "pretrained" in entry:
        if params is None:
            raise ConfigError(f"backbones.{name}: a pretrained backbone's architecture needs params.yaml")
        from diffris.pretraining.pretrain import pretrain_run

        return tiny_architecture(pretrain_run(params, entry["pretrained"]).tiny)
    return sd1_architecture()
